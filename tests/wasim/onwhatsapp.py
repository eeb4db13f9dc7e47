"""The usync "contact" query: which phone numbers have a WhatsApp account (whatsmeow user.go
`IsOnWhatsApp` and `usync`).

The client asks `<usync mode="query" context="interactive"><query><contact addressing_mode="lid"/>
<business>..</business>...</query><list><user><contact>+15551234567@c.us</contact></user>...</list>`.
Each answer `<user>` names the account (`jid`: its LID when the query asks for LID addressing, with the
phone number as `pn_jid`) and repeats the query in `<contact type="in"|"out">`; whatsmeow skips a user
without `jid` and `pn_jid`, so one not on WhatsApp is named by its phone-number JID.
"""

from __future__ import annotations

from .binxml import JID, Node


def contact_users(usync: Node, lookup, unknown: set[str]) -> list[Node]:
    """Answer `<user>` nodes for a contact query. `lookup(number)` gives (pn jid, lid jid) of an
    account; numbers (digits) in `unknown` have none."""
    query = usync.child("query")
    lid_mode = any(q.tag == "contact" and q.attr("addressing_mode") == "lid" for q in query.children())
    users = []
    for user in usync.child("list").children():
        contact = user.child("contact")
        if contact is None or not isinstance(contact.content, (bytes, str)):
            continue
        asked = contact.content.decode() if isinstance(contact.content, bytes) else contact.content
        number = asked.split("@")[0].lstrip("+")
        if not number.isdigit():
            users.append(Node("user", {}, [Node("contact", {"type": "out"}, asked.encode())]))
            continue
        pn = JID(number, "s.whatsapp.net")
        if number in unknown:
            users.append(Node("user", {"jid": pn}, [Node("contact", {"type": "out"}, asked.encode())]))
            continue
        pn_text, lid_text = lookup(number)
        attrs = {"jid": JID.parse(lid_text), "pn_jid": JID.parse(pn_text)} if lid_mode else {"jid": JID.parse(pn_text)}
        users.append(Node("user", attrs, [Node("contact", {"type": "in"}, asked.encode())]))
    return users
