"""The worker's memory while a customer's file passes through GET /api/media/<id>, against its size.

Run: .venv/bin/python bench/bench_media.py [--sizes 10,100] [--neonize]

The real bot (Procfile's gunicorn, real neonize) pairs with the WhatsApp simulator (tests/wasim); a
simulated customer sends a video of each size (random bytes, encrypted as WhatsApp does it), and the
bench downloads it through the API, reading the answer in 1 MB pieces. A thread samples the worker's
RSS every 5 ms; the figure is its peak during the download minus its RSS just before. The goal (issue
23): flat, whatever the size, on a dyno with 512 MB. `--neonize` also measures what neonize's own
`download_any` costs in a plain neonize client process (tests/wasim/driver.py), the baseline: it
holds the whole file in memory, more than once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_boot import rss_mb  # noqa: E402
from bench.figures import Figure  # noqa: E402
from qrterminal import END_MARKER  # noqa: E402
from tests.support.harness import BotProcess, base_env  # noqa: E402
from tests.support.qrdecode import printed_qr_texts  # noqa: E402
from tests.support.simulator import WebhookReceiver, running_sim, sim_overrides  # noqa: E402
from tests.wasim import peer_events as peer  # noqa: E402

API_KEY = "bench-media-api-key-5b1e0c"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CONTACT = "4915112345678"
MB = 1024 * 1024


class PeakSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.005)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MB, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def worker_pid(bot: BotProcess) -> int:
    return next(pid for pid in bot.process_tree() if pid != bot.proc.pid)


def bench_bot(sim, tmp: Path, sizes: list[int]) -> list[tuple[int, float, float, float]]:
    receiver = WebhookReceiver().start()
    bot = BotProcess(base_env(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(tmp / "session"),
                              SESSION_SAVE_DELAY="0.3", WEBHOOK_URL=receiver.url)).start()
    rows = []
    try:
        sim.wait_for_qr(timeout=60)
        bot.wait_for_line(END_MARKER, timeout=60)
        jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
        sim.wait_logged_in(jid, timeout=60)
        bot.wait_state("connected", timeout=60)
        pid = worker_pid(bot)
        for size_mb in sizes:
            source = tmp / f"video-{size_mb}.mp4"
            expected = random_file(source, size_mb * MB)
            message_id, _ = peer.send_media(sim, jid, CONTACT, "video", str(source), mimetype="video/mp4", seconds=60)
            # The worker has the message (its event went out) before the RSS "before" is read.
            receiver.wait_for_event("message", timeout=60, where=lambda data: data["id"] == message_id)
            before = rss_mb(pid)
            started = time.monotonic()
            digest = hashlib.sha256()
            with PeakSampler(pid) as sampler:
                with requests.get(f"{bot.url}/api/media/{message_id}", headers=AUTH, stream=True, timeout=120) as answer:
                    answer.raise_for_status()
                    for piece in answer.iter_content(MB):
                        digest.update(piece)
            elapsed = time.monotonic() - started
            assert digest.hexdigest() == expected, "the file came back changed"
            rows.append((size_mb, before, sampler.peak, elapsed))
            source.unlink()
    finally:
        bot.stop()
        receiver.stop()
    return rows


def bench_neonize(sim, tmp: Path, sizes: list[int]) -> list[tuple[int, float, float, float]]:
    """The same files through neonize's download_any in a plain neonize client (the baseline)."""
    from tests.wasim.clientproc import ClientProcess

    rows = []
    os.makedirs(tmp / "neonize", exist_ok=True)
    client = ClientProcess(str(tmp / "neonize" / "neonize.db"), sim.client_env(), str(tmp / "neonize.log"))
    try:
        qr = client.wait_event("qr", timeout=60)["code"]
        jid = sim.scan_latest_qr(qr)
        client.wait_event("connected", timeout=60)
        sim.wait_logged_in(jid, timeout=60)
        for size_mb in sizes:
            source = tmp / f"video-{size_mb}.mp4"
            random_file(source, size_mb * MB)
            message_id, _ = peer.send_media(sim, jid, CONTACT, "video", str(source), mimetype="video/mp4")
            client.wait_event("message", id=message_id, timeout=60)
            before = rss_mb(client.proc.pid)
            started = time.monotonic()
            with PeakSampler(client.proc.pid) as sampler:
                client.command("download", id=message_id)
                client.wait_event("downloaded", id=message_id, timeout=300)
            rows.append((size_mb, before, sampler.peak, time.monotonic() - started))
            source.unlink()
    finally:
        client.stop()
    return rows


BOT, NEONIZE = "bot: GET /api/media (streamed)", "neonize download_any (baseline)"


def measure(sizes: list[int], neonize: bool) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per run: (file MB, RSS before MB, peak MB, seconds) per size; the neonize baseline when asked."""
    with tempfile.TemporaryDirectory() as workdir:
        tmp = Path(workdir)
        with running_sim(str(tmp / "wasim")) as sim:
            results = {BOT: bench_bot(sim, tmp, sizes)}
            if neonize:
                results[NEONIZE] = bench_neonize(sim, tmp, sizes)
    return results


README = {  # what README.md says per file size (tests/test_bench.py checks the numbers are there)
    10: "the worker grows by about 2 MB for a 10 MB video; download_any by 58 MB",
    100: "0.1 MB for a 100 MB one; download_any by 520 MB",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """The worker's growth against neonize's download_any of the same file, same run. Quick: 10 MB only."""
    sizes = [10] if quick else [10, 100]
    results = measure(sizes, neonize=True)
    base = {size: peak - before for size, before, peak, _ in results[NEONIZE]}
    return [Figure(f"worker RSS growth while a {size} MB file streams through GET /api/media", peak - before, "MB",
                   "neonize download_any", base[size], README.get(size, "-"))
            for size, before, peak, _ in results[BOT]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100", help="file sizes in MB, comma-separated")
    parser.add_argument("--neonize", action="store_true", help="also measure neonize's download_any (baseline)")
    args = parser.parse_args()
    results = measure([int(s) for s in args.sizes.split(",")], args.neonize)
    print(f"{'':36} {'file MB':>8} {'RSS before MB':>14} {'peak MB':>8} {'growth MB':>10} {'seconds':>8}")
    for name, rows in results.items():
        for size_mb, before, peak, elapsed in rows:
            print(f"{name:36} {size_mb:8d} {before:14.1f} {peak:8.1f} {peak - before:10.1f} {elapsed:8.1f}")


if __name__ == "__main__":
    main()
