"""What the durable webhook queue costs: the PostgreSQL outbox (outbox.py) against the memory queue
(delivery.MemoryQueue) as the baseline, measured in the same run, in process.

Run: .venv/bin/python bench/bench_outbox.py [--events 300]

- emit: how long a producer (neonize's thread, usually) spends handing one event over: the median and
  the 99th percentile. The memory queue appends to a deque; the outbox INSERTs a row.
- delivery: events per second from the first emit until the receiver (a real HTTP server on loopback,
  answering 204) has all of them, each removed after its 2xx (the outbox: a SELECT and a DELETE each).

The server is a throw-away PostgreSQL from tests/support/postgres.py, on loopback: a Heroku Postgres
round trip from a dyno adds about a millisecond per statement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import events  # noqa: E402
from bench.figures import Figure  # noqa: E402
from delivery import EventQueue  # noqa: E402
from outbox import PostgresOutbox  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.simulator import WebhookReceiver  # noqa: E402


def run(name: str, make_queue, count: int) -> dict:
    receiver = WebhookReceiver().start()
    queue = make_queue(receiver.url)
    queue.start()
    costs = []
    try:
        started = time.perf_counter()
        for n in range(count):
            payload = events.envelope("receipt", {"id": f"M{n}", "status": "delivered", "chat": "1@s.whatsapp.net"})
            before = time.perf_counter()
            queue.enqueue(payload)
            costs.append(time.perf_counter() - before)
        deadline = time.monotonic() + 120
        while len(receiver.posts) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        took = time.perf_counter() - started
        assert len(receiver.posts) == count, f"{name}: {len(receiver.posts)} of {count} delivered"
    finally:
        queue.close(time.monotonic() + 5)
        receiver.stop()
    costs.sort()
    return {"name": name, "emit_median_ms": statistics.median(costs) * 1000,
            "emit_p99_ms": costs[int(len(costs) * 0.99) - 1] * 1000, "per_second": count / took}


def measure(count: int) -> tuple[dict, dict]:
    """(memory queue, PostgreSQL outbox) results for `count` events each, on one throw-away server."""
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("bench_outbox")
        return (run("memory (baseline)", lambda hook: EventQueue(hook), count),
                run("postgres outbox", lambda hook: EventQueue(hook, store=PostgresOutbox(url)), count))
    finally:
        server.stop()


README: dict = {}  # the README quotes none of these figures yet (tests/test_bench.py checks what it does quote)


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """The outbox against the memory queue, same run: 300 events each (quick: 100)."""
    memory, outbox = measure(100 if quick else 300)
    return [
        Figure("webhook event handed over, PostgreSQL outbox (median)", outbox["emit_median_ms"], "ms",
               "memory queue", memory["emit_median_ms"], README.get("emit", "-")),
        Figure("webhook event handed over, PostgreSQL outbox (99th percentile)", outbox["emit_p99_ms"], "ms",
               "memory queue", memory["emit_p99_ms"], README.get("p99", "-")),
        Figure("webhook events delivered per second, PostgreSQL outbox", outbox["per_second"], "/s",
               "memory queue", memory["per_second"], README.get("rate", "-")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    results = measure(args.events)
    print(f"{'queue':<20} {'emit median':>12} {'emit p99':>10} {'delivered/s':>12}")
    for r in results:
        print(f"{r['name']:<20} {r['emit_median_ms']:>10.3f}ms {r['emit_p99_ms']:>8.3f}ms {r['per_second']:>12.0f}")


if __name__ == "__main__":
    main()
