"""What a validated snapshot holds, described without key material: SnapshotInfo and the one-line
summary logs and the CLI print. Reads one varint of the device's ADV identity (the link time)."""

from __future__ import annotations

import datetime

from snapshot.format import SnapshotInfo
from textsafe import printable


def varint_field(data: bytes, wanted: int):
    """The value of varint field `wanted` in a protobuf message, or None. `data` is bounded by the
    caller (validation.MAX_ADV_DETAILS_BYTES): the walk is linear in its length."""
    pos = 0

    def varint():
        nonlocal pos
        shift = value = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    try:
        while pos < len(data):
            key = varint()
            field, wire = key >> 3, key & 7
            if wire == 0:
                value = varint()
                if field == wanted:
                    return value
            elif wire == 2:
                pos += varint()
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
    except (IndexError, ValueError):
        return None
    return None


def _iso(ts) -> str | None:
    if not ts or ts <= 0:
        return None
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _stop_stamp(manifest: dict | None) -> int | None:
    """When the save at a dyno's stop made the snapshot (stopsave.py); untrusted: a plausible number only."""
    value = (manifest or {}).get("stopSavedAt")
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40 else None


def describe(parsed, facts) -> SnapshotInfo:
    """SnapshotInfo from what parsing found (unpacking.Parsed) and what validation read (validation.Facts)."""
    # ADVDeviceIdentity field 2 is the link time (seconds).
    paired = varint_field(facts.adv_details, 2) if facts.adv_details else None
    return SnapshotInfo(
        format="ours" if parsed.manifest else "plain tar",
        tier=parsed.manifest.get("tier") if parsed.manifest else None,
        encoded_chars=parsed.encoded_chars,
        compressed_bytes=parsed.compressed_bytes,
        raw_bytes=parsed.raw_bytes,
        db_bytes=facts.db_bytes,
        device_jid=facts.jid,
        device_lid=facts.lid,
        prekeys=facts.prekeys,
        uploaded_prekeys=facts.uploaded_prekeys,
        max_prekey_id=facts.max_prekey_id,
        schema_version=facts.schema_version,
        paired_at=_iso(paired),
        stop_saved_at=_stop_stamp(parsed.manifest),
        created_at=_iso(parsed.db_mtime),
        rows=facts.rows,
        ignored_members=list(parsed.ignored),
    )


# How many dropped members one line names (a snapshot may hold MAX_MEMBERS of them, 100 characters each).
_NAMED_MEMBERS = 10


def ignored_summary(names: list) -> str:
    """The dropped members for one log line: the first few (already escaped) and how many more."""
    shown = ", ".join(names[:_NAMED_MEMBERS])
    return shown + (f" and {len(names) - _NAMED_MEMBERS} more" if len(names) > _NAMED_MEMBERS else "")


def describe_restore(info: SnapshotInfo) -> str:
    """One line about a restored snapshot for logs and the CLI, its text escaped: JID, format, tier
    and the members that were dropped."""
    line = f"{printable(info.device_jid)} ({info.format}, tier {printable(info.tier or 'all', 40)})"
    if info.ignored_members:
        line += f"; not restored from the snapshot: {ignored_summary(info.ignored_members)}"
    return line
