"""Incoming messages, POSTed to WEBHOOK_URL as signed JSON from a bounded queue.

neonize calls our event handler on its own event thread; a slow or dead webhook must never hold that
thread (whatsmeow would stop processing everything else). So handlers only enqueue, and one sender
thread delivers with retries. When the queue is full the oldest message is dropped and logged: the
bot stays responsive, and the loss is visible in `heroku logs`.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import threading
import time

import requests

from recipients import jid_text

log = logging.getLogger("webhook")

SIGNATURE_HEADER = "X-Signature-256"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>` HMAC of the exact body bytes (the receiver recomputes it over the raw body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        queue_size: int = 200,
        attempts: int = 5,
        first_retry: float = 1.0,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self._queue: collections.deque[dict] = collections.deque(maxlen=queue_size)
        self._wake = threading.Condition()
        self._stopping = False
        self._attempts = attempts
        self._first_retry = first_retry
        self._timeout = timeout
        self._session = session or requests.Session()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread:
            self._thread.join(timeout)

    def enqueue(self, payload: dict) -> None:
        """Never blocks: called from neonize's event thread."""
        with self._wake:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                log.warning("webhook queue full (%d): dropping the oldest message", self._queue.maxlen)
            self._queue.append(payload)
            self._wake.notify()

    def pending(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                payload = self._queue.popleft()
            self._deliver(payload)

    def _deliver(self, payload: dict) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "whatsapp-heroku-bot webhook"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        delay = self._first_retry
        for attempt in range(1, self._attempts + 1):
            problem = None
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=self._timeout)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    # The receiver refuses this message; repeating it will not change its mind.
                    self.failed += 1
                    log.error("webhook refused message %s: HTTP %s", payload.get("id"), response.status_code)
                    return
                problem = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                problem = type(exc).__name__
            if attempt < self._attempts:
                log.warning("webhook delivery of %s failed (%s), retry %d in %.0fs", payload.get("id"), problem,
                            attempt, delay)
                with self._wake:
                    if self._wake.wait_for(lambda: self._stopping, timeout=delay):
                        return
                delay = min(delay * 2, 60)
        self.failed += 1
        log.error("webhook gave up on message %s after %d attempts", payload.get("id"), self._attempts)


def message_payload(event) -> dict | None:
    """The webhook JSON for a neonize Message event; None for what is not worth forwarding."""
    info = event.Info
    source = info.MessageSource
    if source.IsFromMe:
        return None
    message = event.Message
    text = (
        message.conversation
        or message.extendedTextMessage.text
        or message.imageMessage.caption
        or message.videoMessage.caption
        or message.documentMessage.caption
        or ""
    )
    return {
        "id": info.ID,
        "from": jid_text(source.Sender),
        "chat": jid_text(source.Chat),
        "isGroup": bool(source.IsGroup),
        "pushName": info.Pushname,
        "time": int(info.Timestamp),
        "type": info.Type or ("text" if text else "other"),
        "mediaType": info.MediaType or None,
        "text": text,
        "receivedAt": int(time.time()),
    }
