"""Durable writes: the one fsync helper the snapshot swap and the local store share."""

from __future__ import annotations

import os


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory: makes a rename inside it durable).

    Best effort: not every filesystem lets a directory be opened or synced, and a failed fsync here
    only weakens durability after a power loss; the write itself already succeeded.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
