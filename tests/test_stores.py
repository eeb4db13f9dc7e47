"""Tests of stores.py against a real HTTP server on loopback (tests/support/fake_heroku.py) and real files."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

import heroku_api
import stores
from stores import (AppNotFound, AuthenticationFailed, BudgetExceeded, HerokuConfigVarStore,
                    LocalFileStore, LocalStoreError, PermissionDenied, PlatformConnectionError,
                    PlatformTimeout, PlatformUnavailable, RateLimited, StoreConfigError, StoreError,
                    ValueRejected)
from tests.support.fake_heroku import HEROKU_ACCEPT, FakeHeroku, config_vars_size

ROOT = Path(__file__).resolve().parent.parent
APP = "wa-bot-test"
TOKEN = "HRKU-tok3n-5f3a9c1e-do-not-leak"
KEY = "WHATSAPP_SESSION"
# Distinct, greppable snapshot values (base64-like, as real snapshots are).
SNAP1 = "H4sIAAAAAAAAA+snapshot-one-" + "A" * 200
SNAP2 = "H4sIAAAAAAAAA+snapshot-two-" + "B" * 300
OTHERS = {"API_KEY": "k" * 40, "SESSION_DIR": "./session"}


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture
def heroku():
    fake = FakeHeroku(app_name=APP, token=TOKEN, vars=OTHERS)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def heroku_store(fake: FakeHeroku, **kw) -> HerokuConfigVarStore:
    kw.setdefault("timeout", (2, 2))
    kw.setdefault("backoff_factor", 0)  # keep tests fast; backoff itself is urllib3's, tested there
    kw.setdefault("initial_value", fake.vars.get(KEY))  # what the dyno's environment would hold
    return HerokuConfigVarStore(kw.pop("app_name", APP), kw.pop("api_key", TOKEN),
                                api_url=fake.url, **kw)


class Backend:
    """One store kind behind the common interface, plus a way to 'reboot' and to look inside."""

    def __init__(self, kind: str, tmp_path: Path, fake: FakeHeroku | None):
        self.kind, self.tmp_path, self.fake = kind, tmp_path, fake
        self.path = tmp_path / "state" / "session.snapshot"

    def store(self, **kw) -> stores.SnapshotStore:
        if self.kind == "heroku":
            return heroku_store(self.fake, **kw)
        return LocalFileStore(self.path, **kw)

    def stored(self) -> str | None:
        if self.kind == "heroku":
            return self.fake.vars.get(KEY)
        return self.path.read_text() if self.path.exists() else None

    def writes(self) -> int:
        if self.kind == "heroku":
            return len(self.fake.requests_with("PATCH"))
        return self.path.stat().st_ino if self.path.exists() else 0


@pytest.fixture(params=["heroku", "file"])
def backend(request, tmp_path):
    if request.param == "file":
        yield Backend("file", tmp_path, None)
        return
    fake = FakeHeroku(app_name=APP, token=TOKEN, vars=OTHERS).start()
    try:
        yield Backend("heroku", tmp_path, fake)
    finally:
        fake.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------
# The common interface, for both stores
# ------------------------------------------------------------------------------------------


def test_save_load_clear_round_trip(backend):
    store = backend.store()
    assert store.load() is None

    result = store.save(SNAP1)
    assert result.changed and result.size == len(SNAP1)
    assert result.restart_expected is (backend.kind == "heroku")
    assert backend.stored() == SNAP1

    rebooted = backend.store()  # a new process reads what the old one stored
    assert rebooted.load() == SNAP1
    assert rebooted.save(SNAP2).changed
    assert backend.store().load() == SNAP2

    assert rebooted.clear() is True
    assert backend.stored() is None
    assert backend.store().load() is None
    assert rebooted.clear() is False


def test_unchanged_value_is_not_written_again(backend):
    store = backend.store()
    store.save(SNAP1)
    writes = backend.writes()

    again = store.save(SNAP1)
    assert again.changed is False and again.reason == "unchanged" and not again.restart_expected
    assert backend.store().save(SNAP1).changed is False  # also after a reboot
    assert backend.writes() == writes


def test_snapshot_over_the_budget_is_refused_and_nothing_is_written(backend):
    limit = 1024
    store = backend.store(limit=limit)
    budget = store.budget()
    too_big = "C" * (budget.ceiling + 1)

    with pytest.raises(BudgetExceeded) as info:
        store.save(too_big)
    text = str(info.value)
    assert str(len(too_big)) in text and str(budget.ceiling) in text and str(limit) in text
    assert str(budget.used_by_others) in text
    assert backend.stored() is None
    assert store.describe()["last_error"]["type"] == "BudgetExceeded"

    assert store.save("C" * budget.ceiling).changed  # exactly the ceiling fits
    assert store.describe()["last_error"] is None


@pytest.mark.parametrize("bad, error", [("", ValueError), (b"bytes", TypeError), (None, TypeError)])
def test_bad_input_never_replaces_a_good_snapshot(backend, bad, error):
    store = backend.store()
    store.save(SNAP1)
    with pytest.raises(error):
        store.save(bad)
    assert backend.stored() == SNAP1


def test_describe_reports_state_without_secrets(backend):
    store = backend.store()
    before = store.describe()
    assert before["kind"] == backend.kind
    assert before["has_value"] is False and before["value_size"] == 0
    assert before["last_saved_at"] is None and before["last_error"] is None

    store.save(SNAP1)
    after = store.describe()
    assert after["has_value"] is True and after["value_size"] == len(SNAP1)
    saved_at = dt.datetime.fromisoformat(after["last_saved_at"])
    assert abs((dt.datetime.now(dt.timezone.utc) - saved_at).total_seconds()) < 60
    if backend.kind == "heroku":
        assert after["app_name"] == APP and after["restart_expected"] is True
    else:
        assert after["path"] == str(backend.path.resolve())
    dumped = json.dumps(after)
    assert SNAP1 not in dumped and TOKEN not in dumped


def test_budget_targets_a_quarter_of_the_limit(backend):
    budget = backend.store().budget()
    assert budget.limit == 65536
    assert budget.target == min(budget.ceiling, 65536 // 4 - len(KEY))
    assert budget.ceiling == 65536 - budget.used_by_others - len(KEY)


# ------------------------------------------------------------------------------------------
# Heroku store
# ------------------------------------------------------------------------------------------


def test_boot_reads_the_environment_value_without_calling_the_api(heroku):
    heroku.preset({**OTHERS, KEY: SNAP1})
    store = heroku_store(heroku, initial_value=SNAP1)
    assert store.load() == SNAP1
    assert store.describe()["has_value"] is True
    assert heroku.requests == []


def test_requests_carry_the_documented_headers_and_body(heroku):
    heroku_store(heroku).save(SNAP1)
    get, patch = heroku.requests
    for request in (get, patch):
        assert request.path == f"/apps/{APP}/config-vars"
        assert request.headers["Accept"] == HEROKU_ACCEPT
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == f"whatsapp-heroku-bot/{heroku_api.__version__}"
        assert request.headers["Authorization"] == "<hidden>" and request.token_ok
    assert (get.method, patch.method) == ("GET", "PATCH")
    assert patch.body == {KEY: SNAP1}
    assert heroku.vars == {**OTHERS, KEY: SNAP1}  # the other vars are left alone


def test_value_already_on_the_platform_is_not_patched(heroku):
    heroku.preset({**OTHERS, KEY: SNAP1})  # set by another dyno / by hand since this one booted
    store = heroku_store(heroku, initial_value=None)
    result = store.save(SNAP1)
    assert result.changed is False and result.budget is not None
    assert heroku.requests_with("PATCH") == [] and heroku.release_count == 0
    assert store.load() == SNAP1


def test_each_change_is_one_release(heroku):
    released = []
    heroku.on_release = released.append
    store = heroku_store(heroku)
    store.save(SNAP1)
    store.save(SNAP1)
    store.save(SNAP2)
    store.clear()
    assert [r.changed for r in heroku.releases] == [{KEY: SNAP1}, {KEY: SNAP2}, {KEY: None}]
    assert heroku.wait_for(lambda: len(released) == 3)
    assert released[-1] == OTHERS


def test_budget_counts_every_other_key_and_value(heroku):
    heroku.preset({"A": "1" * 1000, "BB": "2" * 50, "ÜMLAUT": "é", KEY: "old"})
    budget = heroku_store(heroku).budget()
    used = 1 + 1000 + 2 + 50 + len("ÜMLAUT".encode()) + len("é".encode())
    assert budget.used_by_others == used
    assert budget.ceiling == 65536 - used - len(KEY)
    assert budget.target == 65536 // 4 - len(KEY)
    assert budget.stored_size == 3

    heroku.preset({"BIG": "x" * 60000})
    crowded = heroku_store(heroku).budget()
    assert crowded.ceiling == 65536 - 3 - 60000 - len(KEY)
    assert crowded.target == crowded.ceiling  # the hard ceiling wins over the quarter target


def test_fitting_snapshot_fills_the_platform_limit_exactly(heroku):
    store = heroku_store(heroku)
    value = "D" * store.budget().ceiling
    assert store.save(value).changed
    assert config_vars_size(heroku.vars) == 65536


def test_platform_refusal_of_a_large_value_is_value_rejected(heroku):
    heroku.limit = 32768  # the older documented limit: our pre-check thinks 64 KB
    store = heroku_store(heroku)
    with pytest.raises(ValueRejected) as info:
        store.save("E" * 40000)
    assert info.value.status == 422
    assert "invalid_params" in str(info.value) and "too large" in str(info.value)
    assert KEY not in heroku.vars and heroku.release_count == 0


def test_clear_of_a_known_absent_var_makes_no_call(heroku):
    store = heroku_store(heroku, initial_value=None)
    assert store.clear() is False
    assert heroku.requests == []


def test_clear_of_a_var_already_removed_by_hand_makes_no_release(heroku):
    heroku.preset({**OTHERS, KEY: SNAP1})
    store = heroku_store(heroku)  # booted with SNAP1 in its environment
    heroku.preset(OTHERS)  # `heroku config:unset` since
    assert store.clear() is False
    assert heroku.requests_with("PATCH") == [] and store.load() is None


def test_restart_warning_is_logged_before_the_patch(heroku, caplog):
    patches_at_log_time = []

    class Probe(logging.Handler):
        def emit(self, record):
            if "restart" in record.getMessage():
                patches_at_log_time.append(len(heroku.requests_with("PATCH")))

    probe = Probe()
    logging.getLogger("stores").addHandler(probe)
    try:
        store = heroku_store(heroku)
        store.save(SNAP1)
        store.clear()
    finally:
        logging.getLogger("stores").removeHandler(probe)
    assert patches_at_log_time == [0, 1]


# -- failures -------------------------------------------------------------------------------


def test_invalid_token_is_authentication_failed(heroku):
    with pytest.raises(AuthenticationFailed) as info:
        heroku_store(heroku, api_key="HRKU-wrong-token").save(SNAP1)
    assert info.value.status == 401 and "unauthorized" in str(info.value)
    assert "heroku authorizations:create" in info.value.hint
    assert "read-protected,write-protected" in info.value.hint


def test_token_without_write_scope_is_permission_denied(heroku):
    heroku.add_token("HRKU-read-only", scopes=["read-protected"])
    store = heroku_store(heroku, api_key="HRKU-read-only")
    assert store.budget().used_by_others > 0  # reading works
    with pytest.raises(PermissionDenied) as info:
        store.save(SNAP1)
    assert info.value.status == 403 and "write-protected" in str(info.value)
    assert "write-protected" in info.value.hint and "global" in info.value.hint


def test_suspended_app_gets_its_own_hint(heroku):
    heroku.fail_next(403, error_id="suspended", message="This app is suspended.")
    with pytest.raises(PermissionDenied) as info:
        heroku_store(heroku).budget()
    assert "suspended" in info.value.hint and "This app is suspended." in str(info.value)


def test_unknown_app_is_app_not_found(heroku):
    with pytest.raises(AppNotFound) as info:
        heroku_store(heroku, app_name="no-such-app").save(SNAP1)
    assert info.value.status == 404
    assert "HEROKU_APP_NAME" in info.value.hint and "no-such-app" in info.value.hint


def test_unexpected_status_is_a_plain_store_error(heroku):
    heroku.fail_next(402, message="Your account is delinquent.")
    with pytest.raises(StoreError) as info:
        heroku_store(heroku).budget()
    assert type(info.value) is StoreError and info.value.status == 402
    assert "delinquent" in str(info.value)


def test_server_errors_are_retried_a_bounded_number_of_times(heroku):
    heroku.fail_next(503, count=10)
    with pytest.raises(PlatformUnavailable) as info:
        heroku_store(heroku, max_retries=2).save(SNAP1)
    assert info.value.status == 503 and "status.heroku.com" in info.value.hint
    assert len(heroku.requests) == 3  # the first try and two retries
    assert heroku.requests_with("PATCH") == []


def test_a_transient_server_error_is_retried_and_the_save_succeeds(heroku):
    heroku.fail_next(500)
    heroku.fail_next(502)
    assert heroku_store(heroku, max_retries=3).save(SNAP1).changed
    assert [r.status for r in heroku.requests] == [500, 502, 200, 200]
    assert heroku.vars[KEY] == SNAP1


def test_patch_is_retried_too(heroku):
    heroku.fail_next(503, method="PATCH")
    assert heroku_store(heroku).save(SNAP1).changed
    assert [r.status for r in heroku.requests_with("PATCH")] == [503, 200]


def test_retry_after_is_honoured(heroku):
    heroku.fail_next(429, retry_after=1)
    started = time.monotonic()
    assert heroku_store(heroku).save(SNAP1).changed
    elapsed = time.monotonic() - started
    first, second = heroku.requests[:2]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0
    assert elapsed >= 1.0


def test_a_long_retry_after_is_not_slept_but_reported(heroku):
    heroku.fail_next(429, count=5, retry_after=120)
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        heroku_store(heroku).save(SNAP1)
    assert time.monotonic() - started < 5
    assert info.value.retry_after == 120 and info.value.status == 429
    assert "120" in str(info.value) and "rate limit" in info.value.hint
    assert len(heroku.requests) == 1


def test_rate_limit_without_retry_after_is_retried_then_reported(heroku):
    heroku.fail_next(429, count=10)
    with pytest.raises(RateLimited) as info:
        heroku_store(heroku, max_retries=2).budget()
    assert info.value.retry_after is None
    assert len(heroku.requests) == 3


def test_a_hanging_platform_times_out_quickly(heroku):
    heroku.hang_next(count=10, seconds=10)
    started = time.monotonic()
    with pytest.raises(PlatformTimeout) as info:
        heroku_store(heroku, timeout=(1, 0.3), max_retries=3).save(SNAP1)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3
    assert len(heroku.requests) == 2  # a read timeout is retried once, not max_retries times
    assert "read 0.3s" in str(info.value)


def test_a_patch_repeated_after_a_timeout_makes_one_release(heroku):
    store = heroku_store(heroku, timeout=(1, 0.3))
    heroku.hang_next(count=1, seconds=0.8, method="PATCH")  # lands after the client gave up
    assert store.save(SNAP1).changed
    assert heroku.wait_for(lambda: all(r.status for r in heroku.requests), timeout=5)
    assert len(heroku.requests_with("PATCH")) == 2
    assert heroku.release_count == 1 and heroku.vars[KEY] == SNAP1


def test_unreachable_platform_is_a_connection_error():
    store = HerokuConfigVarStore(APP, TOKEN, api_url=f"http://127.0.0.1:{free_port()}",
                                 timeout=(1, 1), backoff_factor=0)
    with pytest.raises(PlatformConnectionError) as info:
        store.save(SNAP1)
    assert "127.0.0.1" in str(info.value) and "HEROKU_API_URL" in info.value.hint
    assert store.describe()["last_error"]["type"] == "PlatformConnectionError"


def test_token_copied_with_a_trailing_newline_still_works(heroku):
    assert heroku_store(heroku, api_key=TOKEN + "\n").save(SNAP1).changed


@pytest.mark.parametrize("app_name, api_key", [("", TOKEN), (APP, ""), (APP, "  ")])
def test_missing_credentials_are_a_config_error(app_name, api_key):
    with pytest.raises(StoreConfigError):
        HerokuConfigVarStore(app_name, api_key)


def test_no_secret_in_any_error_text_or_log_line(heroku, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 and requests included
    # The bot's logging setup (run by other tests in this process) pins urllib3 at INFO; lift it here.
    caplog.set_level(logging.DEBUG, logger="urllib3")
    heroku.preset({**OTHERS, KEY: SNAP1})
    errors: list[BaseException] = []
    stores_seen = []

    def attempt(store, call):
        stores_seen.append(store)
        try:
            call(store)
        except (StoreError, ValueError, TypeError) as exc:
            errors.append(exc)

    attempt(heroku_store(heroku, api_key="HRKU-wrong"), lambda s: s.save(SNAP2))
    attempt(heroku_store(heroku, app_name="other-app"), lambda s: s.save(SNAP2))
    heroku.fail_next(422, message=f"refused {SNAP2} for token {TOKEN}")  # a server echoing secrets
    attempt(heroku_store(heroku), lambda s: s.save(SNAP2))
    for status, count in ((403, 1), (429, 1), (500, 2)):
        heroku.fail_next(status, count=count, retry_after=120 if status == 429 else None)
        attempt(heroku_store(heroku, max_retries=1), lambda s: s.save(SNAP2))
    heroku.hang_next(count=2, seconds=3)
    attempt(heroku_store(heroku, timeout=(1, 0.2)), lambda s: s.save(SNAP2))
    attempt(heroku_store(heroku, limit=200), lambda s: s.save(SNAP2))
    attempt(heroku_store(heroku), lambda s: s.save(""))
    with pytest.raises(AuthenticationFailed) as bad_token:
        HerokuConfigVarStore(APP, "HRKU-with space-" + TOKEN, api_url=heroku.url)
    errors.append(bad_token.value)
    attempt(HerokuConfigVarStore(APP, TOKEN, api_url=f"http://127.0.0.1:{free_port()}",
                                 backoff_factor=0, max_retries=1), lambda s: s.save(SNAP2))
    heroku_store(heroku).save(SNAP2)  # and the successful path's log lines

    expected = {AuthenticationFailed, AppNotFound, ValueRejected, PermissionDenied, RateLimited,
                PlatformUnavailable, PlatformTimeout, BudgetExceeded, ValueError,
                PlatformConnectionError}
    assert {type(e) for e in errors} == expected
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [json.dumps(e.as_dict()) for e in errors if isinstance(e, StoreError)]
    texts += [json.dumps(s.describe()) + repr(s) for s in stores_seen]
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert len(caplog.records) > 5
    for text in texts:
        for secret in (TOKEN, SNAP1, SNAP2):
            assert secret not in text
            assert secret[:40] not in text  # not even a truncated piece
    assert "[redacted]" in str(next(e for e in errors if isinstance(e, ValueRejected)))


# ------------------------------------------------------------------------------------------
# Local file store
# ------------------------------------------------------------------------------------------


def test_file_is_written_atomically_with_owner_only_mode(tmp_path):
    path = tmp_path / "not" / "yet" / "there" / "session.snapshot"
    store = LocalFileStore(path)
    store.save(SNAP1)
    first_inode = path.stat().st_ino
    assert path.read_text() == SNAP1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    store.save(SNAP2)
    assert path.read_text() == SNAP2
    assert path.stat().st_ino != first_inode  # renamed over, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["session.snapshot"]  # no temp left


def test_a_failing_write_leaves_the_old_file_intact(tmp_path):
    # A real failure: the file size limit (RLIMIT_FSIZE) makes the write fail with EFBIG. It is set
    # in a child process so pytest's own files are not affected.
    path = tmp_path / "session.snapshot"
    LocalFileStore(path).save(SNAP1)
    script = textwrap.dedent(f"""
        import json, resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from stores import LocalFileStore, StoreError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a plain EFBIG error instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        store = LocalFileStore({str(path)!r})
        try:
            store.save("F" * 20000)
        except StoreError as exc:
            print(json.dumps({{"type": type(exc).__name__, "text": str(exc),
                               "described": store.describe()["last_error"]["type"]}}))
        else:
            print(json.dumps({{"type": None}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["type"] == "LocalStoreError" and result["described"] == "LocalStoreError"
    assert "EFBIG" in result["text"] and "untouched" in result["text"]
    assert path.read_text() == SNAP1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.snapshot"]


def test_unreadable_snapshot_path_is_a_clear_error(tmp_path):
    path = tmp_path / "session.snapshot"
    path.mkdir()  # a directory where the file should be
    store = LocalFileStore(path)
    with pytest.raises(LocalStoreError) as info:
        store.load()
    assert str(path) in str(info.value) and "EISDIR" in str(info.value)
    with pytest.raises(LocalStoreError):
        store.save(SNAP1)
    assert path.is_dir()


def test_file_budget_is_as_if_it_were_the_only_config_var(tmp_path):
    budget = LocalFileStore(tmp_path / "s", limit=32768).budget()
    assert budget.used_by_others == 0
    assert budget.ceiling == 32768 - len(KEY)
    assert budget.target == 32768 // 4 - len(KEY)


def test_concurrent_saves_write_once(tmp_path, heroku):
    store = heroku_store(heroku)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.save(SNAP1))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sum(r.changed for r in results) == 1 and len(results) == 5
    assert len(heroku.requests_with("PATCH")) == 1


# ------------------------------------------------------------------------------------------
# Choosing the store
# ------------------------------------------------------------------------------------------


def test_make_store_picks_by_credentials(tmp_path):
    from config import load_config

    base = {"SESSION_DIR": str(tmp_path / "s")}
    file_store = stores.make_store(load_config(base))
    assert isinstance(file_store, LocalFileStore)
    heroku = stores.make_store(load_config({**base, "HEROKU_API_KEY": TOKEN, "HEROKU_APP_NAME": APP,
                                            "WHATSAPP_SESSION": SNAP1}))
    assert isinstance(heroku, HerokuConfigVarStore) and heroku.load() == SNAP1
    forced = stores.make_store(load_config({**base, "HEROKU_API_KEY": TOKEN, "HEROKU_APP_NAME": APP,
                                            "SESSION_STORE": "file"}))
    assert isinstance(forced, LocalFileStore)
    # Incomplete credentials are refused once, by config.py (tests/test_config.py), not again here.


# ------------------------------------------------------------------------------------------
# The fake itself: faithful where the stores rely on it
# ------------------------------------------------------------------------------------------


def _call(fake, method, body=None, *, token=TOKEN, accept=HEROKU_ACCEPT, app=APP):
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, f"{fake.url}/apps/{app}/config-vars", headers=headers,
                            data=json.dumps(body) if body is not None else None, timeout=5)


def test_fake_checks_accept_and_token_and_app(heroku):
    assert _call(heroku, "GET", accept=None).json()["id"] == "not_acceptable"
    missing = _call(heroku, "GET", token=None)
    assert missing.status_code == 401 and missing.json()["id"] == "unauthorized"
    unknown = _call(heroku, "GET", app="nope")
    assert unknown.status_code == 404 and unknown.json()["id"] == "not_found"
    assert _call(heroku, "GET").json() == OTHERS


def test_fake_patch_sets_and_null_deletes_and_enforces_the_limit(heroku):
    assert _call(heroku, "PATCH", {"NEW": "v"}).json() == {**OTHERS, "NEW": "v"}
    assert _call(heroku, "PATCH", {"NEW": None}).json() == OTHERS
    room = heroku.limit - config_vars_size(OTHERS) - len("BIG")
    too_large = _call(heroku, "PATCH", {"BIG": "x" * (room + 1)})
    assert too_large.status_code == 422 and set(too_large.json()) == {"id", "message"}
    assert _call(heroku, "PATCH", {"BIG": "x" * room}).status_code == 200
    assert heroku.release_count == 3


def test_fake_runs_as_a_process_with_http_controls(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_heroku", "--app", APP, "--token", TOKEN,
                             "--var", "OTHER=1"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("FAKE_HEROKU_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        requests.post(f"{url}/__fake__/fail", json={"status": 500, "count": 1}, timeout=5)
        store = HerokuConfigVarStore(APP, TOKEN, api_url=url, backoff_factor=0, timeout=(2, 2))
        assert store.save(SNAP1).changed
        state = requests.get(f"{url}/__fake__/state", timeout=5).json()
        assert state["apps"][APP] == {"OTHER": "1", KEY: SNAP1}
        assert [r["status"] for r in state["requests"]] == [500, 200, 200]
        assert len(state["releases"]) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
    assert proc.returncode == 0


def test_a_piece_of_the_snapshot_echoed_by_the_platform_is_redacted(heroku):
    import base64
    import os

    snap = "H4sI" + base64.b64encode(os.urandom(600)).decode()  # as random as a real snapshot
    heroku.fail_next(422, error_id="x" * 5000, message=f"bad value {snap[300:360]}; also {snap[500:700]}")
    with pytest.raises(ValueRejected) as info:
        heroku_store(heroku).save(snap)
    text = str(info.value) + json.dumps(info.value.as_dict())
    assert snap[300:360][:12] not in text and snap[500:700][:40] not in text
    assert "bad value [redacted]" in text and "x" * 100 not in text
    public = info.value.public_text()
    assert "HTTP 422" in public and "bad value" not in public and APP not in public
