"""The WhatsApp simulator against the real, unmodified neonize client in subprocesses.

One account is paired once per module (QR scan by the simulated phone); each later test logs in
from its own copy of that database, so tests stay independent of each other's side effects.
"""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from tests.wasim import SimulatorError
from tests.wasim.clientproc import ClientProcess
from tests.wasim.phone import QRPayload

DB_NAME = "neonize.db"


def _device_rows(db_path: str) -> list[tuple]:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT jid, lid, platform FROM whatsmeow_device").fetchall()


def _copy_session(src_dir: str, dst_dir: str) -> str:
    os.makedirs(dst_dir, exist_ok=True)
    for name in os.listdir(src_dir):
        if name.startswith(DB_NAME):  # the db and any -wal/-shm beside it
            shutil.copy2(os.path.join(src_dir, name), os.path.join(dst_dir, name))
    return os.path.join(dst_dir, DB_NAME)


@pytest.fixture
def start_client(sim, tmp_path):
    clients = []

    def start(db_path: str) -> ClientProcess:
        client = ClientProcess(db_path, sim.client_env(), str(tmp_path / f"client{len(clients)}.log"))
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop()


@pytest.fixture(scope="module")
def paired(sim, tmp_path_factory):
    """Pairs a fresh neonize database by QR; returns (session dir, device jid, pairing record)."""
    session_dir = str(tmp_path_factory.mktemp("paired"))
    db_path = os.path.join(session_dir, DB_NAME)
    client = ClientProcess(db_path, sim.client_env(), os.path.join(session_dir, "client.log"))
    try:
        loaded = client.wait_event("loaded")
        refs = sim.wait_for_qr(timeout=20)
        qr = client.wait_event("qr")["code"]
        jid = sim.scan_latest_qr(qr)
        pair = client.wait_event("pair_status", timeout=20)
        connected = client.wait_event("connected", timeout=20)
        sim.wait_logged_in(jid, timeout=20)
        record = {"loaded": loaded, "refs": refs, "qr": qr, "pair": pair, "connected": connected,
                  "events": list(client.events)}
    finally:
        client.stop()
    return session_dir, jid, record


def test_client_runs_the_patched_copy_of_neonize(sim, paired):
    _, _, record = paired
    assert record["loaded"]["neonize_file"].startswith(sim.pythonpath + os.sep)


def test_qr_pairing_lands_the_device_in_the_database(sim, paired):
    session_dir, jid, record = paired
    qr = QRPayload.parse(record["qr"])
    assert qr.ref == record["refs"][0]  # the QR shows the first ref the simulator sent
    assert record["pair"]["jid"] == jid and record["pair"]["error"] == ""
    names = [e["event"] for e in record["events"]]
    assert names.index("pair_status") < names.index("connected")
    assert _device_rows(os.path.join(session_dir, DB_NAME)) == [
        (jid, sim.devices[jid].lid.__str__(), "android")
    ]
    device = sim.devices[jid]
    assert len(device.prekeys) >= 30 and device.signed_prekey is not None  # its post-login upload


def test_scan_refuses_a_qr_it_never_sent(sim, paired):
    _, _, record = paired
    forged = record["qr"].replace(QRPayload.parse(record["qr"]).ref, "2@never-sent", 1)
    with pytest.raises(SimulatorError):
        sim.scan_qr(forged)
    with pytest.raises(SimulatorError):
        sim.scan_latest_qr(None)


def test_restart_from_the_stored_database_logs_in_without_a_qr(sim, paired, start_client, tmp_path):
    session_dir, jid, _ = paired
    logins = sim.login_count(jid)
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    assert "qr" not in client.names() and "pair_status" not in client.names()
    assert sim.login_count(jid) == logins + 1


def test_stream_replaced_is_reported_and_not_retried(sim, paired, start_client, tmp_path):
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    logins = sim.login_count(jid)
    sim.replace_stream(jid)
    client.wait_event("stream_replaced")
    # whatsmeow expects this disconnect and must not reconnect on its own.
    with pytest.raises(TimeoutError):
        sim.wait_logged_in(jid, timeout=2.5)
    assert sim.login_count(jid) == logins
    assert "logged_out" not in client.names()


def test_dropped_connection_reconnects_by_itself(sim, paired, start_client, tmp_path):
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    first = client.wait_event("connected")
    sim.wait_logged_in(jid)
    logins = sim.login_count(jid)
    after = len(client.events)
    sim.drop(jid)
    client.wait_event("disconnected", after=after)
    client.wait_event("connected", after=after, timeout=20)
    sim.wait_logged_in(jid)
    assert sim.login_count(jid) == logins + 1
    assert first is not None and "logged_out" not in client.names()


def test_temporary_ban_on_login(sim, paired, start_client, tmp_path):
    session_dir, jid, _ = paired
    sim.temp_ban(3600, code=101)
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    ban = client.wait_event("temporary_ban")
    # Wire code 101 is whatsmeow's TempBanSentToTooManyPeople, neonize's enum value 1.
    assert ban["code"] == 1 and ban["expire"] == 3600, ban
    assert "connected" not in client.names()


def test_logout_while_connected_then_401_on_the_next_login(sim, start_client, tmp_path):
    # Its own pairing: logging a device out is for good.
    db_path = str(tmp_path / "a" / DB_NAME)
    os.makedirs(os.path.dirname(db_path))
    client = start_client(db_path)
    after = len(sim.qr_refs)
    sim.wait_for_qr(after=after, timeout=20)
    jid = sim.scan_latest_qr(client.wait_event("qr")["code"])
    client.wait_event("connected", timeout=20)
    sim.wait_logged_in(jid)
    client.stop()
    backup = _copy_session(os.path.dirname(db_path), str(tmp_path / "b"))

    client = start_client(db_path)
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    sim.logout(jid)
    out = client.wait_event("logged_out")
    assert out["on_connect"] is False
    # whatsmeow deletes the device itself, just after dispatching the event.
    sim.wait_until(lambda: _device_rows(db_path) == [], 10, "the device row to be deleted")
    client.stop()

    restored = start_client(backup)  # e.g. an old snapshot restored after the logout
    out = restored.wait_event("logged_out")
    # Wire reason 401 is whatsmeow's ConnectFailureLoggedOut, neonize's enum LOGGED_OUT = 2.
    assert out["on_connect"] is True and out["reason"] == 2, out
    assert "connected" not in restored.names()


def test_pairing_by_phone_code(sim, start_client, tmp_path):
    db_path = str(tmp_path / DB_NAME)
    client = start_client(db_path)
    client.wait_event("qr", timeout=20)  # connected and waiting to be linked
    requests_before = len(sim.pair_code_requests)
    client.command("pair_phone", phone="+1 555 000 1111")
    code = client.wait_event("pair_code")["code"]
    assert len(code) == 9 and code[4] == "-"
    request = sim.pair_code_requests[requests_before]
    assert request["phone"] == "15550001111" and request["show_push_notification"] is True
    sim.enter_pair_code(code)  # the user types the code on the phone
    pair = client.wait_event("pair_status", timeout=20)
    client.wait_event("connected", timeout=20)
    sim.wait_logged_in(pair["jid"])
    assert pair["error"] == "" and [r[0] for r in _device_rows(db_path)] == [pair["jid"]]


def test_incoming_text_reaches_the_client_and_its_reply_reaches_the_simulator(
    sim, paired, start_client, tmp_path
):
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    client.wait_event("connected")
    sim.wait_logged_in(jid)

    message_id = sim.deliver_text(jid, "4915112345678", "hello from the simulator")
    got = client.wait_event("message")
    assert got["id"] == message_id and got["text"] == "hello from the simulator"
    assert got["sender"] == "4915112345678@s.whatsapp.net"

    before = len(sim.sent_messages)
    client.command("send", to="4915112345678@s.whatsapp.net", text="reply from neonize")
    sent_id = client.wait_event("sent")["id"]  # neonize got the server's ack
    sent = sim.wait_for_sent(after=before)
    assert sent.id == sent_id and sent.text == "reply from neonize"
    assert sent.recipient_pn == "4915112345678@s.whatsapp.net"


def test_send_to_a_new_contact_fetches_keys_and_is_decrypted(sim, paired, start_client, tmp_path):
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, str(tmp_path / "s")))
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    before = len(sim.sent_messages)
    client.command("send", to="33612345678@s.whatsapp.net", text="first contact")
    client.wait_event("sent")
    sent = sim.wait_for_sent(after=before)
    assert sent.text == "first contact" and sent.recipient_pn == "33612345678@s.whatsapp.net"
    assert sent.node.child("participants") is not None


def _connected_copy(sim, paired, start_client, dst):
    session_dir, jid, _ = paired
    client = start_client(_copy_session(session_dir, dst))
    client.wait_event("connected")
    sim.wait_logged_in(jid)
    return client, jid


def _enc_types_for(sent, user: str) -> list[str]:
    """The enc types of a client's message for the devices of `user` (phone number or LID user)."""
    found = []
    for to in sent.node.child("participants").children() if sent.node.child("participants") else []:
        if to.attrs["jid"].user == user or to.attrs["jid"].user == "8" + user:
            found += [enc.attrs["type"] for enc in to.children() if enc.tag == "enc"]
    return found


def _converse(sim, client, jid, peer: str, tag: str) -> None:
    """peer -> client (pkmsg), client -> peer, peer -> client again on the ratcheted session (msg)."""
    first = sim.deliver_text(jid, peer, f"{tag} 1", session="keep")
    client.wait_event("message", id=first, text=f"{tag} 1")
    assert sim.peers.recent[first].first_type == "pkmsg"
    before = len(sim.sent_messages)
    client.command("send", to=f"{peer}@s.whatsapp.net", text=f"{tag} reply")
    sent = sim.wait_for_sent(after=before)
    assert sent.text == f"{tag} reply"
    assert _enc_types_for(sent, peer) == ["msg"], "the client answers on the session the peer started"
    second = sim.deliver_text(jid, peer, f"{tag} 2", session="keep")
    assert sim.peers.recent[second].first_type == "msg", "acknowledged by the reply: no pre-key message"
    client.wait_event("message", id=second, text=f"{tag} 2")
    assert sim.retries.for_message(first) == [] and sim.retries.for_message(second) == []


def test_a_peer_keeps_its_session_and_both_sides_ratchet(sim, paired, start_client, tmp_path):
    client, jid = _connected_copy(sim, paired, start_client, str(tmp_path / "s"))
    _converse(sim, client, jid, "4917600000001", "ratchet")
    before = len(sim.sent_messages)
    client.command("send", to="4917600000001@s.whatsapp.net", text="second reply")
    assert sim.wait_for_sent(after=before).text == "second reply"
    third = sim.deliver_text(jid, "4917600000001", "ratchet 3", session="keep")
    client.wait_event("message", id=third, text="ratchet 3")


def test_a_lost_session_costs_two_retry_rounds_and_an_old_client_loses_the_message(
    sim, paired, start_client, tmp_path
):
    # Both peers chat with one copy of the device; a second copy (the paired database, as a restore
    # from an old snapshot) no longer has their sessions.
    client, jid = _connected_copy(sim, paired, start_client, str(tmp_path / "a"))
    retrying, old = "4917600000002", "4917600000003"
    _converse(sim, client, jid, retrying, "kept")
    _converse(sim, client, jid, old, "old")
    client.stop()
    sim.set_peer(old, answers_retries=False)
    restored, _ = _connected_copy(sim, paired, start_client, str(tmp_path / "b"))

    lost = sim.deliver_text(jid, old, "never arrives", session="keep")
    late = sim.deliver_text(jid, retrying, "arrives late", session="keep")
    assert sim.peers.recent[late].first_type == "msg"
    restored.wait_event("message", id=late, text="arrives late", timeout=30)
    receipts = sim.retries.for_message(late)
    # whatsmeow retry.go: the first receipt has no keys (the peer re-sends on its session, which the
    # device cannot read), the second has them (the peer builds a new session: a pkmsg).
    assert [(r.count, r.has_keys, r.action, r.sent_type) for r in receipts] == [
        (1, False, "resent_on_session", "msg"), (2, True, "new_session_from_keys", "pkmsg")]
    assert [e["id"] for e in restored.events if e["event"] == "undecryptable"].count(late) == 2

    sim.wait_until(lambda: sim.retries.for_message(lost), 15, "the old client's retry receipt")
    undecryptable = restored.wait_event("undecryptable", id=lost)
    assert undecryptable["sender"] == f"{old}@s.whatsapp.net"
    with pytest.raises(TimeoutError):
        restored.wait_event("message", id=lost, timeout=3)
    assert [(r.count, r.action) for r in sim.retries.for_message(lost)] == [(1, "ignored_old_client")]


def test_a_client_whose_database_went_back_in_time_reuses_a_message_key_and_the_peer_drops_it(
    sim, paired, start_client, tmp_path
):
    """A restore of sessions older than the last send rewinds the sending chain: the next message
    repeats a counter the peer already used, and libsignal drops it (ErrOldCounter; whatsmeow sends
    no retry receipt for that), so the message is lost without a trace on either side."""
    peer = "4917600000041"
    client, jid = _connected_copy(sim, paired, start_client, str(tmp_path / "a"))
    _converse(sim, client, jid, peer, "before")  # the client holds a session with the peer now
    client.stop()
    saved = _copy_session(str(tmp_path / "a"), str(tmp_path / "saved"))  # a snapshot of that moment

    def send(db_dir: str, text: str):
        c = start_client(_copy_session(os.path.dirname(saved), db_dir))
        c.wait_event("connected")
        sim.wait_logged_in(jid)
        before = len(sim.sent_messages)
        c.command("send", to=f"{peer}@s.whatsapp.net", text=text)
        sent = sim.wait_for_sent(after=before)
        c.stop()
        return sent

    first = send(str(tmp_path / "b"), "first after the snapshot")
    assert first.text == "first after the snapshot" and first.dropped == {}
    again = send(str(tmp_path / "c"), "from the same snapshot again")  # the same state restored twice
    assert again.text is None and list(again.dropped) == [f"8{peer}@lid"], again.dropped
    assert "old counter" in again.dropped[f"8{peer}@lid"]


def test_groups_members_messages_and_the_clients_send_read_by_every_member_device(
    sim, paired, start_client, tmp_path
):
    alice, bob = "4917600000031", "4917600000032"
    group = sim.create_group("Sim Group", [alice, bob], devices={alice: [1]})
    client, jid = _connected_copy(sim, paired, start_client, str(tmp_path / "a"))
    first = sim.deliver_group_text(jid, group, alice, "hello group")
    assert [e.attrs["type"] for e in sim.received_node_children(first)] == ["pkmsg", "skmsg"]
    got = client.wait_event("message", id=first, text="hello group")
    assert got["chat"] == group and got["sender"] == f"{alice}@s.whatsapp.net"
    second = sim.deliver_group_text(jid, group, alice, "on the sender key alone")
    assert [e.attrs["type"] for e in sim.received_node_children(second)] == ["skmsg"]
    client.wait_event("message", id=second, text="on the sender key alone")

    before = len(sim.sent_messages)
    client.command("send", to=group, text="to the whole group")
    sent = sim.wait_for_sent(after=before)
    assert group in sim.groups.metadata_queries  # group.go getGroupInfo
    assert sent.to == group and sent.text == "to the whole group"
    assert sent.group_reads == {f"{alice}@s.whatsapp.net": "to the whole group",
                                f"{alice}:1@s.whatsapp.net": "to the whole group",
                                f"{bob}@s.whatsapp.net": "to the whole group"}
    client.stop()

    # A copy without alice's sender key (a restore): her next skmsg cannot be read; whatsmeow's first
    # retry receipt for a missing sender key carries keys (message.go: isUnavailable), so one round.
    restored, _ = _connected_copy(sim, paired, start_client, str(tmp_path / "b"))
    third = sim.deliver_group_text(jid, group, alice, "after the restore")
    restored.wait_event("message", id=third, text="after the restore", timeout=30)
    assert [(r.count, r.has_keys, r.action, r.sent_type) for r in sim.retries.for_message(third)] == [
        (1, True, "new_session_from_keys", "pkmsg")]
    fourth = sim.deliver_group_text(jid, group, alice, "sender key known again")
    restored.wait_event("message", id=fourth, text="sender key known again")
    assert sim.retries.for_message(fourth) == []


def test_the_server_asks_for_a_new_batch_when_its_pool_runs_low(sim, paired, start_client, tmp_path):
    # Last of the module's client tests: it spends the device's pool of one-time keys.
    client, jid = _connected_copy(sim, paired, start_client, str(tmp_path / "s"))
    device = sim.devices[jid]
    batches = len(device.pool.batches)
    assert batches == 1 and len(device.pool.batches[0]) == 812  # prekeys.go: 812 after pairing
    peer = sim._contact("4917600000004")
    while len(device.pool) >= 5:
        sim.peers.fetch_bundle(device, peer)  # other people's phones starting sessions
    # notification.go handleEncryptNotification: under MinPreKeyCount (5) -> a batch of 50.
    sim.wait_until(lambda: len(device.pool.batches) > batches, 20, "the client's new batch")
    assert len(device.pool.batches[-1]) == 50 and len(device.pool) == 4 + 50
    assert device.pool.batches[-1][0] == 813 and device.pool.low_notices == 1
    assert device.pool.conflicts == []
    for n in range(5):  # the 4 keys left of the first batch, then the first of the new one
        message = sim.deliver_text(jid, f"491760000002{n}", f"key {n}", session="keep")
        client.wait_event("message", id=message)
        assert sim.retries.for_message(message) == []
    assert device.pool.handed_ids()[-1] == 813


# ---------------------------------------------------------------- the simulator's own parts


def test_binary_xml_round_trip_covers_every_encoding():
    from tests.wasim.binxml import JID, Node, marshal, unmarshal

    node = Node("iq", {"id": "12.34-5", "type": "result", "x": "ABC0123F", "name": "plain text",
                       "to": JID("", "s.whatsapp.net"), "jid": JID("15550001111", "s.whatsapp.net", 7),
                       "lid": JID("999", "lid", 3)},
                [Node("ref", {}, b"\x00" * 300_000), Node("conflict", {"type": "replaced"})])
    data = marshal(node)
    assert data[0] == 0 and unmarshal(data) == node


def test_xeddsa_signatures_verify_and_tampering_is_caught():
    from tests.wasim import xeddsa

    key = xeddsa.KeyPair()
    signature = key.sign(b"details")
    assert xeddsa.verify(key.pub, b"details", signature)
    assert not xeddsa.verify(key.pub, b"detailz", signature)
    assert not xeddsa.verify(xeddsa.KeyPair().pub, b"details", signature)


def test_signal_session_round_trip_between_two_simulated_users():
    from tests.wasim.signalsession import Contact, PreKeyBundle, pad_v2, unpad_v2

    alice, bob = Contact("1@s.whatsapp.net", "81@lid"), Contact("2@s.whatsapp.net", "82@lid")
    material = bob.bundle_nodes_material()
    bundle = PreKeyBundle(material["registration_id"], material["identity"], material["skey"][0],
                          material["skey"][1], material["key"][0], material["key"][1])
    pkmsg = alice.encrypt_pkmsg(bundle, pad_v2(b"secret"))
    assert unpad_v2(bob.decrypt("pkmsg", pkmsg)) == b"secret"


def test_patcher_replaces_exactly_one_root_key_and_leaves_the_source_alone(tmp_path):
    from tests.wasim.patch import LIBRARY_NAME, WHATSAPP_ROOT_KEY, PatchError, make_patched_neonize

    src = tmp_path / "neonize"
    src.mkdir()
    (src / "__init__.py").write_text("")
    original = b"head" + WHATSAPP_ROOT_KEY + b"tail"
    (src / LIBRARY_NAME).write_bytes(original)
    new_key = bytes(range(32))
    root = make_patched_neonize(str(tmp_path / "out"), new_key, str(src))
    assert (tmp_path / "out" / "neonize" / LIBRARY_NAME).read_bytes() == b"head" + new_key + b"tail"
    assert (src / LIBRARY_NAME).read_bytes() == original and root == str(tmp_path / "out")

    (src / LIBRARY_NAME).write_bytes(original + WHATSAPP_ROOT_KEY)
    with pytest.raises(PatchError, match="exactly once"):
        make_patched_neonize(str(tmp_path / "out2"), new_key, str(src))


def test_qr_payload_parsing_rejects_what_is_not_a_linking_qr():
    from tests.wasim.phone import QRError, QRPayload

    with pytest.raises(QRError):
        QRPayload.parse("https://example.com/")
    with pytest.raises(QRError):
        QRPayload.parse("ref,bm90IGJhc2U2NA,!!,??")


def test_prekey_pool_hands_each_key_out_once_in_its_order_and_tells_when_low():
    from tests.wasim.prekeys import PreKeyPool

    lowest = PreKeyPool()
    lowest.upload({i: bytes([i]) * 32 for i in range(1, 11)})
    assert [lowest.take("p")[0] for _ in range(3)] == [1, 2, 3]
    assert lowest.take("p", key_id=9)[0] == 9 and lowest.take("p")[0] == 4  # a key a test chose
    lowest.upload({1: bytes([1]) * 32, 11: b"\x0b" * 32})  # 1 again, same material: not handed out again
    assert 1 not in lowest.keys and lowest.conflicts == [] and lowest.batches[1] == [1, 11]
    lowest.upload({2: b"other" * 6 + b"xy"})  # an id that comes back with other material
    assert lowest.conflicts == [2]
    lows = [lowest.take("p")[2] for _ in range(len(lowest))]
    assert lows.count(True) == 1 and lowest.low_notices == 1  # once, when the count went under 5
    assert lowest.take("p")[:2] == (None, None)  # empty: a bundle without a one-time key

    one, two = PreKeyPool(order="random", seed=7), PreKeyPool(order="random", seed=7)
    for pool in (one, two):
        pool.upload({i: bytes([i]) * 32 for i in range(1, 101)})
    drawn = [one.take("p")[0] for _ in range(20)]
    assert drawn == [two.take("p")[0] for _ in range(20)] and drawn != sorted(drawn)
    assert len(set(drawn)) == 20
    with pytest.raises(ValueError):
        PreKeyPool(order="highest")


def test_retry_responder_without_a_session_fetches_a_bundle_and_respects_the_limits():
    """retry.go `shouldRecreateSession` and the internal counter, on recorded decisions."""
    from types import SimpleNamespace

    from tests.wasim.binxml import JID, Node
    from tests.wasim.peers import PeerMessage, PeerSender
    from tests.wasim.prekeys import PreKeyPool
    from tests.wasim.retry import RetryResponder
    from tests.wasim.signalsession import Contact
    from tests.wasim.xeddsa import KeyPair

    device_key, spk = KeyPair(), KeyPair()
    pool = PreKeyPool()
    pool.upload({i: KeyPair().pub for i in range(1, 30)})
    device = SimpleNamespace(jid="1555:2@s.whatsapp.net", registration_id=77, identity_pub=device_key.pub,
                             signed_prekey=(1, spk.pub, device_key.sign(b"\x05" + spk.pub)), pool=pool)
    sent_nodes = []
    sim = SimpleNamespace(device_record=lambda jid: device, notify=lambda: None,
                          notify_prekey_count=lambda d: None)
    peers = PeerSender(sim)
    responder = RetryResponder(sim, peers)
    contact = Contact("4917600000009@s.whatsapp.net", "84917600000009@lid")
    peers.recent["M1"] = PeerMessage("M1", contact, device.jid, b"\x0a\x02hi", 1, "P", "msg", 0.0)
    conn = SimpleNamespace(jid=device.jid, send=sent_nodes.append)

    def receipt(count):
        return Node("receipt", {"to": JID.parse(contact.jid), "id": "M1", "type": "retry"}, [
            Node("retry", {"count": str(count), "id": "M1", "t": "1", "v": "1"}),
            Node("registration", {}, (77).to_bytes(4, "big"))])

    responder.handle(conn, receipt(1))  # no session with the device: fetch a bundle (one key handed out)
    assert responder.receipts[-1].action == "fetched_bundle" and pool.handed_ids() == [1]
    assert sent_nodes[-1].child("enc").attrs == {"v": "2", "type": "pkmsg", "count": "1"}
    responder.handle(conn, receipt(1))  # a session now, count < 2: re-send on it
    assert responder.receipts[-1].action == "resent_on_session"
    responder.handle(conn, receipt(2))  # count 2, no keys, recreated less than an hour ago: re-send
    assert responder.receipts[-1].action == "resent_on_session" and pool.handed_ids() == [1]
    for _ in range(7):
        responder.handle(conn, receipt(3))
    assert responder.receipts[-1].action == "dropped_internal_limit"  # the 10th request
    assert len(sent_nodes) == 9


def test_sender_keys_round_trip_skip_ahead_and_refuse_a_replay_or_a_forgery():
    from tests.wasim.ratchet import SignalError
    from tests.wasim.senderkeys import ReceivedSenderKey, SenderKey

    ours = SenderKey()
    theirs = ReceivedSenderKey.from_distribution(ours.distribution())
    first, second, third = (ours.encrypt(t) for t in (b"one", b"two", b"three"))
    assert theirs.decrypt(third) == b"three" and theirs.decrypt(first) == b"one"  # kept while skipped
    with pytest.raises(SignalError):
        theirs.decrypt(first)  # used already
    forged = second[:-64] + SenderKey().signing.sign(second[:-64])
    with pytest.raises(SignalError):
        theirs.decrypt(forged)
    assert theirs.decrypt(second) == b"two"
