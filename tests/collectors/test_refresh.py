"""Contract sizes refreshed from each venue's instruments endpoint, cached on disk.

Against the simulator over real HTTP on 127.0.0.1 (each simulated venue answers its REST
instruments request in the venue's own format), then the cache and the failure paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from collectors import load_venue
from collectors import refresh as refresh_module
from collectors.base import Collector, CollectorConfig
from collectors.instruments import Instrument, InstrumentTable
from collectors.refresh import load_cached, refresh_loop, refresh_once, rest_base
from collectors.sim.server import ExchangeSimulator, load_sim
from collectors.venue import ConnectionPlan, InstrumentRequest, InstrumentSource, VenueSpec
from collectors.venues._common import get_json
from shared.backoff import Backoff
from shared.redisconn import make_async_redis
from shared.venues import VENUE_NAMES

WITH_SOURCE = ("binance_coinm", "okx", "bitmex", "htx", "gate", "lighter")


def fresh(spec: VenueSpec) -> VenueSpec:
    """The venue with an empty instruments table of its own (the module's stays untouched)."""
    assert spec.instruments is not None
    source = dataclasses.replace(spec.instruments, table=InstrumentTable(spec.name))
    return dataclasses.replace(spec, instruments=source)


def keyed(instruments: list[Instrument]) -> dict[str, Instrument]:
    return {i.symbol_native: i for i in instruments}


def test_the_venues_that_need_contract_sizes_have_an_endpoint() -> None:
    have = tuple(v for v in VENUE_NAMES if load_venue(v).instruments is not None)
    assert have == WITH_SOURCE


def test_rest_base_is_the_venue_host_live_and_the_same_server_otherwise() -> None:
    source = load_venue("okx").instruments
    assert source is not None
    assert rest_base(source, "wss://ws.okx.com:8443/ws/v5/public") == source.live_rest_url
    assert rest_base(source, "ws://127.0.0.1:4567/ws/v5/public") == "http://127.0.0.1:4567"


@pytest.mark.parametrize("venue", WITH_SOURCE)
def test_refresh_from_the_simulated_endpoint_over_http(venue: str, tmp_path: Path) -> None:
    spec = fresh(load_venue(venue))
    assert spec.instruments is not None

    async def run() -> int:
        async with ExchangeSimulator([venue]) as exchange:
            return await refresh_once(venue, spec.instruments, exchange.urls[venue], tmp_path)  # type: ignore[arg-type]

    listed = load_sim(venue).listed()  # type: ignore[attr-defined]
    assert asyncio.run(run()) == len(listed)
    table = spec.instruments.table
    assert {k: table.get(k) for k in keyed(listed)} == keyed(listed)
    cached = InstrumentTable(venue)
    assert cached.load_cache(tmp_path)
    assert {k: cached.get(k) for k in keyed(listed)} == keyed(listed)


@pytest.mark.integration
def test_a_collector_refreshes_and_caches_while_it_runs(redis_url: str, tmp_path: Path) -> None:
    spec = fresh(load_venue("okx"))
    assert spec.instruments is not None
    cache = tmp_path / "instruments"

    async def run() -> None:
        async with ExchangeSimulator(["okx"]) as exchange:
            redis = make_async_redis(redis_url)
            collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=4,
                                                  base_url=exchange.urls["okx"], instruments_dir=cache))
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            async with asyncio.timeout(20):
                await collector.wait_until(lambda c: c.health.instruments_listed > 0)
            stop.set()
            await task
            await redis.aclose()

    asyncio.run(run())
    listed = load_sim("okx").listed()  # type: ignore[attr-defined]
    rows = json.loads((cache / "okx.json").read_text())
    assert {r["symbol_native"] for r in rows} == {i.symbol_native for i in listed}


@pytest.mark.integration
def test_with_refreshes_off_the_instrument_cache_still_applies(redis_url: str, tmp_path: Path) -> None:
    """LIQ_INSTRUMENTS_REFRESH_S=0: no request, but what the last refresh learnt is used."""
    spec = fresh(load_venue("okx"))
    assert spec.instruments is not None
    cache = tmp_path / "instruments"
    known = Instrument("NEW-USDT-SWAP", "NEW", "USDT", "linear_perpetual", 10.0, "NEW")
    InstrumentTable("okx", {known.symbol_native: known}).save(cache)

    async def run() -> None:
        async with ExchangeSimulator(["okx"]) as exchange:
            redis = make_async_redis(redis_url)
            config = CollectorConfig(venue=spec, redis=redis, shards=4, base_url=exchange.urls["okx"],
                                     instruments_dir=cache, instruments_every_s=None)
            collector = Collector(config)
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            async with asyncio.timeout(20):
                await exchange.wait_subscribed("okx", len(collector.plans))
            stop.set()
            await task
            await redis.aclose()
            assert collector.health.instruments_listed == 0, "no refresh ran"

    asyncio.run(run())
    assert spec.instruments.table.get("NEW-USDT-SWAP") == known


def test_cache_survives_a_restart_and_a_failed_refresh_keeps_the_table(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    known = Instrument("NEW-USDT-SWAP", "NEW", "USDT", "linear_perpetual", 10.0, "NEW")
    table = InstrumentTable("okx")
    source = InstrumentSource(live_rest_url="https://example.invalid", requests=(InstrumentRequest("/i"),),
                              parse=lambda body, _r: [known] if body == b"ok" else [], table=table)
    asyncio.run(refresh_once("okx", source, "ws://127.0.0.1:1", tmp_path, fetch=lambda _u, _b: b"ok"))
    assert table.get("NEW-USDT-SWAP") == known

    restarted = dataclasses.replace(source, table=InstrumentTable("okx"))
    stop = asyncio.Event()
    calls: list[str] = []

    def failing(url: str, _body: bytes | None) -> bytes:
        calls.append(url)
        stop.set()
        raise OSError("network unreachable")

    with caplog.at_level(logging.INFO, logger="collectors.refresh"):
        load_cached("okx", restarted, tmp_path)  # what a collector does first (collectors.base)
        asyncio.run(refresh_loop("okx", restarted, "ws://127.0.0.1:1", tmp_path, stop, fetch=failing))
    assert calls == ["http://127.0.0.1:1/i"]
    assert restarted.table.get("NEW-USDT-SWAP") == known, "the disk cache survives a failed refresh"
    assert "instrument cache loaded (1 known)" in caplog.text
    assert "instrument refresh failed (network unreachable)" in caplog.text


def test_an_empty_or_unreadable_answer_changes_nothing(tmp_path: Path) -> None:
    table = InstrumentTable("okx")
    source = InstrumentSource(live_rest_url="https://example.invalid", requests=(InstrumentRequest("/i"),),
                              parse=lambda _b, _r: [], table=table)
    with pytest.raises(ValueError, match="listed nothing"):
        asyncio.run(refresh_once("okx", source, "ws://127.0.0.1:1", tmp_path, fetch=lambda _u, _b: b"[]"))
    assert len(table) == 0 and not (tmp_path / "okx.json").exists()


def test_an_answer_no_parser_foresaw_does_not_end_the_refresh_loop(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    source = InstrumentSource(live_rest_url="https://example.invalid", requests=(InstrumentRequest("/i"),),
                              parse=lambda body, _r: [], table=InstrumentTable("okx"))
    stop = asyncio.Event()
    calls: list[int] = []

    def odd(url: str, _body: bytes | None) -> bytes:
        calls.append(1)
        if len(calls) == 2:
            stop.set()
        raise http.client.IncompleteRead(b"partial")

    monkeypatch.setattr(refresh_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.001))
    with caplog.at_level(logging.INFO, logger="collectors.refresh"):
        asyncio.run(refresh_loop("okx", source, "ws://127.0.0.1:1", None, stop, fetch=odd))
    assert len(calls) == 2, "it tried again after the odd answer"
    assert "instrument refresh failed; keeping 0 known" in caplog.text


def test_an_unreadable_cache_is_ignored_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A cache the disk will not give back (a directory in its place, EIO, permissions) leaves
    the table as it was: the collector starts with the shipped fallback."""
    (tmp_path / "okx.json").mkdir()
    table = InstrumentTable("okx")
    with caplog.at_level(logging.WARNING):
        assert table.load_cache(tmp_path) is False
    assert len(table) == 0 and "ignoring unreadable instrument cache" in caplog.text


def test_a_cache_row_not_an_instrument_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A market type the system does not know is refused, not carried into every liquidation."""
    row = {"symbol_native": "BTC-USDT-SWAP", "base": "BTC", "quote": "USDT", "market_type": "swapish"}
    (tmp_path / "okx.json").write_text(json.dumps([row]))
    table = InstrumentTable("okx")
    with caplog.at_level(logging.WARNING):
        assert table.load_cache(tmp_path) is False
    assert len(table) == 0 and "ignoring unreadable instrument cache" in caplog.text


@asynccontextmanager
async def never_answering(path: str) -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A server on 127.0.0.1 that accepts every connection, reads, and never answers; the event
    is set once a request for ``path`` arrived. Its connections are closed on exit."""
    asked, held = asyncio.Event(), set[asyncio.StreamWriter]()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.add(writer)
        if path in (await reader.readline()).decode("latin-1"):
            asked.set()
        await reader.read()  # until the client (or the exit below) closes it

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], asked
    finally:
        server.close()
        for writer in held:
            writer.close()


def hanging_collector(spec: VenueSpec, redis_url: str, port: int, **config: Any) -> Collector:
    """A collector of ``spec`` whose venue (and REST server) is the never-answering ``port``."""
    return Collector(CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=4,
                                     base_url=f"ws://127.0.0.1:{port}", **config))


async def stops_promptly(collector: Collector, asked: asyncio.Event) -> None:
    """Run ``collector`` until ``asked`` (its REST call hangs), stop it: ``run()`` and the event
    loop's shutdown (what ``asyncio.run`` does before the process exits) both return within 5 s,
    which one request's 10 s timeout would exceed."""
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    await asyncio.wait_for(asked.wait(), timeout=20)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), timeout=5)
    await collector.config.redis.aclose()


@pytest.mark.integration
def test_a_stop_during_an_instruments_refresh_that_never_answers_is_prompt(redis_url: str) -> None:
    spec = fresh(load_venue("okx"))

    async def run() -> None:
        async with never_answering("/api/v5/public/instruments") as (port, asked):
            await stops_promptly(hanging_collector(spec, redis_url, port, instruments_every_s=3600.0), asked)

    asyncio.run(run())


@pytest.mark.integration
def test_a_stop_during_a_symbol_listing_that_never_answers_is_prompt(redis_url: str) -> None:
    """Bybit lists its symbols again periodically; this listing asks a server that never answers."""
    bybit = load_venue("bybit")

    async def run() -> None:
        async with never_answering("/v5/market/instruments-info") as (port, asked):
            def plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
                if not symbols and asked_once:  # the relisting: hangs
                    get_json(f"http://127.0.0.1:{port}/v5/market/instruments-info?category=linear")
                asked_once.append(True)
                return bybit.plans(base_url, symbols or ["BTCUSDT"])

            asked_once: list[bool] = []
            spec = dataclasses.replace(bybit, plans=plans)
            await stops_promptly(hanging_collector(spec, redis_url, port, instruments_every_s=0.01), asked)

    asyncio.run(run())


@pytest.mark.integration
def test_a_stop_during_the_first_symbol_listing_that_never_answers_is_prompt(redis_url: str) -> None:
    """A live Bybit lists its symbols before its first connection; this listing asks a server
    that never answers."""
    bybit = load_venue("bybit")

    async def run() -> None:
        async with never_answering("/v5/market/instruments-info") as (port, asked):
            def plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
                get_json(f"http://127.0.0.1:{port}/v5/market/instruments-info?category=linear")
                return bybit.plans(base_url, symbols)

            spec = dataclasses.replace(bybit, plans=plans)
            collector = hanging_collector(spec, redis_url, port)
            await stops_promptly(collector, asked)
            assert collector.health.connections_total == 0

    asyncio.run(run())
