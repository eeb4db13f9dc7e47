"""The bot with its session live in PostgreSQL (DATABASE_URL), against a real server started here.

What is tested is the wiring around pgsession.PostgresSession (tested on its own in test_pgsession.py):
`LiveDatabaseSession` on boot, save, wipe and status; the connection loop driving it with a
scripted WhatsApp client whose device lives in PostgreSQL; the real app under real gunicorn with the
real neonize client on the database URL (WhatsApp unreachable: dead HTTPS proxy); and the
`pg-export` / `pg-import` CLI.

Devices come from tests/support/wadb.py (neonize-made SQLite databases with realistic rows), moved into
PostgreSQL the way the bot does it: as a WHATSAPP_SESSION snapshot imported at boot.

If no server can be started the tests are skipped with a loud warning that says they did NOT run;
REQUIRE_POSTGRES_TESTS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import snapshot
from pgsession import PostgresSession
from live_session import LiveDatabaseSession
from session_manager import public_view
from tests.support import wadb
from tests.support.harness import ROOT, wait_for
from tests.support.postgres import SSL_USER
from tests.support.scripted_client import Control, ScriptedClient
from whatsapp import Backoff, Connection

UNSET_HINT = "heroku config:unset WHATSAPP_SESSION"
LIVE_LINE = "is live in PostgreSQL"


# The server and a fresh database per test: the pg_server and database_url fixtures (conftest.py).


@pytest.fixture(scope="module")
def device():
    """A neonize-made SQLite session with a freshly paired device: (its neonize.db, JID, snapshot)."""
    with tempfile.TemporaryDirectory(prefix="pgbot-device-") as root:
        made = wadb.make_session(os.path.join(root, "session"), "fresh", seed=7)
        text = snapshot.pack(made.session_dir, 16384)
        yield Path(made.session_dir) / snapshot.DB_NAME, made.jid, text


# --------------------------------------------------------------------------- looking into the database
def table_counts(url: str) -> dict[str, int]:
    """Rows per whatsmeow data table."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_name LIKE 'whatsmeow\\_%%' AND table_name <> 'whatsmeow_version'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}


def sqlite_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'whatsmeow_%'"
            " AND name <> 'whatsmeow_version'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(tables)}
    finally:
        conn.close()


def device_fingerprint(url: str) -> list[tuple]:
    """The device rows and their keys, to prove nothing was rewritten."""
    import psycopg

    with psycopg.connect(url) as conn:
        device_rows = conn.execute("SELECT jid, noise_key, identity_key, registration_id FROM whatsmeow_device"
                                   " ORDER BY jid").fetchall()
        prekeys = conn.execute("SELECT jid, key_id, key FROM whatsmeow_pre_keys ORDER BY jid, key_id").fetchall()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in device_rows + prekeys]


def boot(url: str, snapshot_value: str | None = None) -> LiveDatabaseSession:
    """A session as build_session makes it on a dyno boot (WHATSAPP_SESSION read from the env)."""
    return LiveDatabaseSession(PostgresSession(url), snapshot_value=snapshot_value)


# =========================================================================== configuration (no server)
@pytest.mark.parametrize("url", [
    "postgres://u:s3cretpw@[::1/db",         # unbalanced IPv6 bracket: urlsplit raises
    "postgres://u:s3cretpw@host:port/db",    # not a port
    "postgres://u:s3cr#tpw@host/db",         # an unencoded '#' cuts the URL short
    "postgres://u:s3cretpw@host/db?sslmode=bogus",
])
def test_a_database_url_the_store_would_refuse_stops_the_start_with_one_line(url):
    import config

    with pytest.raises(config.ConfigError) as refused:
        config.load_config({"DATABASE_URL": url})
    assert "DATABASE_URL" in str(refused.value)
    assert "s3cret" not in str(refused.value) and "tpw" not in str(refused.value)


def test_the_url_as_heroku_gives_it_chooses_the_postgres_store():
    import config

    cfg = config.load_config({"DATABASE_URL": "postgres://u1:p4ssw0rd@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d5f"})
    assert cfg.session_store == "postgres"
    assert "p4ssw0rd" in cfg.secrets()  # the log filter masks it
    kept = config.load_config({"DATABASE_URL": "postgres://u1:p4ssw0rd@h:5432/d5f", "SESSION_STORE": "heroku",
                               "HEROKU_API_KEY": "t0ken-abcdef", "HEROKU_APP_NAME": "bot"})
    assert kept.session_store == "heroku"


# =========================================================================== boot: import once, then live
def test_boot_imports_the_snapshot_into_an_empty_database_once(database_url, device, caplog, tmp_path):
    _, jid, text = device
    caplog.set_level(logging.INFO)

    first = boot(database_url, text)
    assert first.restore_on_boot() == "snapshot"
    assert first.restored_from == "snapshot" and first.restore_error is None
    assert PostgresSession(database_url).device_jid() == jid
    # Every row the snapshot holds made it over, not just the device row.
    snapshot.unpack(text, tmp_path / "unpacked")
    counts = table_counts(database_url)
    for table, rows in sqlite_counts(tmp_path / "unpacked" / snapshot.DB_NAME).items():
        assert counts[table] == rows, f"{table}: {counts[table]} rows in PostgreSQL, {rows} in the snapshot"
    assert counts["whatsmeow_pre_keys"] > 0
    imported = [r.getMessage() for r in caplog.records if "imported the session" in r.getMessage()]
    assert len(imported) == 1 and jid in imported[0] and UNSET_HINT in imported[0], imported
    assert text not in caplog.text  # the snapshot is a secret
    before = device_fingerprint(database_url)

    # The next dyno boot: the config var is still set, the database already holds the device.
    caplog.clear()
    second = boot(database_url, text)
    assert second.restore_on_boot() == "database"
    assert second.restored_from == "database"
    assert LIVE_LINE in caplog.text and jid in caplog.text
    assert UNSET_HINT in caplog.text  # still reminds the owner
    assert "imported the session" not in caplog.text
    assert device_fingerprint(database_url) == before  # nothing imported twice, nothing rewritten
    assert table_counts(database_url) == counts


def test_boot_without_snapshot_on_an_empty_database_offers_a_qr(database_url, caplog):
    caplog.set_level(logging.INFO)
    session = boot(database_url)
    assert session.restore_on_boot() == "none"
    assert "QR code" in caplog.text
    assert not session.has_local_session()


def test_a_broken_snapshot_is_not_imported_and_the_database_stays_empty(database_url, device, caplog):
    _, _, text = device
    caplog.set_level(logging.INFO)
    broken = text[: len(text) // 2]
    session = boot(database_url, broken)
    assert session.restore_on_boot() == "failed"
    assert session.restore_error
    assert "QR code" in caplog.text
    assert not PostgresSession(database_url).has_device()
    assert broken not in caplog.text


def test_an_unreachable_database_at_boot_does_not_raise_and_hides_the_password(pg_server, device, caplog):
    _, _, text = device
    caplog.set_level(logging.INFO)
    url = pg_server.url("postgres").replace(f":{pg_server.port}/", f":{_closed_port()}/")
    session = boot(url, text)
    assert session.restore_on_boot() == "failed"
    assert "check DATABASE_URL" in session.restore_error  # the hint says what to do
    assert pg_server.password not in session.restore_error
    assert pg_server.password not in caplog.text
    assert session.has_local_session() is False
    status = session.status()
    assert pg_server.password not in json.dumps(status)
    assert "error" in status["store"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nobody listens there


# =========================================================================== save, status, wipe
def test_save_answers_that_the_session_is_live_and_writes_nothing(database_url, device):
    _, jid, text = device
    session = boot(database_url, text)
    session.restore_on_boot()
    before = device_fingerprint(database_url)

    session.connected(lambda: True)  # a live session has nothing to save after connecting
    assert session.last_save is None
    result = session.save(reason="API request")
    assert result["live"] is True
    assert result["changed"] is False and result["restartExpected"] is False
    assert any("live in PostgreSQL" in str(value) for value in result.values()), result
    assert session.save(force=True)["changed"] is False
    assert device_fingerprint(database_url) == before


def test_save_without_a_device_says_pair_first(database_url):
    session = boot(database_url)
    session.restore_on_boot()
    with pytest.raises(snapshot.SnapshotError, match="pair first"):
        session.save()


def test_status_says_postgres_without_password_or_phone_number(pg_server, database_url, device):
    _, jid, text = device
    session = boot(database_url, text)
    session.restore_on_boot()
    status = public_view(session.status())  # what /api/session-status shows without the key
    assert status["store"]["kind"] == "postgres" and status["store"]["live"] is True
    assert status["hasLocalSession"] is True and status["store"]["has_device"] is True
    assert status["hasEnvSession"] is True and status["restoredFrom"] == "snapshot"
    shown = json.dumps(status)
    assert pg_server.password not in shown
    assert jid not in shown and jid.split(":")[0].split("@")[0] not in shown  # the phone number
    assert text not in shown
    # The key holder's view (app.py adds it): the device JID.
    assert session.device_jid() == jid


def test_wipe_deletes_the_device_and_its_keys(database_url, device, caplog):
    _, jid, text = device
    caplog.set_level(logging.INFO)
    session = boot(database_url, text)
    session.restore_on_boot()
    assert session.has_local_session()

    caplog.clear()
    session.wipe("logged out")
    assert session.has_local_session() is False
    assert PostgresSession(database_url).has_device() is False
    counts = table_counts(database_url)
    assert counts["whatsmeow_device"] == 0 and counts["whatsmeow_pre_keys"] == 0
    assert session.last_wipe is not None and session.last_save_error is None
    session.wipe("again")  # nothing left to delete: harmless
    assert session.last_save_error is None
    # The session cannot unset the config var, so it says so: the next boot would import the snapshot
    # again (WhatsApp refuses that device if it was really logged out, and the bot wipes it again).
    assert UNSET_HINT in caplog.text and "imports it again" in caplog.text
    assert boot(database_url, text).restore_on_boot() == "snapshot"


def test_wipe_without_a_boot_snapshot_does_not_mention_the_config_var(database_url, device, caplog):
    _, _, text = device
    boot(database_url, text).restore_on_boot()
    caplog.set_level(logging.INFO)
    caplog.clear()
    boot(database_url).wipe("logged out")  # a boot after `heroku config:unset WHATSAPP_SESSION`
    assert not PostgresSession(database_url).has_device()
    assert "session wiped" in caplog.text and "WHATSAPP_SESSION" not in caplog.text


def test_wipe_on_an_unreachable_database_reports_without_raising(pg_server):
    url = pg_server.url("postgres").replace(f":{pg_server.port}/", f":{_closed_port()}/")
    session = boot(url)
    session.wipe("logged out")
    assert "could not delete the device" in session.last_save_error["message"]
    assert pg_server.password not in json.dumps(session.last_save_error)


# =========================================================================== the connection loop
class PostgresScriptedClient(ScriptedClient):
    """tests/support/scripted_client.py's client, with its device in PostgreSQL instead of a SQLite file.

    `database` is the URL the session hands out (what neonize's NewClient gets). A pairing stores a
    new wadb device the way the bot's own import does; a logout deletes the device row as whatsmeow's
    sqlstore DeleteDevice does (`DELETE FROM whatsmeow_device WHERE jid=$1`; the key tables cascade).
    """

    def _device_jid(self) -> str | None:
        try:
            return PostgresSession(self.database).device_jid()
        except Exception:
            return None

    def _delete_device(self) -> None:
        import psycopg

        with psycopg.connect(self.database) as conn:
            conn.execute("DELETE FROM whatsmeow_device")

    def _apply(self, command: dict) -> None:
        if command["cmd"] == "pair" and self._device_jid() is None:
            from neonize.events import PairStatusEv
            from neonize.proto.Neonize_pb2 import JID

            with tempfile.TemporaryDirectory(prefix="pgbot-pair-") as scratch:
                made = wadb.make_session(os.path.join(scratch, "s"), "fresh", seed=command.get("seed", 1))
                PostgresSession(self.database).import_from_sqlite(str(Path(made.session_dir) / snapshot.DB_NAME))
            self.control.record("paired", jid=made.jid)
            user_device, _, server = made.jid.partition("@")
            user, _, number = user_device.partition(":")
            self._emit(PairStatusEv, PairStatusEv(ID=JID(User=user, Device=int(number or 0), Server=server), Status=2))
            self._set_connected(made.jid)
            return
        super()._apply(command)


class CountingSession(LiveDatabaseSession):
    """Counts the saves the connection asks for (a live session must never need one)."""

    saves = 0

    def save(self, **kwargs):
        type(self).saves += 1
        return super().save(**kwargs)


class PgBot:
    """An in-process bot on PostgreSQL: real session and database, scripted WhatsApp client."""

    def __init__(self, root: Path, url: str, snapshot_value: str | None = None) -> None:
        self.control = Control(root / "control")
        self.session = CountingSession(PostgresSession(url), snapshot_value=snapshot_value)
        self.clients: list[PostgresScriptedClient] = []
        self.connection = Connection(self.session, client_factory=self._make_client,
                                     backoff=Backoff(first=0.01, cap=0.05), out=_Sink())

    def _make_client(self, database: str) -> PostgresScriptedClient:
        client = PostgresScriptedClient(database, self.control)
        self.clients.append(client)
        return client

    def wait_state(self, state: str, timeout: float = 15.0) -> None:
        wait_for(lambda: self.connection.state == state, timeout,
                 f"state {state!r} (now {self.connection.state!r}, last error {self.connection.last_error!r})")


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def pg_bots(tmp_path):
    """Makes PgBots; each one's connection is stopped when the test ends, failed or not."""
    made: list[PgBot] = []

    def make(url: str, snapshot_value: str | None = None) -> PgBot:
        bot = PgBot(tmp_path, url, snapshot_value)
        made.append(bot)
        bot.connection.start()
        return bot

    CountingSession.saves = 0
    yield make
    for bot in made:
        bot.connection.stop(timeout=5)


def test_connection_boots_from_the_snapshot_then_restarts_live_without_saving(database_url, device, pg_bots):
    _, jid, text = device
    bot = pg_bots(database_url, text)
    bot.wait_state("connected")
    assert bot.session.restored_from == "snapshot"
    assert bot.control.events("connected")[-1]["jid"] == jid
    assert bot.clients[0].database == PostgresSession(database_url).url  # the client got the database
    bot.connection.stop(timeout=5)

    again = pg_bots(database_url, text)  # a dyno restart: same env, same database
    again.wait_state("connected")
    assert again.session.restored_from == "database"
    assert again.control.events("connected")[-1]["jid"] == jid
    assert not again.control.events("qr")
    assert CountingSession.saves == 0  # no save after connect: the session is already stored


def test_logout_by_whatsapp_deletes_the_device_and_a_new_pairing_is_live_at_once(database_url, device, pg_bots):
    _, jid, text = device
    bot = pg_bots(database_url, text)
    bot.wait_state("connected")

    bot.control.send("logout")
    bot.wait_state("waiting_for_qr")
    assert PostgresSession(database_url).has_device() is False
    assert bot.session.last_wipe is not None

    bot.control.send("pair", seed=3)
    bot.wait_state("connected")
    new_jid = bot.control.events("paired")[-1]["jid"]
    assert new_jid != jid and PostgresSession(database_url).device_jid() == new_jid
    assert CountingSession.saves == 0
    bot.connection.stop(timeout=5)

    # The old snapshot is still in the env; the database has the new device, so it wins.
    again = pg_bots(database_url, text)
    again.wait_state("connected")
    assert again.session.restored_from == "database"
    assert again.control.events("connected")[-1]["jid"] == new_jid


def test_clear_session_deletes_the_device_and_offers_a_qr(database_url, device, pg_bots):
    _, _, text = device
    bot = pg_bots(database_url, text)
    bot.wait_state("connected")
    assert bot.connection.logout_and_wipe() is True  # what POST /api/clear-session does
    bot.wait_state("waiting_for_qr")
    assert PostgresSession(database_url).has_device() is False
    assert bot.control.events("logout")


def test_clear_session_while_whatsapp_is_unreachable_still_deletes_the_device(database_url, device, pg_bots):
    _, _, text = device
    bot = pg_bots(database_url, text)
    bot.wait_state("connected")
    bot.control.update_world(unreachable=True)
    bot.control.send("connect_failure", reason=8)  # INTERNAL_SERVER_ERROR: retry; the retries now fail
    wait_for(lambda: bot.control.events("connect_failed"), 10, "a failed reconnect")
    assert PostgresSession(database_url).has_device() is True  # failed connects keep the device

    assert bot.connection.logout_and_wipe() is False  # no WhatsApp to tell
    wait_for(lambda: not PostgresSession(database_url).has_device(), 10, "the device to be deleted")
    bot.control.update_world(unreachable=False)


# =========================================================================== the real app under gunicorn
def heroku_form_url(pg_server, database_url: str) -> str:
    """The URL as Heroku gives it (postgres://, no sslmode) for a TLS-only role; plain when no TLS."""
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    if pg_server.ssl:
        return pg_server.url(name, user=SSL_USER, sslmode=None, scheme="postgres")
    return database_url


def test_real_app_under_gunicorn_on_postgres(pg_server, database_url, device, start_bot):
    _, jid, text = device
    api_key = secrets.token_hex(16)
    url = heroku_form_url(pg_server, database_url)
    # RECONNECT_PROBE=0: the failed attempts below must reach neonize (the probe would keep them away).
    bot = start_bot(DATABASE_URL=url, WHATSAPP_SESSION=text, API_KEY=api_key, RECONNECT_PROBE="0")
    bot.wait_healthy()
    bot.wait_for_line("imported the session for", timeout=30)
    assert UNSET_HINT in bot.output()
    assert PostgresSession(database_url).device_jid() == jid
    before = device_fingerprint(database_url)

    status, body = bot.request("GET", "/api/session-status")
    assert status == 200
    assert body["storeKind"] == "postgres" and body["store"]["kind"] == "postgres"
    assert body["hasLocalSession"] is True and body["restoredFrom"] == "snapshot"
    assert "deviceJid" not in body and jid not in json.dumps(body)
    assert pg_server.password not in json.dumps(body)
    _, keyed = bot.request("GET", "/api/session-status", headers={"Authorization": f"Bearer {api_key}"})
    assert keyed["deviceJid"] == jid

    status, body = bot.request("POST", "/api/save-session", headers={"Authorization": f"Bearer {api_key}"})
    assert status == 200, body
    assert body["live"] is True and body["saved"] is False and body["restartExpected"] is False
    status, _ = bot.request("POST", "/api/save-session")
    assert status == 401

    # neonize's real client runs on the database URL and cannot reach WhatsApp (dead proxy): its
    # failed connects must leave the device alone.
    bot.wait_for_line("retrying in", timeout=30, occurrences=2)
    # neonize dials WhatsApp only after it opened the database and read the device from it.
    assert "failed to dial" in bot.output() and "failed to upgrade database" not in bot.output()
    if pg_server.ssl:  # the role only gets in over TLS: the URL as Heroku gives it got sslmode=require
        assert "sslmode=require" in bot.output()
    assert PostgresSession(database_url).device_jid() == jid
    assert device_fingerprint(database_url) == before

    output = bot.output()
    assert pg_server.password not in output and text not in output
    assert "Traceback" not in output

    # A dyno restart: the same env, the device is found live in the database, nothing imported again.
    bot.stop()
    again = start_bot(DATABASE_URL=url, WHATSAPP_SESSION=text, API_KEY=api_key)
    again.wait_for_line(LIVE_LINE, timeout=30)
    again.wait_for_line("retrying in", timeout=30)
    assert "imported the session" not in again.output()
    assert device_fingerprint(database_url) == before


# =========================================================================== the CLI
def run_cli(*args: str, url: str | None, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    if url is not None:
        env["DATABASE_URL"] = url
    return subprocess.run([sys.executable, "session_manager.py", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_cli_export_then_import_into_an_empty_database_keeps_the_device(pg_server, database_url, device):
    _, jid, text = device
    boot(database_url, text).restore_on_boot()

    exported = run_cli("pg-export", "--budget", "16384", url=database_url)
    assert exported.returncode == 0, exported.stderr
    moved = exported.stdout.strip()
    assert snapshot.inspect(moved).device_jid == jid
    assert len(moved) <= 16384

    target = pg_server.create_database("c_" + secrets.token_hex(6))
    imported = run_cli("pg-import", url=target, stdin=moved)
    assert imported.returncode == 0, imported.stderr
    assert f"imported {jid}" in imported.stderr
    assert PostgresSession(target).device_jid() == jid
    # The keys came along: the device row's identity is the same on both sides.
    assert device_fingerprint(target)[0] == device_fingerprint(database_url)[0]

    # Importing again over a device is refused, with a hint and without the password.
    refused = run_cli("pg-import", url=target, stdin=moved)
    assert refused.returncode == 1
    assert "already holds" in refused.stderr and "clear" in refused.stderr
    assert pg_server.password not in refused.stderr + refused.stdout


def test_cli_needs_database_url_and_a_device(database_url):
    missing = run_cli("pg-export", url=None)
    assert missing.returncode == 1 and "DATABASE_URL" in missing.stderr
    empty = run_cli("pg-export", url=database_url)
    assert empty.returncode == 1 and "error:" in empty.stderr and not empty.stdout.strip()
    garbage = run_cli("pg-import", url=database_url, stdin="not a snapshot")
    assert garbage.returncode == 1 and "error:" in garbage.stderr
    not_postgres = run_cli("pg-export", url="mysql://user:s3cretpw@db.example/app")
    assert not_postgres.returncode == 1 and "postgres://" in not_postgres.stderr
    assert "s3cretpw" not in not_postgres.stderr
    no_budget = run_cli("pg-export", "--budget", url=database_url)
    assert no_budget.returncode == 1 and "--budget" in no_budget.stderr
    outputs = [missing, empty, garbage, not_postgres, no_budget]
    assert not any("Traceback" in done.stderr for done in outputs), [done.stderr for done in outputs]
