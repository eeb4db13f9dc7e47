"""Media a peer sends to the client: the peer's upload (encrypted like whatsmeow's upload.go does it)
and the CDN that serves it back when the client downloads.

whatsmeow download.go `Download`: a message part with a `url` (not on web.whatsapp.net) is fetched
from that URL; otherwise from `https://<media_conn host><directPath>&hash=<base64url fileEncSHA256>
&mms-type=<image|audio|video|document>&__wa-mms=` (`DownloadMediaWithPath`). A GET answers 200 with
the encrypted blob (ciphertext + the first 10 bytes of HMAC-SHA256(macKey, iv + ciphertext)); anything
else is a `DownloadHTTPError` (404 and 410: the file is gone from WhatsApp's servers, 403: the link
expired). `downloadAndDecrypt` then checks the blob's SHA-256, the MAC, the plaintext's length and
SHA-256. Blobs live in files under the simulator's work directory, so a 100 MB video costs the
simulator no memory either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .media import KEY_INFO, MEDIA_HOST, media_keys

CHUNK = 1 << 20

# The mms-type whatsmeow names in a download URL, per message field (download.go mediaTypeToMMSType).
MMS_TYPE_OF = {"imageMessage": "image", "stickerMessage": "image", "audioMessage": "audio",
               "videoMessage": "video", "documentMessage": "document"}


@dataclass
class PeerUpload:
    """What a peer's phone uploaded, and what its message then carries to point at it."""

    field: str  # imageMessage, audioMessage, ...
    direct_path: str
    url: str
    blob_path: str
    media_key: bytes
    file_sha256: bytes
    file_enc_sha256: bytes
    file_length: int
    gone: int = 0  # an HTTP status the CDN answers instead of the file (404, 410, 403), 0: served


class PeerMediaHost:
    """Peers' uploads, encrypted into files, and the GET side of the media host that serves them."""

    def __init__(self, workdir: str) -> None:
        self.dir = os.path.join(workdir, "peer-media")
        self.uploads: dict[str, PeerUpload] = {}  # direct path -> upload
        self.downloads: list[str] = []  # every download request's target, as the client sent it
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def upload(self, field: str, source) -> PeerUpload:
        """Encrypt `source` (bytes, or the path of a file) as the peer's phone would for a `field`
        message (HKDF info per media type, AES-256-CBC, PKCS#7, truncated HMAC); returns where it is."""
        os.makedirs(self.dir, exist_ok=True)
        media_key = secrets.token_bytes(32)
        iv, cipher_key, mac_key = media_keys(media_key, KEY_INFO[field])
        encryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
        padder = padding.PKCS7(128).padder()
        mac = hmac.new(mac_key, iv, hashlib.sha256)
        plain_hash, enc_hash = hashlib.sha256(), hashlib.sha256()
        length = 0
        blob_path = os.path.join(self.dir, secrets.token_hex(8) + ".enc")
        with open(blob_path, "wb") as out:
            for chunk in _chunks(source):
                length += len(chunk)
                plain_hash.update(chunk)
                encrypted = encryptor.update(padder.update(chunk))
                mac.update(encrypted)
                enc_hash.update(encrypted)
                out.write(encrypted)
            encrypted = encryptor.update(padder.finalize()) + encryptor.finalize()
            mac.update(encrypted)
            tag = mac.digest()[:10]
            enc_hash.update(encrypted + tag)
            out.write(encrypted + tag)
        direct_path = f"/v/t62.{secrets.randbelow(10**4)}-24/{secrets.token_hex(12)}.enc?ccb=11-4&oh=01_{secrets.token_hex(6)}"
        upload = PeerUpload(field, direct_path, f"https://{MEDIA_HOST}{direct_path}&mms3=true", blob_path,
                            media_key, plain_hash.digest(), enc_hash.digest(), length)
        with self._lock:
            self.uploads[direct_path] = upload
        return upload

    def make_gone(self, upload: PeerUpload, status: int = 404) -> None:
        """The CDN no longer serves this file (expired media): every download gets `status`."""
        upload.gone = status

    def handle_get(self, target: str):
        """A GET to the media host: (status, file object or JSON bytes, content type)."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        with self._lock:
            self.downloads.append(target)
            upload = next((u for path, u in self.uploads.items()
                           if urlsplit(path).path == parts.path), None)
        if upload is None:
            self.refused.append(f"GET {parts.path}: nothing uploaded there")
            return 404, b'{"error": "not found"}', "application/json"
        # A directPath download names the hash and mms-type (download.go DownloadMediaWithPath); the
        # message's url carries neither, and WhatsApp serves it as it is.
        if "hash" in query:
            expected = base64.urlsafe_b64encode(upload.file_enc_sha256).decode()
            if query.get("hash") != [expected] or query.get("mms-type") != [MMS_TYPE_OF[upload.field]]:
                self.refused.append(f"GET {parts.path}: hash or mms-type does not match the upload")
                return 400, b'{"error": "bad request"}', "application/json"
        if upload.gone:
            return upload.gone, b'{"error": "gone"}', "application/json"
        return 200, open(upload.blob_path, "rb"), "application/octet-stream"


def _chunks(source):
    if isinstance(source, (bytes, bytearray)):
        for start in range(0, len(source), CHUNK):
            yield bytes(source[start:start + CHUNK])
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
