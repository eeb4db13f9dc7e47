"""Lines neonize's Go library writes straight to stdout/stderr, turned into log lines a reader can place.

On every connect the Go side of neonize prints `Press Ctrl+C to exit` and `Login event: success`: to
file descriptors 1 and 2 themselves, past Python's logging (and its secret filter), so they stand in
`heroku logs` without a level or a source. In the worker, fds 1 and 2 become pipes that a thread each
reads: those known lines go through the logger (or are dropped), every other line passes through
unchanged. Python's own `sys.stdout`/`sys.stderr` are pointed at the real streams first, so the bot's
logs and QR codes never take the detour.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading

log = logging.getLogger("neonize")

# Known lines of the Go side (goneonize/main.go), and what becomes of them.
_DROP = re.compile(r"^Press Ctrl\+C to exit$")  # advice for a terminal; a dyno has none
_LOGIN = re.compile(r"^Login event: (\S+)$")


class StreamBridge:
    """One of the standard streams (fd 1 or 2) through a pipe and a thread."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        getattr(sys, name).flush()
        self._real = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self._read_end = read_end
        # Python writes to the real stream directly, line by line (what Heroku's router expects).
        setattr(sys, name, io.TextIOWrapper(io.FileIO(self._real, "w", closefd=False), encoding="utf-8",
                                            errors="backslashreplace", line_buffering=True))
        self._name = name
        self._thread = threading.Thread(target=self._pump, name=f"{name}-bridge", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with io.FileIO(self._read_end, "r", closefd=True) as pipe:
            for raw in io.BufferedReader(pipe):
                try:
                    self._route(raw)
                except Exception:  # never stop pumping: a full pipe would block every writer of fd 1
                    pass

    def _route(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if _DROP.match(text):
            log.debug("neonize: %s", text)
            return
        login = _LOGIN.match(text)
        if login:
            log.info("whatsmeow login event: %s", login[1])
            return
        os.write(self._real, raw)

    def close(self, timeout: float = 2.0) -> None:
        """Put the real stream back on its fd and let the thread drain what is still in the pipe."""
        getattr(sys, self._name).flush()
        os.dup2(self._real, self._fd)  # closes the pipe's write end: the thread reads to EOF and ends
        self._thread.join(timeout)


_bridges: list[StreamBridge] = []


def install() -> None:
    """Once per worker process, before the app (and with it the logging handler) is built."""
    if not _bridges:
        _bridges.extend([StreamBridge(1, "stdout"), StreamBridge(2, "stderr")])


def uninstall() -> None:
    while _bridges:
        _bridges.pop().close()
