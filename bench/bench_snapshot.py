"""Snapshot size and speed per account profile: the seed design (tar.gz + base64 of the whole
session directory) against ours at the default tier, measured in the same run.

    /work/venv/bin/python bench/bench_snapshot.py [--repeat N]

Databases come from tests/support/wadb.py (schema made by neonize itself, realistic synthetic rows).
Targets (issue 4): fresh <= 6,000 characters; 3000 contacts <= 16,000 characters and >= 300x smaller
than naive; pack and unpack <= 100 ms each on the 3000-contact profile.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import snapshot  # noqa: E402
from bench.figures import Figure  # noqa: E402
from tests.support import wadb  # noqa: E402


def naive_pack(session_dir: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(session_dir, arcname=".")
    return base64.b64encode(buf.getvalue()).decode()


def naive_unpack(text: str, dest: str):
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(text)), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


def shell_chars(session_dir: str) -> int:
    out = subprocess.run(["bash", "-o", "pipefail", "-c", f"tar czf - -C '{session_dir}' . | base64 -w0"],
                         capture_output=True, check=True).stdout
    return len(out)


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return result, statistics.median(times)


def measure(profiles, repeat: int, budget: int = snapshot.DEFAULT_BUDGET) -> list[tuple]:
    """Per profile: (profile, shell chars, naive chars, ours chars, tier, naive pack ms, ours pack ms,
    naive unpack ms, ours unpack ms), medians of `repeat` runs."""
    work = tempfile.mkdtemp(prefix="bench-snapshot-")
    rows = []
    try:
        for profile in profiles:
            session = wadb.make_session(os.path.join(work, profile, "session"), profile, seed=1)
            counter = iter(range(10**6))
            naive_text, naive_pack_ms = timed(lambda: naive_pack(session.session_dir), repeat)
            _, naive_unpack_ms = timed(
                lambda: naive_unpack(naive_text, os.path.join(work, profile, f"naive-{next(counter)}")),
                repeat)
            ours_text, ours_pack_ms = timed(lambda: snapshot.pack(session.session_dir, budget), repeat)
            info, ours_unpack_ms = timed(
                lambda: snapshot.unpack(ours_text, os.path.join(work, profile, f"ours-{next(counter)}")),
                repeat)
            assert info.device_jid == session.jid
            rows.append((profile, shell_chars(session.session_dir), len(naive_text), len(ours_text), info.tier,
                         naive_pack_ms, ours_pack_ms, naive_unpack_ms, ours_unpack_ms))
            shutil.rmtree(os.path.join(work, profile))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "fresh": "a save fills its share: a fresh pairing is about 16,300 characters (186 pre-keys)",
    "3000": "3,000 contacts: 340 times smaller than tar | gzip | base64",
    "pack": "packs in about 0.1 s, faster than tarfile",
    "unpack": "unpacks, validated, in under 0.1 s, faster than tarfile",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Sizes against `tar czf | base64 -w0` of the same directory; pack/unpack against the same in Python.
    Quick: the two profiles the README quotes, median of 3 (the first unpack pays for neonize's schema
    template, so one run alone would show that, not the unpack)."""
    profiles, repeat = (("fresh", "3000"), 3) if quick else (tuple(wadb.PROFILES), 7)
    result = []
    for profile, shell, _naive, ours, tier, npk, opk, nup, oup in measure(profiles, repeat):
        label = "fresh pairing" if profile == "fresh" else f"{profile} contacts"
        result.append(Figure(f"snapshot size, {label} (tier {tier})", ours, "chars", "shell tar czf + base64", shell,
                             README.get(profile, "-")))
        if profile == "3000":
            result.append(Figure(f"snapshot pack, {label}", opk, "ms", "tarfile gz+b64", npk,
                                 README["pack"]))
            result.append(Figure(f"snapshot unpack, {label} (validated)", oup, "ms", "tarfile gz+b64", nup,
                                 README["unpack"]))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (median is shown)")
    parser.add_argument("--budget", type=int, default=snapshot.DEFAULT_BUDGET)
    args = parser.parse_args(argv)
    rows = measure(wadb.PROFILES, args.repeat, args.budget)

    head = ("profile", "shell chars", "naive chars", "ours chars", "tier", "ratio",
            "naive pack ms", "ours pack ms", "naive unpack ms", "ours unpack ms")
    print(f"budget {args.budget} characters; median of {args.repeat} runs; "
          "'shell' = tar czf - -C DIR . | base64 -w0, 'naive' = the same in Python (timed)")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for profile, shell, naive, ours, tier, npk, opk, nup, oup in rows:
        print(f"{profile} | {shell:,} | {naive:,} | {ours:,} | {tier} | {shell / ours:,.0f}x | "
              f"{npk:.1f} | {opk:.1f} | {nup:.1f} | {oup:.1f}")
    by = {r[0]: r for r in rows}
    checks = [
        ("fresh <= 6,000 chars", by["fresh"][3] <= 6000),
        ("3000 <= 16,000 chars", by["3000"][3] <= 16000),
        ("3000 >= 300x smaller than naive", by["3000"][1] / by["3000"][3] >= 300),
        ("3000 pack <= 100 ms", by["3000"][6] <= 100),
        ("3000 unpack <= 100 ms", by["3000"][8] <= 100),
    ]
    print()
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
