"""Issue 23 items 2 and 4 end to end: the real bot (Procfile's gunicorn, real neonize) against the WhatsApp
simulator. Read marks, typing, reactions, edits, deletes and number checks reach WhatsApp as whatsmeow
sends them (the simulator decodes each, and decrypts reactions, edits and revokes as the peer's phone
would apply them); groups; the send rate limit's 429.
"""

from __future__ import annotations

import sqlite3

import requests

from qrterminal import END_MARKER
from tests.support import mediafiles
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import sim_overrides

SIM_PHONE = "14155550177"
CONTACT = "4915112345678"
STRANGER = "4915187654321"  # a valid number with no WhatsApp account
API_KEY = "simactions-api-key-3c81d0a7f2"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAIT = 30.0

SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


def paired_bot(sim, start_bot, tmp_path, receiver, **extra):
    """A fresh bot whose QR the simulated phone scans; returns (bot, device jid)."""
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(tmp_path / "session"),
                    SESSION_SAVE_DELAY="0.3", WEBHOOK_URL=receiver.url, **extra)
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    bot.wait_for_line(END_MARKER, timeout=WAIT)
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    sim.wait_logged_in(jid, timeout=WAIT)
    bot.wait_state("connected", timeout=WAIT)
    return bot, jid


def post(bot, path, body, expect=200):
    code, answer = bot.request("POST", path, body, headers=AUTH, timeout=WAIT)
    assert code == expect, (path, code, answer)
    return answer


def incoming(sim, jid, receiver, text):
    """A text from CONTACT that the bot has received (its webhook event is out)."""
    message_id = sim.deliver_text(jid, CONTACT, text, push_name="Ada")
    receiver.wait_for_event("message", timeout=WAIT, where=lambda d: d["id"] == message_id)
    return message_id


def at_phone(sim, answer):
    """What the contact's phone makes of the message the bot sent for this answer."""
    sent = sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                          f"message {answer['id']} at the simulator")
    return sent.peer_view()


def test_read_marks_typing_and_number_checks_reach_whatsapp_as_whatsmeow_sends_them(sim, receiver, start_bot,
                                                                                      tmp_path):
    bot, jid = paired_bot(sim, start_bot, tmp_path, receiver)
    presences = len(sim.actions.presences)
    first, second = incoming(sim, jid, receiver, "hello?"), incoming(sim, jid, receiver, "anyone there?")

    answer = post(bot, "/api/read", {"chat": f"+{CONTACT}", "messageIds": [first, second, first]})
    assert answer["read"] is True and answer["messageIds"] == [first, second], answer
    mark = sim.wait_until(lambda: sim.actions.read_receipts, WAIT, "the read receipt")[-1]
    assert (mark.to, mark.ids, mark.type, mark.participant) == (f"{CONTACT}@s.whatsapp.net", [first, second],
                                                                "read", None)

    states = []
    for state, wire in (("typing", ("composing", None)), ("recording", ("composing", "audio")),
                        ("paused", ("paused", None))):
        answer = post(bot, "/api/presence", {"to": f"+{CONTACT}", "state": state})
        states.append(wire)
        sim.wait_until(lambda: len(sim.actions.chat_states) >= len(states), WAIT, f"chat state {state}")
        latest = sim.actions.chat_states[-1]
        assert (latest.to, latest.state, latest.media) == (f"{CONTACT}@s.whatsapp.net", *wire)
    # whatsmeow sends no presence before WhatsApp told it the account's name (presence.go SendPresence:
    # ErrNoPushName); the simulator syncs no app state, so the bot says it could not go "available".
    assert answer["available"] is False and len(sim.actions.presences) == presences, answer

    sim.not_on_whatsapp.add(STRANGER)
    answer = post(bot, "/api/check-numbers", {"numbers": [f"+{CONTACT}", f"+{STRANGER}", f"{CONTACT}"]})
    assert answer["numbers"] == [
        {"number": f"+{CONTACT}", "onWhatsApp": True, "jid": f"{CONTACT}@s.whatsapp.net",
         "lid": sim.contacts[CONTACT].lid},
        {"number": f"+{STRANGER}", "onWhatsApp": False, "jid": None, "lid": None},
    ], answer

    for path, body, words in [
        ("/api/presence", {"to": f"+{CONTACT}", "state": "dancing"}, "typing, recording, paused"),
        ("/api/read", {"chat": f"+{CONTACT}", "messageIds": []}, "messageIds"),
        ("/api/read", {"chat": f"+{CONTACT}", "messageIds": ["not an id!"]}, "messageIds"),
        ("/api/check-numbers", {"numbers": [f"+{CONTACT}"] * 51}, "1 to 50"),
        ("/api/check-numbers", {"numbers": ["+1 555 not a number"]}, "phone number"),
        ("/api/react", {"chat": f"+{CONTACT}", "messageId": first, "emoji": "\x00"}, "emoji"),
    ]:
        answer = post(bot, path, body, expect=400)
        assert set(answer) == {"error", "message"} and words in answer["message"], answer


def test_reactions_edits_and_deletes_reach_the_phone_as_whatsapp_applies_them(sim, receiver, start_bot, tmp_path):
    bot, jid = paired_bot(sim, start_bot, tmp_path, receiver)
    question = incoming(sim, jid, receiver, "is it 10 euros?")
    sent = post(bot, "/api/send", {"to": f"+{CONTACT}", "text": "it is 10 euros"})

    answer = post(bot, "/api/react", {"chat": f"+{CONTACT}", "messageId": question, "emoji": "👍"})
    assert answer["reacted"] is True and answer["messageId"] == question, answer
    view = at_phone(sim, answer)
    assert (view.kind, view.target, view.text, view.from_me) == ("reaction", question, "👍", False)
    removed = at_phone(sim, post(bot, "/api/react", {"chat": f"+{CONTACT}", "messageId": question, "emoji": ""}))
    assert (removed.kind, removed.target, removed.text) == ("reaction", question, "")
    own = at_phone(sim, post(bot, "/api/react", {"chat": f"+{CONTACT}", "messageId": sent["id"], "emoji": "🙏"}))
    assert (own.target, own.from_me) == (sent["id"], True)

    answer = post(bot, "/api/edit", {"chat": f"+{CONTACT}", "messageId": sent["id"], "text": "it is 12 euros"})
    assert answer["edited"] is True and answer["id"] != sent["id"], answer
    view = at_phone(sim, answer)
    assert (view.kind, view.target, view.text, view.from_me) == ("edit", sent["id"], "it is 12 euros", True)

    answer = post(bot, "/api/delete", {"chat": f"+{CONTACT}", "messageId": sent["id"]})
    view = at_phone(sim, answer)
    assert (view.kind, view.target, view.from_me) == ("revoke", sent["id"], True)

    # The contact's message is not the bot's to edit or delete: refused before anything is sent.
    before = len(sim.sent_messages)
    for path, body in (("/api/edit", {"chat": f"+{CONTACT}", "messageId": question, "text": "x"}),
                       ("/api/delete", {"chat": f"+{CONTACT}", "messageId": question})):
        answer = post(bot, path, body, expect=400)
        assert answer["error"] == "not_own_message" and question in answer["message"], answer
    assert len(sim.sent_messages) == before


def test_typing_marks_the_bot_available_first_once_whatsapp_gave_it_its_name(sim, receiver, start_bot, tmp_path):
    bot, jid = paired_bot(sim, start_bot, tmp_path, receiver)
    bot.stop()
    # WhatsApp sends the account's name in the app-state sync after pairing (whatsmeow appstate.go), which
    # the simulator does not do: it is put where whatsmeow keeps it, and the bot starts again from it.
    with sqlite3.connect(tmp_path / "session" / "neonize.db") as db:
        db.execute("UPDATE whatsmeow_device SET push_name = 'Front Desk'")
    logins = sim.login_count(jid)
    bot = start_bot(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(tmp_path / "session"),
                    WEBHOOK_URL=receiver.url)
    wait_for(lambda: sim.login_count(jid) > logins, WAIT, "the login from the stored session")
    bot.wait_state("connected", timeout=WAIT)

    states, presences, received = len(sim.actions.chat_states), len(sim.actions.presences), len(sim.received)
    for state in ("typing", "paused", "typing"):
        answer = post(bot, "/api/presence", {"to": f"+{CONTACT}", "state": state})
        assert answer["available"] is True, answer
    sim.wait_until(lambda: len(sim.actions.chat_states) >= states + 3, WAIT, "three chat states")
    # Once per connection, before the first chat state: WhatsApp shows typing from contacts who are online.
    assert sim.actions.presences[presences:] == [{"type": "available", "name": "Front Desk"}]
    kinds = [node.tag for _, node in sim.received[received:] if node.tag in ("presence", "chatstate")]
    assert kinds == ["presence", "chatstate", "chatstate", "chatstate"], kinds


def test_a_send_loop_gets_429_with_retry_after_once_the_rate_limit_is_spent(sim, receiver, start_bot, tmp_path):
    bot, jid = paired_bot(sim, start_bot, tmp_path, receiver, SEND_RATE_LIMIT="4")
    question = incoming(sim, jid, receiver, "hi")
    before = len(sim.sent_messages)
    one = post(bot, "/api/send", {"to": f"+{CONTACT}", "text": "one"})
    post(bot, "/api/react", {"chat": f"+{CONTACT}", "messageId": question, "emoji": "👍"})
    post(bot, "/api/presence", {"to": f"+{CONTACT}", "state": "typing"})
    post(bot, "/api/read", {"chat": f"+{CONTACT}", "messageIds": [question]})
    for path, body in (("/api/send", {"to": f"+{CONTACT}", "text": "loop"}),
                       ("/api/send-location", {"to": f"+{CONTACT}", "latitude": 1, "longitude": 2}),
                       ("/api/delete", {"chat": f"+{CONTACT}", "messageId": one["id"]})):
        response = requests.post(f"{bot.url}{path}", json=body, headers=AUTH, timeout=WAIT)
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert response.json()["error"] == "rate_limited" and "SEND_RATE_LIMIT" in response.json()["message"]
    assert len(sim.sent_messages) == before + 2  # the text and the reaction; nothing of the loop
    assert bot.count("send rate limit reached (4 per minute)") == 1  # one warning, not one per request
    status = bot.request("GET", "/api/session-status", headers=AUTH)[1]
    assert status["pacing"] == {"perMinute": 4, "refused": 3}


MEMBER = "4915100000001"


def test_a_group_gets_sends_read_marks_and_reactions_and_is_listed(sim, receiver, start_bot, tmp_path):
    bot, jid = paired_bot(sim, start_bot, tmp_path, receiver)
    group = sim.create_group("Front desk", [CONTACT, MEMBER])
    code, listed = bot.request("GET", "/api/groups", headers=AUTH, timeout=WAIT)
    assert code == 200 and listed == {"groups": [{"jid": group, "subject": "Front desk", "members": 3}]}, listed

    question = sim.deliver_group_text(jid, group, MEMBER, "who is open today?")
    event = receiver.wait_for_event("message", timeout=WAIT, where=lambda d: d["id"] == question)[0]["data"]
    assert event["chat"] == group and event["isGroup"] is True

    answer = post(bot, "/api/send", {"to": group, "text": "we are, until 6"})
    sent = sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                          "the group message at the simulator")
    assert sent.group_reads and set(sent.group_reads.values()) == {"we are, until 6"}, sent.group_reads
    answer = post(bot, "/api/send-location", {"to": group, "latitude": 52.52, "longitude": 13.40})
    located = sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                             "the group location")
    assert located.message.locationMessage.degreesLatitude == 52.52
    image = mediafiles.image("PNG", (64, 48))
    answer = requests.post(f"{bot.url}/api/send-image", headers=AUTH, timeout=WAIT, data={"to": group},
                           files={"file": ("menu.png", image, "image/png")}).json()
    pictured = sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                              "the group image")
    assert pictured.media_bytes() == image  # a member's phone downloads and decrypts it

    post(bot, "/api/read", {"chat": group, "messageIds": [question]})  # the bot knows who sent it
    mark = sim.wait_until(lambda: [r for r in sim.actions.read_receipts if r.ids == [question]], WAIT,
                          "the group read mark")[0]
    assert (mark.to, mark.participant) == (group, f"{MEMBER}@s.whatsapp.net")

    answer = post(bot, "/api/react", {"chat": group, "messageId": question, "emoji": "👍"})
    reaction = sim.wait_until(lambda: next((m for m in sim.sent_messages if m.id == answer["id"]), None), WAIT,
                              "the group reaction")
    view = reaction.peer_view()
    assert (view.kind, view.target, view.from_me) == ("reaction", question, False)
    # In a group the key names whose message it is (send.go BuildMessageKey: participant).
    assert reaction.message.reactionMessage.key.participant == f"{MEMBER}@s.whatsapp.net"

    answer = post(bot, "/api/react", {"chat": group, "messageId": "3EB0UNKNOWN0001", "emoji": "👍"}, expect=400)
    assert "sender" in answer["message"], answer

    # A group the number is not in: WhatsApp answers the metadata query 404, whatsmeow says so (group.go
    # ErrGroupNotFound); a 502 in its words, not a 500.
    answer = post(bot, "/api/send", {"to": "120363000000000001@g.us", "text": "hello?"}, expect=502)
    assert answer["error"] == "whatsapp_error" and "group does not exist" in answer["message"], answer
