"""`python -m bench`: every figure the README quotes, each against its baseline measured in the same run,
as one table. Quick by default (about a minute on an idle 2-core machine); `--full` runs each module as
its own script does; `--only NAME` (repeatable) picks modules; `--baseline DIR` is another checkout of the
bot for the modules that compare against one (saving): without it those rows say "no baseline".

Each module exposes `figures(quick, baseline) -> list[bench.figures.Figure]`; adding one to the table
is one line in MODULES.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure, table  # noqa: E402

MODULES = {  # name: module, in the order of the table
    "snapshot": "bench.bench_snapshot",
    "boot": "bench.bench_boot",
    "cycle": "bench.bench_cycle",
    "saving": "bench.bench_saving",
    "offline": "bench.bench_offline",
    "liveness": "bench.bench_liveness",
    "requests": "bench.bench_requests",
    "media": "bench.bench_media",
    "outbox": "bench.bench_outbox",
    "hostile": "bench.bench_hostile",
    "continuity": "bench.bench_continuity",
}


def collect(name: str, quick: bool, baseline: Path | None) -> list[Figure]:
    """The module's figures; a module that fails is one row saying how, and the others still run."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the modules' own progress lines stay off the table
            return importlib.import_module(MODULES[name]).figures(quick=quick, baseline=baseline)
    except Exception as exc:  # noqa: BLE001 (one broken benchmark must not hide the other figures)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        return [Figure(f"{name}: FAILED", None, "", "", None, "-", note=message)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=list(MODULES), metavar="NAME",
                        help=f"run only this module (repeatable): {', '.join(MODULES)}")
    parser.add_argument("--full", action="store_true", help="the modules' full runs (several minutes)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="another checkout of the bot, for the rows measured against one")
    args = parser.parse_args(argv)
    if args.baseline and not (args.baseline / "Procfile").is_file():
        parser.error(f"--baseline {args.baseline}: no Procfile there (a checkout of the bot is expected)")
    names = args.only or list(MODULES)
    started = time.monotonic()
    figures: list[Figure] = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        begun = time.monotonic()
        figures.extend(collect(name, quick=not args.full, baseline=args.baseline))
        print(f"bench: {name} took {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
    mode = "full" if args.full else "quick (--full: the modules' full runs)"
    print(f"{mode}; {', '.join(names)}; {time.monotonic() - started:.0f} s; ratio = ours / baseline")
    print(table(figures))
    return 1 if any(f.name.endswith(": FAILED") for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
