"""Hostile HTTP clients for tests and benches: one that drips a request's head a byte a second
(slowloris), and where a bot's worker process is and how much memory it peaked at."""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path


class Dripper:
    """A client sending a request's head one byte a second, noting when (and with what) the bot cut it."""

    HEAD = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.interval = interval
        self.started = time.monotonic()
        self.cut_after: float | None = None  # seconds from connect until the bot answered or closed
        self.answer = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        for byte in self.HEAD:
            try:
                self.sock.send(bytes([byte]))
                # Wait one interval for the bot to say or close something (readable), then the next byte.
                readable, _, _ = select.select([self.sock], [], [], self.interval)
                if readable:
                    while chunk := self.sock.recv(4096):
                        self.answer += chunk
            except OSError:
                pass
            else:
                if not readable and not self.stop.is_set():
                    continue
            break
        if not self.stop.is_set():
            self.cut_after = time.monotonic() - self.started

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def worker_pid(bot) -> int:
    """The pid of a BotProcess's one gunicorn worker (the master's child)."""
    [pid] = [p for p in bot.process_tree() if p != bot.proc.pid
             and int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == bot.proc.pid]
    return pid


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory since it started (the kernel's high-water mark, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")
