"""GET /qr the way an owner uses it: a real headless Chromium at a phone's width, logged in with the
key, against the real bot (Procfile's gunicorn, real neonize) and the loopback WhatsApp server.

The QR code is read back from a screenshot (zxing-cpp), the simulated phone scans what was read, and
the page then says "Connected" by itself: no reload (a marker set in the page survives).
"""

from __future__ import annotations

import io

import zxingcpp
from PIL import Image

from tests.support.simulator import sim_overrides
from tests.wasim.phone import QRPayload

SIM_PHONE = "14155550123"
API_KEY = "browser-api-key-6c1f2e9a40"
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15's CSS viewport
WAIT = 30.0


SIM_OPTIONS = {"phone_number": SIM_PHONE}  # for conftest's `sim`


def qr_texts_in(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


def test_qr_page_on_a_phone_shows_the_servers_code_and_then_connected_by_itself(
    browser, sim, start_bot, tmp_path
):
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), API_KEY=API_KEY, SESSION_SAVE_DELAY="0.3",
                    SESSION_DIR=str(tmp_path / "session"))
    refs = sim.wait_for_qr(timeout=WAIT, after=qr_before)
    bot.wait_state("waiting_for_qr", timeout=WAIT)

    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                  http_credentials={"username": "owner", "password": API_KEY})
    try:
        page = context.new_page()
        response = page.goto(bot.url + "/qr")
        assert response.status == 200, "the key as Basic password lets the browser in"
        svg = page.locator(".qr svg")
        svg.wait_for(state="visible", timeout=WAIT * 1000)

        # The whole code is on screen at a phone's width, nothing to scroll sideways.
        box = svg.bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"] and box["y"] + box["height"] <= PHONE["height"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        png = page.screenshot()  # the viewport only: what the owner sees
        (tmp_path / "qr-page.png").write_bytes(png)
        assert Image.open(io.BytesIO(png)).size == (PHONE["width"], PHONE["height"])
        texts = qr_texts_in(png)
        assert len(texts) == 1, f"one QR code in the screenshot, zxing found {len(texts)}"
        assert QRPayload.parse(texts[0]).ref in refs, "the code carries a ref the WhatsApp server handed out"

        page.evaluate("window.notReloaded = true")
        jid = sim.scan_qr(texts[0])  # the phone scans what the browser showed; keys checked by the server
        page.get_by_text("Connected: this bot is paired").wait_for(timeout=WAIT * 1000)
        assert page.evaluate("window.notReloaded === true"), "the page updated without a reload"
        assert page.locator("svg").count() == 0
        sim.wait_logged_in(jid, timeout=WAIT)
    finally:
        context.close()
