"""WhatsAppSimulator: a WhatsApp server stand-in on loopback for the real neonize client.

What it speaks, and where in whatsmeow each step is checked (see the package README):
transport (socket/*, handshake.go), pairing (pair.go, pair-code.go, qrchan.go), login and the
stream errors (connectionevents.go), the post-login queries (prekeys.go, keepalive.go); contacts,
messages, retries and groups are in messaging.py (mixed in), peers.py, retry.py, groups.py, and the
server's pre-key pool in prekeys.py.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
import traceback
from typing import Callable

from .binxml import JID, SERVER_JID, Node, marshal, unmarshal
from .chatactions import ChatActionLog
from .download import PeerMediaHost
from .media import MediaHost
from . import joinedgroups
from .noise import FrameReader, HandshakeError, NoiseCertificates, ServerHandshake, frame, process_root
from .patch import shared_patched_neonize
from .phone import CodePairing, Phone, QRPayload
from .groups import GroupDirectory
from .messaging import Messaging
from .peers import PeerSender
from .prekeys import PreKeyPool
from .retry import RetryResponder
from .records import DeviceRecord, SentMessage, SimulatorError
from .signalsession import Contact
from .transport import InterceptingProxy, WebSocket, WebSocketClosed, make_tls_files


def _text(node: Node | None) -> str:
    if node is None or node.content is None:
        return ""
    return node.content.decode() if isinstance(node.content, bytes) else str(node.content)


class _Connection:
    _ids = itertools.count(1)

    def __init__(self, sim: "WhatsAppSimulator", ws: WebSocket):
        self.sim = sim
        self.ws = ws
        self.number = next(self._ids)
        self.transport = None
        self.payload = None
        self.noise_pub = b""
        self.jid: JID | None = None  # set once logged in
        self.refs: list[str] = []
        self.active = False  # the client sent its post-login "active" IQ (Connected follows)
        self.silent = False  # answers no keep-alive ping (stop_answering_pings)
        self.ending = False  # a final stream error was sent; closing after the grace period
        self.closed = threading.Event()
        self._send_lock = threading.Lock()

    @property
    def registration(self):
        return self.payload.devicePairingData if self.payload is not None else None

    def send(self, node: Node) -> None:
        data = marshal(node)
        with self._send_lock:
            self.ws.send(frame(self.transport.encrypt(data)))

    def close(self, graceful: bool = True) -> None:
        if graceful:
            self.ws.close()
        try:
            self.ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.closed.set()


class WhatsAppSimulator(Messaging):
    """The server, the proxy in front of it, and the phone of the one simulated account."""

    def __init__(
        self,
        workdir: str,
        phone_number: str = "15550001111",
        lid_user: str = "99990001111",
        refs_per_pair_device: int = 6,
        neonize_dir: str | None = None,
        close_grace: float = 0.5,
        keepalive: tuple[float, float, float] | None = None,
        prekey_order: str = "lowest",
        prekey_seed: int | None = None,
    ):
        self.workdir = os.path.abspath(workdir)
        self.phone = Phone(phone_number, lid_user)
        self.refs_per_pair_device = refs_per_pair_device
        self.close_grace = close_grace
        self._neonize_source = neonize_dir
        self._keepalive = keepalive  # (ping interval min, max, response deadline) for the client's whatsmeow
        self.unanswered_pings = 0
        self.certs = NoiseCertificates(root=process_root())
        self.devices: dict[str, DeviceRecord] = {}
        self.connections: list[_Connection] = []
        self.qr_refs: list[list[str]] = []  # refs of each pair-device sent, in order
        # Open: a client that connects to pair gets its pair-device (its QR codes) at once. A test clears
        # it to hold them back, with the client inside connect() before its first code; `pairing_waits`
        # counts the connections that came to it.
        self.qr_gate = threading.Event()
        self.qr_gate.set()
        self.pairing_waits = 0
        self.pair_code_requests: list[dict] = []
        self.sent_messages: list[SentMessage] = []
        self.media = MediaHost()  # uploads through the proxy (media.py); sim.media.uploads
        self.peer_media = PeerMediaHost(self.workdir)  # what peers uploaded, served to the client (download.py)
        self.receipts_acked: list[Node] = []  # the client's <ack class="receipt"> for sim.send_receipt
        self.contacts: dict[str, Contact] = {}
        self.not_on_whatsapp: set[str] = set()  # numbers (digits) the usync contact query answers "out"
        self.joined_groups_queries = 0  # "the groups I am in" queries answered (joinedgroups.py)
        self.prekey_order, self.prekey_seed = prekey_order, prekey_seed  # hand-out order (prekeys.py)
        PreKeyPool(order=prekey_order)  # refuses an unknown order now rather than at pairing
        self.peers = PeerSender(self)  # contacts' messages to the devices, on kept sessions (peers.py)
        self.retries = RetryResponder(self, self.peers)  # their answers to retry receipts (retry.py)
        self.groups = GroupDirectory(self)  # groups: metadata, members' messages, the device's sends
        # The peers' Signal state is used from the test's thread (a delivery) and from a connection's
        # reader (a retry receipt, the client's message): one at a time.
        self.signal_lock = threading.RLock()
        self.received: list[tuple[int, Node]] = []  # every node from every client, for debugging
        self.errors: list[str] = []
        self._ban: tuple[int, int] | None = None  # (expire seconds, code) for the next login
        self._next_device = itertools.count(2)
        self._cond = threading.Condition()
        self.actions = ChatActionLog(self._cond)  # read receipts, chat states, presence (chatactions.py)
        self._pending_pairs: dict[str, tuple[_Connection, QRPayload | None, DeviceRecord]] = {}
        self._iq_ids = itertools.count(1)
        self._code_pairs: dict[str, tuple] = {}
        self.proxy: InterceptingProxy | None = None
        self.ca_file = self.pythonpath = ""

    # ------------------------------------------------------------ life cycle

    def start(self) -> "WhatsAppSimulator":
        os.makedirs(self.workdir, exist_ok=True)
        self.ca_file, cert, key = make_tls_files(self.workdir)
        self.pythonpath = shared_patched_neonize(
            os.path.join(self.workdir, "patched"), self.certs.root.pub, self._neonize_source,
            keepalive=self._keepalive,
        )
        self.proxy = InterceptingProxy(cert, key, self._serve, on_media=self._on_media)
        self.proxy.start()
        return self

    def _on_media(self, method: str, target: str, body: bytes):
        # GET: the client downloads what a peer sent (download.py); POST: the client uploads (media.py).
        if method == "GET":
            return self.peer_media.handle_get(target)
        return self.media.handle(method, target, body)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for conn in list(self.connections):
            conn.close(graceful=False)

    def __enter__(self) -> "WhatsAppSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, base: dict | None = None) -> dict:
        """Environment for a client process: proxy, CA, and the patched neonize first on the path."""
        env = dict(os.environ if base is None else base)
        env.update(
            HTTPS_PROXY=self.proxy.url,
            https_proxy=self.proxy.url,
            SSL_CERT_FILE=self.ca_file,
            PYTHONPATH=os.pathsep.join(
                p for p in (self.pythonpath, env.get("PYTHONPATH", "")) if p
            ),
        )
        for key in ("NO_PROXY", "no_proxy", "SSL_CERT_DIR"):
            env.pop(key, None)
        return env

    # ------------------------------------------------------------ waiting

    def wait_until(self, predicate: Callable[[], object], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"simulator: timed out after {timeout}s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    notify = _notify  # for the simulator's modules (peers.py, retry.py)

    @property
    def retry_receipts(self):
        """Every retry receipt the client sent, with what the peer did (retry.RetryReceipt)."""
        return list(self.retries.receipts)

    def wait_for_qr(self, timeout: float = 10, after: int = 0) -> list[str]:
        """The refs of the first pair-device sent after `after` earlier ones."""
        return self.wait_until(
            lambda: len(self.qr_refs) > after and self.qr_refs[after], timeout, "a QR (pair-device)"
        )

    def wait_logged_in(self, jid: str | None = None, timeout: float = 10) -> str:
        """Waits until a device (this one, or any) is logged in and has sent its active IQ."""

        def find():
            for conn in self.connections:
                if conn.active and not conn.closed.is_set() and not conn.ending and conn.jid is not None:
                    if jid is None or str(conn.jid) == jid:
                        return str(conn.jid)
            return None

        return self.wait_until(find, timeout, f"login of {jid or 'a device'}")

    def wait_for_sent(self, timeout: float = 10, after: int = 0) -> SentMessage:
        """The first message the client sent after `after` earlier ones."""
        return self.wait_until(
            lambda: len(self.sent_messages) > after and self.sent_messages[after], timeout, "a sent message"
        )

    def login_count(self, jid: str) -> int:
        return sum(1 for c in self.connections if c.jid is not None and str(c.jid) == jid)

    # ------------------------------------------------------------ test commands

    def scan_qr(self, qr_text: str) -> str:
        """Act as the phone scanning this QR: sends pair-success; returns the new device JID."""
        qr = QRPayload.parse(qr_text)
        with self._cond:
            conn = next((c for c in self.connections if qr.ref in c.refs and not c.closed.is_set()), None)
        if conn is None:
            raise SimulatorError(f"no open connection was sent the QR ref {qr.ref!r}")
        if qr.noise_pub != conn.noise_pub:
            raise SimulatorError("QR noise key differs from the key the client used in the handshake")
        if qr.identity_pub != conn.registration.eIdent:
            raise SimulatorError("QR identity key differs from the client's registration payload")
        return self._send_pair_success(conn, qr.identity_pub, qr.adv_secret, qr)

    def scan_latest_qr(self, qr_text: str | None = None) -> str:
        """Like scan_qr; the QR text is required (only it carries the companion's ADV secret)."""
        if qr_text is None:
            raise SimulatorError(
                "pass the QR text the client showed: the ADV secret the phone must HMAC with is "
                "only in the QR, never sent to the server"
            )
        return self.scan_qr(qr_text)

    def logout(self, jid: str) -> None:
        """'Linked device removed': 401 device_removed on the live stream, 401 failure on connect."""
        device = self._device(jid)
        device.removed = True
        for conn in self._live(jid):
            self._end_stream(conn, Node("stream:error", {"code": "401"}, [
                Node("conflict", {"type": "device_removed"})]))

    def replace_stream(self, jid: str) -> None:
        """Another login took this device's stream (conflict type replaced)."""
        for conn in self._live(jid, required=True):
            self._end_stream(conn, Node("stream:error", {}, [Node("conflict", {"type": "replaced"})]))

    def stop_answering_pings(self, jid: str) -> None:
        """The device's current connections stay open but answer no keep-alive ping any more (a socket
        that died somewhere on the way without a close); a new connection answers again."""
        for conn in self._live(jid, required=True):
            conn.silent = True

    def drop(self, jid: str) -> None:
        """Close the TCP connection abruptly, no close frame, no stream error."""
        for conn in self._live(jid, required=True):
            conn.close(graceful=False)

    def temp_ban(self, seconds: int, code: int = 101) -> None:
        """The next login attempt fails with a temporary ban (connect failure 402)."""
        self._ban = (int(seconds), int(code))

    # ------------------------------------------------------------ helpers

    def device_record(self, jid: str) -> DeviceRecord:
        return self._device(jid)

    def live_connection(self, jid: str) -> "_Connection":
        return self._live(jid, required=True)[-1]

    @staticmethod
    def error(message: str) -> SimulatorError:
        return SimulatorError(message)

    def _device(self, jid: str) -> DeviceRecord:
        device = self.devices.get(jid)
        if device is None:
            raise SimulatorError(f"no linked device {jid}; linked: {sorted(self.devices)}")
        return device

    def _live(self, jid: str, required: bool = False) -> list[_Connection]:
        conns = [
            c for c in self.connections
            if c.jid is not None and str(c.jid) == jid and not c.closed.is_set() and not c.ending
        ]
        if required and not conns:
            raise SimulatorError(f"{jid} has no open connection")
        return conns

    def _end_stream(self, conn: _Connection, node: Node) -> None:
        """Send a final stream:error or failure, then close after a short grace period.

        The grace matters: whatsmeow hands nodes to a handler queue that stops when the socket
        closes (client.go handlerQueueLoop), so closing at once can lose the very node that
        explains the disconnect. WhatsApp likewise ends with </stream:stream> and then closes.
        """
        try:
            conn.send(node)
            conn.send(Node("xmlstreamend"))
        except OSError:
            pass
        conn.ending = True
        timer = threading.Timer(self.close_grace, conn.close)
        timer.daemon = True
        timer.start()
        self._notify()

    def _iq_id(self) -> str:
        return f"sim-{next(self._iq_ids)}"

    # ------------------------------------------------------------ connection

    def _serve(self, ws: WebSocket, headers: dict) -> None:
        conn = _Connection(self, ws)
        with self._cond:
            self.connections.append(conn)
        try:
            self._handshake(conn)
            self._after_handshake(conn)
            self._read_loop(conn)
        except (WebSocketClosed, OSError):
            pass
        except HandshakeError as exc:
            self.errors.append(f"conn {conn.number}: {exc}")
        except Exception as exc:  # a simulator bug: keep it visible to the test
            self.errors.append(f"conn {conn.number}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        finally:
            conn.closed.set()
            self._notify()

    def _frames(self, conn: _Connection, reader: FrameReader):
        while True:
            for f in reader.feed(conn.ws.recv()):
                yield f

    def _handshake(self, conn: _Connection) -> None:
        reader = FrameReader()
        conn.frames = self._frames(conn, reader)
        hs = ServerHandshake(self.certs)
        conn.ws.send(frame(hs.respond(next(conn.frames))))
        conn.noise_pub, conn.payload, conn.transport = hs.finish(next(conn.frames))

    def _send_pair_device(self, conn: _Connection, held: bool = False) -> None:
        """The pair-device IQ whose refs become the client's QR codes."""
        if held:
            self.qr_gate.wait(60)
            if conn.closed.is_set():
                return
        refs = [f"2@{secrets.token_urlsafe(24)}" for _ in range(self.refs_per_pair_device)]
        conn.refs = refs
        try:
            conn.send(Node("iq", {"from": SERVER_JID, "type": "set", "id": self._iq_id(), "xmlns": "md"}, [
                Node("pair-device", {}, [Node("ref", {}, r.encode()) for r in refs])]))
        except (WebSocketClosed, OSError):
            if not held:
                raise
            return  # the client left while the codes were held back
        with self._cond:
            self.qr_refs.append(refs)
            self._cond.notify_all()

    def _after_handshake(self, conn: _Connection) -> None:
        payload = conn.payload
        if payload.HasField("devicePairingData"):
            with self._cond:
                self.pairing_waits += 1
                self._cond.notify_all()
            if self.qr_gate.is_set():
                self._send_pair_device(conn)
            else:  # held back by the test; the connection is read meanwhile, as WhatsApp's would be
                threading.Thread(target=self._send_pair_device, args=(conn, True), daemon=True).start()
            return
        jid = JID(str(payload.username), "s.whatsapp.net", payload.device)
        device = self.devices.get(str(jid))
        now = str(int(time.time()))
        if device is None or device.removed or device.noise_pub != conn.noise_pub:
            self._end_stream(conn, Node("failure", {"reason": "401", "location": "sim"}))
            return
        if self._ban is not None:
            expire, code = self._ban
            self._ban = None
            self._end_stream(conn, Node("failure", {"reason": "402", "code": str(code), "expire": str(expire)}))
            return
        for old in self._live(str(jid)):
            # One stream per device: the newer login wins, as on WhatsApp.
            self._end_stream(old, Node("stream:error", {}, [Node("conflict", {"type": "replaced"})]))
        conn.jid = jid
        conn.send(Node("success", {"t": now, "props": "1", "abprops": "1", "location": "sim",
                                   "lid": device.lid, "creation": now}))
        self._notify()

    def _read_loop(self, conn: _Connection) -> None:
        for data in conn.frames:
            node = unmarshal(conn.transport.decrypt(data))
            with self._cond:
                self.received.append((conn.number, node))
            self._handle(conn, node)
            self._notify()

    # ------------------------------------------------------------ node handlers

    def _result(self, conn: _Connection, node: Node, content=None) -> None:
        conn.send(Node("iq", {"from": SERVER_JID, "type": "result", "id": node.attrs.get("id")}, content))

    def _handle(self, conn: _Connection, node: Node) -> None:
        if node.tag == "iq":
            self._handle_iq(conn, node)
        elif node.tag == "message":
            self._handle_message(conn, node)
        elif node.tag == "receipt" and node.attrs.get("type") == "retry":
            with self.signal_lock:
                self.retries.handle(conn, node)
        elif node.tag == "ack" and node.attrs.get("class") == "receipt":
            with self._cond:
                self.receipts_acked.append(node)
        elif self.actions.handle(node):
            pass  # the client's receipts, chat states and presence: recorded, nothing to answer
        # other acks, ib: recorded in self.received, nothing to answer

    def _handle_iq(self, conn: _Connection, node: Node) -> None:
        xmlns = node.attrs.get("xmlns")
        kind = node.attrs.get("type")
        first = node.children()[0] if node.children() else None
        if kind in ("result", "error"):
            self._handle_iq_answer(conn, node)
        elif xmlns == "w:g2" and (self.groups.handle_iq(conn, node) or joinedgroups.handle_iq(self, conn, node)):
            pass
        elif xmlns == "encrypt" and first is not None and first.tag == "count":
            device = self.devices[str(conn.jid)]
            self._result(conn, node, [Node("count", {"value": str(len(device.pool))})])
        elif xmlns == "encrypt" and kind == "set" and node.child("list") is not None:
            self._store_prekeys(conn, node)
            self._result(conn, node)
        elif xmlns == "encrypt" and first is not None and first.tag == "key":
            self._handle_key_fetch(conn, node)
        elif xmlns == "usync" and first is not None and first.tag == "usync":
            self._handle_usync(conn, node)
        elif xmlns == "w:p" and conn.silent:
            # keepalive.go's ping on a connection that went quiet: the socket stays open, no answer.
            with self._cond:
                self.unanswered_pings += 1
                self._cond.notify_all()
        elif xmlns == "passive":
            self._result(conn, node)
            conn.active = first is not None and first.tag == "active"
        elif xmlns == "w:m" and first is not None and first.tag == "media_conn":
            # whatsmeow mediaconn.go: auth token and upload hosts for upload.go.
            from .media import MEDIA_HOST

            self._result(conn, node, [Node("media_conn", self.media.media_conn_attrs(), [
                Node("host", {"hostname": MEDIA_HOST})])])
        elif xmlns == "md" and first is not None and first.tag == "link_code_companion_reg":
            self._handle_link_code(conn, node, first)
        else:
            self._result(conn, node)

    def _store_prekeys(self, conn: _Connection, node: Node) -> None:
        device = self.devices[str(conn.jid)]
        device.registration_id = int.from_bytes(node.child("registration").content, "big")
        device.pool.upload({int.from_bytes(key.child("id").content, "big"): key.child("value").content
                            for key in node.child("list").children()})
        skey = node.child("skey")
        device.signed_prekey = (
            int.from_bytes(skey.child("id").content, "big"),
            skey.child("value").content,
            skey.child("signature").content,
        )

    def _handle_iq_answer(self, conn: _Connection, node: Node) -> None:
        pending = self._pending_pairs.pop(node.attrs.get("id"), None)
        if pending is None:
            return
        _, _, device = pending
        sign = node.child("pair-device-sign")
        if node.attrs.get("type") != "result" or sign is None:
            self.errors.append(f"pairing refused by the client: {node!r}")
            return
        if not self.phone.check_device_signature(device.identity_pub, sign.child("device-identity").content):
            self.errors.append("the client's device signature does not verify")
            return
        with self._cond:
            self.devices[str(device.jid)] = device
        # WhatsApp then ends the registration stream with 515: "log in again as the new device".
        self._end_stream(conn, Node("stream:error", {"code": "515"}))

    def _send_pair_success(self, conn, identity_pub: bytes, adv_secret: bytes, qr) -> str:
        number = next(self._next_device)
        device = DeviceRecord(
            jid=JID(self.phone.phone_number, "s.whatsapp.net", number),
            lid=JID(self.phone.lid_user, "lid", number),
            noise_pub=conn.noise_pub,
            identity_pub=identity_pub,
            pool=PreKeyPool(order=self.prekey_order, seed=self.prekey_seed),
        )
        identity, key_index = self.phone.device_identity(identity_pub, adv_secret)
        iq_id = self._iq_id()
        self._pending_pairs[iq_id] = (conn, qr, device)
        conn.send(Node("iq", {"from": SERVER_JID, "type": "set", "id": iq_id, "t": str(int(time.time()))}, [
            Node("pair-success", {}, [
                Node("device-identity", {"key-index": str(key_index)}, identity),
                Node("platform", {"name": "android"}),
                Node("device", {"jid": device.jid, "lid": device.lid}),
            ])]))
        return str(device.jid)

    def _handle_link_code(self, conn: _Connection, node: Node, reg: Node) -> None:
        """Phone-number pairing (whatsmeow pair-code.go): companion_hello, then companion_finish."""
        stage = reg.attrs.get("stage")
        if stage == "companion_hello":
            ref = f"link-{secrets.token_hex(8)}"
            request = {
                "phone": reg.attr("jid", "").split("@")[0],
                "show_push_notification": reg.attrs.get("should_show_push_notification") == "true",
                "platform_id": _text(reg.child("companion_platform_id")),
                "platform_display": _text(reg.child("companion_platform_display")),
                "ref": ref,
                "wrapped_ephemeral": reg.child("link_code_pairing_wrapped_companion_ephemeral_pub").content,
                "noise_pub": reg.child("companion_server_auth_key_pub").content,
                "connection": conn,
            }
            with self._cond:
                self.pair_code_requests.append(request)
            self._result(conn, node, [Node("link_code_companion_reg", {}, [
                Node("link_code_pairing_ref", {}, ref.encode())])])
        elif stage == "companion_finish":
            pending = self._code_pairs.pop(_text(reg.child("link_code_pairing_ref")), None)
            self._result(conn, node)
            if pending is None:
                self.errors.append("companion_finish for a pairing the phone never started")
                return
            code_pairing, request = pending
            identity_pub, adv_secret = code_pairing.finish(
                reg.child("link_code_pairing_wrapped_key_bundle").content,
                reg.child("companion_identity_public").content,
            )
            if identity_pub != conn.registration.eIdent:
                self.errors.append("code pairing: key bundle identity differs from the registration")
                return
            self._send_pair_success(conn, identity_pub, adv_secret, None)
        else:
            self._result(conn, node)

    def enter_pair_code(self, code: str, timeout: float = 10) -> None:
        """Act as the phone where the user typed the 8-character code; pairing then proceeds."""
        request = self.wait_until(
            lambda: self.pair_code_requests and self.pair_code_requests[-1], timeout, "a link-code request"
        )
        conn = request["connection"]
        code_pairing = CodePairing(self.phone, code, request["wrapped_ephemeral"])
        self._code_pairs[request["ref"]] = (code_pairing, request)
        conn.send(Node("notification", {"from": SERVER_JID, "type": "link_code_companion_reg",
                                        "id": self._iq_id(), "t": str(int(time.time()))}, [
            Node("link_code_companion_reg", {}, [
                Node("link_code_pairing_ref", {}, request["ref"].encode()),
                Node("link_code_pairing_wrapped_primary_ephemeral_pub", {}, code_pairing.wrapped_primary_ephemeral),
                Node("primary_identity_pub", {}, self.phone.identity.pub),
            ])]))
