"""SIGTERM while the bot shows a QR code (real gunicorn, real neonize against the loopback server).

neonize's connect() does not return on Stop() while whatsmeow's QR channel is open, and its Go call
runs on a non-daemon thread: the worker used to wait for it until gunicorn's graceful timeout killed
it (10 s, and a `still busy` warning). Now the worker leaves as soon as everything of ours is stopped.
"""

from __future__ import annotations

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
