"""The simulator's peer side (tests/wasim/peer_events.py, download.py) against the real neonize
client in a subprocess: what a peer sends arrives as whatsmeow parses it, neonize's own download_any
fetches and checks what the peer uploaded, and neonize's reject_call sends what call.go's RejectCall
sends. These pin the simulator to whatsmeow before the bot's tests rely on it.
"""

from __future__ import annotations

import hashlib

from tests.test_wasim import _copy_session, paired, start_client  # noqa: F401 (fixtures)
from tests.wasim import peer_events as peer

CONTACT = "4915112345678"


def _client(sim, paired, start_client, tmp_path):  # noqa: F811
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    return client, jid


def test_a_peers_image_is_downloaded_and_checked_by_neonize_itself(sim, paired, start_client, tmp_path):  # noqa: F811
    client, jid = _client(sim, paired, start_client, tmp_path)
    data = bytes(range(256)) * 4001  # not a multiple of the AES block
    message_id, upload = peer.send_media(sim, jid, CONTACT, "image", data, mimetype="image/jpeg",
                                         caption="the broken part", width=640, height=480)
    got = client.wait_event("message", id=message_id)
    assert got["type"] == "media" and got["media_type"] == "image" and "imageMessage" in got["fields"]

    client.command("download", id=message_id)
    downloaded = client.wait_event("downloaded", id=message_id, timeout=30)
    assert downloaded == {"event": "downloaded", "id": message_id, "length": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}
    assert sim.peer_media.downloads and not sim.peer_media.refused


def test_expired_media_is_refused_to_neonize_as_whatsapp_does(sim, paired, start_client, tmp_path):  # noqa: F811
    client, jid = _client(sim, paired, start_client, tmp_path)
    message_id, upload = peer.send_media(sim, jid, CONTACT, "document", b"%PDF-1.4 gone", mimetype="application/pdf",
                                         file_name="invoice.pdf")
    client.wait_event("message", id=message_id)
    sim.peer_media.make_gone(upload, 404)
    client.command("download", id=message_id)
    error = client.wait_event("command_error", timeout=30)
    assert "404" in error["error"], error


def test_reactions_edits_and_revokes_arrive_as_whatsmeow_unwraps_them(sim, paired, start_client, tmp_path):  # noqa: F811
    client, jid = _client(sim, paired, start_client, tmp_path)
    original = sim.deliver_text(jid, CONTACT, "see you at 5")

    reaction = peer.react(sim, jid, CONTACT, original, "👍", from_me=True)
    got = client.wait_event("message", id=reaction)
    assert got["type"] == "reaction" and got["reaction"] == [original, "👍"]

    edit = peer.edit(sim, jid, CONTACT, original, "see you at 6")
    got = client.wait_event("message", id=edit)
    # types/events UnwrapRaw: the EditedMessage wrapper is gone, the MESSAGE_EDIT protocol message stays
    assert got["is_edit"] and got["edit_attr"] == "1"
    assert got["protocol_type"] == 14 and got["protocol_key"] == original and got["edited_text"] == "see you at 6"

    revoke = peer.revoke(sim, jid, CONTACT, original)
    got = client.wait_event("message", id=revoke)
    assert got["edit_attr"] == "7" and got["protocol_type"] == 0 and got["protocol_key"] == original


def test_a_call_offer_reaches_neonize_and_its_reject_reaches_the_simulator(sim, paired, start_client, tmp_path):  # noqa: F811
    client, jid = _client(sim, paired, start_client, tmp_path)
    call_id = peer.offer_call(sim, jid, CONTACT)
    offer = client.wait_event("call_offer", id=call_id)
    assert offer["caller"] == f"{CONTACT}@s.whatsapp.net" and offer["platform"] == "android"

    client.command("reject_call", id=call_id)
    client.wait_event("call_rejected", id=call_id)
    rejects = sim.wait_until(lambda: peer.call_rejects(sim, call_id), 15, "the client's reject")
    node = rejects[0]
    reject = node.children()[0]
    assert str(node.attrs["to"]) == f"{CONTACT}@s.whatsapp.net"
    assert str(reject.attrs["call-creator"]) == f"{CONTACT}@s.whatsapp.net" and reject.attrs["count"] == "0"
