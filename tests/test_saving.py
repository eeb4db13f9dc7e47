"""Saving through the API on real processes (issue 13): one save in flight, never an equal value
written, every answer within Heroku's 30 s router limit, and the request threads free for the rest.

Real gunicorn (Procfile command), the fake Platform API on loopback, the scripted WhatsApp client.
SAVE_DEADLINE is shortened so the hanging-API case takes seconds, not the production 20 s.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import snapshot
from snapshot_session import SnapshotSession
from stores import LocalFileStore
from tests.support import wadb
from tests.support.cycle import AUTH, Cycle
from tests.support.harness import wait_for

PARALLEL = 10


def paired_dyno(cycle: Cycle, seed: int):
    """A dyno with a new pairing and no automatic save yet (SESSION_SAVE_DELAY is long)."""
    dyno = cycle.dynos.boot()
    dyno.wait_for_line("WHATSAPP QR")
    cycle.control.send("pair", seed=seed)
    dyno.wait_state("connected", timeout=30)
    dyno.wait_for_line("new pairing: saving the session in 600s")
    return dyno


def in_parallel(count: int, call) -> list:
    """Run `call` in `count` threads released at the same moment; their results in order."""
    results: list = [None] * count
    gate = threading.Barrier(count)

    def run(i: int) -> None:
        gate.wait()
        started = time.monotonic()
        outcome = call()
        results[i] = (time.monotonic() - started, outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r is not None for r in results), "a request never returned"
    return results


def test_parallel_forced_saves_are_one_flight_and_one_release(tmp_path):
    cycle = Cycle(tmp_path, extra_env={"SESSION_SAVE_DELAY": "600"})
    try:
        dyno = paired_dyno(cycle, seed=61)
        answers = in_parallel(PARALLEL, lambda: dyno.request(
            "POST", "/api/save-session?force=true", headers=AUTH, timeout=30))
        codes = [code for _, (code, _) in answers]
        bodies = [body for _, (_, body) in answers]
        assert set(codes) == {200}, answers
        # One flight: one read of the config vars, then one write. Count the reads before the write: the
        # release that write causes stops this dyno, and its stop reads them again (stopsave.py, which
        # then finds the session unchanged), which under load can come before this line.
        patches = cycle.heroku.requests_with("PATCH")
        assert len(patches) == 1
        assert len([r for r in cycle.heroku.requests_with("GET") if r.at < patches[0].at]) == 1
        # Every caller got the outcome of the one save that ran.
        assert all(body["saved"] is True and body["restartExpected"] is True for body in bodies)
        assert len({body["at"] for body in bodies}) == 1
        wait_for(lambda: cycle.heroku.release_count == 1, 20, "the release of the save")

        # After the restart the config var holds this very session: a forced save writes nothing.
        second = wait_for(lambda: len(cycle.dynos.dynos) == 2 and cycle.dynos.current, 40, "the restart")
        second.wait_state("connected", timeout=30)
        code, body = second.request("POST", "/api/save-session?force=true", headers=AUTH, timeout=30)
        assert code == 200 and body["saved"] is False and body["restartExpected"] is False, body
        assert "unchanged" in body["message"] and "restart" in body["message"]
        assert cycle.patches() == 1 and cycle.heroku.release_count == 1
        second.wait_for_line("session unchanged (API request (forced))")
    finally:
        cycle.close()


def test_a_hanging_platform_api_never_holds_an_answer_or_the_request_threads(tmp_path):
    deadline = 3.0
    cycle = Cycle(tmp_path, extra_env={"SESSION_SAVE_DELAY": "600", "SAVE_DEADLINE": str(deadline)})
    try:
        dyno = paired_dyno(cycle, seed=62)
        cycle.heroku.hang_next(count=100, seconds=40)  # every call hangs far past any deadline
        saves: list = []
        saver = threading.Thread(target=lambda: saves.extend(in_parallel(PARALLEL, lambda: dyno.request(
            "POST", "/api/save-session", headers=AUTH, timeout=30))))
        saver.start()
        wait_for(lambda: cycle.heroku.requests, 10, "the save to reach the Platform API")
        health_times = []
        while saver.is_alive():
            started = time.monotonic()
            code, body = dyno.request("GET", "/api/health", timeout=5)
            health_times.append(time.monotonic() - started)
            assert code == 200 and body["ok"] is True
            time.sleep(0.05)
        saver.join()
        assert health_times and max(health_times) < 1.0, health_times
        # Every save answered within the deadline plus the API's 2 s of slack, far below the router's 30 s.
        assert max(elapsed for elapsed, _ in saves) < deadline + 4, saves
        assert {code for _, (code, _) in saves} <= {202, 502}, saves
        # One flight: the hanging GET was made once (no retry fits a 3 s deadline after a hang).
        assert len(cycle.heroku.requests) == 1 and cycle.patches() == 0
        code, status = dyno.request("GET", "/api/session-status", headers=AUTH)
        assert status["lastSaveError"]["type"] == "PlatformTimeout", status
        assert status["saveInProgress"] is None and status["state"] == "connected"
        assert cycle.heroku.release_count == 0
    finally:
        cycle.heroku.clear_faults()
        cycle.close()


def test_a_save_asked_before_the_device_was_read_finds_it(tmp_path):
    """Right after a pairing the API's save may come before the read that follows Connected."""
    made = wadb.make_session(str(tmp_path / "session"), "fresh", seed=3)
    store = LocalFileStore(tmp_path / "session.snapshot")
    session = SnapshotSession(Path(made.session_dir), store)
    assert session.device_jid() is None  # nothing read yet: no boot restore, no Connected
    result = session.save(reason="API request", wait=None)
    assert result["changed"] is True and snapshot.inspect(store.load()).device_jid == made.jid
