"""Realistic whatsmeow session databases for tests and benchmarks.

The schema always comes from neonize itself: a subprocess opens a `NewClient` on an empty file and
calls `connect()`, which runs whatsmeow's migrations and then fails to dial (HTTPS_PROXY points at a
dead local port, so nothing leaves the machine). The Go runtime does not survive fork, so this never
runs inside the pytest process. One template per process is cached and copied for every test.

The rows are synthetic but sized like a real account. Key material is random bytes from a seeded RNG:
real keys are random too, so they must not compress better here than they would in production.

Pre-keys follow what whatsmeow (bundled in neonize 0.5.2) really does: 812 keys are generated and
uploaded at pairing (prekeys.go, `initialUpload`), each peer device that starts a session with us
consumes the lowest-numbered one still on the server (removed from the table after use), and a batch
of 50 is generated and uploaded whenever the server's stock drops below 5. So a fresh pairing carries
812 uploaded keys (~26 KB of incompressible key material) and a big account only a few dozen.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

DB_NAME = "neonize.db"

# Contacts per profile; "fresh" is a device right after pairing.
PROFILES = {"fresh": 0, "50": 50, "500": 500, "3000": 3000}

INITIAL_PREKEYS = 812  # whatsmeow prekeys.go: wantedCount = 812 on the initial upload
PREKEY_BATCH = 50  # WantedPreKeyCount
PREKEY_MIN = 5  # MinPreKeyCount

def template_db() -> str:
    """Path of an empty database made by neonize's own migrations: the restore's template
    (snapshot/rebuild.py), made once per process, or once per test run (conftest's SCHEMA_CACHE_DIR).
    Read-only: copy it before writing."""
    from snapshot.rebuild import neonize_template

    return neonize_template().path


@dataclass
class Session:
    """What a generated session holds, for assertions."""

    session_dir: str
    db_path: str
    jid: str
    lid: str
    keys: dict  # device key columns -> bytes
    prekey_ids: list  # uploaded pre-key ids still in the table, ascending
    contacts: int


def _adv_device_identity(rng: random.Random, paired_at: int) -> bytes:
    """The ADVDeviceIdentity protobuf whatsmeow keeps in adv_details (raw id, timestamp, key index)."""
    try:
        from neonize.proto.waAdv.WAAdv_pb2 import ADVDeviceIdentity

        return ADVDeviceIdentity(
            rawID=rng.getrandbits(32), timestamp=paired_at, keyIndex=rng.randint(1, 40)
        ).SerializeToString()
    except Exception:  # pragma: no cover - proto layout changed; keep an equivalent hand encoding
        def varint(n):
            out = bytearray()
            while True:
                b = n & 0x7F
                n >>= 7
                out.append(b | (0x80 if n else 0))
                if not n:
                    return bytes(out)

        return b"\x08" + varint(rng.getrandbits(32)) + b"\x10" + varint(paired_at) + b"\x18" + varint(7)


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


_FIRST = ["Anna", "Ben", "Chiara", "Deniz", "Emma", "Farid", "Gita", "Hugo", "Ines", "Jonas", "Kemal",
          "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Viktor",
          "Wen", "Xenia", "Yusuf", "Zoe"]
_LAST = ["Schmidt", "Rossi", "Yilmaz", "Garcia", "Nguyen", "Okafor", "Kowalski", "Silva", "Haddad",
         "Novak", "Larsen", "Ivanova", "Costa", "Dubois", "Khan", "Meyer"]


def fill(db_path: str, contacts: int, seed: int = 1) -> Session:
    """Fill an empty neonize database with a paired device and `contacts` contacts' worth of state."""
    rng = random.Random(seed)
    rb = rng.randbytes
    user = "49" + _digits(rng, 10)
    lid_user = _digits(rng, 15)
    dev = rng.randint(2, 40)
    jid = f"{user}:{dev}@s.whatsapp.net"
    lid = f"{lid_user}:{dev}@lid"
    paired_at = 1_760_000_000 + rng.randint(0, 10_000_000)
    keys = {
        "noise_key": rb(32),
        "identity_key": rb(32),
        "signed_pre_key": rb(32),
        "signed_pre_key_sig": rb(64),
        "adv_key": rb(32),
        "adv_details": _adv_device_identity(rng, paired_at),
        "adv_account_sig": rb(64),
        "adv_account_sig_key": rb(32),
        "adv_device_sig": rb(64),
    }
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    with conn:
        conn.execute(
            "INSERT INTO whatsmeow_device (jid, lid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, business_name, push_name,"
            " lid_migration_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (jid, lid, rng.getrandbits(32), keys["noise_key"], keys["identity_key"],
             keys["signed_pre_key"], 1, keys["signed_pre_key_sig"], keys["adv_key"],
             keys["adv_details"], keys["adv_account_sig"], keys["adv_account_sig_key"],
             keys["adv_device_sig"], "android", "", "Bot Owner", paired_at + 60),
        )

        # Pre-keys: initial upload, FIFO consumption by peer devices, refills of 50 below 5.
        peer_devices = [1 + min(3, int(rng.expovariate(1.6))) for _ in range(contacts)]
        consumed = int(sum(peer_devices) * 0.5)  # about half the sessions are started by the peer
        stock = list(range(1, INITIAL_PREKEYS + 1))
        next_id = INITIAL_PREKEYS + 1
        head = 0
        for _ in range(consumed):
            head += 1
            if len(stock) - head < PREKEY_MIN:
                stock.extend(range(next_id, next_id + PREKEY_BATCH))
                next_id += PREKEY_BATCH
        uploaded = stock[head:]
        conn.executemany(
            "INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded) VALUES (?,?,?,1)",
            [(jid, kid, rb(32)) for kid in uploaded],
        )

        # App-state sync keys: shared by the phone at pairing, more as they rotate.
        n_sync = 6 + contacts // 50
        conn.executemany(
            "INSERT INTO whatsmeow_app_state_sync_keys (jid, key_id, key_data, timestamp, fingerprint)"
            " VALUES (?,?,?,?,?)",
            [(jid, b"\x00\x00" + rb(4), rb(32), (paired_at - i * 86400 * 7) * 1000,
              b"\x08" + rb(4) + b"\x10" + bytes([i % 100]) + b"\x1a\x02\x00" + bytes([dev]))
             for i in range(n_sync)],
        )
        conn.execute("INSERT INTO whatsmeow_nct_salt (our_jid, salt) VALUES (?,?)", (jid, rb(32)))

        # App state: five collections, each with a version and a 128-byte LTHash.
        collections = ["critical_block", "critical_unblock_low", "regular", "regular_high", "regular_low"]
        conn.executemany(
            "INSERT INTO whatsmeow_app_state_version (jid, name, version, hash) VALUES (?,?,?,?)",
            [(jid, name, rng.randint(2, 50 + contacts), rb(128)) for name in collections],
        )
        n_macs = 20 + int(contacts * 1.3)
        conn.executemany(
            "INSERT INTO whatsmeow_app_state_mutation_macs (jid, name, version, index_mac, value_mac)"
            " VALUES (?,?,?,?,?)",
            [(jid, rng.choice(collections), rng.randint(1, 50 + contacts), rb(32), rb(32))
             for _ in range(n_macs)],
        )

        identities, sessions, contact_rows, lids, tokens, settings = [], [], [], [], [], []
        for i, ndev in enumerate(peer_devices):
            pn = "49" + _digits(rng, 10)
            their_lid = _digits(rng, 15)
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            contact_rows.append((jid, f"{pn}@s.whatsapp.net", first, f"{first} {last}",
                                 rng.choice([first, f"{first[0]}{last.lower()}", f"{first} ✨"]), None, None))
            lids.append((f"{their_lid}@lid", f"{pn}@s.whatsapp.net"))
            if rng.random() < 0.7:
                tokens.append((jid, f"{their_lid}@lid", rb(rng.randint(20, 28)),
                               paired_at + rng.randint(0, 10**6), None))
            if rng.random() < 0.1:
                settings.append((jid, f"{pn}@s.whatsapp.net", rng.choice([0, -1]), rng.random() < 0.2,
                                 rng.random() < 0.3))
            for d in range(ndev):
                addr = f"{their_lid}_1.{0 if d == 0 else rng.randint(1, 60)}"
                identities.append((jid, addr, rb(32)))
                # A libsignal session record: current state plus archived previous states and
                # skipped message keys; mostly key material, hence random.
                sessions.append((jid, addr, rb(int(rng.lognormvariate(6.3, 0.5)))))
        conn.executemany("INSERT OR IGNORE INTO whatsmeow_identity_keys VALUES (?,?,?)", identities)
        conn.executemany("INSERT OR IGNORE INTO whatsmeow_sessions VALUES (?,?,?)", sessions)
        conn.executemany("INSERT INTO whatsmeow_contacts VALUES (?,?,?,?,?,?,?)", contact_rows)
        conn.executemany("INSERT OR IGNORE INTO whatsmeow_lid_map VALUES (?,?)", lids)
        conn.executemany("INSERT INTO whatsmeow_privacy_tokens VALUES (?,?,?,?,?)", tokens)
        conn.executemany("INSERT INTO whatsmeow_chat_settings VALUES (?,?,?,?,?)", settings)

        # Groups: our own sender key per group plus the keys of members who have written there.
        sender_keys = []
        for _ in range(contacts // 40):
            chat = f"120363{_digits(rng, 12)}@g.us"
            sender_keys.append((jid, chat, f"{lid_user}_1.{dev}", rb(rng.randint(150, 400))))
            for _ in range(rng.randint(3, 25)):
                sender_keys.append((jid, chat, f"{_digits(rng, 15)}_1.0", rb(rng.randint(150, 400))))
        conn.executemany("INSERT OR IGNORE INTO whatsmeow_sender_keys VALUES (?,?,?,?)", sender_keys)

        # Message secrets (polls, edits, reactions) and the last sent messages kept for retries.
        secrets = [(jid, f"{_digits(rng, 12)}@s.whatsapp.net", f"{_digits(rng, 12)}@s.whatsapp.net",
                    "3EB0" + rb(8).hex().upper(), rb(32)) for _ in range(contacts // 2)]
        conn.executemany("INSERT OR IGNORE INTO whatsmeow_message_secrets VALUES (?,?,?,?,?)", secrets)
        retries = [(jid, f"{_digits(rng, 12)}@s.whatsapp.net", "3EB0" + rb(8).hex().upper(), "e2e",
                    rb(rng.randint(40, 400)), paired_at + i) for i in range(min(contacts, 30))]
        conn.executemany("INSERT INTO whatsmeow_retry_buffer VALUES (?,?,?,?,?,?)", retries)
    conn.close()
    return Session(
        session_dir=os.path.dirname(db_path), db_path=db_path, jid=jid, lid=lid, keys=keys,
        prekey_ids=uploaded, contacts=contacts,
    )


def make_session(session_dir: str, profile: str = "fresh", seed: int = 1) -> Session:
    """A session directory holding a neonize database filled for `profile` (see PROFILES)."""
    os.makedirs(session_dir, exist_ok=True)
    db_path = os.path.join(session_dir, DB_NAME)
    shutil.copyfile(template_db(), db_path)
    return fill(db_path, PROFILES[profile], seed=seed)


def device_keys(db_path: str) -> dict:
    """The device row's key columns as stored (for comparing before and after a round trip)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT jid, noise_key, identity_key, signed_pre_key, signed_pre_key_sig, adv_key,"
            " adv_details, adv_account_sig, adv_account_sig_key, adv_device_sig, registration_id"
            " FROM whatsmeow_device"
        ).fetchone()
        names = ["jid", "noise_key", "identity_key", "signed_pre_key", "signed_pre_key_sig", "adv_key",
                 "adv_details", "adv_account_sig", "adv_account_sig_key", "adv_device_sig",
                 "registration_id"]
        return dict(zip(names, row))
    finally:
        conn.close()


_READ_DEVICES = """
import json, sys
from neonize.client import ClientFactory
out = []
for d in ClientFactory.get_all_devices_from_db(sys.argv[1]):
    out.append({"user": d.JID.User, "server": d.JID.Server, "device": d.JID.Device,
                "push_name": d.PushName})
print("DEVICES=" + json.dumps(out))
"""


def neonize_devices(db_path: str, timeout: float = 60.0) -> list:
    """Devices as neonize's own reader (Go, whatsmeow's sqlstore) sees them, read in a subprocess."""
    import json

    env = dict(os.environ)
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    proc = subprocess.run([sys.executable, "-c", _READ_DEVICES, db_path], env=env,
                          capture_output=True, timeout=timeout)
    for line in proc.stdout.decode().splitlines():
        if line.startswith("DEVICES="):
            return json.loads(line[len("DEVICES="):])
    raise RuntimeError(f"neonize reader failed (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
