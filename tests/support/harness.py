"""Real bot processes for tests: gunicorn started with the Procfile's command, polled with deadlines.

Every process started here is stopped by `BotProcess.stop()` (tests use it as a context manager or a
fixture finalizer), so a failing test leaves nothing running.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/support/harness.py
VENV_BIN = Path(sys.executable).parent


def procfile_command() -> list[str]:
    """The `web:` command of the Procfile, as Heroku would run it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line[len("web:"):].strip())
    raise AssertionError("Procfile has no web: line")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# What every process of a test run shares, when conftest's pytest_configure set it: the neonize schema
# template (SCHEMA_CACHE_DIR) and the compiled bytecode (PYTHONPYCACHEPREFIX).
RUN_SHARED = ("SCHEMA_CACHE_DIR", "PYTHONPYCACHEPREFIX")


def run_shared_env() -> dict[str, str]:
    """The run's shared settings, for a child given an environment of its own."""
    return {name: os.environ[name] for name in RUN_SHARED if os.environ.get(name)}


def base_env(**overrides: str) -> dict[str, str]:
    """A clean environment: nothing of the developer's shell leaks in but PATH and the locale."""
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HOME": os.environ.get("HOME", "/tmp"),
        # WhatsApp is never reachable from tests: a dead proxy makes any real dial fail at once.
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    env.update(run_shared_env())
    env.update(overrides)
    return env


class BotProcess:
    """One `gunicorn` master (and its worker) running the bot, output captured line by line."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT, command: list[str] | None = None):
        self.env = dict(env)
        port = self.env.setdefault("PORT", str(free_port()))
        self.port = int(port) if port.isdigit() else 0  # a test may pass a bad PORT on purpose
        self.cwd = cwd
        self.command = command or procfile_command()
        self.lines: list[str] = []
        self._lines_lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self.started_at = 0.0

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> "BotProcess":
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group, so stop() can reach the whole tree
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._lines_lock:
                self.lines.append(line.rstrip("\n"))

    def terminate(self) -> None:
        """SIGTERM to the master, as Heroku's dyno manager sends it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL for the whole group after `timeout` (Heroku's 30 s)."""
        if not self.proc:
            return None
        self.terminate()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.kill_group()
        if self._reader:
            self._reader.join(timeout=5)
        return code

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> "BotProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- observation ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        with self._lines_lock:
            return "\n".join(self.lines)

    def count(self, text: str) -> int:
        with self._lines_lock:
            return sum(text in line for line in self.lines)

    def wait_for_line(self, text: str, timeout: float = 20.0, occurrences: int = 1) -> None:
        def seen():
            if self.proc.poll() is not None and self.count(text) < occurrences:
                raise AssertionError(f"bot exited ({self.proc.returncode}) before printing {text!r}:\n{self.output()}")
            return self.count(text) >= occurrences

        wait_for(seen, timeout, f"{text!r} in the bot's output ({occurrences}x)")

    def request(self, method: str, path: str, body=None, headers=None, timeout: float = 5.0):
        """(status, json) for one request; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_healthy(self, timeout: float = 20.0) -> dict:
        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited ({self.proc.returncode}):\n{self.output()}")
            try:
                status, body = self.request("GET", "/api/health", timeout=1)
            except (OSError, ValueError):
                return None
            return body if status == 200 else None

        return wait_for(healthy, timeout, "/api/health to answer 200")

    def wait_state(self, state: str, timeout: float = 20.0) -> dict:
        def reached():
            try:
                _, body = self.request("GET", "/api/health", timeout=1)
            except (OSError, ValueError):
                return None
            return body if body and body.get("state") == state else None

        return wait_for(reached, timeout, f"state {state!r} (output so far:\n{self.output()[-3000:]})")

    def process_tree(self) -> list[int]:
        """PIDs of the master and all its live descendants (from /proc)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            # Zombies are not running processes: neonize's import leaves one `sh` (os.popen("uname -a")
            # never closed, neonize/utils/platform.py).
            if state != "Z":
                children.setdefault(int(ppid), []).append(int(entry.name))
        tree, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def alive_pids_in_group(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                state, pgid = fields[0], int(fields[2])
                if pgid == self.proc.pid and state != "Z":
                    pids.append(int(entry.name))
        return pids
