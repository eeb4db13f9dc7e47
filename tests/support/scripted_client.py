"""A scripted stand-in for the slice of neonize's NewClient the bot uses, driven from a test.

It behaves as whatsmeow does where the bot can tell (read from whatsmeow's connectionevents.go and
neonize's main.go): `connect()` blocks until `stop()`; it raises at once when WhatsApp is unreachable;
with no device in its database it emits QR codes until paired; pairing writes a device into the real
neonize database (schema made by neonize itself, tests/support/wadb.py) and emits PairStatus then Connected;
a device that WhatsApp revoked gets LoggedOut on connect and is deleted from the database, as
whatsmeow's Store.Delete does; StreamReplaced and TemporaryBan leave the device alone. Events are
neonize's own protobuf classes.

The "server side" (revoked devices, bans, outages) and the commands live in a control directory, so a
test can drive a client inside a real gunicorn worker:
    commands.jsonl  the test appends {"cmd": ..., "pid": optional target worker pid, ...}
    events.jsonl    the clients append what they did ({"pid", "event", ...})
    world.json      server-side state that survives restarts
    world.lock      taken while world.json is changed (Control.change_world)
Set WHATSAPP_CLIENT_FACTORY=tests.support.scripted_client:factory and SCRIPTED_WA_DIR=<dir> in the bot's env.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from neonize.events import (
    ConnectedEv,
    ConnectFailureEv,
    DisconnectedEv,
    LoggedOutEv,
    MessageEv,
    PairStatusEv,
    ReceiptEv,
    StreamReplacedEv,
    TemporaryBanEv,
)
from neonize.proto.Neonize_pb2 import JID, SendResponse

from tests.support import wadb

POLL = 0.02


class ScriptedNeonizeError(Exception):
    """Stands for neonize.exc.NeonizeError (same message shape as a failed dial)."""


class Control:
    """The control directory shared by the test and the clients."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.commands_file = self.dir / "commands.jsonl"
        self.events_file = self.dir / "events.jsonl"
        self.world_file = self.dir / "world.json"
        self._lock = threading.Lock()
        for path in (self.commands_file, self.events_file):
            path.touch(exist_ok=True)

    # test side
    def send(self, cmd: str, **fields) -> None:
        with self._lock, self.commands_file.open("a") as out:
            out.write(json.dumps({"cmd": cmd, **fields}) + "\n")

    def events(self, name: str | None = None) -> list[dict]:
        lines = self.events_file.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if name is None or e["event"] == name]

    def world(self) -> dict:
        try:
            return json.loads(self.world_file.read_text())
        except (OSError, ValueError):
            return {}

    def update_world(self, **changes) -> None:
        self.change_world(lambda world: world.update(changes))

    def revoke(self, jid: str) -> None:
        self.change_world(lambda world: world.update(revoked=sorted(set(world.get("revoked", [])) | {jid})))

    def change_world(self, change):
        """Read, change and write world.json as one step, for every thread and process sharing it;
        returns what `change` (called with the world, a dict it changes in place) returns.

        A read and a later write of its own would lose whatever was written in between: a client
        counting down `fail_connects` once wrote back 999,999 over the test's 0, so the outage never
        ended (seen with four workers on two cores)."""
        with self._lock, open(self.dir / "world.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            world = self.world()
            result = change(world)
            tmp = self.world_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(world))
            tmp.replace(self.world_file)
            return result

    def take_connect_failure(self) -> bool:
        """Whether this connect attempt fails: WhatsApp is unreachable, or one of `fail_connects` is used."""
        def take(world: dict) -> bool:
            failures = world.get("fail_connects", 0)
            if failures:
                world["fail_connects"] = failures - 1
            return bool(world.get("unreachable") or failures)

        return self.change_world(take)

    # client side
    def record(self, event: str, **fields) -> None:
        line = json.dumps({"pid": os.getpid(), "event": event, "t": time.time(), **fields})
        with self._lock, self.events_file.open("a") as out:
            out.write(line + "\n")


class CommandReader:
    """Tails commands.jsonl from the moment the client started (older commands are not for it)."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.offset = control.commands_file.stat().st_size

    def poll(self) -> list[dict]:
        with self.control.commands_file.open() as src:
            src.seek(self.offset)
            data = src.read()
        complete = data[: data.rfind("\n") + 1]
        self.offset += len(complete.encode())
        commands = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return [c for c in commands if c.get("pid") in (None, os.getpid())]


class ScriptedClient:
    def __init__(self, database: str, control: Control) -> None:
        self.database = database
        self.control = control
        self.handlers: dict = {}
        self.qr_handler = None
        self._stop = threading.Event()
        self._reader = CommandReader(control)
        self._connected = False
        self.connect_calls = 0
        self.sent: list[dict] = []

    # -- the neonize slice ------------------------------------------------------------------------
    def event(self, event_type):
        def register(func):
            self.handlers[event_type] = func
            return func

        return register

    def qr(self, func) -> None:
        self.qr_handler = func

    def stop(self) -> None:
        self.control.record("stop")
        self._stop.set()

    def connect(self) -> None:
        self.connect_calls += 1
        self._stop.clear()
        if self.control.take_connect_failure():
            self.control.record("connect_failed")
            raise ScriptedNeonizeError(
                'failed to dial whatsapp web websocket: dial tcp: lookup web.whatsapp.com: no such host'
            )
        world = self.control.world()
        jid = self._device_jid()
        self.control.record("connect", jid=jid)
        if jid is None:
            self._qr_round()
        elif jid in world.get("revoked", []):
            self._delete_device()
            self.control.record("logged_out", jid=jid, on_connect=True)
            self._emit(LoggedOutEv, LoggedOutEv(OnConnect=True, Reason=2))  # LOGGED_OUT (401)
        elif world.get("ban_seconds"):
            self._emit(TemporaryBanEv, TemporaryBanEv(Code=2, Expire=int(world["ban_seconds"])))
        else:
            self._set_connected(jid)
        self._serve()

    def PairPhone(self, phone: str, show_push_notification: bool) -> str:
        self.control.record("pair_phone", phone=phone)
        return "ABCD-1234"

    def logout(self) -> None:
        jid = self._device_jid()
        self.control.revoke(jid)
        self._delete_device()
        self.control.record("logout", jid=jid)

    def send_message(self, to, text) -> SendResponse:
        if not self._connected:
            raise ScriptedNeonizeError("not connected")
        self.sent.append({"to": to, "message": text})
        if isinstance(text, str):
            self.control.record("sent", to=f"{to.User}@{to.Server}", text=text)
        else:  # a built Message (reply, image, voice note, location): what it holds, as JSON
            from google.protobuf.json_format import MessageToDict

            self.control.record("sent_message", to=f"{to.User}@{to.Server}", message=MessageToDict(text))
        return SendResponse(ID=f"3EB0{len(self.sent):08d}", Timestamp=int(time.time()))

    def upload(self, data: bytes, media_type=None):
        """As whatsmeow's Upload answers (the encryption itself is checked against the simulator)."""
        import hashlib

        from neonize.proto.Neonize_pb2 import UploadResponse

        if not self._connected:
            raise ScriptedNeonizeError("not connected")
        self.control.record("upload", size=len(data), media_type=getattr(media_type, "name", None))
        digest = hashlib.sha256(data).digest()
        return UploadResponse(url="https://mmg.whatsapp.net/scripted", DirectPath="/scripted", MediaKey=b"k" * 32,
                              FileEncSHA256=digest, FileSHA256=digest, FileLength=len(data))

    def send_document(self, to, data, caption=None, filename=None, mimetype=None) -> SendResponse:
        if not self._connected:
            raise ScriptedNeonizeError("not connected")
        self.control.record(
            "sent_document", to=f"{to.User}@{to.Server}", size=len(data), filename=filename, caption=caption,
            mimetype=mimetype,
        )
        return SendResponse(ID="3EB0DOC", Timestamp=int(time.time()))

    # -- behaviour --------------------------------------------------------------------------------
    def _emit(self, event_type, event) -> None:
        handler = self.handlers.get(event_type)
        if handler:
            handler(self, event)

    def _set_connected(self, jid: str) -> None:
        self._connected = True
        self.control.record("connected", jid=jid)
        self._emit(ConnectedEv, ConnectedEv(status=True))

    def _qr_round(self) -> None:
        code = f"2@scripted-ref-{os.getpid()}-{self.connect_calls},bm9pc2Uta2V5,aWRlbnRpdHk=,YWR2LXNlY3JldA=="
        self.control.record("qr", code=code)
        if self.qr_handler:
            self.qr_handler(self, code.encode())

    def _serve(self) -> None:
        """Block like neonize's connect() does, applying commands, until stop()."""
        while not self._stop.wait(POLL):
            for command in self._reader.poll():
                self._apply(command)
        self._connected = False

    def _apply(self, command: dict) -> None:
        cmd = command["cmd"]
        if cmd == "pair" and self._device_jid() is None:
            # A fresh pairing: neonize's schema with a newly registered device, as whatsmeow stores it.
            session = wadb.make_session(os.path.dirname(self.database), "fresh", seed=command.get("seed", 1)).jid
            self.control.record("paired", jid=session)
            jid_user, _, server = session.partition("@")
            user, _, device = jid_user.partition(":")
            self._emit(PairStatusEv, PairStatusEv(ID=JID(User=user, Device=int(device or 0), Server=server), Status=2))
            self._set_connected(session)
        elif cmd == "logout" and self._connected:
            jid = self._device_jid()
            self.control.revoke(jid)
            self._delete_device()
            self._connected = False
            self.control.record("logged_out", jid=jid, on_connect=False)
            self._emit(LoggedOutEv, LoggedOutEv(OnConnect=False, Reason=2))
        elif cmd == "replace" and self._connected:
            self._connected = False
            self.control.record("replaced")
            self._emit(StreamReplacedEv, StreamReplacedEv())
        elif cmd == "drop" and self._connected:
            # A network drop: whatsmeow emits Disconnected and reconnects by itself.
            self._emit(DisconnectedEv, DisconnectedEv(status=True))
            self._set_connected(self._device_jid())
        elif cmd == "connect_failure":
            self._connected = False
            self._emit(ConnectFailureEv, ConnectFailureEv(Reason=command.get("reason", 8), Message="scripted"))
        elif cmd == "message" and self._connected:
            self._emit(MessageEv, _text_message(command))
        elif cmd == "receipt" and self._connected:
            # whatsmeow receipt.go: the contact's device acknowledges messages we sent.
            event = ReceiptEv(Type=command.get("type", 0), Timestamp=int(time.time()))
            event.MessageIDs.extend(command["ids"])
            event.MessageSource.Chat.User = event.MessageSource.Sender.User = command.get("sender", "15550001111")
            event.MessageSource.Chat.Server = event.MessageSource.Sender.Server = "s.whatsapp.net"
            self._emit(ReceiptEv, event)
        elif cmd == "qr" and self._device_jid() is None:
            self._qr_round()

    def _device_jid(self) -> str | None:
        if not os.path.exists(self.database):
            return None
        try:
            with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
                row = db.execute("SELECT jid FROM whatsmeow_device LIMIT 1").fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def _delete_device(self) -> None:
        """As whatsmeow's Store.Delete: the device row goes (its key tables cascade)."""
        with sqlite3.connect(self.database) as db:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("DELETE FROM whatsmeow_device")


def _text_message(command: dict):
    sender = command.get("sender", "15550001111")
    event = MessageEv()
    info = event.Info
    info.ID = command.get("id", "ABCDEF0123")
    info.Type = "text"
    info.Pushname = command.get("push_name", "Tester")
    info.Timestamp = int(command.get("time", time.time()) * 1000)  # neonize: UnixMilli
    info.MessageSource.Chat.User = sender
    info.MessageSource.Chat.Server = "s.whatsapp.net"
    info.MessageSource.Sender.User = sender
    info.MessageSource.Sender.Server = "s.whatsapp.net"
    event.Message.conversation = command.get("text", "hello")
    return event


def factory(database: str) -> ScriptedClient:
    """WHATSAPP_CLIENT_FACTORY entry point: the control directory comes from SCRIPTED_WA_DIR."""
    return ScriptedClient(database, Control(os.environ["SCRIPTED_WA_DIR"]))
