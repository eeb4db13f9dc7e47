"""The webhook's signature: every call to WEBHOOK_URL carries `X-Signature-256: sha256=<hex>`
(HMAC-SHA256 of the exact body with WEBHOOK_SECRET) when a secret is set. What is sent (the event
vocabulary, incoming messages among them) and the queue that delivers it live in events.py.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Signature-256"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>` HMAC of the exact body bytes (the receiver recomputes it over the raw body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
