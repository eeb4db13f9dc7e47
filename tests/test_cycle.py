"""The whole Heroku cycle on real processes (issue 7).

Real gunicorn started with the Procfile's command; a fake Platform API on loopback; a fake dyno
manager that restarts the app on every release with the new config vars and an empty disk; the
scripted WhatsApp client inside the worker, driven through its control directory.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.support.botkit import stored_snapshot_for
from tests.support.harness import wait_for
from tests.support.hostile import hostile_values

from tests.support.cycle import API_KEY, AUTH, TOKEN, Cycle


@pytest.fixture
def cycle(tmp_path):
    cycles = []

    def make(**kwargs) -> Cycle:
        made = Cycle(tmp_path, **kwargs)
        cycles.append(made)
        return made

    yield make
    for made in cycles:
        made.close()
        # Scenario 9, checked for every scenario: no secret in anything any process printed.
        output = made.dynos.all_output()
        secrets = [TOKEN, API_KEY] + [v for v in (made.heroku.vars.get("WHATSAPP_SESSION"),) if v]
        secrets += [r.body.get("WHATSAPP_SESSION") for r in made.heroku.requests_with("PATCH")
                    if isinstance(r.body, dict) and r.body.get("WHATSAPP_SESSION")]
        for secret in secrets:
            assert secret[:40] not in output, "a secret appeared in the bot's output"


def test_first_deploy_pairs_saves_once_restarts_and_comes_back_without_qr(cycle):
    c = cycle()
    first = c.dynos.boot()
    first.wait_for_line("WHATSAPP QR")
    c.control.send("pair", seed=21)
    wait_for(lambda: c.heroku.release_count == 1, 20, "the one release of the save")
    jid = c.control.events("paired")[0]["jid"]
    second = wait_for(lambda: len(c.dynos.dynos) == 2 and c.dynos.current, 40, "the restart")
    second.wait_state("connected", timeout=30)
    second.wait_for_line("is the stored one: nothing to save")
    assert "WHATSAPP QR" not in second.output()
    assert "restored session for" in second.output()
    assert c.control.events("connected")[-1]["jid"] == jid
    assert c.heroku.release_count == 1 and c.patches() == 1
    assert first.proc.returncode == 0, "the old dyno stopped cleanly on SIGTERM"


def test_ten_restarts_make_no_save_and_no_release(cycle, tmp_path):
    c = cycle()
    text, jid = stored_snapshot_for(tmp_path, seed=22)
    c.preset_session(text)
    c.dynos.boot().wait_state("connected", timeout=30)
    for _ in range(10):
        dyno = c.dynos.restart()
        dyno.wait_state("connected", timeout=30)
        dyno.wait_for_line("is the stored one: nothing to save")
        assert "WHATSAPP QR" not in dyno.output()
    assert c.heroku.release_count == 0 and c.patches() == 0
    assert c.heroku.vars["WHATSAPP_SESSION"] == text


def test_logged_out_device_is_wiped_everywhere_and_a_fresh_qr_appears(cycle, tmp_path):
    c = cycle()
    text, jid = stored_snapshot_for(tmp_path, seed=23)
    c.preset_session(text)
    c.control.revoke(jid)
    c.dynos.boot()
    wait_for(lambda: c.heroku.release_count == 1, 20, "the release that removes the var")
    assert "WHATSAPP_SESSION" not in c.heroku.vars
    fresh = wait_for(lambda: len(c.dynos.dynos) == 2 and c.dynos.current, 40, "the restart after the removal")
    fresh.wait_for_line("WHATSAPP QR", timeout=30)
    assert not any(p.name == "neonize.db" for p in (tmp_path / "dyno-1" / "session").glob("*"))
    assert c.heroku.release_count == 1


def test_stream_replaced_during_an_overlapping_restart_wipes_nothing(cycle, tmp_path):
    c = cycle(overlap=True)
    text, jid = stored_snapshot_for(tmp_path, seed=24)
    c.preset_session(text)
    old = c.dynos.boot()
    old.wait_state("connected", timeout=30)
    old_pid = [e["pid"] for e in c.control.events("connected")][-1]

    def replace_old_once_new_is_up(new):
        new.wait_state("connected", timeout=30)
        c.control.send("replace", pid=old_pid)  # what WhatsApp does to the older connection
        old.wait_for_line("stream replaced", timeout=20)

    c.dynos.before_stopping_old = replace_old_once_new_is_up
    survivor = c.dynos.restart()
    assert old.proc.poll() is not None
    survivor.wait_state("connected", timeout=10)
    assert c.patches() == 0 and c.heroku.release_count == 0
    assert c.heroku.vars["WHATSAPP_SESSION"] == text


def test_web_concurrency_four_still_means_one_connection(cycle, tmp_path):
    c = cycle(extra_env={"WEB_CONCURRENCY": "4"})
    text, _ = stored_snapshot_for(tmp_path, seed=25)
    c.preset_session(text)
    dyno = c.dynos.boot()
    dyno.wait_state("connected", timeout=30)
    dyno.wait_for_line("nothing to save")  # the save decision's child process has come and gone
    assert len(dyno.process_tree()) == 2
    assert len({e["pid"] for e in c.control.events("connect")}) == 1


def test_sigterm_exits_the_process_tree_within_ten_seconds(cycle, tmp_path):
    c = cycle()
    text, _ = stored_snapshot_for(tmp_path, seed=26)
    c.preset_session(text)
    dyno = c.dynos.boot()
    dyno.wait_state("connected", timeout=30)
    started = time.monotonic()
    dyno.terminate()
    code = dyno.wait(timeout=10)
    assert time.monotonic() - started < 10 and code == 0
    wait_for(lambda: not dyno.alive_pids_in_group(), 5, "the whole process group to exit")
    assert c.patches() == 0


HOSTILE = list(hostile_values("QUFB" * 64))


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_snapshot_in_the_config_var(cycle, tmp_path, name):
    c = cycle()
    value = hostile_values(stored_snapshot_for(tmp_path, seed=27)[0])[name]
    c.preset_session(value)
    dyno = c.dynos.boot()
    dyno.wait_healthy()
    dyno.wait_for_line("WHATSAPP QR", timeout=30)
    dyno.wait_for_line("could not be restored")
    assert c.heroku.vars["WHATSAPP_SESSION"] == value and c.patches() == 0
    dyno_root = tmp_path / "dyno-1"
    assert sorted(p.name for p in dyno_root.iterdir()) == ["session"]
    assert not os.path.exists("/tmp/absolute-escape.db")
    leftovers = [p for p in tmp_path.rglob("*") if p.name in ("escaped.db", "outside")]
    assert leftovers == []
    status = dyno.request("GET", "/api/session-status")[1]
    assert status["restoreError"] and status["state"] == "waiting_for_qr"


FAULTS = [
    (401, {}, "authorizations:create"),
    (403, {}, "write-protected"),
    (404, {}, "HEROKU_APP_NAME"),
    (422, {}, "422"),
    (429, {"retry_after": 1}, "rate"),
    (500, {}, "500"),
]


@pytest.mark.parametrize("status, options, words", FAULTS, ids=[str(f[0]) for f in FAULTS])
def test_platform_api_faults_at_save_time_keep_the_session_and_say_what_to_do(cycle, status, options, words):
    c = cycle()
    # Enough failures to outlast the store's bounded retries for this one save.
    c.heroku.fail_next(status, count=6, **options)
    dyno = c.dynos.boot()
    dyno.wait_for_line("WHATSAPP QR")
    c.control.send("pair", seed=30 + status)
    dyno.wait_for_line("saving the session failed", timeout=60)
    _, body = dyno.request("GET", "/api/session-status", headers=AUTH)  # the hint is for key holders
    assert body["state"] == "connected" and body["hasLocalSession"] is True
    said = json.dumps(body["lastSaveError"])
    assert words.lower() in said.lower(), body["lastSaveError"]
    _, public = dyno.request("GET", "/api/session-status")
    # Without the key: our fixed words, the HTTP status and the hint of the error's kind.
    assert public["lastSaveError"]["status"] == status and "Could not" not in json.dumps(public["lastSaveError"])
    assert c.heroku.release_count == 0
    c.heroku.clear_faults()
    code, saved = dyno.request("POST", "/api/save-session", headers=AUTH, timeout=30)
    assert code == 200 and saved["saved"] is True and saved["restartExpected"] is True
    wait_for(lambda: c.heroku.release_count == 1, 20, "the release of the later save")


def test_platform_api_timeout_at_save_time(cycle):
    # The save's one deadline (20 s on Heroku) shortened: the test waits it out, in seconds.
    c = cycle(extra_env={"SAVE_DEADLINE": "3"})
    c.heroku.hang_next(count=2, seconds=40, method="GET")  # hangs past the whole deadline
    dyno = c.dynos.boot()
    dyno.wait_for_line("WHATSAPP QR")
    c.control.send("pair", seed=40)
    dyno.wait_for_line("saving the session failed", timeout=90)
    _, body = dyno.request("GET", "/api/session-status", headers=AUTH)
    said = json.dumps(body["lastSaveError"])
    assert "did not answer in time" in said and "status.heroku.com" in said
    assert body["state"] == "connected" and c.heroku.release_count == 0
    c.heroku.clear_faults()
    code, saved = dyno.request("POST", "/api/save-session", headers=AUTH, timeout=30)
    assert code == 200 and saved["saved"] is True
    wait_for(lambda: c.heroku.release_count == 1, 20, "the release of the later save")
