"""Media as WhatsApp's upload hosts see them: the media_conn answer, the upload endpoint, and the
phone's download and decryption of what a message points to.

whatsmeow (mediaconn.go) asks `<iq xmlns="w:m" type="set"><media_conn/></iq>` for an auth token and
upload hosts; upload.go encrypts the file (AES-256-CBC, keys from HKDF-SHA256 of a random 32-byte media
key with info "WhatsApp <Type> Keys": iv, cipher key, MAC key, 112 bytes in all — download.go
`getMediaKeys`), appends HMAC-SHA256(macKey, iv + ciphertext)[:10], and POSTs that to
`https://<host>/mms/<type>/<token>?auth=<auth>&token=<token>` where token is base64url(SHA-256 of the
upload); the answer is JSON `{"url", "direct_path"}`. download.go checks the SHA-256 of the encrypted
blob, the MAC, then the SHA-256 of the plaintext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MEDIA_HOST = "mmg.whatsapp.net"

# whatsmeow download.go: the HKDF info per media type, and upload.go's mms path per type.
KEY_INFO = {
    "imageMessage": b"WhatsApp Image Keys",
    "audioMessage": b"WhatsApp Audio Keys",
    "videoMessage": b"WhatsApp Video Keys",
    "documentMessage": b"WhatsApp Document Keys",
    "stickerMessage": b"WhatsApp Image Keys",
}
MMS_TYPE = {"image": "imageMessage", "audio": "audioMessage", "video": "videoMessage",
            "document": "documentMessage"}


class MediaError(ValueError):
    """The media a message points to is missing or does not check out."""


def media_keys(media_key: bytes, info: bytes) -> tuple[bytes, bytes, bytes]:
    expanded = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=info).derive(media_key)
    return expanded[:16], expanded[16:48], expanded[48:80]


def decrypt(blob: bytes, media_key: bytes, info: bytes) -> bytes:
    iv, cipher_key, mac_key = media_keys(media_key, info)
    ciphertext, mac = blob[:-10], blob[-10:]
    if not hmac.compare_digest(hmac.new(mac_key, iv + ciphertext, hashlib.sha256).digest()[:10], mac):
        raise MediaError("the media's MAC does not verify with its media key")
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


@dataclass
class Upload:
    mms_type: str
    token: str
    direct_path: str
    blob: bytes


class MediaHost:
    """The upload host (and the CDN the phone downloads from): keeps every uploaded blob."""

    def __init__(self) -> None:
        self.auth = secrets.token_urlsafe(24)
        self.uploads: list[Upload] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def media_conn_attrs(self) -> dict:
        return {"auth": self.auth, "ttl": "300", "auth_ttl": "21600", "max_buckets": "12"}

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        """An HTTP request to the media host; (status, JSON body)."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        segments = parts.path.strip("/").split("/")
        if method != "POST" or len(segments) != 3 or segments[0] != "mms" or segments[1] not in MMS_TYPE:
            self.refused.append(f"{method} {parts.path}")
            return 404, b'{"error": "not found"}'
        token = segments[2]
        if query.get("auth") != [self.auth]:
            self.refused.append(f"bad auth for {parts.path}")
            return 401, b'{"error": "bad auth"}'
        expected = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()
        if token != expected or query.get("token") != [token]:
            self.refused.append(f"token does not match the upload's SHA-256: {parts.path}")
            return 400, b'{"error": "bad token"}'
        direct_path = f"/v/t62.{secrets.randbelow(10**4)}-24/{secrets.token_hex(12)}.enc?ccb=11-4"
        with self._lock:
            self.uploads.append(Upload(segments[1], token, direct_path, body))
        answer = {"url": f"https://{MEDIA_HOST}{direct_path}&mms3=true", "direct_path": direct_path}
        return 200, json.dumps(answer).encode()

    def download(self, direct_path: str) -> Upload:
        with self._lock:
            for upload in self.uploads:
                if upload.direct_path == direct_path:
                    return upload
        raise MediaError(f"nothing was uploaded at {direct_path!r}")

    def open(self, message) -> bytes:
        """What the phone shows for a media message (waE2E.Message): download, check, decrypt, check."""
        for field, info in KEY_INFO.items():
            if message.HasField(field):
                part = getattr(message, field)
                break
        else:
            raise MediaError("the message holds no media")
        upload = self.download(part.directPath)
        if MMS_TYPE[upload.mms_type] != field:
            raise MediaError(f"a {field} points to an upload of type {upload.mms_type}")
        if hashlib.sha256(upload.blob).digest() != part.fileEncSHA256:
            raise MediaError("fileEncSHA256 does not match the uploaded blob")
        plaintext = decrypt(upload.blob, part.mediaKey, info)
        if hashlib.sha256(plaintext).digest() != part.fileSHA256:
            raise MediaError("fileSHA256 does not match the decrypted media")
        if part.fileLength != len(plaintext):
            raise MediaError("fileLength does not match the decrypted media")
        return plaintext
