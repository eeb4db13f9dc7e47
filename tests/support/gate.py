"""A loopback port standing between the bot and the WhatsApp simulator's proxy: connections are refused
until `open()` (WhatsApp out of reach), then relayed (tests/test_offline.py, tests/test_status_truth.py)."""

from __future__ import annotations

import socket
import threading


class Gate:
    """A loopback port that refuses connections until `open()`, then relays them to `target_port`
    (or, without one, accepts each connection and closes it at once: port open, handshake fails)."""

    def __init__(self, target_port: int | None) -> None:
        # Bound now but not listening: the port is ours (no other socket can take it meanwhile, as a
        # port merely chosen and bound later could be), and a connection to it is refused until open().
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self.target_port = target_port
        self._listener: socket.socket = listener
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.target_port is None:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
