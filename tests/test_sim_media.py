"""Issue 23, items 1 and 3, end to end: the real bot (Procfile's gunicorn, real neonize) against the
WhatsApp simulator, with a real webhook receiver.

A customer's photo, video, voice note, document and sticker arrive as `message` events describing
them and come back whole from GET /api/media/<id>; a file WhatsApp no longer has is a 502 with a
hint; the cache's bound is a 404. Reactions, edits and deletes are their own events; a call is a
`call` event, declined through neonize with REJECT_CALLS=1 and answered with REJECT_CALLS_MESSAGE.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import requests

from tests.support import mediafiles
from tests.test_sim_events import AUTH, CONTACT, SIM_PHONE, WAIT, paired_bot, receiver  # noqa: F401
from tests.wasim import peer_events as peer

SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`
CONTACT_JID = f"{CONTACT}@s.whatsapp.net"


def _media(bot, message_id: str, headers=AUTH):
    return requests.get(f"{bot.url}/api/media/{message_id}", headers=headers, timeout=WAIT)


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _message_event(receiver, message_id: str) -> dict:
    return receiver.wait_for_event("message", timeout=WAIT, where=lambda data: data["id"] == message_id)[0]["data"]


def test_each_kind_of_media_is_described_and_fetched_whole(sim, receiver, start_bot, tmp_path):
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver, MEDIA_CACHE_ENTRIES="5")
    photo = mediafiles.image("JPEG", size=(320, 200))
    voice = mediafiles.ogg_opus(3.2)
    sent = {
        "image": (photo, dict(mimetype="image/jpeg", caption="the broken part", width=320, height=200)),
        "voice_note": (voice, dict(mimetype="audio/ogg; codecs=opus", seconds=4)),
        "video": (os.urandom(300_017), dict(mimetype="video/mp4", caption="how it rattles", seconds=12,
                                            width=640, height=360)),
        "document": (b"%PDF-1.4\n" + os.urandom(40_000), dict(mimetype="application/pdf", file_name="Rechnung März.pdf",
                                                             caption="invoice")),
        "sticker": (mediafiles.image("WEBP", size=(64, 64)), dict(mimetype="image/webp", width=64, height=64)),
    }
    ids = {}
    for kind, (data, facts) in sent.items():
        ids[kind], _ = peer.send_media(sim, jid, CONTACT, kind, data, **facts)

    for kind, (data, facts) in sent.items():
        event = _message_event(receiver, ids[kind])
        media = event["media"]
        assert event["from"] == CONTACT_JID and event["type"] == "media"
        assert abs(event["time"] - time.time()) < 600, "Unix seconds, as the README shows (neonize gives ms)"
        assert media == {
            "kind": kind, "mimetype": facts["mimetype"], "size": len(data), "caption": facts.get("caption"),
            "fileName": facts.get("file_name"), "seconds": facts.get("seconds"), "width": facts.get("width"),
            "height": facts.get("height"), "url": f"/api/media/{ids[kind]}"}, kind
        assert event["text"] == (facts.get("caption") or "")

        answer = _media(bot, ids[kind])
        assert answer.status_code == 200, answer.text
        assert answer.content == data, f"the {kind} comes back exactly as the customer sent it"
        assert answer.headers["Content-Type"].startswith(facts["mimetype"].split(";")[0])
        assert answer.headers["Content-Disposition"].startswith("attachment")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf" in _media(bot, ids["document"]).headers["Content-Disposition"]
    leftovers = os.listdir(tmp_path / "session" / "media-tmp")
    assert leftovers == [], "every temp file is gone once its answer was sent"

    # No key: 401; an id never seen: 404; a sixth file pushes the first out of a cache of five: 404.
    assert _media(bot, ids["image"], headers={}).status_code == 401
    unknown = _media(bot, "3EB0000000000000")
    assert unknown.status_code == 404 and unknown.json()["error"] == "media_not_found"
    sixth, _ = peer.send_media(sim, jid, CONTACT, "image", photo, mimetype="image/jpeg")
    _message_event(receiver, sixth)
    assert _media(bot, ids["image"]).status_code == 404
    assert _media(bot, sixth).content == photo


def test_files_come_while_the_connection_is_down_and_a_file_whatsapp_no_longer_has_is_a_502(
        sim, receiver, start_bot, tmp_path):
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver)
    kept, _ = peer.send_media(sim, jid, CONTACT, "document", b"%PDF-1.4 kept", mimetype="application/pdf")
    gone, upload = peer.send_media(sim, jid, CONTACT, "document", b"%PDF-1.4 old", mimetype="application/pdf",
                                   file_name="old.pdf")
    _message_event(receiver, kept)
    _message_event(receiver, gone)

    # A 40 MB video passes through in bounded memory (neonize's own download would hold it 4 times over).
    video = tmp_path / "big.mp4"
    with open(video, "wb") as out:
        for _ in range(40):
            out.write(os.urandom(1 << 20))
    big, _ = peer.send_media(sim, jid, CONTACT, "video", str(video), mimetype="video/mp4", seconds=300)
    _message_event(receiver, big)
    worker = next(pid for pid in bot.process_tree() if pid != bot.proc.pid)
    before = _rss_mb(worker)
    peak = [before]
    done = threading.Event()

    def sample():  # a measurement, not a wait: every 5 ms until the download ends
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb(worker))

    sampler = threading.Thread(target=sample)
    sampler.start()
    digest = hashlib.sha256()
    try:
        with requests.get(f"{bot.url}/api/media/{big}", headers=AUTH, stream=True, timeout=WAIT) as answer:
            assert answer.status_code == 200
            for piece in answer.iter_content(1 << 20):
                digest.update(piece)
    finally:
        done.set()
        sampler.join()
    assert digest.digest() == hashlib.sha256(video.read_bytes()).digest()
    assert peak[0] - before < 20, f"the worker grew by {peak[0] - before:.1f} MB for a 40 MB file"

    # Another client took the stream: the bot waits a minute before it reconnects (STREAM_REPLACED_DELAY).
    sim.replace_stream(jid)
    bot.wait_state("reconnecting", timeout=WAIT)
    answer = _media(bot, kept)
    assert answer.status_code == 200 and answer.content == b"%PDF-1.4 kept", "the media servers need no connection"

    sim.peer_media.make_gone(upload, 410)
    answer = _media(bot, gone)
    body = answer.json()
    assert answer.status_code == 502 and body["error"] == "media_gone", body
    assert "send it again" in body["hint"]
    assert upload.direct_path.split("?")[0] not in answer.text  # the file's address stays ours
    assert bot.request("GET", "/api/health")[0] == 200


def test_reactions_edits_deletes_and_calls_are_their_own_events(sim, receiver, start_bot, tmp_path):
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver)
    original = sim.deliver_text(jid, CONTACT, "see you at 5")
    _message_event(receiver, original)
    code, mine = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": "ok"}, headers=AUTH, timeout=WAIT)
    assert code == 200, mine

    peer.react(sim, jid, CONTACT, mine["id"], "👍")
    peer.react(sim, jid, CONTACT, mine["id"], "")
    reactions = receiver.wait_for_event("reaction", timeout=WAIT, count=2)
    assert [(r["data"]["messageId"], r["data"]["emoji"], r["data"]["removed"]) for r in reactions] == [
        (mine["id"], "👍", False), (mine["id"], "", True)]
    assert reactions[0]["data"]["from"] == CONTACT_JID
    assert abs(reactions[0]["data"]["time"] - time.time()) < 600, "Unix seconds, as the message event's time"

    edit_id = peer.edit(sim, jid, CONTACT, original, "see you at 6")
    edit = receiver.wait_for_event("edit", timeout=WAIT)[0]["data"]
    assert (edit["id"], edit["editId"], edit["text"], edit["from"]) == (original, edit_id, "see you at 6", CONTACT_JID)

    delete_id = peer.revoke(sim, jid, CONTACT, original)
    delete = receiver.wait_for_event("delete", timeout=WAIT)[0]["data"]
    assert (delete["id"], delete["deleteId"], delete["from"]) == (original, delete_id, CONTACT_JID)

    call_id = peer.offer_call(sim, jid, CONTACT, video=True)
    call = receiver.wait_for_event("call", timeout=WAIT)[0]["data"]
    assert call["id"] == call_id and call["from"] == CONTACT_JID and call["video"] is True
    assert call["rejected"] is False and call["replied"] is False
    assert peer.call_rejects(sim, call_id) == [], "without REJECT_CALLS the call is left ringing"

    # Not one of them was also reported as a message.
    reported = {e["data"]["id"] for e in receiver.events("message")}
    assert reported == {original}


def test_reject_calls_declines_through_neonize_and_texts_the_caller(sim, receiver, start_bot, tmp_path):
    reply = "We can't take calls here, please write to us."
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver, REJECT_CALLS="1", REJECT_CALLS_MESSAGE=reply)
    before = len(sim.sent_messages)
    call_id = peer.offer_call(sim, jid, CONTACT)
    rejects = sim.wait_until(lambda: peer.call_rejects(sim, call_id), WAIT, "the bot's reject")
    reject = rejects[0].children()[0]
    assert str(rejects[0].attrs["to"]) == CONTACT_JID and str(reject.attrs["call-creator"]) == CONTACT_JID
    call = receiver.wait_for_event("call", timeout=WAIT)[0]["data"]
    assert call["id"] == call_id and call["rejected"] is True and call["replied"] is True
    text = sim.wait_until(lambda: [m for m in sim.sent_messages[before:] if m.text == reply], WAIT, "the reply text")
    assert text[0].recipient_pn == CONTACT_JID
    assert "call" in bot.output() and reply not in bot.output()
