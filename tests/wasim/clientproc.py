"""Runs driver.py (a raw neonize client) in a subprocess and collects its JSON events.

The Go runtime inside neonize does not survive fork, so every client lives in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver.py")


class ClientProcess:
    def __init__(self, db_path: str, env: dict, log_path: str):
        self.db_path = db_path
        self.log_path = log_path
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._log = open(log_path, "ab")
        # Run the driver by path from its own directory's parent-free cwd, so that nothing in
        # this repository shadows neonize's imports.
        self.proc = subprocess.Popen(
            [sys.executable, DRIVER, db_path],
            env=env,
            cwd=os.path.dirname(db_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="driver-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # neonize prints a few non-JSON lines of its own
            if not isinstance(event, dict):
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exited"})
            self._cond.notify_all()

    def names(self) -> list[str]:
        with self._cond:
            return [e["event"] for e in self.events]

    def wait_event(self, name: str, timeout: float = 15, after: int = 0, **match) -> dict:
        """The first event called `name` (matching `match`) at index >= after."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no {name!r} event within {timeout}s; events: {self.names()}; "
                        f"stderr tail: {self.stderr_tail()}"
                    )
                self._cond.wait(min(left, 0.2))

    def command(self, cmd: str, **fields) -> None:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self, n: int = 8000) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            try:
                self.command("stop")
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(timeout=5)
        self._log.close()

    def __enter__(self) -> "ClientProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
