"""The simulator driver: pacing, batching, limits, cascade lines, truth and ports files."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collectors.sim.driver import (
    MAX_BATCH,
    DriveStats,
    Pacer,
    TruthLog,
    drive,
    read_truth,
    remove_ports,
    write_ports,
)
from shared.clock import FakeClock
from shared.market import MarketEvent
from shared.models import Liquidation

T0 = 1_700_000_000_000


def event(ts: int, cascade_id: str = "", venue: str = "fake") -> MarketEvent:
    return MarketEvent(venue=venue, base="BTC", side="short", price=50_000.0, notional_usd=5_000.0,
                       timestamp_ms=ts, cascade_id=cascade_id, scenario="flush" if cascade_id else "")


def liquidation(e: MarketEvent) -> Liquidation:
    return Liquidation(exchange=e.venue, symbol="BTC-USD", symbol_native="BTCUSD", base="BTC", quote="USD",
                       market_type="linear_perpetual", side=e.side, price=e.price, quantity=0.1,
                       notional_usd=e.notional_usd, timestamp_ms=e.timestamp_ms, event_id=str(e.timestamp_ms))


class Recorder:
    """An Emitter that records each batch and 'sends' every even-timestamped event."""

    def __init__(self) -> None:
        self.batches: list[list[MarketEvent]] = []
        self.emitted = asyncio.Event()

    async def emit(self, events: Sequence[MarketEvent]) -> list[Liquidation]:
        self.batches.append(list(events))
        self.emitted.set()
        return [liquidation(e) for e in events if e.timestamp_ms % 2 == 0]


def run_drive(events: list[MarketEvent], **kwargs: Any) -> tuple[Recorder, DriveStats]:
    recorder = Recorder()

    async def body() -> DriveStats:
        return await drive(recorder, events, asyncio.Event(), **kwargs)

    return recorder, asyncio.run(asyncio.wait_for(body(), 20))


def test_pacer_maps_event_time_to_wall_time() -> None:
    clock = FakeClock()
    pacer = Pacer(speed=2.0, clock=clock)
    assert pacer.delay(T0) == 0.0
    assert pacer.delay(T0 + 1000) == pytest.approx(0.5)
    clock.advance(0.2)
    assert pacer.delay(T0 + 1000) == pytest.approx(0.3)
    clock.advance(1.0)
    assert pacer.delay(T0 + 1000) == 0.0
    assert Pacer(speed=0, clock=clock).delay(T0 + 10**9) == 0.0


def test_pacer_counts_from_the_market_start() -> None:
    pacer = Pacer(speed=10.0, clock=FakeClock(), start_ms=T0)
    assert pacer.delay(T0 + 30_000) == pytest.approx(3.0)
    assert pacer.played_ms(T0 + 30_000) == T0 + 3_000, "stamped when played: never ahead of now"
    assert Pacer(speed=1.0, clock=FakeClock()).played_ms(T0 + 5) == T0 + 5
    assert Pacer(speed=0, clock=FakeClock()).played_ms(T0 + 30_000) == T0 + 30_000


def test_a_faster_market_is_stamped_with_the_time_it_is_played() -> None:
    events = [event(T0), event(T0 + 40), event(T0 + 80)]
    recorder, _ = run_drive(events, speed=4.0)
    assert [e.timestamp_ms for batch in recorder.batches for e in batch] == [T0, T0 + 10, T0 + 20]


def test_fast_forward_emits_everything_in_order_in_bounded_batches() -> None:
    events = [event(T0 + i) for i in range(MAX_BATCH + 10)]
    recorder, stats = run_drive(events, speed=0)
    assert [e for batch in recorder.batches for e in batch] == events
    assert max(len(b) for b in recorder.batches) <= MAX_BATCH
    assert stats.events == len(events)
    assert stats.sent == (MAX_BATCH + 10) // 2


def test_real_time_groups_events_due_together() -> None:
    events = [event(T0), event(T0), event(T0 + 100), event(T0 + 100), event(T0 + 200)]
    recorder, _ = run_drive(events, speed=1.0)
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]


def test_max_events_and_until_bound_the_run() -> None:
    events = [event(T0 + i * 10) for i in range(10)]
    recorder, stats = run_drive(events, speed=0, max_events=4)
    assert stats.events == 4
    recorder, stats = run_drive(events, speed=0, until_ms=T0 + 35)
    assert [e.timestamp_ms for b in recorder.batches for e in b] == [T0, T0 + 10, T0 + 20, T0 + 30]


def test_stop_ends_a_wait_early() -> None:
    recorder = Recorder()

    async def body() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(drive(recorder, [event(T0), event(T0 + 3_600_000)], stop, speed=1.0))
        await asyncio.wait_for(recorder.emitted.wait(), 5)  # the first event is due at once
        stop.set()
        stats = await asyncio.wait_for(task, 5)
        assert stats.events == 1

    asyncio.run(asyncio.wait_for(body(), 20))


def test_one_log_line_per_cascade(caplog: pytest.LogCaptureFixture) -> None:
    events = [event(T0, "c1"), event(T0 + 1, "c1"), event(T0 + 2), event(T0 + 3, "c2"), event(T0 + 4, "c1")]
    with caplog.at_level(logging.INFO, logger="collectors.sim.driver"):
        _, stats = run_drive(events, speed=0)
    assert stats.cascades == ["c1", "c2"]
    lines = [r.getMessage() for r in caplog.records if "cascade" in r.getMessage()]
    assert len(lines) == 2 and "c1 (flush)" in lines[0]


def test_truth_file_holds_every_sent_liquidation(tmp_path: Path) -> None:
    path = tmp_path / "sim" / "truth.jsonl"
    path.parent.mkdir()
    path.write_text("stale\n")
    truth = TruthLog(path)
    try:
        run_drive([event(T0 + i) for i in range(6)], speed=0, truth=truth)
    finally:
        truth.close()
    assert [liq.timestamp_ms for liq in read_truth(path)] == [T0, T0 + 2, T0 + 4]


def test_ports_file_is_written_whole_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "sim" / "ports.json"
    write_ports(path, {"okx": "ws://127.0.0.1:1", "bybit": "ws://127.0.0.1:2"})
    assert json.loads(path.read_text()) == {"bybit": "ws://127.0.0.1:2", "okx": "ws://127.0.0.1:1"}
    assert [p.name for p in path.parent.iterdir()] == ["ports.json"]
    remove_ports(path)
    remove_ports(path)
    assert not path.exists()
