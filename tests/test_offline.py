"""A bot that cannot reach WhatsApp for a day stays the same size (issue 17).

neonize opens a whatsmeow database container on every connect() and never closes it (one SQLite
handle or one PostgreSQL connection per attempt, see whatsapp.DEFAULT_MAX_CONNECTS). The bot now
probes WhatsApp's websocket first (reachability.probe_whatsapp) and hands over to neonize only when it
answers. Here a real gunicorn bot with a restored session makes 1,000 failed attempts against a
closed loopback port, its worker measured from /proc; then the port opens onto the WhatsApp
simulator and the bot logs in with its stored session: no QR, no save.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

import config
import snapshot
import stores
import reachability
import whatsapp
from tests.support import wadb
from qrterminal import BEGIN_MARKER
from tests.support.gate import Gate
from tests.support.harness import free_port, wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import sim_overrides

ATTEMPTS = 1000
WARM_UP = 50
MAX_RSS_GROWTH_KB = 10 * 1024
MAX_FD_GROWTH = 5
WAIT = 60.0
FAST_BACKOFF = {"RECONNECT_DELAY_MIN": "0.001", "RECONNECT_DELAY_MAX": "0.002"}
SAVE_SCHEDULED = "new pairing: saving the session"


# --------------------------------------------------------------------------- measuring a process
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def worker_pid(bot) -> int:
    pids = [p for p in bot.process_tree() if p != bot.proc.pid]
    workers = [p for p in pids if "gunicorn" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert len(workers) == 1, (pids, workers)
    return workers[0]


def attempts(bot) -> dict:
    status, body = bot.request("GET", "/api/session-status")
    assert status == 200, body
    return body


def wait_attempts(bot, n: int, timeout: float = WAIT) -> dict:
    def reached():
        try:
            body = attempts(bot)
        except OSError:  # not listening yet
            return None
        return body if body["connectAttempts"] >= n else None

    return wait_for(reached, timeout, f"{n} connect attempts (output:\n{bot.output()[-2000:]})", interval=0.1)


def drive_offline(bot, attempts_: int = ATTEMPTS) -> dict:
    """Warm up, then `attempts_` more failed attempts; the worker's growth over them."""
    start = wait_attempts(bot, WARM_UP)
    pid = worker_pid(bot)
    rss0, fds0 = rss_kb(pid), fd_count(pid)
    end = wait_attempts(bot, start["connectAttempts"] + attempts_)
    assert worker_pid(bot) == pid, "the same worker all along (no recycling needed)"
    return {
        "attempts": end["connectAttempts"] - start["connectAttempts"],
        "rss_kb": rss_kb(pid) - rss0,
        "fds": fd_count(pid) - fds0,
        "client_connects": end["clientConnects"],
        "status": end,
    }


def pair(sim, start_bot, **env: str):
    """A bot pairs with the simulator by QR; returns (device JID, the bot, still running)."""
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), SESSION_SAVE_DELAY="0.2", **env)
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    wait_for(lambda: printed_qr_texts(bot.output()), WAIT, "a printed QR")
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    bot.wait_state("connected", timeout=WAIT)
    bot.wait_for_line("connected as " + jid, timeout=WAIT)
    return jid, bot


def offline_then_online(sim, start_bot, jid: str, **env: str):
    gate = Gate(sim.proxy.port)
    overrides = {**sim_overrides(sim), "HTTPS_PROXY": gate.url, "https_proxy": gate.url}
    bot = start_bot(**overrides, **FAST_BACKOFF, **env)
    try:
        growth = drive_offline(bot)
        logins = sim.login_count(jid)
        gate.open()
        bot.wait_state("connected", timeout=WAIT)
        sim.wait_logged_in(jid, timeout=WAIT)
        bot.wait_for_line("connected as " + jid, timeout=WAIT)
        assert sim.login_count(jid) == logins + 1
        return growth, bot
    finally:
        gate.close()


def check_growth(growth: dict, store: str) -> None:
    print(f"\n{store}: {growth['attempts']} failed attempts: RSS {growth['rss_kb'] / 1024:+.2f} MB, "
          f"fds {growth['fds']:+d}")
    assert growth["attempts"] >= ATTEMPTS
    assert growth["rss_kb"] < MAX_RSS_GROWTH_KB, growth
    assert growth["fds"] < MAX_FD_GROWTH, growth
    assert growth["client_connects"] == 0, "no failed attempt reached neonize"
    assert growth["status"]["lastError"].startswith("WhatsApp unreachable")


# --------------------------------------------------------------------------- the bound, real bots
def test_sqlite_a_thousand_failed_attempts_then_online_with_the_stored_session(sim, start_bot, tmp_path):
    first_dir = tmp_path / "first"
    jid, first = pair(sim, start_bot, SESSION_DIR=str(first_dir))
    first.wait_for_line("session saved (", timeout=WAIT)
    stored = Path(f"{first_dir}.snapshot").read_text()
    first.stop()

    session_dir = tmp_path / "session"
    Path(f"{session_dir}.snapshot").write_text(stored)
    growth, bot = offline_then_online(sim, start_bot, jid, SESSION_DIR=str(session_dir))
    check_growth(growth, "sqlite")
    bot.wait_for_line("is the stored one: nothing to save", timeout=WAIT)
    out = bot.output()
    assert f"restored session for {jid}" in out
    assert BEGIN_MARKER not in out and SAVE_SCHEDULED not in out and "wiping" not in out
    assert Path(f"{session_dir}.snapshot").read_text() == stored
    assert attempts(bot)["clientConnects"] == 1, "one neonize connect: the one that logged in"


def test_postgres_a_thousand_failed_attempts_then_online_with_the_stored_session(
    sim, start_bot, database_url, tmp_path
):
    env = {"DATABASE_URL": database_url, "SESSION_DIR": str(tmp_path / "session")}
    jid, first = pair(sim, start_bot, **env)
    first.stop()

    growth, bot = offline_then_online(sim, start_bot, jid, **env)
    check_growth(growth, "postgres")
    out = bot.output()
    assert BEGIN_MARKER not in out and SAVE_SCHEDULED not in out and "wiping" not in out
    assert attempts(bot)["clientConnects"] == 1


def test_port_open_but_handshake_fails_costs_nothing_either(start_bot, tmp_path):
    made = wadb.make_session(str(tmp_path / "laptop"), "fresh", seed=17)
    stores.LocalFileStore(tmp_path / "session.snapshot").save(snapshot.pack(made.session_dir, 16384))
    gate = Gate(None)
    gate.open()
    try:
        bot = start_bot(HTTPS_PROXY=gate.url, https_proxy=gate.url, SESSION_DIR=str(tmp_path / "session"),
                        **FAST_BACKOFF)
        growth = drive_offline(bot)
    finally:
        gate.close()
    check_growth(growth, "sqlite, port open, connection closed at once")
    assert any(why in growth["status"]["lastError"] for why in ("closed before an HTTP answer", "reset by peer"))
    assert f"restored session for {made.jid}" in bot.output()


# --------------------------------------------------------------------------- the probe
def serve_once(handler) -> int:
    """A loopback listener that runs `handler(conn)` for each connection; returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                handler(conn)
            finally:
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


def probe_via(monkeypatch, proxy: str) -> str:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(reachability.Unreachable) as caught:
        reachability.probe_whatsapp(timeout=3)
    return str(caught.value)


def test_probe_closed_port(monkeypatch):
    assert "Connection refused" in probe_via(monkeypatch, f"http://127.0.0.1:{free_port()}")


def test_probe_open_port_that_closes_at_once(monkeypatch):
    port = serve_once(lambda conn: conn.recv(4096))  # reads the CONNECT, closes without an answer
    assert "closed before an HTTP answer" in probe_via(monkeypatch, f"http://127.0.0.1:{port}")


def test_probe_proxy_that_refuses_the_connect(monkeypatch):
    def refuse(conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    port = serve_once(refuse)
    assert "403" in probe_via(monkeypatch, f"http://127.0.0.1:{port}")


def test_probe_tls_handshake_that_fails(monkeypatch):
    def garbage_after_connect(conn):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.recv(4096)  # the TLS client hello
        conn.sendall(b"not tls at all\r\n\r\n")

    port = serve_once(garbage_after_connect)
    assert "SSL" in probe_via(monkeypatch, f"http://127.0.0.1:{port}")


def test_probe_silent_server_times_out(monkeypatch):
    hold = threading.Event()
    port = serve_once(lambda conn: hold.wait(5))
    try:
        message = probe_via(monkeypatch, f"http://127.0.0.1:{port}")
    finally:
        hold.set()
    assert "timed out" in message or "no answer" in message


def test_probe_answers_through_the_simulator(sim, monkeypatch):
    env = sim_overrides(sim)
    for name in ("HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert reachability.probe_whatsapp(timeout=5) is True


def test_probe_cannot_tell_through_a_socks_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    assert reachability.probe_whatsapp(timeout=1) is False


# --------------------------------------------------------------------------- settings
def test_backoff_and_probe_settings():
    cfg = config.load_config({"RECONNECT_DELAY_MIN": "0.5", "RECONNECT_DELAY_MAX": "2", "RECONNECT_PROBE": "0"})
    assert (cfg.reconnect_delay_min, cfg.reconnect_delay_max, cfg.reconnect_probe) == (0.5, 2.0, False)
    default = config.load_config({})
    assert (default.reconnect_delay_min, default.reconnect_delay_max, default.reconnect_probe) == (1.0, 60.0, True)
    assert config.load_config({"RECONNECT_DELAY_MIN": "90"}).reconnect_delay_max == 90.0


@pytest.mark.parametrize("env", [
    {"RECONNECT_DELAY_MIN": "0"},
    {"RECONNECT_DELAY_MIN": "5", "RECONNECT_DELAY_MAX": "1"},
    {"RECONNECT_DELAY_MAX": "soon"},
    {"RECONNECT_PROBE": "maybe"},
])
def test_bad_backoff_and_probe_settings_stop_the_start(env):
    with pytest.raises(config.ConfigError) as caught:
        config.load_config(env)
    assert next(iter(env)) in str(caught.value)


def test_backoff_stays_at_the_cap_after_thousands_of_failures():
    # 2**1024 overflowed a float: after 1,024 failures the connection thread died (found here).
    backoff = whatsapp.Backoff(first=0.001, cap=0.002)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert all(0.001 <= d <= 0.002 for d in delays[1:])
    slow = whatsapp.Backoff(first=1, cap=60)
    slow.failures = 10_000
    assert 30 <= slow.next_delay() <= 60
