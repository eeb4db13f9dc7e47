"""The one place that hides secrets in text: log lines, error messages, status answers.

`mask(text, secrets)` replaces known secret values and anything that looks like one (a bearer
token, a URL's password, a snapshot-sized run of base64); `redact_url(url)` shows a database URL
with its password as ***. The log filter (logsetup.py), the Platform API client and the PostgreSQL
session all go through these two functions.
"""

from __future__ import annotations

import re
from typing import Iterable

MASK = "[redacted]"

# A session snapshot is kilobytes of base64; no legitimate text carries 200 of those in a row.
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)\b(postgres(?:ql)?|https?)://([^:/@\s]+):([^@\s]+)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret value (longest first, so a secret that contains another is
    masked whole) and every secret-looking value replaced by [redacted]."""
    text = str(text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}://{m[2]}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    return _LONG_BASE64.sub(MASK, text)


def redact_url(url: str) -> str:
    """`url` fit for a log line: the password (in the authority or the query) is ***.

    Parsed by hand rather than with urlsplit, because a password with an unencoded '#', '?' or '/'
    makes urlsplit cut the authority short and leak the rest.
    """
    try:
        scheme, sep, rest = str(url).strip().partition("://")
        if not sep:
            return "***"
        userinfo, at, hostpart = rest.rpartition("@")  # the last '@' ends the userinfo
        if at:
            user = userinfo.split(":", 1)[0]
            rest = f"{user}:***@{hostpart}" if ":" in userinfo else f"{user}@{hostpart}"
        return f"{scheme}://" + _QUERY_PASSWORD.sub(r"\1***", rest)
    except Exception:  # never let a log line raise, and never echo what we could not handle
        return "postgres://***"
