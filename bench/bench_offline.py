"""Memory and file handles a worker gains per failed connect attempt while WhatsApp is unreachable.

Run: .venv/bin/python bench/bench_offline.py [--attempts 300] [--pg-attempts 60] [--no-postgres]

A real bot (the Procfile's gunicorn, real neonize) whose WhatsApp is a closed loopback port, with the
backoff shortened (RECONNECT_DELAY_MIN/MAX) and no worker recycling (MAX_CONNECTS_PER_WORKER huge).
After a warm-up, it counts attempts through /api/session-status (`connectAttempts`) and reads the
worker's VmRSS and open file count from /proc before and after; it prints the growth per attempt.

- before: RECONNECT_PROBE=0, every attempt goes to neonize's connect() as on main (main's backoff
  cannot be shortened, so this flag is how the old behaviour is measured at speed). neonize opens a
  whatsmeow database container per connect() and never closes it (issue 17).
- after: the default: the reachability probe fails and neonize is not called.

Postgres (a throw-away server from tests/support/postgres.py) runs fewer "before" attempts: each one keeps a
server connection, and the server's max_connections (100) would end the leak with "too many clients".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure  # noqa: E402
from tests.support.harness import BotProcess, base_env, free_port, wait_for  # noqa: E402

WARM_UP = 20


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def connect_attempts(bot: BotProcess) -> int:
    try:
        status, body = bot.request("GET", "/api/session-status", timeout=2)
    except (OSError, ValueError):
        return -1
    return body.get("connectAttempts", -1) if status == 200 else -1


def measure(env: dict[str, str], attempts: int) -> tuple[int, float, int]:
    """(attempts made, RSS growth in MB, fd growth) of the worker over `attempts` failed attempts."""
    bot = BotProcess(base_env(**env)).start()
    try:
        start = wait_for(lambda: (n := connect_attempts(bot)) >= WARM_UP and n, 60, "warm-up", interval=0.05)
        (pid,) = [p for p in bot.process_tree() if p != bot.proc.pid and "gunicorn" in
                  Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        rss0, fds0 = rss_kb(pid), fd_count(pid)
        end = wait_for(lambda: (n := connect_attempts(bot)) >= start + attempts and n, 600,
                       f"{attempts} attempts", interval=0.05)
        return end - start, (rss_kb(pid) - rss0) / 1024, fd_count(pid) - fds0
    finally:
        bot.stop()


def report(label: str, made: int, mb: float, fds: int) -> None:
    print(f"{label:<18} {made:>6} attempts  RSS {mb:+8.2f} MB  fds {fds:+6d}   "
          f"per attempt: {mb / made:+.4f} MB, {fds / made:+.3f} fds", flush=True)


def run(attempts: int, pg_attempts: int, postgres: bool, on_result=report) -> dict[str, tuple[int, float, int]]:
    """(attempts made, RSS growth MB, fd growth) per run label; each result also goes to `on_result`."""
    results: dict[str, tuple[int, float, int]] = {}

    def record(label: str, result: tuple[int, float, int]) -> None:
        results[label] = result
        on_result(label, *result)

    common = {
        "HTTPS_PROXY": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "RECONNECT_DELAY_MIN": "0.001",
        "RECONNECT_DELAY_MAX": "0.002",
        "MAX_CONNECTS_PER_WORKER": "1000000",
    }
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as tmp:
        sqlite = {**common, "SESSION_DIR": str(Path(tmp) / "session")}
        record("sqlite before", measure({**sqlite, "RECONNECT_PROBE": "0"}, attempts))
        record("sqlite after", measure(sqlite, attempts))
        if not postgres:
            return results
        from tests.support.postgres import PostgresServer

        server = PostgresServer()
        try:
            server.start()
        except Exception as exc:  # no PostgreSQL here: say so, the SQLite figures stand
            print(f"postgres: skipped, no server could be started ({exc})")
            return results
        try:
            pg = {**common, "SESSION_DIR": str(Path(tmp) / "pg-session")}
            pg_before = {**pg, "DATABASE_URL": server.create_database("bench_before"), "RECONNECT_PROBE": "0"}
            record("postgres before", measure(pg_before, pg_attempts))
            record("postgres after", measure({**pg, "DATABASE_URL": server.create_database("bench_after")},
                                             attempts))
        finally:
            server.stop()
    return results


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "growth": "0.4 KB, 0.003 file handles per failed connect (182 KB, one handle)",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Growth per failed attempt with the probe (ours) against RECONNECT_PROBE=0 (every attempt to
    neonize), same run. Quick: 60 attempts, SQLite only; full: 300, and Postgres (60 before)."""
    results = run(60 if quick else 300, 60, postgres=not quick, on_result=lambda *_: None)
    claim = README["growth"]
    out = []
    for store in ("sqlite", "postgres"):
        if f"{store} after" not in results:
            continue
        made, mb, fds = results[f"{store} after"]
        b_made, b_mb, b_fds = results[f"{store} before"]
        out.append(Figure(f"worker RSS growth per failed connect, {store}", mb * 1024 / made, "KB",
                          "RECONNECT_PROBE=0", b_mb * 1024 / b_made, claim))
        out.append(Figure(f"open files growth per failed connect, {store}", fds / made, "fds",
                          "RECONNECT_PROBE=0", b_fds / b_made, claim))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=300, help="failed attempts per SQLite run and per 'after'")
    parser.add_argument("--pg-attempts", type=int, default=60, help="failed attempts of the Postgres 'before' run")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    run(args.attempts, args.pg_attempts, postgres=not args.no_postgres)


if __name__ == "__main__":
    main()
