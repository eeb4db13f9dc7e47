"""Who a message goes to: a phone number in international form, or a WhatsApp JID.

Numbers are checked with `phonenumbers` (Google's libphonenumber, installed with neonize) so a typo
gets a clear 400 instead of a message sent into the void.
"""

from __future__ import annotations

import re

import phonenumbers

from textsafe import proto_text

_JID = re.compile(r"^[0-9]{5,20}(?::[0-9]{1,3})?@(s\.whatsapp\.net|g\.us|lid)$|^[0-9]{5,20}-[0-9]{5,15}@g\.us$")


class InvalidRecipient(ValueError):
    pass


def quoted(text: str, limit: int = 32) -> str:
    """The client's text for an error message: a short prefix, escaped (repr), never all of it."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def phone_digits(text: str) -> str:
    """`+1 (555) 123-4567` → `15551234567`, or InvalidRecipient saying why."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRecipient("a phone number is required, in international form like +15551234567")
    raw = text.strip()
    if not raw.startswith("+"):
        raw = "+" + raw
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise InvalidRecipient(f"{quoted(text)} is not a phone number in international form like +15551234567") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidRecipient(f"{quoted(text)} is not a valid phone number (country code first, like +15551234567)")
    return f"{number.country_code}{number.national_number}"


def recipient(text: str) -> str:
    """A JID as given (`…@s.whatsapp.net`, `…@g.us`, `…@lid`), or a phone number as its digits."""
    if isinstance(text, str) and "@" in text:
        if not _JID.match(text.strip()):
            raise InvalidRecipient(f"{quoted(text)} is not a WhatsApp address (number@s.whatsapp.net or group@g.us)")
        return text.strip()
    return phone_digits(text)


def jid_text(jid) -> str:
    """neonize's JID message as text: `user[:device]@server`; empty for an empty JID."""
    if not jid.User:
        return ""
    device = f":{jid.Device}" if jid.Device else ""
    return f"{proto_text(jid.User)}{device}@{proto_text(jid.Server)}"
