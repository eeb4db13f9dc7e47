"""What a request says, read and checked for the views of api.py: its JSON body, its multipart upload,
its yes/no flags and the fields several endpoints share. `BadRequest` says what to change (api.py
answers it as 400 `bad_request`); a recipient that is not one raises recipients.InvalidRecipient.
"""

from __future__ import annotations

import json
import unicodedata

from flask import current_app, request

import recipients

MAX_TEXT_CHARS = 65536  # WhatsApp's own limit for a text message
MAX_CAPTION_CHARS = 1024  # what WhatsApp's apps let a caption have
MAX_MESSAGE_ID_CHARS = 128  # WhatsApp ids are 16 to 32 characters; anything far longer is not one
MAX_EMOJI_CHARS = 32  # the longest emoji sequences (families, flags with tags) stay well under this


class BadRequest(ValueError):
    """The request's content is wrong; the message says what to change."""


def json_body(allowed: set[str], required: set[str]) -> dict:
    """The request's JSON object with only `allowed` fields and every `required` one."""
    body = _parse_json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown fields: {_names(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(body)
    if missing:
        raise BadRequest(f"missing fields: {', '.join(sorted(missing))}")
    return body


def _parse_json():
    """The request's JSON, or None when it is not JSON. 413 past MAX_UPLOAD_BYTES, chunked or not."""
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A chunked body has no Content-Length to refuse up front: Werkzeug stops reading at the limit
        # and hands over the truncated part. One more read says whether the body went on.
        request.stream.read(1)  # raises RequestEntityTooLarge when it did
    try:
        return json.loads(data)
    except RecursionError:
        # Python's JSON parser recurses once per nesting level; [[[[...]]]] 100,000 deep is not a message.
        raise BadRequest("the JSON is nested too deeply") from None
    except ValueError:  # malformed JSON, or bytes that are no Unicode text
        return None


def multipart_file(fields: set[str], what: str):
    """(recipient, the upload, its bytes) of a multipart send; BadRequest naming what is wrong."""
    unknown = (set(request.form) - fields) | (set(request.files) - {"file"})
    if unknown:
        raise BadRequest(f"unknown fields: {_names(unknown)}")
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise BadRequest(f"a multipart field 'file' with {what} is required")
    to = recipients.recipient(request.form.get("to", ""))
    data = upload.read()
    if not data:
        raise BadRequest("the file is empty")
    return to, upload, data


_YES, _NO = ("1", "true", "yes"), ("", "0", "false", "no")


def flag(name: str) -> bool:
    """A yes/no query parameter. Anything else is a 400, not a silent no: `?force=ture` must not
    quietly run the save that is not forced."""
    value = request.args.get(name, "").lower()
    if value not in _YES + _NO:
        raise BadRequest(f"{name} must be one of {', '.join(_YES)} (yes) or {', '.join(_NO[1:])} (no)")
    return value in _YES


def text(value) -> str:
    """A message's text: a string with something besides white space, within WhatsApp's limit."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("text must be a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise BadRequest(f"text is longer than {MAX_TEXT_CHARS} characters")
    return value


def emoji(value) -> str:
    """One emoji, or "" (removes the reaction). Joiners, variation selectors and tag characters are what
    families, skin tones and flags are made of (format and mark characters); controls, spaces, surrogates
    and unassigned code points are not part of any emoji."""
    if not isinstance(value, str) or len(value) > MAX_EMOJI_CHARS or any(
        unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp") for ch in value
    ):
        raise BadRequest(f"emoji must be one emoji (at most {MAX_EMOJI_CHARS} characters), or \"\" to remove "
                         "the reaction")
    return value


def message_id(value, field: str) -> str:
    """A message id as /api/send or the webhook gave it: ASCII letters and digits."""
    if not isinstance(value, str) or not value.isascii() or not value.isalnum() \
            or not 0 < len(value) <= MAX_MESSAGE_ID_CHARS:
        raise BadRequest(f"{field} must hold message ids (letters and digits, as /api/send or the webhook gave them)")
    return value


def optional_recipient(value, field: str) -> str | None:
    """A recipient that may be left out (None); a wrong one names its field."""
    if value is None:
        return None
    try:
        return recipients.recipient(value)
    except recipients.InvalidRecipient as exc:
        raise recipients.InvalidRecipient(f"{field}: {exc}") from None


def caption() -> str | None:
    """A multipart send's optional caption."""
    value = request.form.get("caption")
    if value is not None and len(value) > MAX_CAPTION_CHARS:
        raise BadRequest(f"caption is longer than {MAX_CAPTION_CHARS} characters")
    return value or None


def _names(names: set) -> str:
    """Field names as the client sent them, each shortened: they are the client's text, not ours."""
    shown = [recipients.quoted(name, limit=40) for name in sorted(names)[:10]]
    return ", ".join(shown) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
