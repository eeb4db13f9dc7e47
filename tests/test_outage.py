"""outage.OutageWatch on its own: one `unreachable` event per outage, after the grace, with the cause
and how long; a login ends it (and says how long it lasted); a scan, a logout or a ban is no outage.

With the real bot and the WhatsApp simulator: tests/test_status_truth.py.
"""

from __future__ import annotations

import time

from whatsapp.outage import NEVER_CONNECTED, NO_ANSWER, OutageWatch
from tests.support.botkit import WAIT
from tests.support.harness import wait_for


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, name, data):
        self.events.append((name, data))


def test_one_event_per_outage_after_the_grace_with_the_cause_and_how_long():
    sink = Sink()
    watch = OutageWatch(0.3, sink)
    watch.begin("")  # the start: never connected yet
    assert watch.status()["cause"] == NEVER_CONNECTED and watch.status()["reported"] is False
    for _ in range(5):  # every failed attempt: still one outage
        watch.begin(NO_ANSWER, "cannot reach proxy 127.0.0.1:9: [Errno 111] Connection refused\x1b[2J")
    assert not sink.events, "nothing within the grace"
    wait_for(lambda: sink.events, WAIT, "the unreachable event")
    time.sleep(0.5)  # the event must stay single while the outage goes on
    assert len(sink.events) == 1
    name, data = sink.events[0]
    assert name == "unreachable" and data["cause"] == NO_ANSWER
    assert data["detail"] == "cannot reach proxy 127.0.0.1:9: [Errno 111] Connection refused\\x1b[2J"
    assert data["seconds"] >= 0 and data["since"].endswith("Z")
    assert watch.status()["reported"] is True and watch.status()["seconds"] >= data["seconds"]
    lasted = watch.end()
    assert lasted is not None and lasted >= 0.3 and watch.status() is None

    watch.begin("stream replaced")  # the next outage is told again
    wait_for(lambda: len(sink.events) == 2, WAIT, "the second outage's event")
    watch.stop()


def test_a_blip_a_scan_or_a_logout_is_no_news():
    sink = Sink()
    watch = OutageWatch(0.2, sink)
    watch.begin("connection reset")
    assert watch.end() is None, "ended within the grace: nothing was told, nothing to tell"
    watch.begin("")
    watch.pause()  # a QR code came: WhatsApp answers
    watch.begin("logged out")
    watch.pause()
    time.sleep(0.5)
    assert sink.events == [] and watch.status() is None


def test_a_failing_receiver_of_the_event_does_not_break_the_watch():
    def broken(name, data):
        raise RuntimeError("queue gone")

    watch = OutageWatch(0.05, broken)
    watch.begin("x")
    wait_for(lambda: watch.reported_total == 1, WAIT, "the attempt to tell")
    assert watch.status()["reported"] is True
    watch.stop()
