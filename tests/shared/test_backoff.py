"""The retry policy: delays that double, with jitter, up to a cap; and one log line per outage."""

from __future__ import annotations

import logging
import random

import pytest

from shared.backoff import Backoff, Outage
from shared.clock import FakeClock
from shared.streams import SinkRetry


class Extremes(random.Random):
    """A random source that answers ``values`` in turn (0: the least jitter allows, 1: the most)."""

    def __init__(self, *values: float) -> None:
        super().__init__()
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_delays_double_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    most = Backoff(base_s=0.5, cap_s=4.0, rng=Extremes(*[1.0] * 7))
    assert [most.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    least = Backoff(base_s=0.5, cap_s=4.0, rng=Extremes(*[0.0] * 5))
    assert [least.next_delay() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    least.reset()
    least.rng = Extremes(0.0)
    assert least.next_delay() == 0.25, "a reset starts again from the base"


def test_after_a_thousand_failures_the_delay_is_still_the_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=Extremes(*[1.0] * 1000))
    delays = [backoff.next_delay() for _ in range(1000)]
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0] and set(delays[6:]) == {30.0}
    assert backoff.attempts == 1000


def test_an_outage_is_logged_when_it_begins_when_its_cause_changes_and_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outage = Outage("writer on liq:cascades", logging.getLogger("test.outage"), monotonic=clock.monotonic)
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        outage.up()  # nothing was down: nothing to say
        for _ in range(5):
            outage.down(ConnectionError("Connection refused"), 1.0)
        clock.advance(40)
        for _ in range(3):
            outage.down(TimeoutError("Timeout reading"), 2.0)
        clock.advance(5)
        outage.up()
        outage.up()
    above_debug = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > logging.DEBUG]
    assert above_debug == [
        ("WARNING", "writer on liq:cascades: unavailable (ConnectionError: Connection refused); "
                    "retrying with backoff (first in 1.0s), logged again when it works"),
        ("WARNING", "writer on liq:cascades: unavailable (TimeoutError: Timeout reading); "
                    "retrying with backoff (first in 2.0s), logged again when it works"),
        ("INFO", "writer on liq:cascades: available again after 45s and 8 failed tries"),
    ]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 6
    assert outage.since is None and outage.failures == 0


def test_causes_that_take_turns_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    """Loops sharing one outage (the writer's readers and heartbeat) can each see the dead server
    their own way, in turns: each cause is one line, not one per change of turn."""
    outage = Outage("writer: redis", logging.getLogger("test.outage"), monotonic=FakeClock().monotonic)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(4):
            outage.down(ConnectionError("Connection refused"), 1.0)
            outage.down(TimeoutError("Timeout reading"), 1.0)
        outage.up()
        outage.down(ConnectionError("Connection refused"), 1.0)  # a new outage: logged again
    said = [r.getMessage() for r in caplog.records]
    assert [line.split(";")[0] for line in said] == [
        "writer: redis: unavailable (ConnectionError: Connection refused)",
        "writer: redis: unavailable (TimeoutError: Timeout reading)",
        "writer: redis: available again after 0s and 8 failed tries",
        "writer: redis: unavailable (ConnectionError: Connection refused)"]


def test_a_long_outage_is_recalled_every_ten_minutes_not_at_every_retry(
        caplog: pytest.LogCaptureFixture) -> None:
    """A setting the writer holds its batches on (retried "loudly" until fixed) must not go quiet
    after its first line: one reminder per ``remind_s``, however often it is retried."""
    clock = FakeClock()
    outage = Outage("writer on liq:cascades", logging.getLogger("test.outage"), monotonic=clock.monotonic)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(1300):  # 1300 retries, one every second: 21 min 40 s
            outage.down(SinkRetry("LIQ_RETENTION_DAYS=2 is below the refresh window"), 1.0)
            clock.advance(1.0)
    assert [r.getMessage() for r in caplog.records] == [
        "writer on liq:cascades: unavailable (SinkRetry: LIQ_RETENTION_DAYS=2 is below the refresh window); "
        "retrying with backoff (first in 1.0s), logged again when it works",
        "writer on liq:cascades: still unavailable after 600s and 601 failed tries "
        "(SinkRetry: LIQ_RETENTION_DAYS=2 is below the refresh window)",
        "writer on liq:cascades: still unavailable after 1200s and 1201 failed tries "
        "(SinkRetry: LIQ_RETENTION_DAYS=2 is below the refresh window)",
    ]
