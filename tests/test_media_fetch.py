"""media_fetch, incoming_media and media_cache without WhatsApp: files encrypted by the simulator's
peer side (tests/wasim/download.py, written from whatsmeow's upload.go independently of the bot's
code) and served by a real HTTP server on loopback that can also lie (a flipped byte, a cut file, a
404, more bytes than announced)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import threading

import pytest

import incoming_media
import media_fetch
from incoming_media import MediaRef
from media_cache import MediaCache
from tests.wasim.download import PeerMediaHost
from tests.wasim.peer_events import KINDS

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import AudioMessage, DocumentMessage, ImageMessage, Message


class BlobServer:
    """GET /<name> answers what `answers[name]` says: (status, body bytes)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                status, body = server.answers.get(self.path.lstrip("/").split("?")[0], (404, b"no"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}?x=1"


@pytest.fixture
def server():
    blob_server = BlobServer()
    blob_server.thread.start()
    yield blob_server
    blob_server.httpd.shutdown()
    blob_server.httpd.server_close()


def encrypted(tmp_path, server, data: bytes, kind: str = "document", name: str = "f"):
    """A peer's upload of `data`, served as `name`; returns (MediaRef, the encrypted blob)."""
    field = KINDS[kind][0]
    upload = PeerMediaHost(str(tmp_path / "peer")).upload(field, data)
    blob = open(upload.blob_path, "rb").read()
    server.answers[name] = (200, blob)
    info, mms = incoming_media.PARTS[field]
    ref = MediaRef(kind=kind, mimetype="application/pdf", file_name="a.pdf", url=server.url(name), direct_path="",
                   media_key=upload.media_key, file_sha256=upload.file_sha256,
                   file_enc_sha256=upload.file_enc_sha256, size=upload.file_length, key_info=info, mms_type=mms)
    return ref, blob


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 65536 + 5, 300_001])
def test_a_file_is_decrypted_and_checked_whatever_its_length(tmp_path, server, size):
    data = os.urandom(size)
    ref, _ = encrypted(tmp_path, server, data)
    path = media_fetch.download_to_file(ref, tmp_path / "out", deadline=10)
    assert path.read_bytes() == data and path.parent == tmp_path / "out"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert server.requests[-1]["origin"] == "https://web.whatsapp.com"  # as whatsmeow asks


@pytest.mark.parametrize("damage", ["flip", "cut", "longer", "wrong_sha", "wrong_length"])
def test_a_file_that_does_not_check_out_is_refused_and_nothing_is_left(tmp_path, server, damage):
    data = os.urandom(5000)
    ref, blob = encrypted(tmp_path, server, data)
    if damage == "flip":
        server.answers["f"] = (200, blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
    elif damage == "cut":
        server.answers["f"] = (200, blob[:-16])
    elif damage == "longer":
        server.answers["f"] = (200, blob + b"x" * 100)
    elif damage == "wrong_sha":
        ref = MediaRef(**{**ref.__dict__, "file_sha256": hashlib.sha256(b"other").digest()})
    else:
        ref = MediaRef(**{**ref.__dict__, "size": 4999})
    with pytest.raises(media_fetch.MediaCheckFailed):
        media_fetch.download_to_file(ref, tmp_path / "out", deadline=10)
    assert os.listdir(tmp_path / "out") == []


def test_a_file_whatsapp_no_longer_has_is_gone_with_a_hint(tmp_path, server):
    ref, _ = encrypted(tmp_path, server, b"x" * 100)
    server.answers["f"] = (404, b"")
    with pytest.raises(media_fetch.MediaGone) as caught:
        media_fetch.download_to_file(ref, tmp_path / "out", deadline=10)
    assert caught.value.status == 404 and "send it again" in caught.value.hint
    assert os.listdir(tmp_path / "out") == []


def test_an_unreachable_server_is_a_download_error_without_the_url(tmp_path):
    ref = MediaRef(kind="image", mimetype="image/jpeg", file_name=None, url="http://127.0.0.1:9/secret-path",
                   direct_path="", media_key=b"k" * 32, file_sha256=b"", file_enc_sha256=b"", size=1,
                   key_info=b"WhatsApp Image Keys", mms_type="image")
    with pytest.raises(media_fetch.MediaDownloadError) as caught:
        media_fetch.download_to_file(ref, tmp_path / "out", deadline=10)
    assert "secret-path" not in str(caught.value)


def test_the_direct_path_url_is_whatsmeows():
    ref = MediaRef(kind="audio", mimetype="audio/ogg", file_name=None, url="https://web.whatsapp.net/x",
                   direct_path="/v/t62.7117-24/abc.enc?ccb=11-4", media_key=b"k", file_sha256=b"",
                   file_enc_sha256=b"\xfb" * 32, size=1, key_info=b"WhatsApp Audio Keys", mms_type="audio")
    # download.go Download: a web.whatsapp.net url is skipped; DownloadMediaWithPath's URL shape
    assert media_fetch.candidate_urls(ref) == [
        "https://mmg.whatsapp.net/v/t62.7117-24/abc.enc?ccb=11-4&hash=" + base64.urlsafe_b64encode(b"\xfb" * 32).decode()
        + "&mms-type=audio&__wa-mms="]


def test_leftover_temp_files_are_cleaned_and_nothing_else(tmp_path):
    (tmp_path / "media-abc.part").write_bytes(b"x")
    (tmp_path / "neonize.db").write_bytes(b"x")
    media_fetch.clean_leftovers(tmp_path)
    assert os.listdir(tmp_path) == ["neonize.db"]


def test_media_descriptions_per_kind():
    voice = Message(audioMessage=AudioMessage(URL="https://mmg.whatsapp.net/v/x", mediaKey=b"k" * 32,
                                              mimetype="audio/ogg; codecs=opus", seconds=7, PTT=True, fileLength=9000))
    assert incoming_media.describe(voice, "ID1") == {
        "kind": "voice_note", "mimetype": "audio/ogg; codecs=opus", "size": 9000, "caption": None,
        "fileName": None, "seconds": 7, "width": None, "height": None, "url": "/api/media/ID1"}
    photo = Message(imageMessage=ImageMessage(mimetype="image/jpeg", caption="hi", width=4, height=3, fileLength=10))
    assert incoming_media.describe(photo, "ID2")["width"] == 4
    assert incoming_media.media_ref(photo) is None  # no key, no place: nothing to fetch
    assert incoming_media.describe(Message(conversation="hello"), "ID3") is None
    doc = Message(documentMessage=DocumentMessage(directPath="/v/x", mediaKey=b"k" * 32, mimetype="text/html\r\nX: y",
                                                  fileName="a.pdf"))
    ref = incoming_media.media_ref(doc)
    assert ref.mimetype == "application/octet-stream" and ref.file_name == "a.pdf"  # a hostile type is not served


def test_the_cache_is_bounded_by_count_and_age():
    now = [0.0]
    cache = MediaCache(3, 100, clock=lambda: now[0])
    for i in range(5):
        cache.put(f"m{i}", i)
        now[0] += 10
    assert [cache.get(f"m{i}") for i in range(5)] == [None, None, 2, 3, 4]
    now[0] = 125  # m2 was put at 20: older than 100 s now
    assert cache.get("m2") is None and cache.get("m3") == 3 and len(cache) == 2
    off = MediaCache(0, 100)
    off.put("m", 1)
    assert off.get("m") is None


def test_downloads_beyond_the_parallel_limit_are_refused_not_queued(tmp_path, server):
    from whatsapp.download import MAX_PARALLEL, Downloads

    downloads = Downloads()
    downloads._init_downloads(tmp_path / "session", max_entries=10, max_age=60)
    data = os.urandom(1000)
    ref, _ = encrypted(tmp_path, server, data)
    downloads._media.put("3EB0A", ref)
    with pytest.raises(media_fetch.MediaNotFound):
        downloads.open_media("3EB0B")
    for _ in range(MAX_PARALLEL):  # as many downloads as may run are running
        downloads._media_slots.acquire()
    with pytest.raises(media_fetch.MediaBusy):
        downloads.open_media("3EB0A")
    for _ in range(MAX_PARALLEL):
        downloads._media_slots.release()
    handle, got = downloads.open_media("3EB0A")
    with handle:
        assert handle.read() == data and got is ref
    assert os.listdir(tmp_path / "session" / "media-tmp") == [], "served from an unlinked file"
