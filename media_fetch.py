"""Fetch a customer's file from WhatsApp's media servers into a temp file, decrypting and checking it
on the way, in bounded memory.

Why not neonize: its `download_any` / `download_media_with_path` return the whole file as bytes
(goneonize hands whatsmeow's `[]byte` across as one protobuf; `download_any(path=...)` only writes
those bytes afterwards), so a 100 MB video would cost a few hundred MB at once on a 512 MB dyno. This
module does what whatsmeow's download.go does, as a stream:

- where: the message's `url` unless it is on web.whatsapp.net (`Download`), else
  `https://mmg.whatsapp.net<directPath>&hash=<base64url fileEncSHA256>&mms-type=<type>&__wa-mms=`
  (`DownloadMediaWithPath`; whatsmeow asks media_conn for the host list, which neonize does not expose:
  mmg.whatsapp.net is the host WhatsApp names first);
- how: GET with WhatsApp Web's Origin and Referer (`doMediaDownloadRequest`), through HTTPS_PROXY (as
  Go's ProxyFromEnvironment) and trusting the CA file the environment names (SSL_CERT_FILE, as Go's
  crypto/x509 on Linux; REQUESTS_CA_BUNDLE too);
- the checks (`downloadAndDecrypt`, `validateMedia`): SHA-256 of the encrypted blob against
  fileEncSHA256, HMAC-SHA256(macKey, iv + ciphertext) truncated to 10 bytes against the blob's tail,
  AES-256-CBC with PKCS#7 padding, then the plain length and SHA-256 (fileLength, fileSHA256); keys
  from HKDF-SHA256(mediaKey, info, 112 bytes) (`getMediaKeys`).

A file that fails any check is deleted; nothing unchecked is ever served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
import time
from pathlib import Path

import requests
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from errors import BotError
from incoming_media import MediaRef

MEDIA_HOST = "mmg.whatsapp.net"
ORIGIN = "https://web.whatsapp.com"  # whatsmeow socket.Origin
MAC_LENGTH = 10
CHUNK = 1 << 16
#: WhatsApp's largest document is 2 GB; a server that sends more than the message announced (or this,
#: when it announced nothing) is cut off before it fills the disk.
MAX_MEDIA_BYTES = 2 * 1024**3
TEMP_PREFIX = "media-"
TEMP_SUFFIX = ".part"


class MediaNotFound(LookupError):
    """No file is known for this message id (never seen, not media, or no longer kept): 404."""


class MediaBusy(RuntimeError):
    """Too many downloads run at once; the request threads stay free for everything else: 503."""


class MediaDownloadError(BotError):
    """WhatsApp's media servers did not give us the file; the API answers 502 with the hint."""

    code = "media_download_failed"
    summary = "WhatsApp's media servers did not deliver the file"
    hint = "try again in a minute; if it keeps failing, check HTTPS_PROXY and the network"


class MediaGone(MediaDownloadError):
    code = "media_gone"
    summary = "WhatsApp no longer serves this file"
    hint = ("WhatsApp keeps a file on its servers only for a while after it was sent: ask the sender "
            "to send it again")


class MediaCheckFailed(MediaDownloadError):
    code = "media_check_failed"
    summary = "the file WhatsApp served does not match the message's checksums"
    hint = "nothing was kept; try again, and if it repeats ask the sender to send the file again"


def media_keys(media_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=info).derive(media_key)
    return expanded[:16], expanded[16:48], expanded[48:80]


def candidate_urls(ref: MediaRef) -> list[str]:
    urls = []
    if ref.url and not ref.url.startswith("https://web.whatsapp.net"):
        urls.append(ref.url)
    if ref.direct_path:
        digest = base64.urlsafe_b64encode(ref.file_enc_sha256).decode()
        urls.append(f"https://{MEDIA_HOST}{ref.direct_path}&hash={digest}&mms-type={ref.mms_type}&__wa-mms=")
    return urls


def ca_bundle():
    """What requests should trust: the CA file the environment names, else its own bundle."""
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and os.path.exists(value):
            return value
    return True


def clean_leftovers(directory: Path) -> None:
    """Remove temp files a killed worker left behind (a download in flight when the dyno stopped)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(directory / name)
            except OSError:
                pass


def download_to_file(ref: MediaRef, directory: Path, *, deadline: float,
                     session: requests.Session | None = None) -> Path:
    """Download, check and decrypt the file into a new temp file in `directory` (0600); returns its
    path (the caller deletes it). Raises a MediaDownloadError subclass; leaves no file behind then."""
    directory.mkdir(parents=True, exist_ok=True)
    session = session or requests.Session()
    ends_at = time.monotonic() + deadline
    last: MediaDownloadError = MediaDownloadError("the message names no place to download the file from")
    for url in candidate_urls(ref):
        try:
            return _download_one(session, url, ref, directory, ends_at)
        except MediaCheckFailed:
            raise  # whatsmeow does not try another host after a checksum failure either
        except MediaDownloadError as exc:
            last = exc
    raise last


def _download_one(session, url: str, ref: MediaRef, directory: Path, ends_at: float) -> Path:
    def left() -> float:
        remaining = ends_at - time.monotonic()
        if remaining <= 0:
            raise MediaDownloadError("the download did not finish in time")
        return remaining

    try:
        response = session.get(url, stream=True, timeout=(min(10.0, left()), min(20.0, left())),
                               headers={"Origin": ORIGIN, "Referer": ORIGIN + "/"}, verify=ca_bundle())
    except requests.RequestException as exc:
        # The URL is not logged or shown: it is a capability to the customer's (encrypted) file.
        raise MediaDownloadError(f"WhatsApp's media server did not answer ({type(exc).__name__})") from None
    with response:
        if response.status_code in (403, 404, 410):
            raise MediaGone(f"WhatsApp's media server answered HTTP {response.status_code}",
                            status=response.status_code)
        if response.status_code != 200:
            raise MediaDownloadError(f"WhatsApp's media server answered HTTP {response.status_code}",
                                     status=response.status_code)
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, delete=False)
        path = Path(handle.name)
        try:
            with handle:
                _decrypt_stream(response, ref, handle, left)
            return path
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def _decrypt_stream(response, ref: MediaRef, out, left) -> None:
    iv, cipher_key, mac_key = media_keys(ref.media_key, ref.key_info)
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    mac = hmac.new(mac_key, iv, hashlib.sha256)
    enc_hash, plain_hash = hashlib.sha256(), hashlib.sha256()
    limit = (ref.size + 16 + MAC_LENGTH) if ref.size > 0 else MAX_MEDIA_BYTES
    received = written = 0
    tail = b""  # the last MAC_LENGTH bytes seen so far: the MAC, once the stream ends

    def write(plain: bytes) -> None:
        nonlocal written
        if plain:
            plain_hash.update(plain)
            out.write(plain)
            written += len(plain)

    try:
        for chunk in response.iter_content(CHUNK):
            left()
            received += len(chunk)
            if received > limit:
                raise MediaCheckFailed("the media server sent more than the message announced")
            enc_hash.update(chunk)
            data = tail + chunk
            body, tail = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
            if body:
                mac.update(body)
                write(unpadder.update(decryptor.update(body)))
    except requests.RequestException as exc:
        raise MediaDownloadError(f"the download broke off ({type(exc).__name__})") from None
    if len(tail) < MAC_LENGTH or (received - MAC_LENGTH) % 16:
        raise MediaCheckFailed("the file is cut short or not whole AES blocks")
    if ref.file_enc_sha256 and enc_hash.digest() != ref.file_enc_sha256:
        raise MediaCheckFailed("the SHA-256 of the encrypted file does not match")
    if not hmac.compare_digest(mac.digest()[:MAC_LENGTH], tail):
        raise MediaCheckFailed("the file's MAC does not verify with the message's key")
    try:
        write(unpadder.update(decryptor.finalize()) + unpadder.finalize())
    except ValueError:
        raise MediaCheckFailed("the decrypted file's padding is invalid") from None
    if ref.size and written != ref.size:
        raise MediaCheckFailed(f"the file has {written} bytes, the message announced {ref.size}")
    if ref.file_sha256 and plain_hash.digest() != ref.file_sha256:
        raise MediaCheckFailed("the SHA-256 of the decrypted file does not match")
