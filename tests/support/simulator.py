"""Helpers for running the real bot against the WhatsApp simulator (tests/wasim).

- `running_sim(workdir, **options)`: a started simulator, stopped afterwards (conftest's `sim` fixture).
- `running_receiver(secret)`: a started WebhookReceiver, stopped afterwards.
- `sim_overrides(sim)`: the environment that points a bot's neonize at the simulator.
- `WebhookReceiver`: a real HTTP server on 127.0.0.1 that records what the bot POSTs to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import threading
import time
from dataclasses import dataclass

from tests.wasim import WhatsAppSimulator


@contextlib.contextmanager
def running_sim(workdir: str, **options):
    """A started WhatsAppSimulator; stopped at the end, and what went wrong on its side fails the test."""
    simulator = WhatsAppSimulator(workdir, **options).start()
    try:
        yield simulator
    finally:
        simulator.stop()
    assert not simulator.errors, simulator.errors
    assert not simulator.media.refused, simulator.media.refused  # uploads the simulator turned away


@contextlib.contextmanager
def running_receiver(secret: str | None = None):
    """A started WebhookReceiver, released from any hang and stopped afterwards.

    A test fixture built on this must be asked for before `start_bot`: fixtures end in reverse order,
    and a bot stopped after its receiver spends its whole SIGTERM drain (graceful_timeout - 2 s)
    retrying it."""
    hook = WebhookReceiver(secret=secret).start()
    try:
        yield hook
    finally:
        hook.hang.clear()
        hook.stop()


def sim_overrides(sim) -> dict[str, str]:
    """HTTPS_PROXY, SSL_CERT_FILE and PYTHONPATH (patched neonize first) for a bot's base_env()."""
    env = sim.client_env({})
    return {k: env[k] for k in ("HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "PYTHONPATH")}


@dataclass
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording every POST it accepts; answers 204.

    With `secret`, it checks every POST's X-Signature-256 (webhook.sign) and answers 401 to a wrong
    one, listing it in `bad_signatures`. `down_with = 503` refuses (records in `refused`) until reset;
    `hang.set()` holds every request open until `hang.clear()` (or 60 s)."""

    def __init__(self, secret: str | None = None) -> None:
        self.posts: list[ReceivedPost] = []
        self.refused = 0
        self.bad_signatures: list[bytes] = []
        self.down_with: int | None = None
        self.hang = threading.Event()
        self.hanging = 0  # requests held open right now
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if receiver.hang.is_set():
                    with receiver._cond:
                        receiver.hanging += 1
                        receiver._cond.notify_all()
                    deadline = time.monotonic() + 60
                    while receiver.hang.is_set() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    with receiver._cond:
                        receiver.hanging -= 1
                if secret is not None:
                    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(self.headers.get("X-Signature-256", ""), expected):
                        receiver.bad_signatures.append(body)
                        self.send_response(401)
                        self.end_headers()
                        return
                if receiver.down_with is not None:
                    with receiver._cond:
                        receiver.refused += 1
                        receiver._cond.notify_all()
                    self.send_response(receiver.down_with)
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver.posts.append(ReceivedPost(self.path, dict(self.headers.items()), body))
                    receiver._cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def events(self, name: str | None = None) -> list[dict]:
        """The JSON of every POST so far (of one event, when named), in the order they came."""
        with self._cond:
            posts = list(self.posts)
        found = [json.loads(p.body) for p in posts]
        return [e for e in found if name is None or e.get("event") == name]

    def wait_for_event(self, name: str, timeout: float = 20.0, count: int = 1, where=None) -> list[dict]:
        """Waits until `count` events of this name (matching `where`, when given) came; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events(name) if where is None or where(e["data"])]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e.get("event") for e in self.events()]
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {count} {name!r} event(s); "
                                         f"got {seen}")
                self._cond.wait(left)

    def wait_for_post(self, timeout: float = 20.0, after: int = 0) -> ReceivedPost:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for a webhook POST")
                self._cond.wait(left)
            return self.posts[after]
