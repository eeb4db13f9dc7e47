"""The save at the dyno's stop (stopsave.py), on real gunicorn with a real SIGTERM, the fake Platform API
and the fake dyno manager (a release restarts the app with an empty disk, as Heroku does).

The scripted client stands in for neonize; what whatsmeow would write while peers chat is written into
the dyno's session database with whatsmeow's own statement (store/sqlstore/store.go putSessionQuery)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time

import pytest

import snapshot
from tests.support.botkit import stored_snapshot_for
from tests.support.cycle import API_KEY, TOKEN, Cycle
from tests.support.harness import wait_for

PUT_SESSION = ("INSERT INTO whatsmeow_sessions (our_jid, their_id, session) VALUES (?1, ?2, ?3)"
               " ON CONFLICT (our_jid, their_id) DO UPDATE SET session=excluded.session")


@pytest.fixture
def cycle(tmp_path):
    made = Cycle(tmp_path)
    yield made
    made.close()
    output = made.dynos.all_output()
    for secret in [TOKEN, API_KEY] + [r.body.get("WHATSAPP_SESSION") for r in made.heroku.requests_with("PATCH")
                                      if isinstance(r.body, dict) and r.body.get("WHATSAPP_SESSION")]:
        assert secret[:40] not in output, "a secret appeared in the bot's output"


def up(dyno):
    """Connected, and the session's look after connecting is done (it counts the boot as connected)."""
    dyno.wait_state("connected", timeout=30)
    dyno.wait_for_line("is the stored one: nothing to save", timeout=30)
    return dyno


def chat(tmp_path, n: int, jid: str, peer: str) -> None:
    """A peer wrote to dyno n: whatsmeow stored the session it built."""
    conn = sqlite3.connect(tmp_path / f"dyno-{n}" / "session" / "neonize.db", timeout=10)
    with conn:
        conn.execute(PUT_SESSION, (jid, peer, os.urandom(700)))
    conn.close()


def stored_sessions(text: str) -> int:
    return snapshot.inspect(text).rows["sessions"]


def test_the_daily_stop_saves_todays_sessions_once_and_the_restarts_after_it_do_not(cycle, tmp_path):
    text, jid = stored_snapshot_for(tmp_path, seed=31)
    cycle.preset_session(text)
    up(cycle.dynos.boot())
    chat(tmp_path, 1, jid, "111111111111111_1.0")

    started = time.monotonic()
    second = cycle.dynos.restart()  # the daily cycle: SIGTERM to dyno 1
    stop_seconds = time.monotonic() - started
    assert cycle.dynos.stop_codes[-1] == 0, "the stopping dyno exited cleanly, before SIGKILL"
    assert cycle.patches() == 1 and cycle.heroku.release_count == 1
    saved = cycle.heroku.vars["WHATSAPP_SESSION"]
    info = snapshot.inspect(saved)
    assert info.stop_saved_at and abs(info.stop_saved_at - time.time()) < 120
    assert stored_sessions(saved) == 1, "the session of today's peer rides along"
    print(f"\nSIGTERM to exit with the save at stop: {stop_seconds:.1f}s (Heroku allows 30 s)")

    # The release restarts the app once more; that boot and every later stop today save nothing,
    # even with new activity (at most one a day).
    third = wait_for(lambda: len(cycle.dynos.dynos) >= 3 and cycle.dynos.current, 60, "the release's restart")
    up(third)
    n = len(cycle.dynos.dynos)
    chat(tmp_path, n, jid, "222222222222222_1.0")
    for _ in range(2):
        up(cycle.dynos.restart())
    assert cycle.patches() == 1 and cycle.heroku.release_count == 1
    assert "not saving the session at stop: the stored snapshot is from a stop save" in cycle.dynos.all_output()
    assert second.proc.returncode is not None  # every dyno but the current one has stopped


def test_an_idle_day_saves_nothing_at_stop(cycle, tmp_path):
    text, jid = stored_snapshot_for(tmp_path, seed=32)
    cycle.preset_session(text)
    up(cycle.dynos.boot())
    up(cycle.dynos.restart())
    out = cycle.dynos.dynos[0].output()
    assert "save at stop: unchanged, nothing written" in out, out[-3000:]
    assert cycle.patches() == 0 and cycle.heroku.release_count == 0
    assert cycle.heroku.vars["WHATSAPP_SESSION"] == text
