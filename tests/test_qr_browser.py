"""GET /qr the way an owner uses it: a real headless Chromium at a phone's width, logged in with the
key, against the real bot (Procfile's gunicorn, real neonize) and the loopback WhatsApp server.

The QR code is read back from a screenshot (zxing-cpp), the simulated phone scans what was read, and
the page then says "Connected" by itself: no reload (a marker set in the page survives).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import zxingcpp
from PIL import Image

from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
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


# --------------------------------------------------------------------------- the owner's page, once paired
DESKTOP = {"width": 1280, "height": 800}
#: Set to a path to refresh the README's screenshot (docs/owner-page.png) from this test's desktop run.
SCREENSHOT_TO = os.environ.get("OWNER_PAGE_SCREENSHOT")
CONTACT = "4915112345678"


def field(page, name: str) -> str:
    """The text next to a label of the page's "This bot" list."""
    return page.locator(f"dt:text-is('{name}') + dd").inner_text()


def small_png(png: bytes) -> bytes:
    """A screenshot with a 64-colour palette: the page is flat colours and text, so it stays sharp."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64).save(out, format="PNG", optimize=True)
    return out.getvalue()


def test_owner_page_once_paired_on_a_phone_and_a_desktop(browser, sim, receiver, start_bot, tmp_path):
    qr_before = len(sim.qr_refs)
    bot = start_bot(**sim_overrides(sim), API_KEY=API_KEY, SESSION_SAVE_DELAY="0.3",
                    SESSION_DIR=str(tmp_path / "session"), WEBHOOK_URL=receiver.url)
    sim.wait_for_qr(timeout=WAIT, after=qr_before)
    wait_for(lambda: printed_qr_texts(bot.output()), WAIT, "a printed QR")
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    bot.wait_state("connected", timeout=WAIT)
    keyed = {"Authorization": f"Bearer {API_KEY}"}
    wait_for(lambda: bot.request("GET", "/api/session-status", headers=keyed)[1].get("lastSave"), WAIT,
             "the one save after the pairing")
    secret_text = "my pin is 4711"
    sim.deliver_text(jid, CONTACT, secret_text, push_name="Ada")
    receiver.wait_for_event("message", timeout=WAIT)

    for name, viewport, extra in (("phone", PHONE, {"is_mobile": True, "has_touch": True}),
                                  ("desktop", DESKTOP, {})):
        context = browser.new_context(viewport=viewport, http_credentials={"username": "owner",
                                                                           "password": API_KEY}, **extra)
        try:
            page = context.new_page()
            assert page.goto(bot.url + "/qr").status == 200
            page.get_by_text("Connected: this bot is paired").wait_for(timeout=WAIT * 1000)
            assert page.locator("svg").count() == 0, "no code to scan once paired"
            assert field(page, "State") == "connected to WhatsApp"
            assert field(page, "Device") == jid
            size = field(page, "Session size")  # "5,912 bytes of ..." or "15.9 KB of ..." (qrpage._bytes)
            assert ("bytes" in size or " KB" in size) and "available" in size
            assert field(page, "Last save").endswith("(new pairing)")
            assert "waiting in memory" in field(page, "Webhook queue")
            events_text = page.locator("#events").inner_text()
            for words in ("QR code 1 shown", f"a phone linked this bot as {jid}",
                          "logged in to WhatsApp", f"text message from {CONTACT}@s.whatsapp.net"):
                assert words in events_text, f"{words!r} in the events list"
            html_text = page.content()
            for secret in (secret_text, API_KEY, printed_qr_texts(bot.output())[0]):
                assert secret not in html_text, f"{secret!r} is not on the page"
            # Everything fits the width: nothing to scroll sideways.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            cards = [page.locator("section").nth(i).bounding_box() for i in range(2)]
            if name == "desktop":
                assert cards[1]["x"] > cards[0]["x"] + cards[0]["width"] - 1, "side by side on a desktop"
            else:
                assert cards[1]["y"] >= cards[0]["y"] + cards[0]["height"] - 1, "one above the other on a phone"

            # It refreshes itself: a send's receipt shows up without a reload.
            page.evaluate("window.notReloaded = true")
            code, sent = bot.request("POST", "/api/send", {"to": f"+{CONTACT}", "text": name},
                                     headers={"Authorization": f"Bearer {API_KEY}"}, timeout=WAIT)
            assert code == 200, sent
            page.locator("#events li").first.get_by_text(f"message {sent['id']} sent").wait_for(
                timeout=WAIT * 1000)
            assert page.evaluate("window.notReloaded === true")
            png = page.screenshot()
            (tmp_path / f"owner-page-{name}.png").write_bytes(png)
            if name == "desktop" and SCREENSHOT_TO:
                Path(SCREENSHOT_TO).write_bytes(small_png(page.locator("main").screenshot()))
        finally:
            context.close()
