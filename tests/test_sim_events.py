"""Issue 16 end to end: the real bot (Procfile's gunicorn, real neonize) against the WhatsApp simulator,
with a real webhook receiver that checks the signature of every event.

Events (qr, paired, connected, receipts, logged_out), sends the simulated phone decrypts (image, voice
note, location, reply), a webhook that is down and comes back, and one that hangs while the bot
reconnects.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from qrterminal import END_MARKER
from tests.support import mediafiles
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import running_receiver, sim_overrides
from tests.wasim.phone import QRPayload

SIM_PHONE = "14155550123"
CONTACT = "4915112345678"
API_KEY = "simevents-api-key-6a0e2b9d41"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRET = "simevents-webhook-secret-77f1"
WAIT = 30.0


SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


@pytest.fixture
def receiver():  # before start_bot in a test's arguments (tests/support/simulator.py says why)
    with running_receiver(SECRET) as hook:
        yield hook
    assert not hook.bad_signatures, "every event carries a valid signature"


def paired_bot(sim, start_bot, tmp_path, receiver, **extra):
    """A fresh bot whose QR the simulated phone scans; returns (bot, jid, the printed QR text)."""
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(tmp_path / "session"),
                    SESSION_SAVE_DELAY="0.3", WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, **extra)
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    bot.wait_for_line(END_MARKER, timeout=WAIT)
    printed = printed_qr_texts(bot.output())[0]
    jid = sim.scan_qr(printed)
    sim.wait_logged_in(jid, timeout=WAIT)
    bot.wait_state("connected", timeout=WAIT)
    return bot, jid, printed


def status(bot) -> dict:
    code, body = bot.request("GET", "/api/session-status", headers=AUTH)
    assert code == 200, body
    return body


def test_events_from_the_first_qr_to_the_logout_with_receipts_in_between(sim, receiver, start_bot, tmp_path):
    refs_before = len(sim.qr_refs)
    bot, jid, printed = paired_bot(sim, start_bot, tmp_path, receiver)
    qr = receiver.wait_for_event("qr", timeout=WAIT)[0]["data"]
    assert qr["code"] == printed and QRPayload.parse(qr["code"]).ref == sim.qr_refs[refs_before][0]
    assert qr["index"] == 1 and qr["expiresAt"]
    assert receiver.wait_for_event("paired", timeout=WAIT)[0]["data"] == {"jid": jid}
    connected = receiver.wait_for_event("connected", timeout=WAIT)[0]["data"]
    assert connected["jid"] == jid

    code, sent = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": "did it arrive?"}, headers=AUTH,
                             timeout=WAIT)
    assert code == 200 and sent["id"] and sent["timestamp"] > 0, sent
    sim.wait_until(lambda: any(m.id == sent["id"] for m in sim.sent_messages), WAIT, "the message at the simulator")
    sim.send_receipt(jid, sent["id"], "delivered")
    sim.send_receipt(jid, sent["id"], "read")

    def receipts():
        return [e["data"]["status"] for e in receiver.events("receipt") if e["data"]["id"] == sent["id"]]

    wait_for(lambda: receipts() == ["sent", "delivered", "read"], WAIT, f"three receipts (got {receipts()})")
    sim.wait_until(lambda: len(sim.receipts_acked) >= 2, WAIT, "the client's acks of the receipts")

    sim.logout(jid)
    logged_out = receiver.wait_for_event("logged_out", timeout=WAIT)[0]
    assert "logged out by WhatsApp" in logged_out["data"]["reason"]
    receiver.wait_for_event("qr", timeout=WAIT, count=2)  # the new QR after the wipe
    names = [e["event"] for e in receiver.events()]
    assert names.index("qr") < names.index("paired") < names.index("connected") < names.index("logged_out")
    for event in receiver.events():
        assert set(event) >= {"event", "timestamp", "data"} and API_KEY not in str(event)
    # The bot counts a delivery once the receiver's answer is back: a moment after the receiver has it.
    wait_for(lambda: status(bot)["webhook"]["delivered"] == len(receiver.posts), WAIT,
             "the bot's count of deliveries to reach what the receiver got")
    webhook = status(bot)["webhook"]
    assert webhook["dropped"] == 0 and webhook["failed"] == 0 and webhook["delivered"] == len(receiver.posts)


def test_image_voice_note_location_and_reply_reach_the_phone_as_sent(sim, receiver, start_bot, tmp_path):
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver)

    def sent_at_sim(answer):
        return sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                              f"message {answer['id']} at the simulator")

    image = mediafiles.image("JPEG", (120, 80))
    answer = requests.post(f"{bot.url}/api/send-image", headers=AUTH, timeout=WAIT,
                           data={"to": f"+{CONTACT}", "caption": "the plan"},
                           files={"file": ("plan.jpg", image, "application/octet-stream")}).json()
    assert answer["sent"] is True and answer["mimetype"] == "image/jpeg" and answer["timestamp"] > 0, answer
    at_phone = sent_at_sim(answer)
    assert at_phone.message.imageMessage.caption == "the plan"
    assert at_phone.message.imageMessage.mimetype == "image/jpeg"
    assert at_phone.media_bytes() == image, "the phone decrypts exactly the image that was sent"

    voice = mediafiles.ogg_opus(2.5)
    answer = requests.post(f"{bot.url}/api/send-audio", headers=AUTH, timeout=WAIT, data={"to": f"+{CONTACT}"},
                           files={"file": ("note.ogg", voice, "audio/ogg")}).json()
    assert answer["sent"] is True and answer["seconds"] == 3, answer
    at_phone = sent_at_sim(answer)
    audio = at_phone.message.audioMessage
    assert audio.PTT is True and audio.seconds == 3 and audio.mimetype == "audio/ogg; codecs=opus"
    assert at_phone.media_bytes() == voice
    assert [u.mms_type for u in sim.media.uploads][-2:] == ["image", "audio"]

    code, answer = bot.request("POST", "/api/send-location", {
        "to": f"+{CONTACT}", "latitude": 52.5163, "longitude": 13.3777, "name": "Brandenburger Tor"},
        headers=AUTH, timeout=WAIT)
    assert code == 200, answer
    location = sent_at_sim(answer).message.locationMessage
    assert (location.degreesLatitude, location.degreesLongitude, location.name) == (52.5163, 13.3777,
                                                                                    "Brandenburger Tor")

    question = sim.deliver_text(jid, CONTACT, "which day?", push_name="Ada")
    receiver.wait_for_event("message", timeout=WAIT, where=lambda d: d["id"] == question)
    code, answer = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": "Tuesday", "replyTo": question},
                               headers=AUTH, timeout=WAIT)
    assert code == 200 and answer["quoted"] is True, answer
    reply = sent_at_sim(answer).message.extendedTextMessage
    assert reply.text == "Tuesday" and reply.contextInfo.stanzaID == question
    assert reply.contextInfo.participant == f"{CONTACT}@s.whatsapp.net"
    assert reply.contextInfo.quotedMessage.conversation == "which day?"


def test_a_webhook_that_is_down_for_a_while_gets_every_event_in_order(sim, receiver, start_bot, tmp_path):
    receiver.down_with = 503
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver, WEBHOOK_RETRY_DELAY="0.2",
                             WEBHOOK_ATTEMPTS="1000")
    ids = []
    for n in range(3):
        code, answer = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": f"n{n}"}, headers=AUTH,
                                   timeout=WAIT)
        assert code == 200, answer
        ids.append(answer["id"])
    wait_for(lambda: receiver.refused >= 3, WAIT, "refused attempts while the webhook is down")
    pending = status(bot)["webhook"]
    assert pending["pending"] >= 6 and pending["lastError"].endswith("HTTP 503") and pending["delivered"] == 0
    receiver.down_with = None
    receiver.wait_for_event("receipt", timeout=WAIT, count=3)
    names = [e["event"] for e in receiver.events()]
    assert names == ["qr", "paired", "connected", "receipt", "receipt", "receipt"], names
    assert [e["data"]["id"] for e in receiver.events("receipt")] == ids
    wait_for(lambda: status(bot)["webhook"]["pending"] == 0, WAIT, "an empty queue")
    assert status(bot)["webhook"]["dropped"] == 0


def test_a_hanging_webhook_never_delays_a_reconnect(sim, receiver, start_bot, tmp_path):
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver)
    receiver.wait_for_event("connected", timeout=WAIT)
    receiver.hang.set()
    code, answer = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": "x"}, headers=AUTH, timeout=WAIT)
    assert code == 200, answer
    wait_for(lambda: receiver.hanging, WAIT, "the bot's POST to hang")

    logins = sim.login_count(jid)
    sim.drop(jid)
    wait_for(lambda: sim.login_count(jid) == logins + 1, WAIT, "whatsmeow's reconnect while the webhook hangs")
    sim.wait_logged_in(jid, timeout=WAIT)
    bot.wait_for_line(f"connected as {jid}", timeout=WAIT, occurrences=2)
    bot.wait_state("connected", timeout=WAIT)
    marker = f"after-{uuid.uuid4().hex[:6]}"
    code, answer = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": marker}, headers=AUTH,
                               timeout=WAIT)
    assert code == 200, answer  # the bot works while its webhook hangs
    assert status(bot)["webhook"]["pending"] >= 3

    receiver.hang.clear()
    receiver.wait_for_event("receipt", timeout=WAIT, where=lambda d: d["id"] == answer["id"])
    names = [e["event"] for e in receiver.events()]
    assert names[names.index("disconnected"):] == ["disconnected", "connected", "receipt"], names


def test_a_push_name_that_is_not_utf8_reaches_the_webhook_with_replacement_characters(sim, receiver, start_bot,
                                                                                      tmp_path):
    """A contact's client may send any bytes as its push name (the `notify` attribute); whatsmeow keeps
    them in a Go string, neonize's proto2 event carries them as they are, and protobuf's upb runtime
    hands them to Python as bytes (issue 21, section 4). The event must still go out."""
    bot, jid, _ = paired_bot(sim, start_bot, tmp_path, receiver)
    message_id = sim.deliver_text(jid, CONTACT, "hello", push_name=b"Ad\xff\xfea \xc3(")
    got = receiver.wait_for_event("message", timeout=WAIT, where=lambda d: d["id"] == message_id)[0]["data"]
    assert got["pushName"] == "Ad\ufffd\ufffda \ufffd(" and got["text"] == "hello"
    webhook = status(bot)["webhook"]
    assert webhook["failed"] == 0 and webhook["lastError"] is None
