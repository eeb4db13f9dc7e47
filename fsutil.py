"""Durable filesystem changes: fsync, and replacing a whole directory atomically.

The local snapshot store and the snapshot restore share these: a crash or a full disk leaves either
the old state or the new one, never half of each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil


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


# -- replacing a directory: the restored session takes the place of the old one ---------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _backup_name(session_dir: str) -> str:
    parent, name = os.path.split(session_dir)
    return os.path.join(parent, f".{name}.snapshot-old")


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE). False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def swap_into_place(new_dir: str, session_dir: str) -> str | None:
    """Put `new_dir` at `session_dir`; returns the path now holding the old session, if any.

    With RENAME_EXCHANGE there is no moment without a session directory. Without it (some
    filesystems), the old directory is renamed aside first; a crash between the two renames leaves
    it at `.NAME.snapshot-old`, which `finish_interrupted_swap` moves back on the next call.
    """
    if not os.path.lexists(session_dir):
        os.rename(new_dir, session_dir)
        return None
    if _exchange(new_dir, session_dir):
        return new_dir
    backup = _backup_name(session_dir)
    if os.path.lexists(backup):
        shutil.rmtree(backup)  # left by an earlier swap that finished both renames
    os.rename(session_dir, backup)
    os.rename(new_dir, session_dir)
    return backup


def finish_interrupted_swap(session_dir: str):
    backup = _backup_name(session_dir)
    if not os.path.lexists(session_dir) and os.path.isdir(backup):
        os.rename(backup, session_dir)
