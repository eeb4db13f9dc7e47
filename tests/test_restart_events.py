"""Issue 24 section 2 with the real bot (the Procfile's gunicorn): no webhook event is lost at a restart.

- SIGTERM (Heroku's daily restart): the worker delivers its queue before it exits, within the grace, and
  logs what it could not deliver as a count.
- SIGKILL of the worker while events wait for a receiver that is down (session and outbox in a real
  PostgreSQL, real neonize against the WhatsApp simulator): the master's next worker delivers every one
  of them once the receiver is back, once each, in order.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from outbox import TABLE
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.scripted_client import Control
from tests.support.simulator import running_receiver, sim_overrides

SIM_PHONE = "14155550124"
CONTACT = "4915112345678"
API_KEY = "restart-events-api-key-5c2d81"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRET = "restart-events-secret-19ab"
WAIT = 30.0
SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`
# A short grace keeps the tests short; the hooks read the value in effect (gunicorn.conf.py `_grace`).
SHORT_GRACE = {"GUNICORN_CMD_ARGS": "--graceful-timeout 8"}
SCRIPTED = "tests.support.scripted_client:factory"


@pytest.fixture
def receiver():  # before start_bot in a test's arguments (tests/support/simulator.py says why)
    with running_receiver(SECRET) as hook:
        yield hook
    assert not hook.bad_signatures


def webhook_status(bot) -> dict:
    code, body = bot.request("GET", "/api/session-status", headers=AUTH)
    assert code == 200, body
    return body["webhook"]


def scripted_bot_with_pending_events(start_bot, tmp_path, receiver, count: int):
    """A bot whose (scripted) WhatsApp shows `count` QR codes while the receiver refuses every POST."""
    control = Control(tmp_path / "control")
    receiver.down_with = 503
    bot = start_bot(WHATSAPP_CLIENT_FACTORY=SCRIPTED, SCRIPTED_WA_DIR=str(control.dir), API_KEY=API_KEY,
                    WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, WEBHOOK_RETRY_DELAY="0.1",
                    WEBHOOK_ATTEMPTS="1000", **SHORT_GRACE)
    bot.wait_state("waiting_for_qr", timeout=WAIT)
    for _ in range(count - 1):
        control.send("qr")
    wait_for(lambda: webhook_status(bot)["pending"] == count, WAIT, f"{count} events waiting")
    wait_for(lambda: receiver.refused >= 3, WAIT, "refused attempts")
    return bot


def test_sigterm_delivers_the_queue_before_the_worker_exits(receiver, start_bot, tmp_path):
    bot = scripted_bot_with_pending_events(start_bot, tmp_path, receiver, 4)
    receiver.down_with = None  # the receiver is back just as Heroku restarts the dyno
    bot.terminate()
    assert bot.wait(timeout=WAIT) == 0
    ids = [e["eventId"] for e in receiver.events("qr")]
    assert len(ids) == 4 and len(set(ids)) == 4, "every event delivered before the exit, once each"
    assert "webhook queue delivered before shutdown" in bot.output()


def test_sigterm_with_the_receiver_down_logs_what_is_lost_as_a_count_within_the_grace(
    receiver, start_bot, tmp_path
):
    bot = scripted_bot_with_pending_events(start_bot, tmp_path, receiver, 3)
    started = time.monotonic()
    bot.terminate()
    assert bot.wait(timeout=WAIT) == 0
    took = time.monotonic() - started
    assert took < 8, f"the worker kept to the grace (8 s): took {took:.1f}s"
    assert "shutting down with 3 webhook event(s) undelivered: lost" in bot.output()
    assert not receiver.posts


# --------------------------------------------------------------------------- SIGKILL, Postgres outbox
def worker_pid(bot) -> int | None:
    """The gunicorn worker: the master's child (the master restarts it when it dies); None in between."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == bot.proc.pid and fields[0] != "Z":
                return int(entry.name)
    return None


def outbox_ids(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f"SELECT event_id FROM {TABLE} ORDER BY seq")]


def test_a_killed_worker_loses_no_event_the_next_worker_delivers_each_once(
    sim, start_bot, tmp_path, receiver, database_url
):
    receiver.down_with = 503  # held down the whole time the first worker lives
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), DATABASE_URL=database_url, API_KEY=API_KEY,
                    SESSION_DIR=str(tmp_path / "session"), WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET,
                    WEBHOOK_RETRY_DELAY="0.2", WEBHOOK_ATTEMPTS="2")
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    wait_for(lambda: printed_qr_texts(bot.output()), WAIT, "a printed QR")
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    bot.wait_state("connected", timeout=WAIT)
    sent = []
    for n in range(2):
        code, answer = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": f"n{n}"}, headers=AUTH,
                                   timeout=WAIT)
        assert code == 200, answer
        sent.append(answer["id"])
    incoming = sim.deliver_text(jid, CONTACT, "are you there?", push_name="Ada")

    # qr, paired, connected, two `sent` receipts, the message: all in the table, none delivered.
    pending = wait_for(lambda: (ids := outbox_ids(database_url)) and len(ids) >= 6 and ids, WAIT,
                       "six events in the outbox")
    wait_for(lambda: receiver.refused >= 3, WAIT, "attempts the receiver refused")
    assert webhook_status(bot)["pending"] >= 6 and webhook_status(bot)["queue"] == "outbox"

    first_worker = worker_pid(bot)
    assert first_worker
    os.kill(first_worker, signal.SIGKILL)
    receiver.down_with = None
    wait_for(lambda: worker_pid(bot) not in (None, first_worker), WAIT, "the master's next worker")
    bot.wait_state("connected", timeout=WAIT)  # from the session in PostgreSQL: no QR

    def delivered_ids():
        return [e["eventId"] for e in receiver.events()]

    wait_for(lambda: set(pending) <= set(delivered_ids()), WAIT, "every event from before the kill")
    wait_for(lambda: not outbox_ids(database_url), WAIT, "an empty outbox")
    got = delivered_ids()
    assert len(got) == len(set(got)), "each event once"
    assert [i for i in got if i in pending] == pending, "in the order they happened"
    names = [e["event"] for e in receiver.events() if e["eventId"] in pending]
    assert names[:3] == ["qr", "paired", "connected"]
    receipts = [e["data"]["id"] for e in receiver.events("receipt") if e["eventId"] in pending]
    assert receipts == sent
    assert [e["data"]["id"] for e in receiver.events("message")] == [incoming]
    assert receiver.events()[-1]["event"] == "connected", "then the new worker's own login"
    assert len(printed_qr_texts(bot.output())) == 1, "no second QR"
