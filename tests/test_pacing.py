"""The send rate limit (pacing.py) on its own: the count, the moving window, Retry-After, off at 0."""

from __future__ import annotations

import time

import pytest

from pacing import SendPacer, TooFast


class Clock:
    """time.time for the limits library's moving window, moved by hand (its entries carry time.time())."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


def test_the_limit_refuses_past_n_per_minute_with_the_seconds_until_one_more_fits(clock):
    pacer = SendPacer(3)
    for _ in range(3):
        pacer.take("a text")
        clock.now += 10
    with pytest.raises(TooFast) as refused:
        pacer.take("a text")
    # The first send was 30 s ago: one more fits 30 s from now.
    assert refused.value.retry_after == 30
    assert "SEND_RATE_LIMIT" in str(refused.value) and "bans" in str(refused.value)
    assert pacer.status() == {"perMinute": 3, "refused": 1}


def test_the_window_moves_so_a_loop_gets_no_double_burst_at_a_minute_boundary(clock):
    pacer = SendPacer(3)
    clock.now += 59
    for _ in range(3):
        pacer.take("a text")  # three at the end of one clock minute
    clock.now += 2  # the next clock minute: a fixed window would allow three more at once
    with pytest.raises(TooFast) as refused:
        pacer.take("a text")
    assert refused.value.retry_after == 58
    clock.now += 58.001
    pacer.take("a text")  # the oldest left the last 60 s


def test_refused_sends_do_not_extend_the_wait(clock):
    pacer = SendPacer(2)
    pacer.take("x")
    pacer.take("x")
    for _ in range(50):  # the loop goes on hammering
        with pytest.raises(TooFast):
            pacer.take("x")
    clock.now += 60.001  # 60 s after the first send, whatever came in between
    pacer.take("x")
    assert pacer.refused == 50


def test_zero_turns_pacing_off():
    pacer = SendPacer(0)
    for _ in range(1000):
        pacer.take("x")
    assert pacer.status() == {"perMinute": 0, "refused": 0}
