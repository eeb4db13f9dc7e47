"""A fake Heroku dyno manager: restarts the bot on every config-var release, as Heroku does.

Heroku, on a release: starts the app again with the new config vars in its environment and stops the
old dyno with SIGTERM, then SIGKILL 30 s later. Usually the old one stops first; during some restarts
the new one already runs while the old one stops (`overlap=True`). The disk is not kept: each boot
gets a fresh, empty session directory, so only the config var carries the session across.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from tests.support.fake_heroku import FakeHeroku
from tests.support.harness import BotProcess, base_env

SIGKILL_AFTER = 30.0  # Heroku's grace period between SIGTERM and SIGKILL


class DynoManager:
    def __init__(self, heroku: FakeHeroku, root: Path, env: dict[str, str], *, overlap: bool = False,
                 cwd: Path | None = None, command: list[str] | None = None) -> None:
        self.heroku = heroku
        self.cwd, self.command = cwd, command  # another checkout of the bot (a benchmark's baseline)
        self.root = root
        self.env = env
        self.overlap = overlap
        self.dynos: list[BotProcess] = []
        self.current: BotProcess | None = None
        self.stop_codes: list[int | None] = []
        # Overlap only: called with the new dyno before the old one gets SIGTERM (a test's chance to
        # play what WhatsApp does while both run).
        self.before_stopping_old = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False  # set by stop_all(): a release that arrives later boots nothing
        heroku.on_release = self._on_release

    def boot(self) -> BotProcess:
        """Start a dyno with the app's current config vars and an empty disk."""
        n = next(self._counter)
        env = base_env(**self.env)
        env.update({k: v for k, v in self.heroku.vars.items() if v is not None})
        env["SESSION_DIR"] = str(self.root / f"dyno-{n}" / "session")
        env["HEROKU_API_URL"] = self.heroku.url
        dyno = BotProcess(env, **({"cwd": self.cwd} if self.cwd else {}), command=self.command).start()
        self.dynos.append(dyno)
        self.current = dyno
        return dyno

    def restart(self) -> BotProcess | None:
        with self._lock:
            if self._closed:
                return None
            old = self.current
            if self.overlap:
                new = self.boot()
                if old:
                    if self.before_stopping_old:
                        self.before_stopping_old(new)
                    self.stop_codes.append(old.stop(timeout=SIGKILL_AFTER))
            else:
                if old:
                    self.stop_codes.append(old.stop(timeout=SIGKILL_AFTER))
                new = self.boot()
            return new

    def _on_release(self, _vars: dict) -> None:
        self.restart()

    def stop_all(self) -> None:
        """Stop every dyno. Taking the lock waits for a restart already under way (a release the fake
        Platform API is still handling), so the dyno it boots is in the list; later ones boot nothing."""
        self.heroku.on_release = None
        with self._lock:
            self._closed = True
            dynos = list(self.dynos)
        for dyno in dynos:
            dyno.stop(timeout=SIGKILL_AFTER)

    def all_output(self) -> str:
        return "\n".join(d.output() for d in self.dynos)
