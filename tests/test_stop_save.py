"""The save at the dyno's stop (stopsave.py), on real gunicorn with a real SIGTERM, the fake Platform API
and the fake dyno manager (a release restarts the app with an empty disk, as Heroku does).

The scripted client stands in for neonize; what whatsmeow would write while contacts write is written
into the dyno's session database with whatsmeow's own statement: a new contact's first message uses up
our lowest one-time pre-key (store/sqlstore/store.go deletePreKeyQuery)."""

from __future__ import annotations

import sqlite3
import time

import pytest

import snapshot
from tests.support.botkit import stored_snapshot_for
from tests.support.cycle import API_KEY, TOKEN, Cycle
from tests.support.harness import wait_for

DELETE_PREKEY = "DELETE FROM whatsmeow_pre_keys WHERE jid=?1 AND key_id=?2"


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


def new_contact(tmp_path, n: int, jid: str) -> int:
    """A new contact wrote to dyno n: whatsmeow used up (deleted) our lowest one-time pre-key."""
    conn = sqlite3.connect(tmp_path / f"dyno-{n}" / "session" / "neonize.db", timeout=10)
    with conn:
        lowest = conn.execute("SELECT MIN(key_id) FROM whatsmeow_pre_keys WHERE uploaded").fetchone()[0]
        conn.execute(DELETE_PREKEY, (jid, lowest))
    conn.close()
    return lowest


def prekey_ids(text: str, tmp_path, name: str) -> set:
    snapshot.unpack(text, str(tmp_path / name))
    conn = sqlite3.connect(tmp_path / name / "neonize.db")
    ids = {r[0] for r in conn.execute("SELECT key_id FROM whatsmeow_pre_keys")}
    conn.close()
    return ids


def test_the_daily_stop_saves_todays_sessions_once_and_the_restarts_after_it_do_not(cycle, tmp_path):
    text, jid = stored_snapshot_for(tmp_path, seed=31)
    cycle.preset_session(text)
    up(cycle.dynos.boot())
    used = new_contact(tmp_path, 1, jid)
    assert used in prekey_ids(text, tmp_path, "before")

    started = time.monotonic()
    second = cycle.dynos.restart()  # the daily cycle: SIGTERM to dyno 1
    stop_seconds = time.monotonic() - started
    assert cycle.dynos.stop_codes[-1] == 0, "the stopping dyno exited cleanly, before SIGKILL"
    assert cycle.patches() == 1 and cycle.heroku.release_count == 1
    saved = cycle.heroku.vars["WHATSAPP_SESSION"]
    info = snapshot.inspect(saved)
    assert info.stop_saved_at and abs(info.stop_saved_at - time.time()) < 120
    after = prekey_ids(saved, tmp_path, "after")
    assert used not in after, "the used key is gone from the stored snapshot"
    assert len(after) >= len(prekey_ids(text, tmp_path, "again")) - 1, "the next lowest key takes its place"
    print(f"\nSIGTERM to exit with the save at stop: {stop_seconds:.1f}s (Heroku allows 30 s)")

    # The release restarts the app once more; that boot and every later stop today save nothing,
    # even with new activity (at most one a day).
    third = wait_for(lambda: len(cycle.dynos.dynos) >= 3 and cycle.dynos.current, 60, "the release's restart")
    up(third)
    n = len(cycle.dynos.dynos)
    new_contact(tmp_path, n, jid)
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


def test_the_rules_of_a_save_at_stop():
    from stopsave import STOP_SAVE_EVERY, why_not

    now = 2_000_000_000.0
    base = dict(restarts_on_write=True, local_jid="1:2@s.whatsapp.net", stored_jid="1:2@s.whatsapp.net",
                stored_stamp=None, connected_this_boot=True, wiped=False, seconds_left=20.0, now=now)
    assert why_not(**base) is None  # never stop-saved yet: the first stop with changes saves
    assert why_not(**{**base, "stored_stamp": now - STOP_SAVE_EVERY - 1}) is None  # the next day
    # The boot our own save caused, and a deploy or config change the same day: no second save.
    assert "at most one a day" in why_not(**{**base, "stored_stamp": now - 60})
    assert "at most one a day" in why_not(**{**base, "stored_stamp": now - STOP_SAVE_EVERY + 60})
    # A local file costs no restart: the day's limit does not apply there.
    assert why_not(**{**base, "stored_stamp": now - 60, "restarts_on_write": False}) is None
    assert why_not(**{**base, "connected_this_boot": False})
    assert why_not(**{**base, "wiped": True})
    assert why_not(**{**base, "local_jid": None})
    assert why_not(**{**base, "seconds_left": 1.0})
    # A new pairing whose save did not happen yet is kept, whatever the stamp.
    assert why_not(**{**base, "stored_jid": "9:9@s.whatsapp.net", "stored_stamp": now - 60}) is None
