"""The owner's page (qrpage.py) as HTML, in process: what it shows in each situation and what it never
shows. The page in a real browser against the real bot: tests/test_qr_browser.py."""

from __future__ import annotations

import events
from qrpage import qr_page


class StubConnection:
    def __init__(self, state: str, **status) -> None:
        self.state = state
        self.last_qr = None
        self._status = {"connectedSince": None, "bannedUntil": None, "unreachable": None, **status}

    def status(self) -> dict:
        return dict(self._status)


class StubSession:
    def __init__(self, status: dict, jid: str | None = "15551234567:12@s.whatsapp.net") -> None:
        self._status, self._jid = status, jid

    def status(self) -> dict:
        return self._status

    def device_jid(self):
        return self._jid


HEROKU_STATUS = {"store": {"kind": "heroku", "limit": 65536, "has_value": True, "value_size": 5928,
                           "last_saved_at": None},
                 "storedSnapshot": {"valid": True, "tier": "core", "encodedSize": 5928}, "lastSave": None}


def test_an_outage_shows_since_when_and_the_cause_in_our_words_without_the_librarys_text():
    connection = StubConnection("reconnecting", unreachable={
        "cause": "WhatsApp does not answer (the network, a proxy or WhatsApp itself is down)",
        "detail": "cannot reach proxy user:pa55@10.0.0.1:3128", "since": "2026-11-25T23:19:04Z",
        "seconds": 75.0, "reported": True})
    hub = events.Events()
    hub.emit("unreachable", {"cause": "WhatsApp does not answer", "seconds": 60.2, "since": "2026-11-25T23:19:04Z"})
    page = qr_page(connection, StubSession(HEROKU_STATUS), hub)
    assert "Out of reach" in page and "since 2026-11-25 23:19:04 UTC: WhatsApp does not answer" in page
    assert "pa55" not in page and "10.0.0.1" not in page
    assert "WhatsApp out of reach for 60.2 s" in page
    assert "reconnecting to WhatsApp" in page
    assert "5,928 bytes of the 64.0 KB all config vars share (tier core)" in page
    assert "before this start (restored from it)" in page
    assert "off (set WEBHOOK_URL" in page


def test_text_from_outside_is_escaped_and_message_texts_never_shown():
    hub = events.Events()
    hub.enqueue(events.envelope("message", {"from": "<img src=x onerror=alert(1)>@s.whatsapp.net",
                                            "type": "text", "text": "secret text <b>"}))
    hub.emit("save_failed", {"during": "save (new pairing)", "error": "AuthenticationFailed", "status": 401,
                             "message": "Heroku's Platform API refused the token", "hint": "token=abc"})
    page = qr_page(StubConnection("connected", connectedSince="2026-11-25T23:19:04Z"),
                   StubSession({"store": {"kind": "postgres"}}), hub)
    assert "<img" not in page and "&lt;img src=x" in page
    assert "secret text" not in page and "token=abc" not in page
    assert "save (new pairing) failed: AuthenticationFailed (HTTP 401)" in page
    assert "live in PostgreSQL" in page and "Connected: this bot is paired" in page
