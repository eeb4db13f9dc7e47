"""SIGTERM while the bot shows a QR code, or is about to (real gunicorn, real neonize against the
loopback server).

neonize's connect() does not return on Stop() while whatsmeow's QR channel is open, and its Go call
runs on a non-daemon thread: the worker used to wait for it until gunicorn's graceful timeout killed
it (10 s, and a `still busy` warning). Now the worker leaves as soon as everything of ours is stopped.
"""

from __future__ import annotations

import time

from tests.support.simulator import sim_overrides

API_KEY = "shutdown-api-key-55e0a1"


def test_sigterm_while_a_qr_code_is_shown_ends_the_worker_itself(sim, start_bot):
    bot = start_bot(API_KEY=API_KEY, **sim_overrides(sim))
    bot.wait_state("waiting_for_qr", timeout=30)
    bot.terminate()
    assert bot.wait(timeout=30) == 0
    output = bot.output()
    assert "connection stopped" in output and "worker exits now" in output
    # The master did not have to kill the worker, and we did not wait for neonize's thread.
    assert "was sent SIGKILL" not in output and "still busy" not in output, output[-2000:]


def test_sigterm_before_the_first_qr_code_ends_the_worker_itself(sim, start_bot):
    """The moment before the QR: connected to WhatsApp to pair, no code yet. neonize's connect() already
    reads whatsmeow's QR channel there, so it does not return on Stop() either: the stop used to wait
    the whole 8 s of gunicorn.conf.py's CONNECTION_STOP and log `still busy`."""
    before = sim.pairing_waits
    sim.qr_gate.clear()  # the simulator holds the pair-device back: no QR code comes
    try:
        bot = start_bot(API_KEY=API_KEY, **sim_overrides(sim))
        sim.wait_until(lambda: sim.pairing_waits > before, 30, "the bot's connection to pair")
        assert bot.request("GET", "/api/health")[1]["state"] == "connecting"
        started = time.monotonic()
        bot.terminate()
        assert bot.wait(timeout=30) == 0
        took = time.monotonic() - started
    finally:
        sim.qr_gate.set()
    output = bot.output()
    assert "connection stopped" in output and "worker exits now" in output
    assert "WHATSAPP QR" not in output, "the stop came before any QR code"
    assert "still busy" not in output and "was sent SIGKILL" not in output, output[-2000:]
    # The old stop waited all of CONNECTION_STOP (8 s) for the thread; now only QR_STOP_WAIT (0.5 s).
    assert took < 8, (f"the worker took {took:.1f}s to leave", output[-3000:])
