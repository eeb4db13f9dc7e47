"""The QR code in the logs scans: printed text → image → QR reader → the payload WhatsApp sent."""

from qrterminal import qr_block, qr_lines, qr_svg
from tests.support.qrdecode import decode_qr_lines, printed_qr_blocks
from tests.support.scripted_client import Control

# The shape of a real whatsmeow QR payload: ref, noise public key, identity public key, ADV secret.
PAYLOAD = ("2@Bx9Qm7cXnE1b0lVQyq5mH3k7fD0aZcS5pR2wYtU8iJ4oLnM6vG==,"
           "aGVsbG8td29ybGQtbm9pc2Uta2V5LTMyLWJ5dGVzISE=,"
           "aWRlbnRpdHkta2V5LW9mLXRoaXMtZGV2aWNlLTMyYnk=,"
           "YWR2LXNlY3JldC1rZXktb2YtdGhpcy1kZXZpY2UtMzI=")


def test_printed_lines_decode_back_to_the_payload():
    assert decode_qr_lines(qr_lines(PAYLOAD)) == [PAYLOAD]


def test_lines_are_short_and_framed():
    block = qr_block(PAYLOAD)
    assert "WHATSAPP QR" in block[0] and "END WHATSAPP QR" in block[-1]
    assert max(len(line.encode()) for line in block) < 10_000  # Heroku splits longer lines
    assert max(len(line) for line in block[1:-1]) <= 100  # fits a terminal


def test_a_corrupted_print_does_not_decode():
    lines = qr_lines(PAYLOAD)
    # Blank out the middle third: the reader must fail, proving the decode above is real.
    middle = len(lines) // 3
    damaged = [(" " * len(line) if middle <= i < 2 * middle else line) for i, line in enumerate(lines)]
    assert decode_qr_lines(damaged) != [PAYLOAD]


def test_svg_for_the_qr_page():
    svg = qr_svg(PAYLOAD)
    assert svg.startswith("<?xml") and "<svg" in svg and "<path" in svg


def test_the_qr_the_real_bot_prints_scans(start_bot, tmp_path):
    control = Control(tmp_path / "control")
    bot = start_bot(WHATSAPP_CLIENT_FACTORY="tests.support.scripted_client:factory", SCRIPTED_WA_DIR=str(control.dir))
    bot.wait_for_line("END WHATSAPP QR")
    sent = control.events("qr")[0]["code"]
    blocks = printed_qr_blocks(bot.output())
    assert blocks and decode_qr_lines(blocks[0]) == [sent]
