"""Processes a test run left behind: found at the end of the session, killed, and reported.

A process counts as ours when it descends from the pytest process, or when its working directory or
its SESSION_DIR lies under one of the run's temp roots (pytest's basetemp, the PostgreSQL test
server's temp dir): a gunicorn bot or a daemonized postgres is reparented to init once its parent
lets go of it, but it still lives in our directories.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil


def _under(path: str | None, roots: list[Path]) -> bool:
    if not path:
        return False
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return any(resolved == root or root in resolved.parents for root in roots)


def _describe(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline())[:160]
    except psutil.Error:
        cmdline = "?"
    try:
        session_dir = proc.environ().get("SESSION_DIR", "")
    except psutil.Error:
        session_dir = ""
    return f"pid {proc.pid}: {cmdline}" + (f" (SESSION_DIR={session_dir})" if session_dir else "")


def find(roots: list[Path]) -> list[psutil.Process]:
    """Live (non-zombie) processes of this run other than pytest itself."""
    me = psutil.Process()
    roots = [Path(r).resolve() for r in roots]
    found: dict[int, psutil.Process] = {}
    for child in me.children(recursive=True):
        found[child.pid] = child
    for proc in psutil.process_iter():
        if proc.pid == me.pid or proc.pid in found:
            continue
        try:
            if _under(proc.cwd(), roots) or _under(proc.environ().get("SESSION_DIR"), roots):
                found[proc.pid] = proc
        except psutil.Error:  # gone, or not ours to read
            continue
    alive = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return alive


def kill_and_describe(roots: list[Path], grace: float = 3.0) -> list[str]:
    """Wait `grace` seconds for stragglers that are on their way out, then SIGKILL what is left;
    returns one line per process that had to be killed."""
    deadline = time.monotonic() + grace
    left = find(roots)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = find(roots)
    lines = [_describe(proc) for proc in left]
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    return lines
