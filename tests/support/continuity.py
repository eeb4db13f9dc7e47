"""Conversations across restarts (issue 20), shared by tests/test_continuity.py and bench/bench_continuity.py.

The real bot (Procfile's gunicorn, real neonize) against the WhatsApp simulator, with peers that keep
Signal sessions and answer retry receipts as whatsmeow does (tests/wasim/retry.py), on one of two
stores: the config var (fake Platform API + fake dyno manager: every boot on an empty disk restores what
WHATSAPP_SESSION then holds) or PostgreSQL (DATABASE_URL: the session lives in the database). Each
message's retry rounds are the retry receipts the simulator got for it; its delay is the time from the
peer's send to the webhook POST.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import snapshot
from qrterminal import END_MARKER
from tests.support.dyno import DynoManager
from tests.support.fake_heroku import FakeHeroku
from tests.support.harness import VENV_BIN, BotProcess, base_env, wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import WebhookReceiver, sim_overrides

SIM_PHONE = "14155550123"  # a number phonenumbers accepts
API_KEY = "continuity-api-key-2f8d61c0b4"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HEROKU_TOKEN = "hrku-continuity-token-93ce07a1d5"
APP = "bot-continuity"
WAIT = 45.0  # a message that needs retries, on two loaded cores

CASES = ("established", "bot_first", "new_within", "new_beyond", "old_client", "group")


@dataclass
class Delivery:
    case: str
    restore: int  # 0: before any restart
    message_id: str
    peer: str
    arrived: bool
    rounds: int  # retry receipts the simulator got for it
    delay: float | None  # seconds from the peer's send to the webhook POST
    key_id: int | None = None  # new peers: the one-time key the server handed out for the bot
    key_kept: bool | None = None  # ...and whether the restored session held its private half


@dataclass
class BotSend:
    restore: int
    to: str
    read: bool  # the peer (every member device, for a group) decrypted it
    answer: tuple = ()  # the bot's HTTP status and body when it refused or failed the send
    dropped: dict = field(default_factory=dict)  # devices that would drop it as a duplicate (old counter)


@dataclass
class Run:
    store: str
    deliveries: list[Delivery] = field(default_factory=list)
    sends: list[BotSend] = field(default_factory=list)
    undecryptable_events: list[dict] = field(default_factory=list)
    prekey_conflicts: list[int] = field(default_factory=list)
    # One-time keys of the established peers the bot's sends used up after restarts (issue 20's fourth
    # row: a bot without the session fetches a bundle, spending one of the peer's keys).
    peer_keys_spent_after_restarts: int = 0
    # `message` webhook events without text for a group message: the part of a member's first group
    # message that carries only its sender key distribution message (whatsmeow dispatches it too).
    empty_group_events: int = 0
    # Per restart: how many of the server's unused one-time keys the restored session holds the private
    # half of (with the lowest-first order, that many new peers get through without a retry).
    kept_unused_keys: list[int] = field(default_factory=list)

    def of(self, case: str, after_restart: bool = True) -> list[Delivery]:
        return [d for d in self.deliveries if d.case == case and (d.restore > 0 or not after_restart)]

    def table(self) -> str:
        """Every delivery, one line each, for an assertion's message and the test's output."""
        return (f"peer keys spent after restarts: {self.peer_keys_spent_after_restarts}, empty group message"
                f" events: {self.empty_group_events}, unused keys each restore held: {self.kept_unused_keys}\n"
                + "\n".join(f"{d.restore} {d.case:12} rounds={d.rounds} arrived={d.arrived} key={d.key_id}"
                            f" kept={d.key_kept} delay={d.delay}" for d in self.deliveries))


def command_of(checkout: Path) -> list[str]:
    """The web: command of another checkout's Procfile, with this venv's gunicorn."""
    for line in (checkout / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            words = shlex.split(line[4:].strip())
            return [str(VENV_BIN / words[0]), *words[1:]]
    raise ValueError(f"{checkout}/Procfile has no web: line")


def kept_prekey_ids(text: str) -> set[int]:
    """The one-time pre-key ids a snapshot holds (the private halves a restore gets back)."""
    with tempfile.TemporaryDirectory(prefix="continuity-kept-") as scratch:
        session_dir = os.path.join(scratch, "session")
        snapshot.unpack(text, session_dir)
        db = sqlite3.connect(os.path.join(session_dir, snapshot.DB_NAME))
        try:
            return {row[0] for row in db.execute("SELECT key_id FROM whatsmeow_pre_keys")}
        finally:
            db.close()


# ---------------------------------------------------------------- the two stores


class ConfigVarStore:
    """First deploy on the fake Platform API: QR, save, release; restarts restore from the var."""

    name = "config-var"

    def __init__(self, sim, root: Path, receiver: WebhookReceiver, extra: dict | None = None,
                 checkout: Path | None = None):
        self.sim = sim
        self.heroku = FakeHeroku(app_name=APP, token=HEROKU_TOKEN).start()
        self.heroku.preset({"HEROKU_API_KEY": HEROKU_TOKEN, "HEROKU_APP_NAME": APP, "API_KEY": API_KEY,
                            "SESSION_SAVE_DELAY": "0.3", "WEBHOOK_URL": receiver.url, **(extra or {})})
        self.dynos = DynoManager(self.heroku, root, sim_overrides(sim), cwd=checkout,
                                 command=command_of(checkout) if checkout else None)

    @property
    def bot(self) -> BotProcess:
        return self.dynos.current

    def pair(self) -> str:
        qr_before = len(self.sim.qr_refs)
        first = self.dynos.boot()
        self.sim.wait_for_qr(timeout=WAIT, after=qr_before)
        first.wait_for_line(END_MARKER, timeout=WAIT)
        jid = self.sim.scan_qr(printed_qr_texts(first.output())[0])
        self.sim.wait_logged_in(jid, timeout=WAIT)
        wait_for(lambda: self.heroku.release_count >= 1, WAIT, "the release of the first save")
        wait_for(lambda: len(self.dynos.dynos) >= 2 and self.dynos.current is not first and self.dynos.current,
                 WAIT, "the restart on release")
        self.bot.wait_state("connected", timeout=WAIT)
        self.sim.wait_logged_in(jid, timeout=WAIT)
        return jid

    def stored(self) -> str | None:
        return self.heroku.vars.get("WHATSAPP_SESSION")

    def restart(self, jid: str) -> None:
        logins = self.sim.login_count(jid)
        dynos, releases = len(self.dynos.dynos), self.heroku.release_count
        self.dynos.restart()
        self._settle(dynos + 1, releases)
        self.sim.wait_until(lambda: self.sim.login_count(jid) > logins, WAIT, "the new dyno's login")
        self.sim.wait_logged_in(jid, timeout=WAIT)

    def _settle(self, dynos: int, releases: int) -> None:
        """Waits for the dyno that is current once every release has been rolled out: a save at the
        old dyno's stop (or of a new pre-key batch) is a release, and each release boots one more dyno.
        The fake Platform API records a release before it answers the PATCH, so it is counted here."""

        def settled():
            if len(self.dynos.dynos) < dynos + (self.heroku.release_count - releases):
                return None
            dyno = self.dynos.current
            try:
                _, body = dyno.request("GET", "/api/health", timeout=1)
            except (OSError, ValueError):
                return None
            return dyno if body and body.get("state") == "connected" else None

        wait_for(settled, 2 * WAIT, "the current dyno, once every release is rolled out, to connect")

    def close(self) -> str:
        self.dynos.stop_all()
        self.heroku.stop()
        return self.dynos.all_output()


class PostgresStore:
    """DATABASE_URL: the session lives in PostgreSQL; every boot on an empty SESSION_DIR."""

    name = "postgres"

    def __init__(self, sim, root: Path, receiver: WebhookReceiver, database_url: str,
                 checkout: Path | None = None):
        self.sim = sim
        self.root = root
        self.checkout = checkout
        self.env = {**sim_overrides(sim), "API_KEY": API_KEY, "SESSION_SAVE_DELAY": "0.3",
                    "WEBHOOK_URL": receiver.url, "DATABASE_URL": database_url}
        self.bots: list[BotProcess] = []

    @property
    def bot(self) -> BotProcess:
        return self.bots[-1]

    def _boot(self) -> BotProcess:
        env = base_env(**self.env, SESSION_DIR=str(self.root / f"boot-{len(self.bots) + 1}" / "session"))
        if self.checkout:
            self.bots.append(BotProcess(env, cwd=self.checkout, command=command_of(self.checkout)).start())
        else:
            self.bots.append(BotProcess(env).start())
        return self.bot

    def pair(self) -> str:
        qr_before = len(self.sim.qr_refs)
        bot = self._boot()
        self.sim.wait_for_qr(timeout=WAIT, after=qr_before)
        bot.wait_for_line(END_MARKER, timeout=WAIT)
        jid = self.sim.scan_qr(printed_qr_texts(bot.output())[0])
        self.sim.wait_logged_in(jid, timeout=WAIT)
        bot.wait_state("connected", timeout=WAIT)
        return jid

    def stored(self) -> str | None:
        return None  # nothing is cut down: the database is the session

    def restart(self, jid: str) -> None:
        logins = self.sim.login_count(jid)
        self.bot.stop()
        self._boot().wait_state("connected", timeout=WAIT)
        self.sim.wait_until(lambda: self.sim.login_count(jid) > logins, WAIT, "the new boot's login")
        self.sim.wait_logged_in(jid, timeout=WAIT)

    def close(self) -> str:
        for bot in self.bots:
            bot.stop()
        return "\n".join(b.output() for b in self.bots)


# ---------------------------------------------------------------- the conversation


class Conversation:
    """Peers of every case of issue 20's table talking with the bot across restarts."""

    def __init__(self, sim, store, receiver: WebhookReceiver, tag: str, restarts: int = 3):
        self.sim, self.store, self.receiver = sim, store, receiver
        self.restarts = restarts
        self.run = Run(store.name)
        # German mobile numbers the bot's phone-number check accepts; distinct per run, as the
        # simulator keeps its contacts (and their sessions) for the whole module.
        base = f"491511{tag}"
        self.established = [f"{base}000001", f"{base}000002"]
        self.old_client = f"{base}000003"
        self.member = f"{base}000004"
        self.bot_first = f"{base}000005"  # after a restart the bot writes first, then the peer answers
        self._new = iter(f"{base}{n:06d}" for n in range(100, 100000))
        self.jid = ""
        self.group = ""

    def play(self) -> Run:
        self.jid = self.store.pair()
        self.group = self.sim.create_group("Continuity", [self.member, self.established[0]],
                                           devices={self.member: [1]})
        self.sim.set_peer(self.old_client, answers_retries=False)
        for peer in self.established + [self.old_client, self.bot_first]:
            self._peer_says(peer, "established", 0, "hello")
            self._bot_sends(0, peer)
        self._member_says(0)
        self._bot_sends(0, self.group)
        keys_before = self._peer_keys_left()
        for restore in range(1, self.restarts + 1):
            stored = self.store.stored()
            kept = kept_prekey_ids(stored) if stored else None
            if kept is not None:
                self.run.kept_unused_keys.append(len(kept & set(self.sim.devices[self.jid].pool.keys)))
            self.store.restart(self.jid)
            self._round(restore, kept)
        self.run.peer_keys_spent_after_restarts = keys_before - self._peer_keys_left()
        group_ids = {d.message_id for d in self.run.deliveries if d.case == "group"}
        self.run.empty_group_events = sum(1 for e in self.receiver.events("message")
                                          if e["data"]["id"] in group_ids and not e["data"]["text"])
        self.run.undecryptable_events = self.receiver.events("undecryptable")
        self.run.prekey_conflicts = list(self.sim.devices[self.jid].pool.conflicts)
        return self.run

    def _round(self, restore: int, kept: set[int] | None) -> None:
        for peer in self.established:
            self._peer_says(peer, "established", restore, f"again after restart {restore}")
            self._bot_sends(restore, peer)
        self._bot_sends(restore, self.bot_first)
        self._peer_says(self.bot_first, "bot_first", restore, f"answer after restart {restore}")
        self._new_peer("new_within", restore, kept)
        self._new_peer("new_beyond", restore, kept, beyond=True)
        self._peer_says(self.old_client, "old_client", restore, f"lost after restart {restore}")
        self._member_says(restore)
        self._bot_sends(restore, self.group)

    # -------------------------------------------------------- peers

    def _peer_keys_left(self) -> int:
        peers = self.established + [self.old_client, self.member, self.bot_first]
        return sum(len(self.sim.peer(p).prekeys) for p in peers)

    def _peer_says(self, peer: str, case: str, restore: int, text: str, **extra) -> Delivery:
        message_id = self.sim.deliver_text(self.jid, peer, f"{text} ({peer})", session="keep")
        return self._await(case, restore, peer, message_id, f"{text} ({peer})", **extra)

    def _new_peer(self, case: str, restore: int, kept: set[int] | None, beyond: bool = False) -> None:
        """A peer's first message; its case is what the key the server handed out turned out to be:
        "new_within" when the restored session held its private half, "new_beyond" otherwise.
        beyond=True, with the lowest-first order: the server hands this peer the lowest key the restore
        did NOT keep (as it would once the kept ones are used up), leaving the kept ones for later."""
        peer = next(self._new)
        pool = self.sim.devices[self.jid].pool
        if beyond and kept is not None and pool.order == "lowest":
            lacking = [k for k in sorted(pool.keys) if k not in kept]
            if lacking:
                self.sim.peers.next_key[self.sim.peer(peer).jid] = lacking[0]
        handed = len(pool.handed_out)
        delivery = self._peer_says(peer, case, restore, "first words")
        first_key = pool.handed_out[handed].key_id if len(pool.handed_out) > handed else None
        delivery.key_id = first_key
        delivery.key_kept = True if kept is None else first_key in kept
        delivery.case = "new_within" if delivery.key_kept else "new_beyond"

    def _member_says(self, restore: int) -> None:
        text = f"group words {restore} ({self.member})"
        message_id = self.sim.deliver_group_text(self.jid, self.group, self.member, text)
        self._await("group", restore, self.member, message_id, text)

    def _await(self, case: str, restore: int, peer: str, message_id: str, text: str) -> Delivery:
        sent_at = self.sim.peers.recent[message_id].sent_at
        arrived, delay = True, None

        def webhook_got_it() -> bool:
            return any(d["id"] == message_id and d["text"] == text for d in self.receiver.events("message"))

        timeout = WAIT
        if not self.sim.peer(peer).answers_retries:
            # An old client never answers a retry: once its receipt came (and was ignored), only a
            # short while more for a webhook that would prove the message got through anyway.
            try:
                self.sim.wait_until(lambda: webhook_got_it() or self.sim.retries.for_message(message_id),
                                    WAIT, "the message or its retry receipt")
            except TimeoutError:
                pass
            timeout = 0.1 if webhook_got_it() else 3.0
        try:
            self.receiver.wait_for_event("message", timeout=timeout,
                                         where=lambda d: d["id"] == message_id and d["text"] == text)
            delay = time.monotonic() - sent_at
        except AssertionError:
            arrived = False
        delivery = Delivery(case, restore, message_id, peer, arrived,
                            len(self.sim.retries.for_message(message_id)), delay)
        self.run.deliveries.append(delivery)
        return delivery

    # -------------------------------------------------------- the bot

    def _bot_sends(self, restore: int, to: str) -> None:
        text = f"bot to {to} after restart {restore}"
        target = to if "@" in to else f"+{to}"
        code, body = self.store.bot.request("POST", "/api/send", {"to": target, "text": text}, headers=AUTH,
                                            timeout=WAIT)
        read = False
        if code == 200:
            sent = self.sim.wait_until(lambda: next((m for m in self.sim.sent_messages if m.id == body["id"]), None),
                                       WAIT, "the bot's message at the simulator")
            if "@g.us" in to:
                read = bool(sent.group_reads) and all(t == text for t in sent.group_reads.values())
            else:
                read = sent.text == text
            dropped = dict(sent.dropped)
        else:
            dropped = {}
        self.run.sends.append(BotSend(restore, to, read, () if code == 200 else (code, body), dropped))
