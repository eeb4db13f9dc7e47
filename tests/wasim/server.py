"""WhatsAppSimulator: a WhatsApp server stand-in on loopback for the real neonize client.

What it speaks, and where in whatsmeow each step is checked (see the package README):
transport (socket/*, handshake.go), pairing (pair.go, pair-code.go, qrchan.go), login and the
stream errors (connectionevents.go), the post-login queries (prekeys.go, keepalive.go), and
1:1 messages (message.go, send.go, receipt.go) through the Signal session in signalsession.py.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage

from .binxml import JID, SERVER_JID, Node, marshal, unmarshal
from .download import PeerMediaHost
from .media import MediaHost
from .noise import FrameReader, HandshakeError, NoiseCertificates, ServerHandshake, frame
from .patch import make_patched_neonize
from .phone import CodePairing, Phone, QRPayload
from .signalsession import Contact, PreKeyBundle, SignalError, pad_v2, unpad_v2
from .transport import InterceptingProxy, WebSocket, WebSocketClosed, make_tls_files


def _text(node: Node | None) -> str:
    if node is None or node.content is None:
        return ""
    return node.content.decode() if isinstance(node.content, bytes) else str(node.content)


class SimulatorError(RuntimeError):
    """A test asked the simulator for something it cannot do in its current state."""


@dataclass
class DeviceRecord:
    """A companion device the simulated account has linked."""

    jid: JID
    lid: JID
    noise_pub: bytes
    identity_pub: bytes
    registration_id: int = 0
    signed_prekey: tuple[int, bytes, bytes] | None = None  # (id, pub, signature)
    prekeys: dict[int, bytes] = field(default_factory=dict)
    removed: bool = False


@dataclass
class SentMessage:
    """A <message> the client sent, with its text when the simulator could decrypt it."""

    to: str  # as addressed on the wire (whatsmeow sends 1:1 messages to the LID)
    recipient_pn: str | None  # the phone-number JID, when the client names it (peer_recipient_pn)
    id: str
    type: str
    text: str | None
    node: Node
    message: E2EMessage | None = None  # the decrypted content (for the contact's device 0)
    sim: "WhatsAppSimulator | None" = field(default=None, repr=False)

    def media_bytes(self) -> bytes:
        """What the contact's phone shows for this image/audio/document: downloaded from the upload
        host, checked (SHA-256 of blob and file, MAC) and decrypted with the message's media key."""
        if self.message is None or self.sim is None:
            raise SimulatorError(f"message {self.id} was not decrypted")
        return self.sim.media.open(self.message)


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


class WhatsAppSimulator:
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
    ):
        self.workdir = os.path.abspath(workdir)
        self.phone = Phone(phone_number, lid_user)
        self.refs_per_pair_device = refs_per_pair_device
        self.close_grace = close_grace
        self._neonize_source = neonize_dir
        self._keepalive = keepalive  # (ping interval min, max, response deadline) for the client's whatsmeow
        self.unanswered_pings = 0
        self.certs = NoiseCertificates()
        self.devices: dict[str, DeviceRecord] = {}
        self.connections: list[_Connection] = []
        self.qr_refs: list[list[str]] = []  # refs of each pair-device sent, in order
        self.pair_code_requests: list[dict] = []
        self.sent_messages: list[SentMessage] = []
        self.media = MediaHost()  # uploads through the proxy (media.py); sim.media.uploads
        self.peer_media = PeerMediaHost(self.workdir)  # what peers uploaded, served to the client (download.py)
        self.receipts_acked: list[Node] = []  # the client's <ack class="receipt"> for sim.send_receipt
        self.contacts: dict[str, Contact] = {}
        self.received: list[tuple[int, Node]] = []  # every node from every client, for debugging
        self.errors: list[str] = []
        self._ban: tuple[int, int] | None = None  # (expire seconds, code) for the next login
        self._next_device = itertools.count(2)
        self._cond = threading.Condition()
        self._pending_pairs: dict[str, tuple[_Connection, QRPayload | None, DeviceRecord]] = {}
        self._iq_ids = itertools.count(1)
        self._code_pairs: dict[str, tuple] = {}
        self.proxy: InterceptingProxy | None = None
        self.ca_file = self.pythonpath = ""

    # ------------------------------------------------------------ life cycle

    def start(self) -> "WhatsAppSimulator":
        os.makedirs(self.workdir, exist_ok=True)
        self.ca_file, cert, key = make_tls_files(self.workdir)
        self.pythonpath = make_patched_neonize(
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

    def _after_handshake(self, conn: _Connection) -> None:
        payload = conn.payload
        if payload.HasField("devicePairingData"):
            refs = [f"2@{secrets.token_urlsafe(24)}" for _ in range(self.refs_per_pair_device)]
            conn.refs = refs
            conn.send(Node("iq", {"from": SERVER_JID, "type": "set", "id": self._iq_id(), "xmlns": "md"}, [
                Node("pair-device", {}, [Node("ref", {}, r.encode()) for r in refs])]))
            with self._cond:
                self.qr_refs.append(refs)
                self._cond.notify_all()
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
        elif node.tag == "ack" and node.attrs.get("class") == "receipt":
            with self._cond:
                self.receipts_acked.append(node)
        # receipts, other acks, presence, ib: recorded in self.received, nothing to answer

    def _handle_iq(self, conn: _Connection, node: Node) -> None:
        xmlns = node.attrs.get("xmlns")
        kind = node.attrs.get("type")
        first = node.children()[0] if node.children() else None
        if kind in ("result", "error"):
            self._handle_iq_answer(conn, node)
        elif xmlns == "encrypt" and first is not None and first.tag == "count":
            device = self.devices[str(conn.jid)]
            self._result(conn, node, [Node("count", {"value": str(len(device.prekeys))})])
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
        for key in node.child("list").children():
            device.prekeys[int.from_bytes(key.child("id").content, "big")] = key.child("value").content
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

    # ------------------------------------------------------------ messages

    def _contact(self, user: str) -> Contact:
        """The contact with this phone number or LID user, created on first mention."""
        with self._cond:
            for contact in self.contacts.values():
                if user in (contact.jid.split("@")[0], contact.lid.split("@")[0]):
                    return contact
            if user == self.phone.lid_user:
                user = self.phone.phone_number
            if user == self.phone.phone_number:
                contact = Contact(f"{user}@s.whatsapp.net", f"{self.phone.lid_user}@lid",
                                  identity=self.phone.identity)
            else:
                contact = Contact(f"{user}@s.whatsapp.net", f"8{user}@lid")
            self.contacts[user] = contact
            return contact

    def deliver_text(self, jid: str, sender: str, text: str, push_name: str | bytes = "Sim Contact") -> str:
        """An incoming 1:1 text from `sender` (a phone number or JID) to device `jid`; returns its id."""
        return self.deliver_message(jid, sender, E2EMessage(conversation=text), push_name=push_name)

    def deliver_message(self, jid: str, sender: str, message: E2EMessage, *, push_name: str = "Sim Contact",
                        node_type: str = "text", media_type: str | None = None, edit: str | None = None,
                        message_id: str | None = None) -> str:
        """Any incoming 1:1 message (a waE2E.Message) from `sender` to device `jid`; returns its id.
        `node_type`, the enc node's `mediatype` and the `edit` attribute as WhatsApp sets them (whatsmeow
        send.go getTypeFromMessage / getMediaTypeFromMessage / getEditAttribute; message.go
        parseMessageInfo reads them back). peer_events.py builds the messages."""
        device = self._device(jid)
        conns = self._live(jid, required=True)
        contact = self._contact(sender.split("@")[0])
        if device.signed_prekey is None:
            raise SimulatorError(f"{jid} has not uploaded its pre-keys yet")
        with self._cond:
            prekey_id = min(device.prekeys) if device.prekeys else None
            prekey_pub = device.prekeys.pop(prekey_id) if prekey_id is not None else None
        spk_id, spk_pub, _ = device.signed_prekey
        bundle = PreKeyBundle(device.registration_id, device.identity_pub, spk_id, spk_pub,
                              prekey_id, prekey_pub)
        plaintext = pad_v2(message.SerializeToString())
        message_id = message_id or "3EB0" + secrets.token_hex(8).upper()
        attrs = {"from": JID.parse(contact.jid), "sender_lid": JID.parse(contact.lid), "id": message_id,
                 "t": str(int(time.time())), "type": node_type, "notify": push_name}
        if edit:
            attrs["edit"] = edit
        enc_attrs = {"v": "2", "type": "pkmsg"}
        if media_type:
            enc_attrs["mediatype"] = media_type
        node = Node("message", attrs, [Node("enc", enc_attrs, contact.encrypt_pkmsg(bundle, plaintext))])
        conns[-1].send(node)
        return message_id

    def _handle_message(self, conn: _Connection, node: Node) -> None:
        targets = []  # (device jid, enc node)
        participants = node.child("participants")
        for to in participants.children() if participants is not None else []:
            for enc in to.children():
                if enc.tag == "enc":
                    targets.append((to.attrs.get("jid"), enc))
        for enc in node.children():
            if enc.tag == "enc":
                targets.append((node.attrs.get("to"), enc))
        recipient = node.attrs.get("to")
        text = None
        message = None
        for device_jid, enc in targets:
            if not isinstance(device_jid, JID) or device_jid.device != 0:
                continue  # companion devices: the simulator does not hold their keys
            if device_jid.user in (self.phone.phone_number, self.phone.lid_user):
                continue  # the copy for the account's own phone
            contact = self._contact(device_jid.user)
            try:
                decrypted = E2EMessage()
                decrypted.ParseFromString(unpad_v2(contact.decrypt(enc.attrs.get("type"), enc.content)))
                text = decrypted.conversation or decrypted.extendedTextMessage.text
                message = decrypted
            except (SignalError, ValueError) as exc:
                self.errors.append(f"could not decrypt message {node.attrs.get('id')} for {device_jid}: {exc}")
        with self._cond:
            pn = node.attrs.get("peer_recipient_pn")
            self.sent_messages.append(SentMessage(
                to=str(recipient), recipient_pn=str(pn) if pn else None, id=node.attrs.get("id"),
                type=node.attrs.get("type"), text=text, node=node, message=message, sim=self))
        conn.send(Node("ack", {"class": "message", "id": node.attrs.get("id"), "from": recipient,
                               "t": str(int(time.time()))}))

    def send_receipt(self, jid: str, message_id: str, kind: str = "delivered") -> None:
        """The contact's phone acknowledges a message device `jid` sent (whatsmeow receipt.go
        `handleReceipt`/`parseReceipt`): from the address the message went to, type "" (delivered),
        "read" or "played"."""
        sent = next((m for m in self.sent_messages if m.id == message_id), None)
        if sent is None:
            raise SimulatorError(f"no sent message {message_id!r}")
        types = {"delivered": None, "read": "read", "played": "played"}
        if kind not in types:
            raise SimulatorError(f"receipt kind must be one of {sorted(types)}")
        attrs = {"from": JID.parse(sent.to), "id": message_id, "t": str(int(time.time()))}
        if types[kind]:
            attrs["type"] = types[kind]
        self._live(jid, required=True)[-1].send(Node("receipt", attrs))

    def _handle_usync(self, conn: _Connection, node: Node) -> None:
        usync = node.child("usync")
        query = {q.tag for q in usync.child("query").children()}
        users = []
        for user in usync.child("list").children():
            jid = user.attrs.get("jid")
            if not isinstance(jid, JID):
                continue
            contact = self._contact(jid.user)
            is_own = contact.identity is self.phone.identity
            children = []
            if "devices" in query:
                ids = [0]
                if is_own:
                    ids += sorted(d.jid.device for d in self.devices.values()
                                  if not d.removed and d.signed_prekey is not None)
                children.append(Node("devices", {}, [Node("device-list", {}, [
                    Node("device", {"id": str(i)}) for i in ids])]))
            if "lid" in query:
                children.append(Node("lid", {"val": JID.parse(contact.lid)}))
            users.append(Node("user", {"jid": jid}, children))
        self._result(conn, node, [Node("usync", dict(usync.attrs), [Node("list", {}, users)])])

    def _handle_key_fetch(self, conn: _Connection, node: Node) -> None:
        users = []
        for user in node.child("key").children():
            jid = user.attrs.get("jid")
            if not isinstance(jid, JID):
                continue
            if jid.device == 0:
                material = self._contact(jid.user).bundle_nodes_material()
            else:
                device = next((d for d in self.devices.values()
                               if d.jid.device == jid.device and d.signed_prekey is not None), None)
                if device is None:
                    users.append(Node("user", {"jid": jid}, [Node("error", {"code": "404", "text": "item-not-found"})]))
                    continue
                prekey_id = min(device.prekeys) if device.prekeys else None
                material = {
                    "registration_id": device.registration_id,
                    "identity": device.identity_pub,
                    "skey": device.signed_prekey,
                    "key": (prekey_id, device.prekeys.pop(prekey_id)) if prekey_id is not None else None,
                }
            children = [
                Node("registration", {}, material["registration_id"].to_bytes(4, "big")),
                Node("type", {}, b"\x05"),
                Node("identity", {}, material["identity"]),
                Node("skey", {}, [
                    Node("id", {}, material["skey"][0].to_bytes(3, "big")),
                    Node("value", {}, material["skey"][1]),
                    Node("signature", {}, material["skey"][2]),
                ]),
            ]
            if material["key"] is not None:
                children.append(Node("key", {}, [
                    Node("id", {}, material["key"][0].to_bytes(3, "big")),
                    Node("value", {}, material["key"][1]),
                ]))
            users.append(Node("user", {"jid": jid}, children))
        self._result(conn, node, [Node("list", {}, users)])
