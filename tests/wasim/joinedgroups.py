"""The groups the account is in (whatsmeow group.go `GetJoinedGroups`): `<iq xmlns="w:g2" type="get"
to="g.us"><participating><participants/><description/></participating>`, answered with
`<groups><group id subject s_t s_o creation creator size><participant jid lid [type]/>...</group>...`,
each group as the metadata query shows it (groups.py, whatsmeow `parseGroupNode`).
"""

from __future__ import annotations

from .binxml import JID, Node


def handle_iq(sim, conn, node: Node) -> bool:
    """The participating query; False when the w:g2 IQ is another one."""
    to = node.attrs.get("to")
    if not isinstance(to, JID) or to.user or to.server != "g.us" or node.child("participating") is None:
        return False
    with sim._cond:
        sim.joined_groups_queries += 1
    own = sim.phone.phone_number
    groups = [group_node(sim, g) for g in sim.groups.groups.values() if own in g.members]
    conn.send(Node("iq", {"from": to, "type": "result", "id": node.attrs.get("id")}, [Node("groups", {}, groups)]))
    return True


def group_node(sim, group) -> Node:
    participants = []
    for number in group.members:
        contact = sim.peer(number)
        attrs = {"jid": JID.parse(contact.jid), "lid": JID.parse(contact.lid)}
        if number == group.creator:
            attrs["type"] = "superadmin"
        participants.append(Node("participant", attrs))
    creator = JID.parse(sim.peer(group.creator).jid)
    return Node("group", {
        "id": group.jid.split("@")[0], "subject": group.subject, "s_t": str(group.created), "s_o": creator,
        "creation": str(group.created), "creator": creator, "size": str(len(group.members)),
    }, participants)
