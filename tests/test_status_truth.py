"""Issue 24 section 3: `/api/session-status` and the webhook events tell the same story.

One walk with the real bot (the Procfile's gunicorn, real neonize), the WhatsApp simulator, the fake
Heroku Platform API and a real webhook receiver: pairing, a save that fails, a restart that restores the
session while WhatsApp is out of reach (the `unreachable` event, then `connected` ending the outage), a
connection drop, a logout by WhatsApp, a new pairing and a temporary ban. After each event the status
is read and its counterpart field compared with what the event said.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.fake_heroku import FakeHeroku
from tests.support.gate import Gate
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import running_receiver, sim_overrides

SIM_PHONE = "14155550125"
API_KEY = "status-truth-api-key-0b7e44"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
APP, TOKEN = "truth-bot", "truth-heroku-token-93ac1f"
WAIT = 30.0
SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


@pytest.fixture
def world():
    heroku = FakeHeroku(app_name=APP, token=TOKEN).start()
    try:
        with running_receiver() as receiver:  # `world` comes before start_bot (running_receiver says why)
            yield heroku, receiver
    finally:
        heroku.stop()


def status(bot) -> dict:
    code, body = bot.request("GET", "/api/session-status", headers=AUTH, timeout=10)
    assert code == 200, body
    return body


def seconds_apart(a: str, b: str) -> float:
    def parse(text):
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")

    return abs((parse(a) - parse(b)).total_seconds())


def last(receiver, name: str, count: int = 1) -> dict:
    """The newest `name` event once `count` of them came."""
    return receiver.wait_for_event(name, timeout=WAIT, count=count)[-1]


def agrees_on_time(body: dict, event: dict) -> None:
    assert body["lastEvents"][event["event"]] == event["timestamp"], (
        f"lastEvents says the last {event['event']} came at {body['lastEvents'].get(event['event'])}")


def start(start_bot, sim, tmp_path, receiver, heroku, name: str, **env):
    env = {**sim_overrides(sim), "API_KEY": API_KEY, "SESSION_DIR": str(tmp_path / name / "session"),
           "SESSION_SAVE_DELAY": "0.3", "WEBHOOK_URL": receiver.url, "HEROKU_API_KEY": TOKEN,
           "HEROKU_APP_NAME": APP, "HEROKU_API_URL": heroku.url, "UNREACHABLE_GRACE": "1",
           "RECONNECT_DELAY_MIN": "0.2", "RECONNECT_DELAY_MAX": "0.5", **env}
    return start_bot(**env)


def scan(sim, bot) -> str:
    """The phone scans the newest code the bot printed."""
    wait_for(lambda: printed_qr_texts(bot.output()), WAIT, "a printed QR code")
    return sim.scan_qr(printed_qr_texts(bot.output())[-1])


def test_the_status_and_the_events_agree_from_pairing_to_a_ban(sim, world, start_bot, tmp_path):
    heroku, receiver = world
    # -- pairing: qr, paired, connected ------------------------------------------------------------
    bot = start(start_bot, sim, tmp_path, receiver, heroku, "first")
    qr = last(receiver, "qr")
    body = status(bot)
    assert body["state"] == "waiting_for_qr" and body["qrAvailable"] is True
    assert body["qr"] == {"index": qr["data"]["index"], "expiresAt": qr["data"]["expiresAt"]}
    assert body["unreachable"] is None, "a QR code means WhatsApp answers"
    agrees_on_time(body, qr)

    jid = scan(sim, bot)
    paired, connected = last(receiver, "paired"), last(receiver, "connected")
    bot.wait_state("connected", timeout=WAIT)
    body = status(bot)
    assert paired["data"]["jid"] == connected["data"]["jid"] == body["connectedAs"] == jid
    # The session reads the device from its database after each login: it catches up at once.
    wait_for(lambda: status(bot)["deviceJid"] == jid, WAIT, "the session's deviceJid")
    assert body["state"] == "connected" and body["qr"] is None
    assert seconds_apart(body["connectedSince"], connected["timestamp"]) <= 1
    agrees_on_time(body, paired)
    agrees_on_time(body, connected)
    wait_for(lambda: status(bot)["lastSave"], WAIT, "the one save after the pairing")

    # -- a save that fails: save_failed ----------------------------------------------------------------
    heroku.fail_next(401, count=10)
    code, answer = bot.request("POST", "/api/save-session?force=true", headers=AUTH, timeout=WAIT)
    assert code == 502, answer
    failed = last(receiver, "save_failed")
    heroku.clear_faults()
    error = status(bot)["lastSaveError"]
    assert (error["during"], error["type"], error["status"]) == (
        failed["data"]["during"], failed["data"]["error"], failed["data"]["status"]) == (
        failed["data"]["during"], "AuthenticationFailed", 401)
    agrees_on_time(status(bot), failed)
    assert bot.stop() == 0

    # -- a restart that restores while WhatsApp is out of reach: unreachable, then connected -----------
    stored = heroku.vars_of()["WHATSAPP_SESSION"]
    gate = Gate(sim.proxy.port)
    try:
        bot = start(start_bot, sim, tmp_path, receiver, heroku, "second", WHATSAPP_SESSION=stored,
                    HTTPS_PROXY=gate.url, https_proxy=gate.url)
        unreachable = last(receiver, "unreachable")
        body = status(bot)
        outage = body["unreachable"]
        assert outage["reported"] is True and body["state"] != "connected"
        assert (outage["cause"], outage["since"]) == (unreachable["data"]["cause"], unreachable["data"]["since"])
        # The probe's failure, or (a restore slower than the grace) no connect attempt yet.
        assert unreachable["data"]["cause"].startswith(("WhatsApp does not answer", "not connected"))
        assert outage["seconds"] >= unreachable["data"]["seconds"] >= 1
        wait_for(lambda: status(bot)["restoredFrom"], WAIT, "the restore from WHATSAPP_SESSION")
        assert status(bot)["hasLocalSession"] is True
        agrees_on_time(body, unreachable)
        gate.open()
        back = last(receiver, "connected", count=2)
        bot.wait_state("connected", timeout=WAIT)
        body = status(bot)
        assert back["data"]["jid"] == body["connectedAs"] == jid
        assert back["data"]["outageSeconds"] >= 1 and body["unreachable"] is None
        assert len(printed_qr_texts(bot.output())) == 0, "restored: no QR"
        assert len(receiver.events("unreachable")) == 1

        # -- a dropped connection: disconnected ------------------------------------------------------
        sim.drop(jid)
        gone = last(receiver, "disconnected")
        body = status(bot)
        assert body["lastDisconnect"]["reason"] == gone["data"]["reason"]
        assert body["lastDisconnect"]["retryInSeconds"] == gone["data"]["retryInSeconds"]
        agrees_on_time(body, gone)
        last(receiver, "connected", count=3)

        # -- a logout by WhatsApp: logged_out, then a QR code ----------------------------------------
        sim.logout(jid)
        out = last(receiver, "logged_out")
        qr = last(receiver, "qr", count=2)
        body = status(bot)
        assert body["lastLogout"]["reason"] == out["data"]["reason"] and "logged out by WhatsApp" in out["data"]["reason"]
        assert body["lastWipe"] and body["state"] == "waiting_for_qr" and body["connectedAs"] is None
        wait_for(lambda: status(bot)["deviceJid"] is None, WAIT, "the session's deviceJid after the wipe")
        assert body["qr"]["index"] == qr["data"]["index"]
        agrees_on_time(body, out)

        # -- a new pairing, then a temporary ban at the next login: temporarily_banned --------------
        jid2 = scan(sim, bot)
        last(receiver, "connected", count=4)
        bot.wait_state("connected", timeout=WAIT)
        sim.temp_ban(600)
        sim.drop(jid2)
        banned = last(receiver, "temporarily_banned")
        bot.wait_state("temporarily_banned", timeout=WAIT)
        body = status(bot)
        assert body["bannedUntil"] == banned["data"]["until"] and banned["data"]["seconds"] == 600
        assert body["unreachable"] is None, "a ban is told as a ban, not as an outage"
        agrees_on_time(body, banned)
    finally:
        gate.close()

    # Every event the receiver got has its time in lastEvents (the newest of each name).
    body = status(bot)
    newest = {}
    for event in receiver.events():
        newest[event["event"]] = event["timestamp"]
    second_bot_names = {"unreachable", "connected", "disconnected", "logged_out", "qr", "paired",
                        "temporarily_banned"}
    for name in second_bot_names:
        assert body["lastEvents"][name] == newest[name], name
