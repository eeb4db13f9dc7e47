"""gunicorn's gthread worker, except that a request reaches a request thread only once its request line
and headers have all arrived, within REQUEST_ARRIVAL_TIMEOUT (what a buffering proxy such as nginx
does in front of gunicorn; Heroku's router may or may not, and a local or proxied bot has none).

Why code of ours: in gunicorn 27 no setting bounds how long the headers may take. Its gthread worker
(gunicorn/workers/gthread.py) hands every accepted connection to a request thread at once
(`accept` -> `enqueue_req`); the thread waits up to 5 s for a first byte (`wait_for_data`,
DEFAULT_WORKER_DATA_TIMEOUT), then reads the headers on a blocking socket with no deadline
(`handle` -> `next(conn.parser)`). `timeout` is the worker's heartbeat, `keepalive` the wait between
two requests of one connection. So 16 clients sending one byte a second held the 16 request threads
for as long as they liked, and /api/health waited behind them.

Here the worker's main loop (the one that already polls the listening socket) reads what a new
connection sends without blocking and keeps it; once the blank line that ends the headers is there,
the bytes are put back in front of gunicorn's own parser (`unreader.unread`) and the connection goes
to a thread as gunicorn would send it. A connection whose headers are not all there in time is
answered 408 and closed; one whose headers pass MAX_REQUEST_HEAD_BYTES, 431. Requests are one per
connection (gunicorn.conf.py sets keepalive = 0), so a second request on a kept-alive connection
cannot be read by a thread the slow way either.
"""

from __future__ import annotations

import errno
import json
import selectors
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from config import MAX_REQUEST_HEAD_BYTES, REQUEST_ARRIVAL_TIMEOUT

HEAD_END = b"\r\n\r\n"  # gunicorn 27 takes CRLF only (http/message.py: a bare LF is refused)
CUT_LOG_INTERVAL = 60.0  # at most one log line a minute about cut connections, however many


def _answer(status: str, code: str, message: str) -> bytes:
    """A complete HTTP response in the API's error shape, closing the connection."""
    body = json.dumps({"error": code, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


TOO_SLOW = _answer("408 Request Timeout", "request_timeout",
                   f"the request line and headers did not arrive within {REQUEST_ARRIVAL_TIMEOUT:g} s")
TOO_LARGE = _answer("431 Request Header Fields Too Large", "request_header_too_large",
                    f"the request line and headers are larger than {MAX_REQUEST_HEAD_BYTES} bytes")


class ArrivalWorker(ThreadWorker):
    """gthread, with request heads gathered by the main loop (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Connections still sending their head, in the order they came (so deadlines ascend). One that
        # went to a thread or was closed stays until it reaches the front, marked by arrive_by = None.
        self.arriving: deque[TConn] = deque()
        self.cut = 0  # connections cut since the last log line about them
        self.cut_logged_at = 0.0

    def accept(self, listener) -> None:
        """Main thread: accept a connection and start gathering its head (gunicorn's accept() would
        hand it to a thread at once)."""
        if self.cfg.is_ssl or self.cfg.http2_cleartext != "off":
            # TLS and HTTP/2 read the socket before the HTTP/1 parser does: leave those to gunicorn.
            return super().accept(listener)
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking from here
        conn.head = bytearray()
        conn.arrive_by = time.monotonic() + REQUEST_ARRIVAL_TIMEOUT
        self.arriving.append(conn)
        self.poller.register(client, selectors.EVENT_READ, partial(self._gather, conn))

    def _gather(self, conn: TConn, _client) -> None:
        """Main thread: the connection is readable; keep what it sent, hand it on once the head is in."""
        try:
            chunk = conn.sock.recv(MAX_REQUEST_HEAD_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client left (or reset) before sending a whole request
            self._close(conn)
            return
        searched_from = max(0, len(conn.head) - len(HEAD_END) + 1)
        conn.head += chunk
        if conn.head.find(HEAD_END, searched_from) != -1:
            self.poller.unregister(conn.sock)
            conn.arrive_by = None
            conn.data_ready = True  # gunicorn's handle() then skips its 5 s wait for a first byte
            self.enqueue_req(conn)
        elif len(conn.head) > MAX_REQUEST_HEAD_BYTES:
            self._close(conn, TOO_LARGE)

    def handle(self, conn: TConn):
        """Request thread: put the gathered head back in front of gunicorn's parser, then serve."""
        head = getattr(conn, "head", None)
        if head is not None:
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
        return super().handle(conn)

    def murder_pending(self) -> None:
        """Main thread, every turn of the loop (at least once a second): gunicorn's own sweep, then cut
        the connections whose head is late (all of them once the worker stops)."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving:
            conn = self.arriving[0]
            if conn.arrive_by is not None and conn.arrive_by > now and self.alive:
                break
            self.arriving.popleft()
            if conn.arrive_by is not None:
                self._close(conn, TOO_SLOW if self.alive else None)
                if self.alive:
                    self.cut += 1
        if self.cut and now - self.cut_logged_at >= CUT_LOG_INTERVAL:
            self.log.warning("closed %d connection(s) whose request line and headers did not arrive within %gs",
                             self.cut, REQUEST_ARRIVAL_TIMEOUT)
            self.cut, self.cut_logged_at = 0, now

    def _close(self, conn: TConn, answer: bytes | None = None) -> None:
        """Main thread: end a connection that never reached a thread, with a last answer if any."""
        conn.arrive_by = None
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if answer:
            try:
                conn.sock.send(answer)  # non-blocking: a client that does not read gets nothing
            except OSError:
                pass
        conn.close()
        self.nr_conns -= 1
