"""Groups (whatsmeow group.go): the groups the account is in.

`GetJoinedGroups` asks `<iq xmlns="w:g2" type="get" to="@g.us"><participating><participants/>
<description/></participating>` and parses each `<group id subject ...>` with its `<participant>`s.
A query, not a send: not counted by the send pacer. Sends to a group take its JID as `to` (send.py).
"""

from __future__ import annotations

from recipients import jid_text
from whatsapp.refused import calling
from whatsapp.states import CONNECTED


class Groups:
    """Mixin of Connection (client.py)."""

    def joined_groups(self) -> list[dict]:
        with self._lock:
            client = self._live_client(CONNECTED)
            groups = calling(client.get_joined_groups)
        return sorted(({"jid": jid_text(g.JID), "subject": g.GroupName.Name, "members": len(g.Participants)}
                       for g in groups), key=lambda g: (g["subject"].lower(), g["jid"]))
