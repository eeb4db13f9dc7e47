"""The real bot (Procfile's gunicorn, real neonize) against the WhatsApp simulator (issue 9).

Nothing is scripted on the client side: the bot's own neonize (a copy whose library trusts the
simulator's Noise root, see tests/wasim/README.md) dials WhatsApp through the simulator's proxy.
One simulator serves the whole module, because it keeps the linked devices in memory: a bot
restarted from a snapshot must find its device still linked there.

The first deploy runs once per module on the fake Heroku Platform API with the fake dyno manager
(a release restarts the app with an empty disk); its snapshot then seeds the local-store tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import snapshot
from qrterminal import BEGIN_MARKER, END_MARKER
from tests.support.dyno import DynoManager
from tests.support.fake_heroku import FakeHeroku
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_blocks, printed_qr_texts
from tests.support.simulator import running_receiver, sim_overrides
from tests.wasim.phone import QRPayload

# A number phonenumbers accepts (the simulator's default 1555… is not), so /api/pair takes it.
SIM_PHONE = "14155550123"
CONTACT = "4915112345678"
API_KEY = "simbot-api-key-3d9f0c1a7e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HEROKU_TOKEN = "hrku-simbot-token-8b2e41d07c"
APP = "bot-simbot"
WEBHOOK_SECRET = "simbot-webhook-secret-51c7"
WAIT = 30.0  # generous: two cores, other work beside us

SAVED = "session saved ("
SAVE_SCHEDULED = "new pairing: saving the session"  # logged before any save attempt
NOTHING_TO_SAVE = "is the stored one: nothing to save"


SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


@dataclass
class FirstDeploy:
    """What the fake Heroku cycle of a first deploy produced (all dynos already stopped)."""

    jid: str
    refs: list[str]
    printed_qr: str
    first_output: str
    second_output: str
    patches: list  # fake_heroku.RecordedRequest
    release_count: int
    stored: str  # WHATSAPP_SESSION at the end
    logins: int  # logins of the device the simulator saw
    second_health: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def first_deploy(sim, tmp_path_factory) -> FirstDeploy:
    """Fresh app: QR in stdout -> the phone scans it -> one save (a release) -> the dyno manager
    restarts the app on an empty disk -> the new dyno logs in from the config var."""
    root = tmp_path_factory.mktemp("deploy")
    heroku = FakeHeroku(app_name=APP, token=HEROKU_TOKEN).start()
    heroku.preset({"HEROKU_API_KEY": HEROKU_TOKEN, "HEROKU_APP_NAME": APP, "API_KEY": API_KEY,
                   "SESSION_SAVE_DELAY": "0.3"})
    dynos = DynoManager(heroku, root, sim_overrides(sim))
    try:
        qr_before = len(sim.qr_refs)
        first = dynos.boot()
        refs = sim.wait_for_qr(timeout=WAIT, after=qr_before)
        first.wait_for_line(END_MARKER, timeout=WAIT)
        printed = printed_qr_texts(first.output())[0]
        jid = sim.scan_qr(printed)  # checks the QR's noise and identity keys against the connection
        sim.wait_logged_in(jid, timeout=WAIT)
        wait_for(lambda: heroku.release_count >= 1, WAIT, "the release of the first save")
        second = wait_for(lambda: len(dynos.dynos) == 2 and dynos.current, WAIT, "the restart on release")
        health = second.wait_state("connected", timeout=WAIT)
        # The restarted dyno's save decision, whichever it is (test 2 checks which).
        wait_for(lambda: second.count(NOTHING_TO_SAVE) or second.count(SAVE_SCHEDULED), WAIT,
                 "the restarted dyno's save decision")
        sim.wait_logged_in(jid, timeout=WAIT)
    finally:
        dynos.stop_all()
        heroku.stop()
    # Read after every dyno stopped, so a late save would be counted too.
    return FirstDeploy(
        jid=jid, refs=refs, printed_qr=printed, first_output=first.output(),
        second_output=second.output(), patches=heroku.requests_with("PATCH"),
        release_count=heroku.release_count, stored=heroku.vars.get("WHATSAPP_SESSION"),
        logins=sim.login_count(jid), second_health=health,
    )


def local_env(sim, **extra: str) -> dict[str, str]:
    return {**sim_overrides(sim), "SESSION_SAVE_DELAY": "0.3", "API_KEY": API_KEY, **extra}


def restored_bot(sim, start_bot, tmp_path: Path, snapshot_text: str, **extra: str):
    """A bot on an empty SESSION_DIR whose local store holds `snapshot_text`; connected."""
    session_dir = tmp_path / "session"
    Path(f"{session_dir}.snapshot").write_text(snapshot_text)
    bot = start_bot(**local_env(sim, SESSION_DIR=str(session_dir), **extra))
    bot.wait_state("connected", timeout=WAIT)
    return bot, session_dir


def key_status(bot) -> dict:
    status, body = bot.request("GET", "/api/session-status", headers=AUTH)
    assert status == 200, body
    return body


# ------------------------------------------------------------------ 1. fresh start

def test_fresh_start_prints_the_simulators_qr_pairs_and_saves_exactly_once(first_deploy):
    d = first_deploy
    qr = QRPayload.parse(d.printed_qr)
    assert qr.ref == d.refs[0], "the printed QR carries the first ref the simulator sent"
    assert d.first_output.count(BEGIN_MARKER) == 1
    assert f"paired as {d.jid}" in d.first_output and f"connected as {d.jid}" in d.first_output
    assert d.jid.startswith(SIM_PHONE + ":")
    # Exactly one write of the session, and it holds the device that was just paired.
    assert d.first_output.count(SAVED) == 1 and d.second_output.count(SAVED) == 0
    assert len(d.patches) == 1 and d.release_count == 1
    assert set(d.patches[0].body) == {"WHATSAPP_SESSION"}
    assert d.patches[0].body["WHATSAPP_SESSION"] == d.stored
    assert snapshot.inspect(d.stored).device_jid == d.jid


# ------------------------------------------------------------------ 2. restart from the snapshot

def test_restart_on_an_empty_disk_logs_in_from_the_config_var_without_qr_or_save(first_deploy):
    d = first_deploy
    assert d.second_health["state"] == "connected"
    assert BEGIN_MARKER not in d.second_output
    assert f"restored session for {d.jid}" in d.second_output
    assert f"device {d.jid} {NOTHING_TO_SAVE}" in d.second_output
    assert SAVE_SCHEDULED not in d.second_output, "not even an attempt (the store would dedupe it)"
    assert d.logins == 2, "one login per dyno, as the paired device"


def test_every_log_line_says_where_it_comes_from(first_deploy):
    """neonize's Go side prints 'Press Ctrl+C to exit' and 'Login event: ...' straight to stdout, and its
    Python side the login status as a bare number: none of them may stand in the log as they are."""
    d = first_deploy
    for output in (d.first_output, d.second_output):
        lines = output.splitlines()
        assert not [line for line in lines if "Press Ctrl+C" in line or line.startswith("Login event")]
        assert not [line for line in lines if re.fullmatch(r"\s*-?\d+\s*", line)]
        assert "will fail" not in output  # neonize's ffmpeg warning; ours says what it affects
    assert "whatsmeow login event: success" in d.first_output + d.second_output


def test_restart_from_the_local_store_logs_in_without_qr_and_leaves_the_snapshot(
    sim, first_deploy, start_bot, tmp_path
):
    logins = sim.login_count(first_deploy.jid)
    bot, session_dir = restored_bot(sim, start_bot, tmp_path, first_deploy.stored)
    sim.wait_logged_in(first_deploy.jid, timeout=WAIT)
    bot.wait_for_line(NOTHING_TO_SAVE, timeout=WAIT)
    status = key_status(bot)
    assert status["restoredFrom"] == "store" and status["deviceJid"] == first_deploy.jid
    assert status["lastSave"] is None
    assert sim.login_count(first_deploy.jid) == logins + 1
    assert BEGIN_MARKER not in bot.output() and SAVE_SCHEDULED not in bot.output()
    assert Path(f"{session_dir}.snapshot").read_text() == first_deploy.stored


# ------------------------------------------------------------------ 3. logout from the phone

def test_logout_from_the_phone_wipes_session_and_snapshot_then_shows_a_new_qr(sim, start_bot, tmp_path):
    session_dir = tmp_path / "session"
    stored = Path(f"{session_dir}.snapshot")
    qr_before = len(sim.qr_refs)
    bot = start_bot(**local_env(sim, SESSION_DIR=str(session_dir)))
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    bot.wait_for_line(END_MARKER, timeout=WAIT)
    first_qr = printed_qr_texts(bot.output())[0]
    jid = sim.scan_qr(first_qr)
    bot.wait_for_line(SAVED, timeout=WAIT)
    assert snapshot.inspect(stored.read_text()).device_jid == jid

    qr_before = len(sim.qr_refs)
    sim.logout(jid)  # "linked device removed" on the phone
    bot.wait_for_line("wiping the session", timeout=WAIT)
    wait_for(lambda: not stored.exists(), WAIT, "the stored snapshot to be removed")
    new_refs = sim.wait_for_qr(timeout=WAIT, after=qr_before)
    bot.wait_for_line(END_MARKER, timeout=WAIT, occurrences=2)
    bot.wait_state("waiting_for_qr", timeout=WAIT)
    assert snapshot.device_jid(session_dir) is None, "no device left in the local session"
    assert "stored snapshot removed" in bot.output()
    second_qr = printed_qr_texts(bot.output())[1]
    assert QRPayload.parse(second_qr).ref == new_refs[0]
    assert QRPayload.parse(second_qr).identity_pub != QRPayload.parse(first_qr).identity_pub, \
        "a new device identity, not the logged-out one"

    # The new QR works: the owner links again and the new device is saved once more.
    new_jid = sim.scan_qr(second_qr)
    bot.wait_for_line(SAVED, timeout=WAIT, occurrences=2)
    assert new_jid != jid
    assert snapshot.inspect(stored.read_text()).device_jid == new_jid
    assert bot.output().count(SAVED) == 2
    # whatsmeow deleted the logged-out device itself before the bot wiped the files (no race), and
    # nothing went wrong in the database afterwards.
    assert "Failed to delete store" not in bot.output()
    assert "disk I/O error" not in bot.output()


# ------------------------------------------------------------------ 4. stream replaced, dropped connection

def test_dropped_connection_and_replaced_stream_keep_the_session(sim, first_deploy, start_bot, tmp_path):
    jid = first_deploy.jid
    bot, session_dir = restored_bot(sim, start_bot, tmp_path, first_deploy.stored)
    sim.wait_logged_in(jid, timeout=WAIT)
    stored = Path(f"{session_dir}.snapshot")

    # A dropped TCP connection: whatsmeow reconnects by itself, the bot only watches.
    logins = sim.login_count(jid)
    sim.drop(jid)
    wait_for(lambda: sim.login_count(jid) == logins + 1, WAIT, "whatsmeow's own reconnect")
    bot.wait_for_line("disconnected; whatsmeow reconnects by itself", timeout=WAIT)
    bot.wait_for_line(f"connected as {jid}", timeout=WAIT, occurrences=2)
    bot.wait_state("connected", timeout=WAIT)

    # Another client took the stream: back off (60 s), never fight, never wipe.
    logins = sim.login_count(jid)
    sim.replace_stream(jid)
    bot.wait_state("reconnecting", timeout=WAIT)
    bot.wait_for_line("stream replaced by another client", timeout=WAIT)
    status = key_status(bot)
    assert "stream replaced" in status["lastError"]
    assert status["lastWipe"] is None and status["hasLocalSession"] is True
    assert re.search(r"stream replaced by another client.*retrying in 60\.0s", bot.output())

    output = bot.output()
    assert "wiping" not in output and "logged out" not in output and BEGIN_MARKER not in output
    assert SAVE_SCHEDULED not in output
    assert snapshot.device_jid(session_dir) == jid
    assert stored.read_text() == first_deploy.stored
    assert sim.login_count(jid) == logins, "no new login while the other client holds the stream"


# ------------------------------------------------------------------ 5. messages both ways

@pytest.fixture
def webhook_receiver():  # before start_bot in a test's arguments (running_receiver says why)
    with running_receiver() as receiver:
        yield receiver


def test_incoming_message_reaches_the_webhook_and_api_send_reaches_whatsapp(
    sim, first_deploy, webhook_receiver, start_bot, tmp_path
):
    jid = first_deploy.jid
    bot, _ = restored_bot(sim, start_bot, tmp_path, first_deploy.stored,
                          WEBHOOK_URL=webhook_receiver.url, WEBHOOK_SECRET=WEBHOOK_SECRET)
    sim.wait_logged_in(jid, timeout=WAIT)

    message_id = sim.deliver_text(jid, CONTACT, "hello bot", push_name="Ada")
    webhook_receiver.wait_for_event("message", timeout=WAIT)
    post = next(p for p in webhook_receiver.posts if json.loads(p.body)["event"] == "message")
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers.get("X-Signature-256", ""), expected)
    payload = json.loads(post.body)
    for fields in (payload["data"], payload):  # the top level keeps the fields for older receivers
        assert fields["id"] == message_id and fields["text"] == "hello bot"
        assert fields["from"] == f"{CONTACT}@s.whatsapp.net" and fields["chat"] == f"{CONTACT}@s.whatsapp.net"
        assert fields["pushName"] == "Ada" and fields["isGroup"] is False

    before = len(sim.sent_messages)
    status, body = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": "reply from the bot"},
                               headers=AUTH, timeout=WAIT)
    assert status == 200 and body["sent"] is True, body
    sent = sim.wait_for_sent(timeout=WAIT, after=before)
    assert sent.id == body["id"] and sent.text == "reply from the bot"
    assert sent.recipient_pn == f"{CONTACT}@s.whatsapp.net"
    webhook_receiver.wait_for_event("receipt", timeout=WAIT, where=lambda d: d["id"] == body["id"])
    assert len(webhook_receiver.events("message")) == 1, "our own message is not forwarded to the webhook"


# ------------------------------------------------------------------ pairing by phone code

def test_pairing_by_phone_code_through_the_api(sim, start_bot, tmp_path):
    session_dir = tmp_path / "session"
    bot = start_bot(**local_env(sim, SESSION_DIR=str(session_dir)))
    bot.wait_state("waiting_for_qr", timeout=WAIT)
    before = len(sim.pair_code_requests)
    status, body = bot.request("POST", "/api/pair", {"phone": "+1 415 555 0123"}, headers=AUTH, timeout=WAIT)
    assert status == 200, body
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", body["code"]), body
    request = sim.pair_code_requests[before]
    assert request["phone"] == SIM_PHONE and request["show_push_notification"] is True

    sim.enter_pair_code(body["code"])  # the owner types the code on the phone
    bot.wait_for_line(SAVED, timeout=WAIT)
    jid = key_status(bot)["deviceJid"]
    assert jid and jid.startswith(SIM_PHONE + ":")
    sim.wait_logged_in(jid, timeout=WAIT)
    assert snapshot.inspect(Path(f"{session_dir}.snapshot").read_text()).device_jid == jid
    assert len(printed_qr_blocks(bot.output())) >= 1 and bot.output().count(SAVED) == 1
