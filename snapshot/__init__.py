"""Session snapshots small enough for a Heroku config var, and safe to restore.

One module per job:
- format.py: what a snapshot is (base64 of a tar.gz holding neonize.db, its tier in the gzip header
  comment), what each tier keeps, SnapshotInfo and the errors.
- packing.py: the session's database cut down to a tier, compacted, encoded deterministically.
- unpacking.py: untrusted snapshot text decoded as a bounded stream, validated, described (`inspect`)
  or restored (`unpack`) into a database made by neonize's own migrations; its steps, one module
  each: decoding.py (base64, gzip), tarheaders.py (raw tar headers checked before `tarfile` sees
  them), tarreading.py (members), walfold.py (a -wal folded in), validation.py (the database checked,
  values bounded), rebuild.py (neonize's schema, the rows put into it), description.py (SnapshotInfo).
- child.py: the child process a save runs (see there why).
The atomic directory swap of a restore is in fsutil.py.
"""

from snapshot.format import (AUTO_TIERS, DB_NAME, DEFAULT_BUDGET, EXIT_TOO_LARGE, MAX_MEMBERS, MAX_UNCOMPRESSED_BYTES,
                             PREKEY_FLOOR, RESTORED_PAGE_SIZE, TIERS, InvalidSnapshot, SnapshotError,
                             SnapshotInfo, SnapshotTooLarge, same_snapshot)
from snapshot.packing import pack, pack_for_store
from snapshot.description import describe_restore
from snapshot.unpacking import device_jid, has_valid_session, inspect, unpack

__all__ = [
    "AUTO_TIERS",
    "PREKEY_FLOOR", "DB_NAME", "DEFAULT_BUDGET", "EXIT_TOO_LARGE", "MAX_MEMBERS", "MAX_UNCOMPRESSED_BYTES",
    "RESTORED_PAGE_SIZE", "TIERS", "InvalidSnapshot", "SnapshotError", "SnapshotInfo", "SnapshotTooLarge", "same_snapshot",
    "describe_restore", "device_jid", "has_valid_session", "inspect", "pack", "pack_for_store", "unpack",
]
