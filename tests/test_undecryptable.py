"""A message the bot could not decrypt is never silent (whatsapp/retry.py): an `undecryptable` event and
a counter in the status, from neonize's own UndecryptableMessageEv proto (the end-to-end case, a peer
whose client never answers the retry receipt, is in tests/test_continuity.py)."""

from __future__ import annotations

import pytest

from tests.support.botkit import Bot
from tests.test_events import Recorder


@pytest.fixture
def recorded(tmp_path):
    bot = Bot(tmp_path)
    recorder = Recorder()
    bot.connection._webhook = recorder
    bot.start()
    yield bot, recorder
    bot.stop()


def undecryptable(hidden: bool, unavailable: bool, lid: bool):
    from neonize.proto.Neonize_pb2 import UndecryptableMessage

    ev = UndecryptableMessage()
    source = ev.Info.MessageSource
    if lid:
        source.Chat.User, source.Chat.Server = "123456789012345", "lid"
        source.Sender.User, source.Sender.Server = "123456789012345", "lid"
        source.SenderAlt.User, source.SenderAlt.Server = "4915112345678", "s.whatsapp.net"
    else:
        source.Chat.User, source.Chat.Server = "120363000000000001", "g.us"
        source.Sender.User, source.Sender.Server = "4915112345678", "s.whatsapp.net"
        source.IsGroup = True
    ev.Info.ID = "3EB0C0FFEE\nforged log line"
    ev.Info.Timestamp = 1_764_112_744_000  # milliseconds, as neonize gives a message's time
    ev.IsUnavailable = unavailable
    ev.DecryptFailMode = UndecryptableMessage.DECRYPT_FAIL_HIDE if hidden else UndecryptableMessage.DECRYPT_FAIL_SHOW
    return ev


def test_each_undecryptable_message_is_an_event_and_counted(recorded, caplog):
    bot, recorder = recorded
    assert bot.connection.status()["undecryptable"] == 0
    bot.connection._on_undecryptable(None, undecryptable(hidden=False, unavailable=False, lid=True))
    bot.connection._on_undecryptable(None, undecryptable(hidden=True, unavailable=True, lid=False))
    one, two = recorder.of("undecryptable")
    assert one == {"id": "3EB0C0FFEE\nforged log line", "from": "4915112345678@s.whatsapp.net",
                   "chat": "123456789012345@lid", "isGroup": False, "time": "2025-11-25T23:19:04Z",
                   "unavailable": False, "decryptFailMode": "show"}
    assert two["isGroup"] and two["unavailable"] and two["decryptFailMode"] == "hide"
    assert two["chat"] == "120363000000000001@g.us"
    status = bot.connection.status()
    assert status["undecryptable"] == 2 and status["lastUndecryptable"]
    assert not any("forged log line" in r.getMessage().splitlines()[0] and "\n" in r.getMessage()
                   for r in caplog.records), "text from outside is escaped in the log"
