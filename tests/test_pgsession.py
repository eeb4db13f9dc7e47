"""pgsession against a real PostgreSQL server that these tests start on loopback.

Schemas are made by neonize itself (in subprocesses, offline: a dead HTTPS proxy
makes the WhatsApp dial fail right after the database is set up), and neonize's
own reader checks what the migrations wrote.

If no server can be started the server-backed tests are skipped with a reason
that says they did NOT run; set REQUIRE_POSTGRES_TESTS=1 (CI) to make that a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import uuid

import pytest

import pgcopy
import pgsession
from pgsession import (
    DatabaseError, DatabaseUrlError, DeviceAlreadyPresent, NoDevice, PostgresSession, SchemaError,
    SqliteSessionError, neonize_database_url, redact,
)
from tests.support import wadb
from tests.support.postgres import SSL_USER

JID = "15551234567:3@s.whatsapp.net"
LID = "123456789012345:3@lid"
PUSH_NAME = "Test Bot"
FB_UUID = "0b6b8c1e-7a55-4c39-9a52-3f1c2d4e5f60"
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}


# The server and a fresh database per test: the pg_server and database_url fixtures (conftest.py).


# --------------------------------------------------------------------------- neonize helpers
def run_neonize(code: str, **env) -> subprocess.CompletedProcess:
    """Python code run where neonize lives, offline; the Go runtime stays out of pytest."""
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **OFFLINE, **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return done


def neonize_connect(target: str) -> str:
    """NewClient(target).connect(), as the bot does at boot; returns the error it ended with."""
    done = run_neonize(
        "import os\nfrom neonize.client import NewClient\n"
        "try:\n    NewClient(os.environ['DB']).connect()\n"
        "except Exception as exc:\n    print('ERR', exc)\n", DB=target)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def neonize_devices(target: str) -> list[dict]:
    """What neonize's own reader (ClientFactory.get_all_devices_from_db) finds in `target`.

    neonize 0.5.2 leaves the device number inside JID.User ("15551234567:3"), so
    User@Server gives back the whole device JID whatsmeow stored.
    """
    done = run_neonize(
        "import os, json\nfrom neonize.client import ClientFactory\n"
        "devices = ClientFactory.get_all_devices_from_db(os.environ['DB'])\n"
        "print('DEVICES=' + json.dumps([{'jid': d.JID.User + '@' + d.JID.Server,"
        " 'push_name': d.PushName, 'initialized': d.Initialized}"
        " for d in devices]))\n", DB=target)
    assert done.returncode == 0, done.stderr[-2000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("DEVICES=")]
    assert line, done.stdout + done.stderr
    return json.loads(line[0][len("DEVICES="):])


def make_neonize_sqlite(path: str) -> None:
    """An empty session file made by neonize's own migrations: a copy of the run's template, which a
    neonize child process made once (tests/support/wadb.py)."""
    shutil.copyfile(wadb.template_db(), path)


def add_device(path: str, jid: str = JID) -> dict[str, list[tuple]]:
    """A realistic logged-in device in a neonize-made SQLite file, with random key material
    of whatsmeow's sizes, plus rows in the tables a live session fills."""
    rnd = secrets.token_bytes
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO whatsmeow_device (jid, lid, facebook_uuid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, adv_account_sig,"
            " adv_account_sig_key, adv_device_sig, platform, business_name, push_name, lid_migration_ts,"
            " companion_meta_nonce) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (jid, LID, FB_UUID, 3_000_000_123, rnd(32), rnd(32), rnd(32), 1, rnd(64), rnd(32), rnd(120),
             rnd(64), rnd(32), rnd(64), "android", "", PUSH_NAME, 1_760_000_000, "nonce-1"))
        conn.executemany("INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded) VALUES (?,?,?,?)",
                         [(jid, n, rnd(32), n % 2 == 0) for n in range(1, 31)])
        conn.executemany("INSERT INTO whatsmeow_identity_keys (our_jid, their_id, identity) VALUES (?,?,?)",
                         [(jid, f"1555000{n:04d}:0", rnd(32)) for n in range(5)])
        conn.executemany("INSERT INTO whatsmeow_sessions (our_jid, their_id, session) VALUES (?,?,?)",
                         [(jid, f"1555000{n:04d}:0", rnd(700)) for n in range(5)])
        conn.executemany("INSERT INTO whatsmeow_contacts (our_jid, their_jid, first_name, full_name, push_name,"
                         " business_name, redacted_phone) VALUES (?,?,?,?,?,?,?)",
                         [(jid, f"1555000{n:04d}@s.whatsapp.net", "Ann", "Ann Example", "ann", None, None)
                          for n in range(3)])
        conn.executemany("INSERT INTO whatsmeow_app_state_sync_keys (jid, key_id, key_data, timestamp, fingerprint)"
                         " VALUES (?,?,?,?,?)", [(jid, rnd(6), rnd(32), 1_760_000_000 + n, rnd(20))
                                                 for n in range(3)])
        conn.execute("INSERT INTO whatsmeow_app_state_version (jid, name, version, hash) VALUES (?,?,?,?)",
                     (jid, "critical_block", 7, rnd(128)))
        conn.execute("INSERT INTO whatsmeow_app_state_mutation_macs (jid, name, version, index_mac, value_mac)"
                     " VALUES (?,?,?,?,?)", (jid, "critical_block", 7, rnd(32), rnd(32)))
        conn.execute("INSERT INTO whatsmeow_chat_settings (our_jid, chat_jid, muted_until, pinned, archived)"
                     " VALUES (?,?,?,?,?)", (jid, "15550000001@s.whatsapp.net", 0, True, False))
        conn.execute("INSERT INTO whatsmeow_privacy_tokens (our_jid, their_jid, token, timestamp)"
                     " VALUES (?,?,?,?)", (jid, "15550000001@s.whatsapp.net", rnd(24), 1_760_000_000))
        conn.execute("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES (?,?)", ("98765@lid", "15550000001"))
    conn.close()
    return dump_sqlite(path)


# --------------------------------------------------------------------------- comparing contents
def _normal(value):
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def dump_sqlite(path: str) -> dict[str, list[tuple]]:
    """Every whatsmeow data table as sorted rows (booleans as 0/1, as SQLite keeps them)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'whatsmeow_%'"
            " AND name <> 'whatsmeow_version'")]
        return {t: sorted(tuple(_normal(v) for v in row)
                          for row in conn.execute(f'SELECT * FROM "{t}"')) for t in sorted(tables)}
    finally:
        conn.close()


def dump_postgres(url: str) -> dict[str, list[tuple]]:
    """Same shape as dump_sqlite: columns in declaration order, bool -> int, uuid -> str."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            " AND table_name LIKE 'whatsmeow\\_%%' AND table_name <> 'whatsmeow_version'")]
        result = {}
        for t in sorted(tables):
            rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
            result[t] = sorted(tuple(int(v) if isinstance(v, bool) else _normal(v) for v in row)
                               for row in rows)
        return result


@pytest.fixture
def session_file(tmp_path):
    """A neonize-made SQLite session with a device; returns (path, its dump)."""
    path = str(tmp_path / "session" / "neonize.db")
    os.makedirs(os.path.dirname(path))
    make_neonize_sqlite(path)
    return path, add_device(path)


# =========================================================================== URLs (no server)
HEROKU = "postgres://u1abc:p4ss%23w0rd@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d5fxyz"


def test_heroku_url_is_accepted_as_given_and_gets_sslmode_require():
    url = neonize_database_url(HEROKU)
    assert url == HEROKU + "?sslmode=require"
    assert url.startswith("postgres")  # neonize's test for choosing PostgreSQL


def test_postgresql_scheme_and_existing_query_are_kept():
    url = neonize_database_url("postgresql://u:p@h/db?application_name=bot")
    assert url == "postgresql://u:p@h/db?application_name=bot&sslmode=require"
    assert neonize_database_url("POSTGRES://u:p@h/db").startswith("postgres://")


def test_an_sslmode_the_url_states_wins():
    assert neonize_database_url("postgres://u:p@127.0.0.1:5/db?sslmode=disable").endswith("?sslmode=disable")
    assert neonize_database_url("postgres://u:p@h/db?sslmode=verify-full").count("sslmode") == 1


@pytest.mark.parametrize("bad", ["", "   ", "mysql://u:p4ss@h/db", "/app/session/neonize.db",
                                 "postgres://u:p4ss@h:notaport/db", "postgres:///db",
                                 "postgres://u:p4ss@h/db?sslmode=sometimes",
                                 "postgres://u:p4ss#x@h/db"])
def test_bad_urls_are_refused_with_a_hint_and_without_the_password(bad):
    with pytest.raises(DatabaseUrlError) as caught:
        neonize_database_url(bad)
    text = str(caught.value)
    assert "p4ss" not in text
    assert caught.value.hint


def test_redact_hides_the_password_wherever_it_is():
    assert redact(HEROKU) == "postgres://u1abc:***@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d5fxyz"
    assert "s3cret" not in redact("postgresql://h/db?user=u&password=s3cret&sslmode=require")
    assert "sslmode=require" in redact("postgresql://h/db?user=u&password=s3cret&sslmode=require")
    assert redact("postgres://u@h/db") == "postgres://u@h/db"


def test_values_convert_between_sqlite_and_postgres_types():
    to_pg, to_lite = pgcopy.to_postgres, pgcopy.to_sqlite
    assert to_pg(1, "boolean") is True and to_pg(0, "boolean") is False
    assert to_pg(FB_UUID, "uuid") == uuid.UUID(FB_UUID)
    assert to_pg(b"\x00\x01", "bytea") == b"\x00\x01" and to_pg("ab", "bytea") == b"ab"
    assert to_pg(None, "bytea") is None
    assert to_lite(True, "boolean") == 1 and to_lite(uuid.UUID(FB_UUID), "uuid") == FB_UUID


def test_tables_are_ordered_parents_first():
    order = pgcopy.parents_first(
        ["whatsmeow_app_state_mutation_macs", "whatsmeow_app_state_version", "whatsmeow_device",
         "whatsmeow_pre_keys"],
        [("whatsmeow_app_state_mutation_macs", "whatsmeow_app_state_version"),
         ("whatsmeow_app_state_version", "whatsmeow_device"), ("whatsmeow_pre_keys", "whatsmeow_device")])
    assert order.index("whatsmeow_device") < order.index("whatsmeow_app_state_version") \
        < order.index("whatsmeow_app_state_mutation_macs")


# =========================================================================== against the server
def test_neonize_creates_the_schema_in_postgres(database_url, tmp_path):
    store = PostgresSession(database_url)
    assert store.kind == "postgres"
    assert store.describe()["schema_version"] is None
    version = store.ensure_schema()
    lite = str(tmp_path / "neonize.db")
    make_neonize_sqlite(lite)
    assert version == pgcopy.sqlite_schema_version(lite)  # same whatsmeow on both sides
    assert set(dump_postgres(database_url)) == set(dump_sqlite(lite))  # same tables
    assert not store.has_device() and store.device_jid() is None
    assert store.clear() is False


def test_heroku_form_url_uses_tls(pg_server, database_url):
    if not pg_server.ssl:
        message = f"TLS test did NOT run: the test server's PostgreSQL ({pg_server.source}) has no TLS"
        if os.environ.get("REQUIRE_POSTGRES_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    db = database_url.rsplit("/", 1)[1].split("?")[0]
    # This role is rejected without TLS, like every Heroku Postgres user: the URL as
    # Heroku gives it (no sslmode) must still work, because we add sslmode=require.
    heroku_form = pg_server.url(db, user=SSL_USER, sslmode=None, scheme="postgres")
    assert "sslmode" not in heroku_form
    assert PostgresSession(heroku_form).ensure_schema() > 0
    with pytest.raises(pgsession.PostgresSessionError) as caught:
        PostgresSession(pg_server.url(db, user=SSL_USER, sslmode="disable")).ensure_schema()
    assert "no encryption" in str(caught.value)
    assert pg_server.password not in str(caught.value)


def test_describe_never_shows_the_password(pg_server, database_url):
    store = PostgresSession(database_url)
    store.ensure_schema()
    info = store.describe()
    assert pg_server.password not in json.dumps(info)
    assert info["host"] == "127.0.0.1" and info["port"] == pg_server.port
    assert info["has_device"] is False and info["device_jid"] is None
    assert pg_server.password not in repr(store)


def test_wrong_password_fails_with_a_typed_error_that_hides_it(pg_server, database_url):
    url = database_url.replace(pg_server.password, "Wr0ngPassw0rd")
    store = PostgresSession(url)
    with pytest.raises(pgsession.DatabaseUnavailable) as caught:
        store.has_device()
    assert "Wr0ngPassw0rd" not in str(caught.value)
    info = store.describe()  # the status endpoint must not crash on it
    assert "error" in info and "Wr0ngPassw0rd" not in json.dumps(info)


def test_import_copies_every_row_and_neonize_reads_the_device(database_url, session_file):
    path, before = session_file
    store = PostgresSession(database_url)
    assert store.import_from_sqlite(path) == JID
    assert dump_postgres(database_url) == before  # every table, every byte
    assert store.has_device() and store.device_jid() == JID
    info = store.describe()
    assert info["device_jid"] == JID and info["push_name"] == PUSH_NAME
    assert neonize_devices(store.url) == [{"jid": JID, "push_name": PUSH_NAME, "initialized": True}]
    assert dump_sqlite(path) == before  # the source file is untouched


def test_restart_on_postgres_keeps_the_session(database_url, session_file):
    path, before = session_file
    store = PostgresSession(database_url)
    store.import_from_sqlite(path)
    # A boot: neonize opens the database, loads the device and dials (fails offline).
    out = neonize_connect(store.url)
    assert "failed to dial" in out, out
    store.ensure_schema()  # the next boot's schema check is just as harmless
    assert dump_postgres(database_url) == before
    assert neonize_devices(store.url)[0]["jid"] == JID


def test_import_refuses_a_database_that_holds_a_device(database_url, session_file, tmp_path):
    path, before = session_file
    store = PostgresSession(database_url)
    store.import_from_sqlite(path)
    other = str(tmp_path / "other.db")
    make_neonize_sqlite(other)
    add_device(other, jid="15559876543:7@s.whatsapp.net")
    with pytest.raises(DeviceAlreadyPresent):
        store.import_from_sqlite(other)
    assert dump_postgres(database_url) == before


def test_import_is_one_transaction(database_url, session_file):
    path, _before = session_file
    # A row PostgreSQL's CHECK refuses, late in the copy (identity keys are 32 bytes).
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("INSERT INTO whatsmeow_identity_keys VALUES (?, ?, ?)", (JID, "bad:0", b"short"))
    conn.close()
    store = PostgresSession(database_url)
    with pytest.raises(DatabaseError):
        store.import_from_sqlite(path)
    assert not store.has_device()
    assert all(rows == [] for rows in dump_postgres(database_url).values())


def test_import_refuses_files_without_a_device(database_url, tmp_path):
    store = PostgresSession(database_url)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SqliteSessionError):
        store.import_from_sqlite(str(junk))
    with pytest.raises(SqliteSessionError):
        store.import_from_sqlite(str(tmp_path / "missing.db"))
    empty = str(tmp_path / "empty.db")
    make_neonize_sqlite(empty)
    with pytest.raises(NoDevice):
        store.import_from_sqlite(empty)
    assert not store.has_device()


def test_export_writes_a_neonize_file_with_the_same_session(database_url, session_file, tmp_path):
    path, before = session_file
    store = PostgresSession(database_url)
    store.import_from_sqlite(path)
    target = str(tmp_path / "exported" / "neonize.db")
    assert store.export_to_sqlite(target) == JID
    assert dump_sqlite(target) == before  # back where it came from, byte for byte
    assert neonize_devices(target)[0] == {"jid": JID, "push_name": PUSH_NAME, "initialized": True}
    assert [n for n in os.listdir(os.path.dirname(target))] == ["neonize.db"]  # no temp leftovers
    # A boot on the exported file keeps it (the snapshot path after export).
    assert "failed to dial" in neonize_connect(target)
    assert dump_sqlite(target) == before


def test_export_never_overwrites_and_needs_a_device(database_url, session_file, tmp_path):
    path, _before = session_file
    store = PostgresSession(database_url)
    store.ensure_schema()
    with pytest.raises(NoDevice):
        store.export_to_sqlite(str(tmp_path / "x.db"))
    assert not (tmp_path / "x.db").exists()
    store.import_from_sqlite(path)
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        store.export_to_sqlite(str(existing))
    assert existing.read_bytes() == b"precious"


def test_clear_deletes_the_device_and_its_rows(database_url, session_file):
    path, _before = session_file
    store = PostgresSession(database_url)
    store.import_from_sqlite(path)
    assert store.clear() is True
    assert not store.has_device()
    after = dump_postgres(database_url)
    # Only the database-wide LID cache stays; every row owned by the device is gone.
    assert {t for t, rows in after.items() if rows} == {"whatsmeow_lid_map"}
    assert neonize_devices(store.url) == []
    assert store.clear() is False
    # Cleared means a new pairing can come in: importing again works.
    assert store.import_from_sqlite(path) == JID


def test_a_cleared_database_gives_neonize_a_new_device(database_url, session_file):
    path, _before = session_file
    store = PostgresSession(database_url)
    store.import_from_sqlite(path)
    store.clear()
    assert "failed to dial" in neonize_connect(store.url)
    # neonize started unpaired (it would show a QR) and stored nothing until pairing.
    assert neonize_devices(store.url) == []
    with pytest.raises(SchemaError):  # sanity: an unknown target is reported, not ignored
        store._neonize_touch("/nonexistent-dir/x/neonize.db")


def test_an_older_sqlite_schema_is_upgraded_by_neonize_before_import(database_url, session_file):
    path, before = session_file
    # Turn the file into what an older neonize wrote: whatsmeow schema v13, i.e.
    # before 14-nct-salt.sql and 15-companion-meta-nonce.sql.
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("ALTER TABLE whatsmeow_device DROP COLUMN companion_meta_nonce")
        conn.execute("DROP TABLE whatsmeow_nct_salt")
        conn.execute("UPDATE whatsmeow_version SET version = 13")
    conn.close()
    old = dump_sqlite(path)
    store = PostgresSession(database_url)
    assert store.import_from_sqlite(path) == JID
    imported = dump_postgres(database_url)
    assert imported["whatsmeow_sessions"] == before["whatsmeow_sessions"]
    assert imported["whatsmeow_pre_keys"] == before["whatsmeow_pre_keys"]
    device = imported["whatsmeow_device"][0]
    assert device[:-1] == before["whatsmeow_device"][0][:-1]  # all but the new column
    assert device[-1] == ""  # companion_meta_nonce, filled by whatsmeow's upgrade default
    assert dump_sqlite(path) == old and pgcopy.sqlite_schema_version(path) == 13  # source untouched


def test_a_newer_sqlite_schema_is_refused(database_url, session_file):
    path, _before = session_file
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE whatsmeow_version SET version = 99")
    conn.close()
    store = PostgresSession(database_url)
    with pytest.raises(SchemaError) as caught:
        store.import_from_sqlite(path)
    assert "v99" in str(caught.value)
    assert not store.has_device()
