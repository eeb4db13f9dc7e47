"""The one WhatsApp connection of this worker (placeholder until the connection lands).

gunicorn starts it from `post_worker_init` and stops it from `worker_exit`; until then it reports
"not started".
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("whatsapp")


class Connection:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = "not started"
        self.starts = 0

    def start(self) -> None:
        with self._lock:
            self.starts += 1
            self.state = "starting"
        log.info("connection start requested (placeholder: no WhatsApp client yet)")

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.state = "stopped"
        log.info("connection stopped")

    def status(self) -> dict:
        return {"state": self.state}
