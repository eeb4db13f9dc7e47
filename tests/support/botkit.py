"""An in-process bot for tests: real SnapshotSession, real store and snapshots, scripted WhatsApp client."""

from __future__ import annotations

import io
from pathlib import Path

import snapshot
import stores
from snapshot_session import SnapshotSession
from tests.support import wadb
from tests.support.harness import wait_for
from tests.support.scripted_client import Control, ScriptedClient
from whatsapp import Backoff, Connection


class CountingStore:
    """Wraps a real store and counts the calls that would create a Heroku release."""

    def __init__(self, store) -> None:
        self._store = store
        self.saves: list[str] = []
        self.writes = 0
        self.clears = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save(self, text, **kwargs):
        self.saves.append(text)
        result = self._store.save(text, **kwargs)
        self.writes += bool(result.changed)
        return result

    def clear(self, **kwargs):
        self.clears += 1
        return self._store.clear(**kwargs)


# A deadline, not an expectation (these steps take milliseconds on an idle machine): a pairing writes a
# device into a copy of neonize's schema template, which the first user in a process reads (or builds,
# in a child that imports neonize), and the scripted client answers from a thread that polls. With the
# suite's other workers, their bots and PostgreSQL on two cores, 10 s was once not enough (11 s from QR
# to paired, seen with four workers).
WAIT = 30.0


class Bot:
    def __init__(self, root: Path, *, save_delay: float = 0.05, store=None) -> None:
        self.root = root
        self.session_dir = root / "session"
        self.control = Control(root / "control")
        self.store = CountingStore(store or stores.LocalFileStore(root / "session.snapshot"))
        self.session = SnapshotSession(self.session_dir, self.store, save_delay=save_delay)
        self.out = io.StringIO()
        self.clients: list[ScriptedClient] = []
        self.connection = Connection(
            self.session,
            client_factory=self._make_client,
            backoff=Backoff(first=0.01, cap=0.05),
            out=self.out,
        )

    def _make_client(self, database: str) -> ScriptedClient:
        client = ScriptedClient(database, self.control)
        self.clients.append(client)
        return client

    def start(self) -> "Bot":
        self.connection.start()
        return self

    def stop(self) -> None:
        self.connection.stop(timeout=5)

    def wait_saved(self, writes: int = 1, timeout: float = WAIT) -> None:
        """Until the store has had `writes` writes and the save that made them has ended. The store's
        write returns before the save's flight is over; a save asked for in between joins that flight
        and answers with its outcome (a forced save with a failing Heroku got 200, with four workers)."""
        wait_for(lambda: self.store.writes == writes and self.session.save_in_progress() is None, timeout,
                 f"{writes} store write(s) and no save running (now {self.store.writes})")

    def wait_state(self, state: str, timeout: float = WAIT) -> None:
        wait_for(lambda: self.connection.state == state, timeout,
                 f"state {state!r} (now {self.connection.state!r}, last error {self.connection.last_error!r})")

    def wait_event(self, name: str, count: int = 1, timeout: float = WAIT) -> list[dict]:
        return wait_for(lambda: len(self.control.events(name)) >= count and self.control.events(name), timeout,
                        f"{count} scripted {name!r} event(s)")

    def pair(self, seed: int = 1) -> str:
        self.wait_state("waiting_for_qr")
        self.control.send("pair", seed=seed)
        self.wait_state("connected")
        return self.control.events("paired")[-1]["jid"]


def stored_snapshot_for(root: Path, seed: int = 7, profile: str = "fresh") -> tuple[str, str]:
    """(snapshot text, device JID) of a session made elsewhere, as a previous dyno would have saved it."""
    made = wadb.make_session(str(root / f"elsewhere-{seed}"), profile, seed=seed)
    # At the save's own target (a quarter less the var's name), as the bot would have packed it: an
    # unchanged session then packs to the same text at a stop (stopsave.py) and nothing is written.
    return snapshot.pack(made.session_dir, 16384 - len("WHATSAPP_SESSION")), made.jid
