"""A raw neonize client for the simulator's own tests: events out as JSON lines, commands in.

Run as `python -m tests.wasim.driver DB_PATH` (or by path) with the simulator's client_env().
stdout: one JSON object per line, {"event": name, ...}. stdin: JSON commands, one per line:
{"cmd": "send", "to": "<jid>", "text": "..."} · {"cmd": "pair_phone", "phone": "..."} ·
{"cmd": "download", "id": "<message id>"} (neonize's own download_any: sha256 and length out) ·
{"cmd": "reject_call", "id": "<call id>"} · {"cmd": "stop"}. It exits after "stop", or when stdin closes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback

_print_lock = threading.Lock()


def emit(event: str, **fields) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


def main(db_path: str) -> int:
    import neonize
    from neonize.client import NewClient
    from neonize.events import (
        CallOfferEv,
        ConnectedEv,
        ConnectFailureEv,
        DisconnectedEv,
        LoggedOutEv,
        MessageEv,
        PairStatusEv,
        StreamErrorEv,
        StreamReplacedEv,
        TemporaryBanEv,
        UndecryptableMessageEv,
    )
    from neonize.utils.jid import Jid2String, build_jid

    # whatsmeow's debug log (every node in and out) into stderr, which clientproc.py keeps in a file and
    # quotes the tail of when a test times out: a message that never arrives then shows where whatsmeow
    # was (one did, twice in some thirty runs of the suite, stuck handling a first pkmsg). neonize hands
    # whatsmeow the level of its own logger at connect, and its handlers log through the root logger.
    from neonize.utils.log import log as neonize_log

    neonize_log.setLevel(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    emit("loaded", neonize_file=neonize.__file__)
    client = NewClient(db_path)

    @client.qr
    def on_qr(_client, data: bytes) -> None:
        emit("qr", code=data.decode())

    @client.event(PairStatusEv)
    def on_pair(_client, ev) -> None:
        emit("pair_status", jid=Jid2String(ev.ID), status=int(ev.Status), error=ev.Error)

    @client.event(ConnectedEv)
    def on_connected(_client, ev) -> None:
        emit("connected")

    @client.event(LoggedOutEv)
    def on_logged_out(_client, ev) -> None:
        emit("logged_out", on_connect=bool(ev.OnConnect), reason=int(ev.Reason))

    @client.event(StreamReplacedEv)
    def on_replaced(_client, ev) -> None:
        emit("stream_replaced")

    @client.event(StreamErrorEv)
    def on_stream_error(_client, ev) -> None:
        emit("stream_error", code=ev.Code)

    @client.event(TemporaryBanEv)
    def on_ban(_client, ev) -> None:
        emit("temporary_ban", code=int(ev.Code), expire=int(ev.Expire))

    @client.event(ConnectFailureEv)
    def on_failure(_client, ev) -> None:
        emit("connect_failure", reason=int(ev.Reason), message=ev.Message)

    @client.event(DisconnectedEv)
    def on_disconnected(_client, ev) -> None:
        emit("disconnected")

    received = {}  # message id -> Message, for "download"
    offers = {}  # call id -> caller JID, for "reject_call"

    @client.event(MessageEv)
    def on_message(_client, ev) -> None:
        msg = ev.Message
        received[ev.Info.ID] = msg
        text = msg.conversation or msg.extendedTextMessage.text
        protocol = msg.protocolMessage if msg.HasField("protocolMessage") else None
        emit(
            "message",
            id=ev.Info.ID,
            chat=Jid2String(ev.Info.MessageSource.Chat),
            sender=Jid2String(ev.Info.MessageSource.Sender),
            text=text,
            type=ev.Info.Type,
            media_type=ev.Info.MediaType,
            edit_attr=ev.Info.Edit,
            is_edit=bool(ev.IsEdit),
            fields=sorted(f.name for f, _ in msg.ListFields()),
            protocol_type=int(protocol.type) if protocol is not None else None,
            protocol_key=protocol.key.ID if protocol is not None else None,
            edited_text=protocol.editedMessage.conversation if protocol is not None else None,
            reaction=[msg.reactionMessage.key.ID, msg.reactionMessage.text] if msg.HasField("reactionMessage") else None,
        )

    @client.event(UndecryptableMessageEv)
    def on_undecryptable(_client, ev) -> None:
        emit("undecryptable", id=ev.Info.ID, sender=Jid2String(ev.Info.MessageSource.Sender),
             unavailable=bool(ev.IsUnavailable))

    @client.event(CallOfferEv)
    def on_call(_client, ev) -> None:
        meta = ev.basicCallMeta
        offers[meta.callID] = meta.callCreator
        emit("call_offer", id=meta.callID, caller=Jid2String(meta.callCreator), sender=Jid2String(getattr(meta, "from")),
             platform=ev.callRemoteMeta.remotePlatform)

    def connect() -> None:
        try:
            client.connect()
            emit("connect_returned")
        except Exception as exc:  # reported, not raised: the test reads stdout
            emit("connect_error", error=f"{type(exc).__name__}: {exc}")

    threading.Thread(target=connect, name="connect", daemon=True).start()

    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            if cmd["cmd"] == "stop":
                break
            if cmd["cmd"] == "send":
                user, server = cmd["to"].split("@")
                resp = client.send_message(build_jid(user, server), cmd["text"])
                emit("sent", id=resp.ID)
            elif cmd["cmd"] == "download":
                import hashlib

                data = client.download_any(received[cmd["id"]])
                emit("downloaded", id=cmd["id"], sha256=hashlib.sha256(data).hexdigest(), length=len(data))
            elif cmd["cmd"] == "reject_call":
                client.reject_call(offers[cmd["id"]], cmd["id"])
                emit("call_rejected", id=cmd["id"])
            elif cmd["cmd"] == "pair_phone":
                code = client.PairPhone(cmd["phone"], True)
                emit("pair_code", code=code)
        except Exception as exc:
            emit("command_error", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
    emit("stopping")
    try:
        client.stop()
    except Exception:
        pass
    os._exit(0)  # the Go runtime keeps threads; nothing left to flush


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
