"""``liq simulate``: option handling, and one whole run (ports file, subscriber wait, truth file)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect

from collectors import load_venue
from collectors.sim import cli, driver
from collectors.sim.driver import read_truth
from collectors.sim.server import ExchangeSimulator, available_venues
from collectors.sim.venue_server import load_sim
from shared.clock import SYSTEM_CLOCK
from shared.keys import shard_of
from shared.market import MarketEvent
from shared.settings import CommonSettings

VENUE = "htx"


def test_unknown_venue_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.simulate, ["--venues", "nasdaq"])
    assert result.exit_code == 2
    assert "unknown venue(s) nasdaq" in result.output


def test_choose_venues_keeps_only_simulated_ones() -> None:
    assert cli.choose_venues("") == available_venues()


def test_a_whole_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = VENUE
    t0 = SYSTEM_CLOCK.now_ms()
    events = [MarketEvent(venue=name, base="BTC", side="long", price=60_000.0, notional_usd=30_000.0,
                          timestamp_ms=t0 + i, cascade_id="c1") for i in range(5)]

    def fake_market(
        seed: int, venues: list[str], start_ms: int, until_ms: int | None, first_cascade_s: float | None
    ) -> Iterable[MarketEvent]:
        assert venues == [name]
        return events

    monkeypatch.setattr(cli, "market_events", fake_market)
    options = cli.SimulateOptions(
        venues=[name], seed=1, speed=0, duration_s=None, max_events=3, ports_file=tmp_path / "ports.json",
        truth_file=tmp_path / "truth.jsonl", base_port=0, wait_clients=True, exit_when_done=True,
    )

    served: list[ExchangeSimulator] = []

    async def body() -> None:
        listening = asyncio.Event()

        def write_ports(path: Path, urls: dict[str, str]) -> None:
            driver.write_ports(path, urls)
            listening.set()

        monkeypatch.setattr(cli, "write_ports", write_ports)
        monkeypatch.setattr(cli, "_log_summary", lambda sim, stats: served.append(sim))
        run = asyncio.ensure_future(cli.serve_market(options, asyncio.Event()))
        await asyncio.wait_for(listening.wait(), 10)
        url = json.loads(options.ports_file.read_text())[name]
        spec = load_venue(name)
        plan = spec.plans(url, spec.default_symbols)[0]
        async with connect(plan.url) as ws:
            for frame in plan.new_session().on_open():
                await ws.send(frame)
            await asyncio.wait_for(run, 10)

    asyncio.run(asyncio.wait_for(body(), 30))
    assert not options.ports_file.exists()
    truth = read_truth(tmp_path / "truth.jsonl")
    assert 1 <= len(truth) <= 3
    assert {liq.timestamp_ms for liq in truth} <= {t0, t0 + 1, t0 + 2}
    [sim] = served
    assert sim.sent[name] == [], "a simulator run for days holds none of what it sent"
    assert sim.venue(name).sent_count == len(truth)


def test_liq_simulate_process_serves_until_sigterm(tmp_path: Path) -> None:
    """The real command: ports file once listening, one log line per venue, clean exit on SIGTERM."""
    venues = available_venues()[:2]
    ports_file = tmp_path / "ports.json"
    args = [sys.executable, "-m", "shared", "simulate", "--venues", ",".join(venues), "--speed", "0",
            "--max-events", "20", "--ports-file", str(ports_file), "--truth-file", str(tmp_path / "t.jsonl")]
    env = {**os.environ, "LIQ_DATA_DIR": str(tmp_path)}
    with subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stderr is not None
        listening = _lines_until(proc.stderr, "simulated on", len(venues))
        urls = json.loads(ports_file.read_text())
        assert sorted(urls) == sorted(venues)
        assert all(urls[v] in line for v, line in zip(venues, listening, strict=True))
        proc.send_signal(signal.SIGTERM)
        # Not communicate(timeout=…): it reads the pipe's descriptor, past the lines the reader
        # above already buffered ("market done:" when the market ended before they were read).
        proc.wait(timeout=20)
        rest = proc.stderr.read()
        assert proc.returncode == 0, rest
        assert "market done:" in rest
    assert not ports_file.exists()


def _lines_until(stream: IO[str], marker: str, count: int) -> list[str]:
    """Read lines (blocking, bounded by the test timeout) until ``count`` contain ``marker``."""
    found: list[str] = []
    for line in stream:
        if marker in line:
            found.append(line)
            if len(found) == count:
                return found
    raise AssertionError(f"the process ended before {count} lines with {marker!r}")


def test_venue_lists_may_have_spaces_and_name_the_unknown_ones() -> None:
    from shared.venues import chosen_venues

    assert chosen_venues("okx, bybit ,") == ["okx", "bybit"]
    assert cli.choose_venues(" okx ") == ["okx"]
    with pytest.raises(ValueError, match="unknown venue\\(s\\) ftx; known: binance_usdm"):
        chosen_venues("okx, ftx")


def _shards_hit(seed: int, seconds: int, shards: int) -> set[int]:
    """Event shards that the liquidations ``liq simulate`` renders in its first ``seconds`` go to."""
    venues = available_venues()
    sims = {v: load_sim(v) for v in venues}
    start = 1_800_000_000_123
    hit: set[int] = set()
    for event in cli.market_events(seed, venues, start, start + seconds * 1000, first_cascade_s=15.0):
        item = sims[event.venue].materialize(event, 0)
        hit |= {shard_of(liq.symbol, shards) for liq in item.expected} if item else set()
    return hit


def test_the_demo_market_sends_liquidations_to_every_event_shard_within_a_minute() -> None:
    """``liq up --simulate``'s market (every venue, first cascade at 15 s) as the venues render it
    reaches all of the default shards: with seed 7 (the default) within 30 s, with each of 40
    seeds within a minute. With BTC, ETH and SOL alone, shards 1 and 2 stayed empty for minutes."""
    shards = CommonSettings().shards
    assert _shards_hit(7, 30, shards) == set(range(shards))
    assert [seed for seed in range(40) if _shards_hit(seed, 60, shards) != set(range(shards))] == []
