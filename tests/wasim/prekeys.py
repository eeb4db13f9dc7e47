"""The server's store of one device's one-time pre-keys: what it uploaded, what it hands out, when
it asks for more.

whatsmeow prekeys.go: the client uploads 812 keys after pairing, then batches of `WantedPreKeyCount`
(50) whenever the server's count is under `MinPreKeyCount` (5): on connect it asks `<count>`
(connectionevents.go `handleConnectSuccess`), and the server tells it the count in an `encrypt`
notification (notification.go `handleEncryptNotification`: `<count value>`, upload when under 5).
The server keeps every batch (ids are the client's: it never renumbers them) and hands each key out
once, in its own order: lowest id first, or at random (an option; WhatsApp's order is not public).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

MIN_PREKEY_COUNT = 5  # prekeys.go MinPreKeyCount: under this the client uploads a new batch
ORDERS = ("lowest", "random")


@dataclass
class HandOut:
    key_id: int | None  # None: the pool was empty, the bundle had no one-time key
    to: str  # who asked (a contact's JID, or "client" for a fetch by the client itself)
    at: float


@dataclass
class PreKeyPool:
    order: str = "lowest"
    seed: int | None = None
    keys: dict[int, bytes] = field(default_factory=dict)  # uploaded, not handed out yet
    batches: list[list[int]] = field(default_factory=list)  # ids of every upload, in order
    handed_out: list[HandOut] = field(default_factory=list)
    # Ids uploaded again with OTHER key material than before (issue 20: must never happen).
    conflicts: list[int] = field(default_factory=list)
    low_notices: int = 0  # encrypt notifications sent
    _seen: dict[int, bytes] = field(default_factory=dict)
    _given: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random | None = None
    _notified_low: bool = False

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"pre-key order must be one of {ORDERS}, not {self.order!r}")
        self._rng = random.Random(self.seed)

    def __len__(self) -> int:
        return len(self.keys)

    def upload(self, batch: dict[int, bytes]) -> None:
        with self._lock:
            for key_id, pub in batch.items():
                if key_id in self._seen and self._seen[key_id] != pub:
                    self.conflicts.append(key_id)
                self._seen[key_id] = pub
                if key_id not in self._given:  # each id is handed out once, ever
                    self.keys[key_id] = pub
            self.batches.append(sorted(batch))
            if len(self.keys) >= MIN_PREKEY_COUNT:
                self._notified_low = False

    def take(self, to: str, key_id: int | None = None) -> tuple[int | None, bytes | None, bool]:
        """One key out of the pool, for good: (id, public key, whether the count just went low).
        `key_id`: this one rather than the order's (a test placing a peer on a key it chose)."""
        with self._lock:
            if not self.keys:
                self.handed_out.append(HandOut(None, to, time.time()))
                return None, None, False
            if key_id is None or key_id not in self.keys:
                key_id = min(self.keys) if self.order == "lowest" else self._rng.choice(sorted(self.keys))
            pub = self.keys.pop(key_id)
            self._given.add(key_id)
            self.handed_out.append(HandOut(key_id, to, time.time()))
            went_low = len(self.keys) < MIN_PREKEY_COUNT and not self._notified_low
            if went_low:
                self._notified_low = True
                self.low_notices += 1
            return key_id, pub, went_low

    def handed_ids(self) -> list[int | None]:
        with self._lock:
            return [h.key_id for h in self.handed_out]
