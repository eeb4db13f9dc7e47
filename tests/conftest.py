"""Shared fixtures. Repo root is on sys.path through pytest.ini's `pythonpath = .`."""

from __future__ import annotations

import os
import secrets
import subprocess
import warnings

import pytest

from tests.support.simulator import running_receiver, running_sim
from tests.support.harness import BotProcess, base_env
from tests.support import leftovers, scheduling
from tests.support.postgres import TEMP_DIRS, PostgresServer, ServerUnavailable


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up the run's temp dir
def pytest_configure(config):
    """What every process of the run shares, in the run's temp dir (tests/support/harness.py
    RUN_SHARED). Set in the controller, before pytest-xdist starts its workers, so they inherit it.

    - SCHEMA_CACHE_DIR: one neonize schema template (snapshot/rebuild.py) instead of a neonize child
      process in every bot, CLI run and worker that restores (~0.6 s of CPU each, over a hundred times
      a run). Always the run's own: a directory only this user may write to, as rebuild.py requires.
    - PYTHONPYCACHEPREFIX: compiled bytecode. A run starts several hundred Python processes (bots,
      the snapshot code's children, CLI runs). Where PYTHONDONTWRITEBYTECODE is set (this machine sets
      it) each of them compiled our modules again, and pip spent ~18 s of the install compiling the
      libraries'; a bot, whose clean environment lacks the variable, wrote `__pycache__` into the
      clone. Now each module is compiled by the first process that imports it and read by all the
      others, and nothing is written outside the run's temp dir (so the README's test command installs
      without compiling, uv's default: Python would not read those files here). One the developer set is kept."""
    if hasattr(config, "workerinput"):
        return
    root = config._tmp_path_factory.getbasetemp()  # the dir xdist gives its workers theirs in
    schema_cache = root / "schema-cache"
    schema_cache.mkdir(mode=0o700, exist_ok=True)
    os.environ["SCHEMA_CACHE_DIR"] = str(schema_cache)
    if not os.environ.get("PYTHONPYCACHEPREFIX"):
        os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_xdist_make_scheduler(config, log):
    """pytest.ini's `--dist loadfile`, with the long work first and the files of independent tests
    shared out test by test (tests/support/scheduling.py says why xdist's own marks cannot)."""
    if config.getvalue("dist") == "loadfile":
        return scheduling.SpreadScheduling(config, log)
    return None


def pytest_collection_modifyitems(config, items):
    """A SPREAD file runs its tests on several workers: a module-scoped fixture there would be built
    once per worker, and a test relying on an earlier one's state would break by chance."""
    for item in items:
        if scheduling.file_of(item.nodeid) not in scheduling.SPREAD:
            continue
        info = getattr(item, "_fixtureinfo", None)
        shared = [name for name, chain in (info.name2fixturedefs.items() if info else ())
                  if chain and chain[-1].scope == "module"]
        if shared:
            raise pytest.UsageError(f"{item.nodeid} uses module-scoped {shared}: remove its file from "
                                    "SPREAD in tests/support/scheduling.py")
    # A FIRST entry that matches no test of a collected file (a renamed test) would quietly stop ordering.
    collected = {scheduling.file_of(item.nodeid) for item in items}
    stale = [prefix for prefix in scheduling.FIRST if scheduling.file_of(prefix) in collected
             and not any(item.nodeid.startswith(prefix) for item in items)]
    whole_files = not any("::" in arg for arg in config.args) and not config.getoption("keyword") \
        and not config.getoption("markexpr")
    if stale and whole_files:
        raise pytest.UsageError(f"FIRST in tests/support/scheduling.py names no test: {stale}")


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind(tmp_path_factory):
    """Fail the run when a process it started outlives it (killed here, so the next run starts clean).

    A session fixture that is set up first is torn down last, after every other fixture of the run
    (the PostgreSQL server, the browser) has stopped what it started. A failure here is an error
    report like any other, so it fails the run also under pytest-xdist, where each worker checks its
    own processes and temp roots (its basetemp is its own)."""
    basetemp = tmp_path_factory.getbasetemp()
    yield
    left = leftovers.kill_and_describe([basetemp] + TEMP_DIRS)
    if left:
        pytest.fail("processes started by the tests were still running at the end (killed now):\n  "
                    + "\n  ".join(left), pytrace=False)


@pytest.fixture
def receiver():
    """A webhook receiver (tests/support/simulator.py running_receiver). Ask for it before start_bot
    in a test's arguments, so the bots stop first; a module with its own scope or secret defines its own."""
    with running_receiver() as hook:
        yield hook


@pytest.fixture
def start_bot(tmp_path):
    """Start real gunicorn bots (Procfile command); every one is stopped when the test ends."""
    started: list[BotProcess] = []

    def start(**env: str) -> BotProcess:
        env.setdefault("SESSION_DIR", str(tmp_path / "session"))
        bot = BotProcess(base_env(**env)).start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()


def _unavailable(what: str, require_var: str, reason) -> None:
    """Fail when `require_var`=1 (CI), else skip with a warning (a skip alone hides in "N skipped")."""
    message = f"{what} did NOT run: {reason}"
    if os.environ.get(require_var) == "1":
        pytest.fail(message)
    warnings.warn(UserWarning(message))
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run, driven by Playwright (tests/support/browser.py)."""
    try:
        from playwright.sync_api import sync_playwright

        from tests.support.browser import BrowserUnavailable, launch
    except ImportError as exc:
        _unavailable("Browser tests", "REQUIRE_BROWSER_TESTS", f"playwright is not installed ({exc})")
    with sync_playwright() as playwright:
        try:
            chromium = launch(playwright)
        except BrowserUnavailable as exc:
            _unavailable("Browser tests", "REQUIRE_BROWSER_TESTS", exc)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL on loopback for the whole run (tests/support/postgres.py)."""
    server = PostgresServer()
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        _unavailable("PostgreSQL tests", "REQUIRE_POSTGRES_TESTS",
                     f"no PostgreSQL server could be started here: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server):
    """A fresh, empty database (no whatsmeow tables yet); its URL says sslmode=disable."""
    return pg_server.create_database("t_" + secrets.token_hex(6))


@pytest.fixture(scope="module")
def sim(request, tmp_path_factory):
    """One loopback WhatsApp server per test module (it keeps linked devices in memory, so a bot
    restarted from a snapshot finds its device still linked). A module sets SIM_OPTIONS for the
    simulator's arguments (a phone number /api/pair accepts, shortened keep-alive timing...)."""
    options = getattr(request.module, "SIM_OPTIONS", {})
    with running_sim(str(tmp_path_factory.mktemp("wasim")), **options) as simulator:
        yield simulator
