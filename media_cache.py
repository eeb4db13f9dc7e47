"""The keys to the files customers sent since the process started: a cache bounded by count and age.

Only what a later download needs is kept (media_ref: key, hashes, where the file is; a few hundred
bytes each), never a file. Bounded both ways so a busy number cannot grow the worker's memory: past
`max_entries` the oldest entry goes first, and an entry older than `max_age` seconds is gone (GET
/api/media answers 404 for it, as for an id it never saw).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class MediaCache(Generic[T]):
    def __init__(self, max_entries: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()  # neonize's event thread puts, request threads get

    def put(self, message_id: str, value: T) -> None:
        if self.max_entries <= 0 or not message_id:
            return
        with self._lock:
            self._entries[message_id] = (self._clock(), value)
            self._entries.move_to_end(message_id)
            self._expire()
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, message_id: str) -> T | None:
        with self._lock:
            self._expire()
            found = self._entries.get(message_id)
        return found[1] if found else None

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    def _expire(self) -> None:
        # Entries are in insertion order, so the expired ones are at the front.
        limit = self._clock() - self.max_age
        while self._entries:
            first = next(iter(self._entries.values()))
            if first[0] > limit:
                return
            self._entries.popitem(last=False)
