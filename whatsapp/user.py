"""Questions about accounts (whatsmeow user.go): which phone numbers are on WhatsApp.

`IsOnWhatsApp` is one usync query (mode "query", context "interactive") with a `<contact>` per number,
`+` and the digits; WhatsApp answers each with type "in" or "out" and the account's JID (its LID when
asked for LID addressing, as whatsmeow now asks). neonize passes on the query, the JID and "in"; the
phone-number JID follows from the number asked about. Counted by the send pacer: number checks in bulk
are what WhatsApp watches for from spammers.
"""

from __future__ import annotations

from recipients import jid_text
from whatsapp.refused import calling


class Users:
    """Mixin of Connection (client.py)."""

    def on_whatsapp(self, digits: list[str]) -> list[dict]:
        """For each number (digits, country code first): whether it has a WhatsApp account, its JIDs."""
        with self._lock:
            client = self._sending_client("a number check")
            answers = calling(client.is_on_whatsapp, *(f"+{d}" for d in digits))
        found = {answer.Query.lstrip("+").split("@")[0]: answer for answer in answers}
        result = []
        for number in digits:
            answer = found.get(number)
            on = bool(answer is not None and answer.IsIn)
            lid = jid_text(answer.JID) if on and answer.JID.Server == "lid" else None
            result.append({"number": f"+{number}", "onWhatsApp": on,
                           "jid": f"{number}@s.whatsapp.net" if on else None, "lid": lid})
        return result
