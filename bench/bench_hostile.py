"""What each hostile snapshot of issue 21 (sections 2 and 3) costs: the time `inspect`, `unpack` and the
boot restore take to refuse it in this process, and the peak RSS of `python session_manager.py inspect`
and `unpack` on it (each in its own child, started from a small probe so the figure is the child's own).

    /work/main/.venv/bin/python bench/bench_hostile.py [--only WORDS]

Targets (issue 21): every tar header attack refused in under 1 s; every attack under 150 MB peak RSS;
a 40 MB device value refused quickly (its cost is reading the ~80 MB database it makes, as for any
snapshot that size). "schema SQL as a BLOB" and "CREATE  VIRTUAL" are restored (neonize's schema, no
virtual table): their unpack time is a normal restore's. neonize's empty schema is built before timing.
Before the raw tar header check (Python 3.11.7's tarfile): the GNU sparse map 1.2-1.5 GB and minutes,
the 1 MiB digits pax header minutes (CVE-2024-6232), 400 L/x headers a RecursionError traceback, a
100 MB long name ~400 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import snapshot  # noqa: E402
from bench.figures import Figure  # noqa: E402
from snapshot_session import SnapshotSession  # noqa: E402
from tests.support import wadb  # noqa: E402
from tests.support.hostile import SCHEMA_ATTACKS, TAR_HEADER_ATTACKS, odd_page_size, schema_attack  # noqa: E402

_PROBE = textwrap.dedent("""
    import json, os, subprocess, sys
    proc = subprocess.Popen(sys.argv[1:], stdin=sys.stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
""")


class _Store:
    key = "WHATSAPP_SESSION"

    def __init__(self, text):
        self.text = text

    def load(self):
        return self.text


def _seconds(call) -> float:
    started = time.perf_counter()
    try:
        call()
    except snapshot.InvalidSnapshot:
        pass
    return time.perf_counter() - started


def _child_peak_mib(text_file: str, *args: str) -> tuple[int, float]:
    with open(text_file, "rb") as stdin:
        done = subprocess.run([sys.executable, "-c", _PROBE, sys.executable, "session_manager.py", *args],
                              stdin=stdin, capture_output=True, cwd=ROOT, timeout=600)
    code, peak_kib = json.loads(done.stdout)
    return code, peak_kib / 1024


def _attack_row(tmp: str, name: str, text: str) -> dict:
    text_file = os.path.join(tmp, "attack.txt")
    Path(text_file).write_text(text)
    dest = os.path.join(tmp, "dest")
    inspect_s = _seconds(lambda: snapshot.inspect(text))
    unpack_s = _seconds(lambda: snapshot.unpack(text, dest))
    boot_s = _seconds(lambda: SnapshotSession(Path(tmp) / "boot", _Store(text)).restore_on_boot())
    cli_inspect = _child_peak_mib(text_file, "inspect")
    cli_unpack = _child_peak_mib(text_file, "unpack", os.path.join(tmp, "cli-dest"))
    for leftover in ("dest", "boot", "cli-dest"):
        subprocess.run(["rm", "-rf", os.path.join(tmp, leftover)], check=True)
    return {"name": name, "chars": len(text), "inspect_s": inspect_s, "unpack_s": unpack_s, "boot_s": boot_s,
            "cli_inspect": cli_inspect, "cli_unpack": cli_unpack}


def measure(only: str = "", header_attacks_only: bool = False, on_row=None) -> tuple[list[dict], dict]:
    """One row per attack, and the same row for a valid snapshot of the same account (the baseline)."""
    logging.disable(logging.CRITICAL)  # the boot restore's one error line per attack
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            source = wadb.make_session(os.path.join(tmp, "src"), "fresh", seed=8)
            attacks = {name: make for name, make in TAR_HEADER_ATTACKS.items()}
            if not header_attacks_only:
                attacks.update({f"page size {n}": (lambda n=n: odd_page_size(source.db_path, n)) for n in (12, 3)})
                attacks.update({name: (lambda name=name: schema_attack(name, source.db_path))
                                for name in SCHEMA_ATTACKS})
            from snapshot.rebuild import neonize_template

            neonize_template()  # once per process (~1-3 s), not part of any attack's cost
            valid = _attack_row(tmp, "a valid snapshot", snapshot.pack(source.session_dir))
            rows = []
            for name, make in attacks.items():
                if only and only not in name:
                    continue
                rows.append(_attack_row(tmp, name, make()))
                if on_row:
                    on_row(rows[-1])
            return rows, valid
    finally:
        logging.disable(logging.NOTSET)


README: dict = {}  # the README quotes none of these figures (tests/test_bench.py checks what it does quote)


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Against a valid snapshot of the same account, same run. Quick: the tar header attacks only."""
    rows, valid = measure(header_attacks_only=quick)
    headers = [r for r in rows if r["name"] in TAR_HEADER_ATTACKS]
    slowest = max(headers, key=lambda r: max(r["inspect_s"], r["unpack_s"], r["boot_s"]))
    heaviest = max(rows, key=lambda r: max(r["cli_inspect"][1], r["cli_unpack"][1]))
    valid_s = max(valid["inspect_s"], valid["unpack_s"], valid["boot_s"])
    result = [
        Figure(f"slowest tar header attack refused ({slowest['name']})",
               max(slowest["inspect_s"], slowest["unpack_s"], slowest["boot_s"]) * 1000, "ms",
               "valid snapshot restored", valid_s * 1000, README.get("header", "-")),
        Figure(f"peak RSS of the CLI on the worst attack ({heaviest['name']})",
               max(heaviest["cli_inspect"][1], heaviest["cli_unpack"][1]), "MiB", "CLI unpack of a valid one",
               valid["cli_unpack"][1], README.get("rss", "-")),
    ]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="only the attacks whose name holds these words")
    args = parser.parse_args(argv)
    print("attack | chars | inspect s | unpack s | boot s | CLI inspect exit, peak MiB | CLI unpack exit, peak MiB")
    print(" | ".join("---" for _ in range(7)))

    def show(r: dict) -> None:
        print(f"{r['name']} | {r['chars']:,} | {r['inspect_s']:.3f} | {r['unpack_s']:.3f} | {r['boot_s']:.3f} | "
              f"{r['cli_inspect'][0]}, {r['cli_inspect'][1]:.0f} | {r['cli_unpack'][0]}, {r['cli_unpack'][1]:.0f}")

    rows, _valid = measure(args.only, on_row=show)
    worst_header_s = max([max(r["inspect_s"], r["unpack_s"], r["boot_s"]) for r in rows
                          if r["name"] in TAR_HEADER_ATTACKS] or [0.0])
    worst_mib = max([max(r["cli_inspect"][1], r["cli_unpack"][1]) for r in rows] or [0.0])
    print()
    print(f"{'ok  ' if worst_header_s < 1 else 'MISS'} every tar header attack refused in under 1 s "
          f"(worst {worst_header_s:.3f} s)")
    print(f"{'ok  ' if worst_mib < 150 else 'MISS'} peak RSS under 150 MB (worst {worst_mib:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
