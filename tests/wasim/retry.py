"""The sender's side of a retry: a simulated peer answering the client's retry receipts.

Follows whatsmeow retry.go `handleRetryReceipt` step by step (the peer plays whatsmeow):
- the message is looked up among the peer's recent messages (`getMessageForRetry`); unknown: nothing;
- an internal counter per (sender, message id) drops the 10th request and later ones;
- `<keys>` in the receipt (the client adds them from its count 2 on: `sendRetryReceipt`): a new session
  from that bundle (`nodeToPreKeyBundle`: registration, identity, key, skey), sent as a `pkmsg`;
- no keys: `shouldRecreateSession`: without a session -> fetch a bundle from the server (a one-time
  key handed out); with one and count < 2 -> re-send on the session; count >= 2 -> recreate (fetch)
  unless this peer recreated a session with that device less than an hour ago (`recreateSessionTimeout`);
- the re-sent message keeps its id and `t`, and its `enc` carries `count` (the receipt's count);
  for a group message it carries the member's sender key distribution message too (`receipt.IsGroup`)
  and goes to the device alone, from the group with the member as participant.
A peer whose `answers_retries` is False is an old client: it records the receipt and sends nothing.
Every receipt is recorded (count, keys, time, what the peer did) for tests and benchmarks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .binxml import Node
from .groups import with_sender_key
from .signalsession import PreKeyBundle, pad_v2

RECREATE_SESSION_TIMEOUT = 3600.0  # retry.go recreateSessionTimeout
INTERNAL_RETRY_LIMIT = 10  # retry.go: "internal retry counter" >= 10 drops the request


@dataclass
class RetryReceipt:
    message_id: str
    peer: str  # the contact's JID the receipt went to
    device: str  # the client device that sent it
    count: int
    has_keys: bool
    at: float  # time.monotonic() when the simulator read it
    action: str  # resent_on_session | new_session_from_keys | fetched_bundle | ignored_old_client |
    #              unknown_message | dropped_internal_limit
    sent_type: str | None = None  # "msg" / "pkmsg" of the answer, when one was sent


def _int(node: Node | None) -> int:
    return int.from_bytes(node.content, "big") if node is not None and node.content else 0


def bundle_from_keys(receipt: Node) -> PreKeyBundle:
    """prekeys.go `nodeToPreKeyBundle` on a retry receipt: registration, then the <keys> child."""
    keys = receipt.child("keys")
    key, skey = keys.child("key"), keys.child("skey")
    return PreKeyBundle(
        registration_id=_int(receipt.child("registration")),
        identity_pub=keys.child("identity").content,
        signed_prekey_id=_int(skey.child("id")),
        signed_prekey_pub=skey.child("value").content,
        prekey_id=_int(key.child("id")) if key is not None else None,
        prekey_pub=key.child("value").content if key is not None else None,
    )


class RetryResponder:
    def __init__(self, sim, peers) -> None:
        self.sim = sim
        self.peers = peers  # peers.PeerSender: the recent messages and the key fetch
        self.receipts: list[RetryReceipt] = []
        self._counter: dict[tuple[str, str], int] = {}
        self._recreated: dict[tuple[str, str], float] = {}  # (peer, device) -> last recreation
        self._lock = threading.Lock()

    def for_message(self, message_id: str) -> list[RetryReceipt]:
        with self._lock:
            return [r for r in self.receipts if r.message_id == message_id]

    def handle(self, conn, node: Node) -> None:
        retry = node.child("retry")
        if retry is None:
            return
        message_id = retry.attrs.get("id") or node.attrs.get("id")
        count = int(retry.attrs.get("count", "0"))
        device = str(conn.jid)
        has_keys = node.child("keys") is not None
        sent = self.peers.recent.get(message_id)
        peer = sent.contact.jid if sent else str(node.attrs.get("to"))
        record = RetryReceipt(message_id, peer, device, count, has_keys, time.monotonic(), "unknown_message")
        with self._lock:
            self.receipts.append(record)
        if sent is None or sent.device != device:
            return self.sim.notify()
        if not sent.contact.answers_retries:
            record.action = "ignored_old_client"
            return self.sim.notify()
        key = (peer, message_id)
        with self._lock:
            self._counter[key] = self._counter.get(key, 0) + 1
            if self._counter[key] >= INTERNAL_RETRY_LIMIT:
                record.action = "dropped_internal_limit"
                return self.sim.notify()
        contact = sent.contact
        if has_keys:
            contact.start_session(device, bundle_from_keys(node))
            record.action = "new_session_from_keys"
        elif self._should_recreate(contact, device, count):
            contact.start_session(device, self.peers.fetch_bundle(self.sim.device_record(device), contact))
            record.action = "fetched_bundle"
        else:
            record.action = "resent_on_session"
        plaintext = sent.message if sent.group is None else with_sender_key(sent)
        kind, data = contact.encrypt_for(device, pad_v2(plaintext))
        record.sent_type = kind
        conn.send(self.peers.message_node(sent, kind, data, retry_count=count))
        self.sim.notify()

    def _should_recreate(self, contact, device: str, count: int) -> bool:
        """retry.go `shouldRecreateSession`, for the peer's session with that device."""
        key = (contact.jid, device)
        now = time.monotonic()
        with self._lock:
            if contact.session(device) is None:
                self._recreated[key] = now
                return True
            if count < 2:
                return False
            last = self._recreated.get(key)
            if last is None or last + RECREATE_SESSION_TIMEOUT < now:
                self._recreated[key] = now
                return True
            return False
