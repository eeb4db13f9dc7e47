"""The one place that hides secrets in text: log lines, error messages, status answers.

`mask(text, secrets)` replaces known secret values and anything that looks like one (a bearer
token, a URL's password, a snapshot-sized run of base64); `redact_url(url)` shows a database URL
with its password as ***. The log filter (logsetup.py), the Platform API client and the PostgreSQL
session all go through these two functions.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable

MASK = "[redacted]"

#: Secrets shorter than this are masked only where they stand as a word of their own: a 3-character
#: API key must not appear in a log, but masking it inside every longer word would mangle the logs.
WHOLE_WORD_BELOW = 8
#: A run of token characters this long that occurs inside a secret is a piece of it (a server that
#: echoes a request may quote 200 characters of a snapshot): masked too.
PIECE = 12
_TOKENISH = re.compile(r"[A-Za-z0-9+/=_-]{%d,}" % PIECE)

# A session snapshot is kilobytes of base64; no legitimate text carries 200 of those in a row.
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)\b(postgres(?:ql)?|https?)://([^:/@\s]+):([^@\s]+)@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def mask(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret value (longest first, so a secret that contains another is
    masked whole; short ones as whole words only), every piece of a long one, and every
    secret-looking value replaced by [redacted]."""
    text = str(text)
    long_secrets, short_words = _prepared(frozenset(s for s in secrets if s))
    for secret in long_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if short_words is not None:
        text = short_words.sub(MASK, text)
    pieces_of = [s for s in long_secrets if len(s) >= PIECE]
    if pieces_of:
        text = _TOKENISH.sub(lambda m: MASK if any(m[0] in s for s in pieces_of) else m[0], text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}://{m[2]}:{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    return _LONG_BASE64.sub(MASK, text)


@functools.lru_cache(maxsize=32)
def _prepared(secrets: frozenset) -> tuple[tuple[str, ...], re.Pattern | None]:
    ordered = sorted(secrets, key=len, reverse=True)
    short = [v for v in ordered if len(v) < WHOLE_WORD_BELOW]
    # A word: not preceded or followed by a letter, digit, '_' or '-' (what keys are made of).
    words = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(v) for v in short) + r")(?![\w-])") if short else None
    return tuple(v for v in ordered if len(v) >= WHOLE_WORD_BELOW), words


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
