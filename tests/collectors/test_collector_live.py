"""Every venue's collector against its simulated exchange, over real WebSockets on 127.0.0.1.

For each venue: subscribe, application heartbeats, a malformed frame (counted, connection kept),
a dropped connection and the reconnect (with the venue's replayed snapshot removed as
duplicates), and the exact liquidations that reach Redis compared with what the simulator sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import redis as syncredis

from collectors import base as base_module
from collectors import load_venue
from collectors import publisher as publisher_module
from collectors.base import Collector, CollectorConfig
from collectors.sim.bybit import BybitSim
from collectors.sim.protocol import SimClient
from collectors.sim.server import ExchangeSimulator, load_sim
from collectors.venues import okx
from shared import codec, keys, servers
from shared.backoff import Backoff
from shared.market import MarketEvent
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.venues import VENUE_NAMES
from tests import factories
from tests.redistypes import Entries

pytestmark = pytest.mark.integration
SHARDS = 4
T0 = 1_767_225_600_000
REPLAYING = {"okx", "bitfinex"}  # their replays are parsed; dYdX, Lighter and Kraken skip their snapshots


def events(venue: str, start_ms: int, n: int) -> list[MarketEvent]:
    bases = ("BTC", "ETH")
    prices = {"BTC": 67_200.0, "ETH": 3_450.0}
    return [MarketEvent(venue=venue, base=bases[i % 2], side="long" if i % 3 else "short",
                        price=prices[bases[i % 2]] + i, notional_usd=20_000.0 + 1_000 * i,
                        timestamp_ms=start_ms + 1_000 * i) for i in range(n)]


class CountingSim:
    """Wraps a venue's simulator to count what the collector sends after subscribing."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.messages = 0
        self.enough = asyncio.Event()
        self.wanted = 1 << 30

    heartbeat_s: float  # set on the wrapper by a test; anything else is the inner simulator's
    idle_close_s: float

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[str | bytes]:
        self.messages += 1
        if self.messages >= self.wanted:
            self.enough.set()
        replies: list[str | bytes] = self.inner.on_client_message(client, message)
        return replies


def normalized(liq: Liquidation) -> Liquidation:
    """Drop what depends on the moment of receipt (BitMEX sends no event time)."""
    liq = msgspec.structs.replace(liq, received_ms=0)
    if liq.timestamp_source == "receive":
        liq = msgspec.structs.replace(liq, timestamp_ms=0)
    return liq


def stream_contents(url: str) -> list[Liquidation]:
    client = syncredis.Redis.from_url(url)
    out = [codec.decode_liquidation(f[b"d"]) for s in keys.event_streams(SHARDS)
           for _i, f in cast(Entries, client.xrange(s))]
    client.close()
    return out


def _sort_key(liq: Liquidation) -> tuple[str, str, str]:
    return (liq.exchange, liq.event_id, liq.side)


async def _run_venue(venue: str, url: str) -> dict[str, Any]:
    spec = dataclasses.replace(load_venue(venue), heartbeat_s=0.05)
    sim = CountingSim(load_sim(venue))
    async with ExchangeSimulator([sim]) as exchange:
        redis = make_async_redis(url)
        # No instruments refresh: a refresh that lists a market (Lighter's NEWCOIN) would open a
        # connection more while the connections are counted (tests/collectors/test_refresh.py).
        collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                              base_url=exchange.urls[venue], instruments_every_s=None,
                                              symbols=list(spec.default_symbols), health_every_s=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        conns = len(collector.plans)
        async with asyncio.timeout(20):
            await exchange.wait_subscribed(venue, conns)
            opened = sim.messages
            if spec.new_parser().heartbeat() is not None:
                sim.wanted = opened + 2 * conns
                await sim.enough.wait()
            sent = await exchange.emit(events(venue, T0, 6))
            await collector.wait_until(lambda c: c.health.events == len(sent))
            bad = await exchange.send_raw(venue, "{this is not json")
            assert bad == conns
            await collector.wait_until(lambda c: c.health.parse_errors == conns)
            assert collector.health.reconnects == 0, "a malformed frame must not drop the connection"
            assert await exchange.drop_connections(venue) == conns
            await collector.wait_until(lambda c: c.health.reconnects >= conns)
            await exchange.wait_subscribed(venue, conns)
            await collector.wait_until(lambda c: len(c.health.connections_up) == conns)
            sent += await exchange.emit(events(venue, T0 + 60_000, 5))
            await collector.wait_until(lambda c: c.health.events == len(sent))
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()
        return {"sent": sent, "health": collector.health, "published": collector.published}


def shards_holding(url: str) -> dict[int, set[str]]:
    """Shard index -> the symbols found in that shard's event stream."""
    client = syncredis.Redis.from_url(url)
    out = {k: {codec.decode_liquidation(f[b"d"]).symbol
               for _i, f in cast(Entries, client.xrange(keys.event_stream(k)))}
           for k in range(SHARDS)}
    client.close()
    return {k: symbols for k, symbols in out.items() if symbols}


EXTRA_LIQUIDATIONS = {"deribit": 2}
"""Liquidations beyond one per event: Deribit's every 5th trade liquidated both sides (``MT``)."""
REPLAYED = {"okx": 6, "bitfinex": 1}
"""What the venue replays on resubscribe (OKX: the six earlier ones, Bitfinex: the last)."""


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_collector_against_simulated_venue(venue: str, redis_url: str) -> None:
    result = asyncio.run(_run_venue(venue, redis_url))
    sent: list[Liquidation] = result["sent"]
    assert len(sent) == 11 + EXTRA_LIQUIDATIONS.get(venue, 0), "every simulated event must reach a client"
    got = stream_contents(redis_url)
    assert result["published"] == len(got) == len(sent)
    assert sorted(map(normalized, got), key=_sort_key) == sorted(map(normalized, sent), key=_sort_key)
    routed: dict[int, set[str]] = {}
    for liq in sent:
        routed.setdefault(keys.shard_of(liq.symbol, SHARDS), set()).add(liq.symbol)
    assert shards_holding(redis_url) == routed, "each liquidation in the stream of its symbol's shard"
    health = result["health"]
    assert health.parse_errors == health.reconnects == health.connections_total, "a bad frame, a drop each"
    assert health.duplicates == REPLAYED.get(venue, 0), "a snapshot replayed on resubscribe is a duplicate"


def test_collector_reports_suspect_then_down_with_reason(redis_url: str) -> None:
    async def run() -> list[str]:
        spec = dataclasses.replace(load_venue("bybit"), usual_gap_s=0.02)
        async with ExchangeSimulator(["bybit"]) as exchange:
            redis = make_async_redis(redis_url)
            collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                                  base_url=exchange.urls["bybit"],
                                                  symbols=["BTCUSDT"], health_every_s=0.02))
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            seen: list[str] = []
            async with asyncio.timeout(20):
                await exchange.wait_subscribed("bybit", len(collector.plans))
                exchange.pause("bybit")
                await collector.wait_until(lambda c: c.health.state == "suspect")
                seen.append(collector.health.state)
                await exchange.refuse("bybit")
                await collector.wait_until(lambda c: c.health.state == "down")
                seen.append(collector.health.state)
                assert collector.health.reason, "a down venue must say why"
                stored = await redis.hgetall(keys.venue_health("bybit"))
                assert stored[b"state"] == b"down" and stored[b"reason"]
                exchange.accept("bybit")
                exchange.resume("bybit")
                await collector.wait_until(lambda c: c.health.state in ("up", "suspect")
                                           and bool(c.health.connections_up))
                seen.append("reconnected")
            stop.set()
            await asyncio.wait_for(task, 10)
            await redis.aclose()
            return seen

    assert asyncio.run(run()) == ["suspect", "down", "reconnected"]


class RestartableRedis:
    """A real Redis keeping its data (as under ``liq up``) that a test stops and starts again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = servers.start_redis(data_dir, persistent=True)
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        self.server = servers.start_redis(self.data_dir, port=self.server.port, persistent=True)

    def __enter__(self) -> RestartableRedis:
        return self

    def __exit__(self, *_: object) -> None:
        self.server.stop()


def _collector(url: str, exchange: ExchangeSimulator, spool_dir: Path | None) -> Collector:
    spec = load_venue("binance_usdm")
    return Collector(CollectorConfig(venue=spec, redis=make_async_redis(url), shards=SHARDS,
                                     base_url=exchange.urls["binance_usdm"],
                                     symbols=list(spec.default_symbols), health_every_s=0.05,
                                     spool_dir=spool_dir))


def _assert_published_once_in_order(url: str, sent: list[Liquidation]) -> None:
    got = stream_contents(url)
    assert len(got) == len(sent)
    for shard in range(SHARDS):  # each shard stream holds its liquidations in the order sent
        def mine(xs: list[Liquidation], k: int = shard) -> list[Liquidation]:
            return [normalized(x) for x in xs if keys.shard_of(x.symbol, SHARDS) == k]
        assert mine(got) == mine(sent)


async def _through_an_outage(
        exchange: ExchangeSimulator, collector: Collector, stop_redis: Callable[[], None],
        before: int, during: int, waiting: Callable[[Collector], bool]) -> list[Liquidation]:
    """``before`` liquidations published, Redis stopped, ``during`` more received and ``waiting``."""
    await exchange.wait_subscribed("binance_usdm", len(collector.plans))
    sent = await exchange.emit(events("binance_usdm", T0, before))
    await collector.wait_until(lambda c: c.published == before)
    stop_redis()
    sent += await exchange.emit(events("binance_usdm", T0 + 60_000, during))
    await collector.wait_until(waiting)
    assert collector.published == before
    return sent


@asynccontextmanager
async def _running(collector: Collector) -> AsyncIterator[Collector]:
    """The collector runs inside the block, at most 60 s; it is stopped and closed after."""
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        async with asyncio.timeout(60):
            yield collector
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await collector.config.redis.aclose()


def _spooled(n: int) -> Callable[[Collector], bool]:
    return lambda c: c.spool is not None and c.spool.pending == n


@pytest.mark.parametrize("spooled", [True, False], ids=["disk-spool", "in-memory"])
def test_a_redis_outage_holds_liquidations_and_publishes_each_once_after_it(
        tmp_path: Path, spooled: bool) -> None:
    """Redis stopped and started again: what the venue sent meanwhile waits (on disk, or in
    memory without a spool directory), then is published exactly once, in order."""
    spool_dir = tmp_path / "spool" if spooled else None

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as collector:
                waiting = _spooled(4) if spooled else (lambda c: c.health.events == 7)
                sent = await _through_an_outage(exchange, collector, redis.stop, 3, 4, waiting)
                if spool_dir is not None:
                    assert len((spool_dir / "binance_usdm.jsonl").read_bytes().splitlines()) == 4
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 7)
            assert collector.health.parse_errors == 0
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))
    if spool_dir is not None:
        assert list(spool_dir.iterdir()) == [], "a published spool is removed"


def test_liquidations_spooled_by_a_collector_stopped_during_an_outage_are_published_at_its_next_start(
        tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as first:
                sent = await _through_an_outage(exchange, first, redis.stop, 2, 5, _spooled(5))
            redis.start_again()
            second = _collector(redis.url, exchange, spool_dir)
            assert second.spool is not None and second.spool.pending == 5
            async with _running(second):
                await second.wait_until(lambda c: c.published == 5)
                await exchange.wait_subscribed("binance_usdm", len(second.plans))
                sent += await exchange.emit(events("binance_usdm", T0 + 120_000, 3))
                await second.wait_until(lambda c: c.published == 8)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))
    assert list(spool_dir.iterdir()) == []


def test_a_collector_stopping_in_an_outage_fsyncs_its_spool_whole_before_it_exits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Liquidations that arrived while the publisher waited out its backoff went straight to the
    spool (it had lines waiting), unsynced: at stop the spool is fsynced whole (safe from a machine
    crash too, not only from the process's), then published first by the next start. (Moving the
    in-memory queue to the spool at stop is tested in ``test_publisher``.)"""
    spool_dir = tmp_path / "spool"
    spool_file = spool_dir / "binance_usdm.jsonl"
    synced: dict[tuple[int, int], int] = {}  # file (device, inode) → its size at its last fsync
    spool_synced: list[Callable[[], object]] = []  # wakes the test (fsync runs in a worker thread)
    real_fsync = os.fsync

    def identity(st: os.stat_result) -> tuple[int, int]:
        return st.st_dev, st.st_ino

    def fsync(fd: int) -> None:
        real_fsync(fd)
        st = os.fstat(fd)
        synced[identity(st)] = st.st_size
        if spool_file.exists() and identity(spool_file.stat()) == identity(st):
            for wake in spool_synced:
                wake()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(publisher_module, "Backoff", lambda **_: Backoff(base_s=60.0, cap_s=60.0))

    def waiting(n: int) -> Callable[[Collector], bool]:  # on disk once the first publish failed
        return lambda c: c.spool is not None and 0 < c.spool.pending == n - c.queue.qsize()

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        retry_synced, loop = asyncio.Event(), asyncio.get_running_loop()
        spool_synced.append(lambda: loop.call_soon_threadsafe(retry_synced.set))
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as first:
                sent = await _through_an_outage(exchange, first, redis.stop, 2, 5, waiting(5))
                await asyncio.wait_for(retry_synced.wait(), 10)  # the failed publish's fsync is done
                sent += await exchange.emit(events("binance_usdm", T0 + 90_000, 3))
                await first.wait_until(waiting(8))  # the publisher waits 60 s before it tries again
            assert first.spool is not None and first.spool.pending == 8 and first.spool.path == spool_file
            assert synced[identity(spool_file.stat())] == spool_file.stat().st_size
            redis.start_again()
            async with _running(_collector(redis.url, exchange, spool_dir)) as second:
                await second.wait_until(lambda c: c.published == 8)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))
    assert list(spool_dir.iterdir()) == []


def _okx_collector(url: str, exchange: ExchangeSimulator) -> Collector:
    return Collector(CollectorConfig(venue=load_venue("okx"), redis=make_async_redis(url), shards=SHARDS,
                                     base_url=exchange.urls["okx"], health_every_s=0.05,
                                     instruments_every_s=None))


def _okx_push(inst_id: str, *times: str) -> str:
    """An OKX liquidation-orders push: one detail row per time."""
    details = [{"bkLoss": "0", "bkPx": "67000", "ccy": "", "posSide": "long", "side": "sell", "sz": "1",
                "ts": ts} for ts in times]
    data = [{"instId": inst_id, "instType": "SWAP", "details": details}]
    return msgspec.json.encode({"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
                                "data": data}).decode()


def test_a_frame_no_parser_foresaw_is_a_parse_error_and_the_connection_lives_on(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two malformed frames that fail deep inside the OKX parser: a "ts" of "1e999" (a
    ParseError raised by num() three calls down) and an instrument whose lookup raises an
    exception no parser foresees (ZeroDivisionError, here injected into parse_inst_id). Each costs
    only its frame: counted, sampled, the connection kept, later frames published."""
    real_parse_inst_id = okx.parse_inst_id

    def parse_inst_id(inst_id: str, table: Any) -> Any:
        if inst_id == "BOOM-USDT-SWAP":
            return 1 / 0
        return real_parse_inst_id(inst_id, table)

    monkeypatch.setattr(okx, "parse_inst_id", parse_inst_id)

    async def run() -> Collector:
        async with ExchangeSimulator(["okx"]) as exchange:
            collector = _okx_collector(redis_url, exchange)
            async with _running(collector):
                await exchange.wait_subscribed("okx", len(collector.plans))
                first = await exchange.emit(events("okx", T0, 3))
                await collector.wait_until(lambda c: c.published == len(first))
                assert await exchange.send_raw("okx", _okx_push("BTC-USDT-SWAP", "1e999")) == 1
                await collector.wait_until(lambda c: c.health.parse_errors == 1)
                assert await exchange.send_raw("okx", _okx_push("BOOM-USDT-SWAP", str(T0))) == 1
                await collector.wait_until(lambda c: c.health.parse_errors == 2)
                later = await exchange.emit(events("okx", T0 + 60_000, 3))
                await collector.wait_until(lambda c: c.published == len(first) + len(later))
            return collector

    collector = asyncio.run(run())
    assert (collector.health.reconnects, collector.health.parse_errors) == (0, 2)
    assert collector.health.last_error_sample.startswith('{"arg":{"channel":"liquidation-orders"')
    assert '"instId":"BOOM-USDT-SWAP"' in collector.health.last_error_sample


def test_a_bad_row_is_a_parse_error_and_the_frames_other_rows_are_published(redis_url: str,
                                                                             r: syncredis.Redis) -> None:
    """A push of three rows, the middle one with a "ts" of "1e999": two liquidations reach the
    event stream, the bad row counts one parse error, the connection lives on."""
    async def run() -> Collector:
        async with ExchangeSimulator(["okx"]) as exchange:
            collector = _okx_collector(redis_url, exchange)
            async with _running(collector):
                await exchange.wait_subscribed("okx", len(collector.plans))
                push = _okx_push("BTC-USDT-SWAP", str(T0), "1e999", str(T0 + 1))
                assert await exchange.send_raw("okx", push) == 1
                await collector.wait_until(lambda c: c.published == 2 and c.health.parse_errors == 1)
            return collector

    collector = asyncio.run(run())
    assert (collector.health.reconnects, collector.health.parse_errors) == (0, 1)
    stream = keys.event_stream_of("BTCUSDT", SHARDS)
    published = [codec.decode_liquidation(f[b"d"]) for _, f in cast(Entries, r.xrange(stream))]
    assert [(x.symbol, x.timestamp_ms, x.price) for x in published] == [
        ("BTCUSDT", T0, 67000.0), ("BTCUSDT", T0 + 1, 67000.0)]


def test_a_publisher_that_dies_stops_the_collector_with_its_error(redis_url: str) -> None:
    """Nothing would be published any more while the health hash said "up": the process must
    end instead, so that liq up, supervisord or docker restarts it."""
    async def run() -> None:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            collector = _collector(redis_url, exchange, None)

            async def broken(batch: list[Liquidation]) -> None:
                raise RuntimeError("a bug in publishing")

            collector.publisher._publish = broken  # type: ignore[method-assign]
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            await exchange.wait_subscribed("binance_usdm", len(collector.plans))
            await exchange.emit(events("binance_usdm", T0, 1))
            with pytest.raises(RuntimeError, match="a bug in publishing"):
                await asyncio.wait_for(task, 20)
            assert stop.is_set()
            state = await collector.config.redis.hget(keys.venue_health("binance_usdm"), "state")
            assert state == b"down", "the health hash must not keep saying up"
            await collector.config.redis.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("venue", ["okx", "bitget", "bitmex", "bybit", "gate", "bitfinex", "hyperliquid"])
def test_a_connection_gone_silent_is_reopened_where_the_venue_answers_pings(venue: str,
                                                                           redis_url: str) -> None:
    """The venue answers each ping, so frames keep coming even when no one is liquidated; once
    it goes dead silent (a half-open connection), the collector reconnects by itself."""
    async def run() -> Collector:
        spec = dataclasses.replace(load_venue(venue), heartbeat_s=0.05)
        assert spec.answers_pings
        sim = CountingSim(load_sim(venue))
        async with ExchangeSimulator([sim]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05,
                                     symbols=list(spec.default_symbols), instruments_every_s=None)
            collector = Collector(config)
            async with _running(collector):
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                sim.wanted = sim.messages + 12 * conns  # a dozen ping intervals, no liquidation
                await sim.enough.wait()
                assert collector.health.reconnects == 0, "pongs are frames: no false alarm"
                exchange.mute(venue)
                await collector.wait_until(lambda c: c.health.reconnects >= conns)
                assert "no frame for" in collector.health.reason
                exchange.mute(venue, False)
                await collector.wait_until(lambda c: len(c.health.connections_up) == conns)
            return collector

    asyncio.run(run())


@pytest.mark.parametrize("venue", ["binance_usdm", "binance_coinm", "dydx", "kraken_futures", "lighter"])
def test_a_half_open_connection_is_reopened_by_websocket_pings(venue: str, redis_url: str) -> None:
    """These venues may be quiet for hours, so only WebSocket pings can tell a dead link: once the
    venue end stops reading (nothing at all comes back, not even pongs), the collector gives up
    on the connection within its ping timeout, says why, and connects again."""
    async def run() -> None:
        spec = dataclasses.replace(load_venue(venue), heartbeat_s=0.05)
        async with ExchangeSimulator([venue]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05, ws_ping_s=0.1,
                                     symbols=list(spec.default_symbols), instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                assert exchange.freeze(venue) == conns
                await collector.wait_until(lambda c: "keepalive ping timeout" in c.health.reason)
                await exchange.wait_subscribed(venue, conns)
                await collector.wait_until(lambda c: len(c.health.connections_up) == conns)
                assert await exchange.thaw(venue) == conns
                sent = await exchange.emit(events(venue, T0, 4))
                await collector.wait_until(lambda c: c.published == len(sent))

    asyncio.run(run())


@pytest.mark.parametrize("venue", ["htx", "deribit"])
def test_a_connection_gone_silent_is_reopened_where_the_venue_pings(venue: str, redis_url: str) -> None:
    """HTX pings every few seconds, Deribit sends a heartbeat every interval set_heartbeat set: no
    frame for a few of them is a dead venue end, even while WebSocket pongs still come back (the
    muted simulator answers those), and the collector reconnects by itself."""
    async def run() -> None:
        spec = dataclasses.replace(load_venue(venue), heartbeat_s=0.05, server_heartbeat_s=0.05)
        sim = CountingSim(load_sim(venue))
        sim.heartbeat_s = 0.05
        async with ExchangeSimulator([sim]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05,
                                     symbols=list(spec.default_symbols), instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                sim.wanted = sim.messages + 12 * conns  # a dozen pings answered, no liquidation
                await sim.enough.wait()
                assert collector.health.reconnects == 0, "pings are frames: no false alarm"
                exchange.mute(venue)
                await collector.wait_until(lambda c: "no frame for 0.15s" in c.health.reason)
                exchange.mute(venue, False)
                await collector.wait_until(lambda c: len(c.health.connections_up) == conns)

    asyncio.run(run())


@pytest.mark.parametrize("venue", ["htx", "deribit", "okx", "hyperliquid", "bitget", "lighter"])
def test_the_collector_keeps_the_heartbeat_rules_the_simulated_venue_enforces(venue: str,
                                                                              redis_url: str) -> None:
    """The simulator hangs up on a client that leaves its pings unanswered (HTX, Deribit) or that
    goes quiet (OKX, Hyperliquid, Bitget, Lighter), as those venues do; the collector answers
    and pings, so it keeps its connections over twenty pings either way."""
    async def run() -> None:
        spec = dataclasses.replace(load_venue(venue), heartbeat_s=0.05)
        sim = CountingSim(load_sim(venue))
        sim.heartbeat_s = 0.05 if sim.inner.heartbeat_s else 0.0
        sim.idle_close_s = 0.5 if getattr(sim.inner, "idle_close_s", 0.0) else 0.0
        assert sim.heartbeat_s or sim.idle_close_s
        async with ExchangeSimulator([sim]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05,
                                     symbols=list(spec.default_symbols), instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                sim.wanted = sim.messages + 20 * conns  # pongs, or pings, each way > 1 s
                await sim.enough.wait()
                assert collector.health.reconnects == 0, collector.health.reason

    asyncio.run(run())


async def _one_run(redis_url: str, exchange: ExchangeSimulator, venue: str, emit: int,
                   judged: Callable[[Collector], bool] | None = None) -> Collector:
    """One collector process's life: subscribe, then publish ``emit`` new liquidations, or
    (``emit`` 0) wait until ``judged`` holds for what the venue replayed on subscribe."""
    config = CollectorConfig(venue=load_venue(venue), redis=make_async_redis(redis_url),
                             shards=SHARDS, base_url=exchange.urls[venue], health_every_s=0.05,
                             instruments_every_s=None)
    collector = Collector(config)
    async with _running(collector):
        await exchange.wait_subscribed(venue, len(collector.plans))
        if emit:
            sent = await exchange.emit(events(venue, T0, emit))
            await collector.wait_until(lambda c: c.published == len(sent))
        elif judged is not None:
            await collector.wait_until(judged)
    return collector


@pytest.mark.parametrize("venue", sorted(REPLAYING))
def test_a_restarted_collector_does_not_publish_the_replayed_snapshot_again(venue: str,
                                                                            redis_url: str) -> None:
    """OKX and Bitfinex send recent liquidations again on each subscribe; a new process has
    forgotten what it published, unless it reads it back from the streams first."""
    async def run() -> Collector:
        async with ExchangeSimulator([venue]) as exchange:
            await _one_run(redis_url, exchange, venue, 4)
            # a new process; the venue sent nothing new. The snapshot replayed on subscribe
            # (OKX: all four, Bitfinex: the last) is judged
            return await _one_run(redis_url, exchange, venue, 0, lambda c: c.health.duplicates >= 1)

    again = asyncio.run(run())
    assert again.published == 0
    assert len(stream_contents(redis_url)) == 4


def _publish_other_venue(url: str, per_stream: int) -> None:
    """``per_stream`` Bybit liquidations at the end of every event stream."""
    client = syncredis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for shard in range(SHARDS):
        for n in range(per_stream):
            other = factories.liq(exchange="bybit", timestamp_ms=T0 + n, event_id=f"other-{shard}-{n}")
            pipe.xadd(keys.event_stream(shard), {codec.PAYLOAD_FIELD: codec.encode(other)})
    pipe.execute()
    client.close()


def test_a_restarted_collector_remembers_what_it_published_behind_other_venues_liquidations(
        redis_url: str) -> None:
    """Bitfinex replays a row up to about 12 h old on subscribe; the other venues' liquidations
    published since (many on a busy day, in the same shard streams) must not hide it from what a
    restarted collector reads back: it is not published a second time."""
    venue = "bitfinex"

    async def run() -> Collector:
        async with ExchangeSimulator([venue]) as exchange:
            await _one_run(redis_url, exchange, venue, 4)
            _publish_other_venue(redis_url, base_module.REMEMBER_ENTRIES)
            # the row replayed on subscribe, judged one way or the other
            return await _one_run(redis_url, exchange, venue, 0,
                                  lambda c: c.health.events + c.health.duplicates == 1)

    again = asyncio.run(run())
    assert (again.health.duplicates, again.published) == (1, 0)
    assert len(stream_contents(redis_url)) == 4 + SHARDS * base_module.REMEMBER_ENTRIES


def test_a_spool_the_disk_refused_is_used_again_once_it_can_be(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk turns the spool off (liquidations wait in memory); a later outage retry finds
    room and spools them again, and all of them are published once, in order."""
    monkeypatch.setattr(publisher_module, "SPOOL_RETRY_S", 0.0)
    disk, spool_dir = RefusingDisk(monkeypatch, armed=True), tmp_path / "spool"

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as collector:
                sent = await _through_an_outage(exchange, collector, redis.stop, 2, 4, _spooled(4))
                assert not disk.refusals, "the first spool write was refused, a later one took them"
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 6)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))


def test_spooled_liquidations_the_venue_replays_after_a_restart_are_published_once(tmp_path: Path) -> None:
    """OKX replays recent liquidations on subscribe: after a restart, those still in the spool
    (not yet in the streams) are not new either."""
    spool_dir = tmp_path / "spool"

    def okx(url: str, exchange: ExchangeSimulator) -> Collector:
        return Collector(CollectorConfig(venue=load_venue("okx"), redis=make_async_redis(url), shards=SHARDS,
                                         base_url=exchange.urls["okx"], health_every_s=0.05,
                                         instruments_every_s=None, spool_dir=spool_dir))

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["okx"]) as exchange:
            async with _running(okx(redis.url, exchange)) as first:
                await exchange.wait_subscribed("okx", len(first.plans))
                sent = await exchange.emit(events("okx", T0, 2))
                await first.wait_until(lambda c: c.published == 2)
                redis.stop()
                sent += await exchange.emit(events("okx", T0 + 60_000, 3))
                await first.wait_until(_spooled(3))
            redis.start_again()
            second = okx(redis.url, exchange)
            async with _running(second):  # the replay on subscribe holds all five
                await second.wait_until(lambda c: c.health.duplicates == 5 and c.published == 3)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        sent = asyncio.run(run(redis))
        got = stream_contents(redis.url)
    assert sorted(x.event_id for x in got) == sorted(normalized(x).event_id for x in sent)


class RefusingDisk:
    """``Spool.append`` refuses one write (a full disk) once ``armed``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, armed: bool = False) -> None:
        from collectors.spool import Spool

        self.armed = armed
        self.refusals = [OSError(28, "No space left on device")]
        real_append = Spool.append

        def append(spool: Spool, liquidations: Any) -> None:
            if self.armed and self.refusals and liquidations:
                raise self.refusals.pop()
            real_append(spool, liquidations)

        monkeypatch.setattr(Spool, "append", append)


async def _refused_while_three_wait(exchange: ExchangeSimulator, collector: Collector,
                                    redis: RestartableRedis, disk: RefusingDisk) -> list[Liquidation]:
    """Two published, Redis stopped, three spooled, then one more whose spool write is refused."""
    sent = await _through_an_outage(exchange, collector, redis.stop, 2, 3, _spooled(3))
    disk.armed = True
    sent += await exchange.emit(events("binance_usdm", T0 + 120_000, 1))
    await collector.wait_until(lambda c: c.health.events == 6)
    assert not disk.refusals and collector.spool is not None and collector.spool.pending == 3
    return sent


def test_a_spool_write_refused_while_lines_wait_keeps_them_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three liquidations wait in the spool when the disk refuses the next write: the newer one
    waits in memory, behind them, and all are published once, in order, when Redis is back."""
    disk, spool_dir = RefusingDisk(monkeypatch), tmp_path / "spool"

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as collector:
                sent = await _refused_while_three_wait(exchange, collector, redis, disk)
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 6)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))
    assert list(spool_dir.iterdir()) == []


def test_a_spool_refused_while_lines_wait_is_written_again_after_the_retry_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal's liquidation waits in memory; the next write after the retry time takes it
    to the spool too, before the newer one, so nothing rests in memory through the outage."""
    monkeypatch.setattr(publisher_module, "SPOOL_RETRY_S", 0.0)
    disk, spool_dir = RefusingDisk(monkeypatch), tmp_path / "spool"

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as collector:
                sent = await _refused_while_three_wait(exchange, collector, redis, disk)
                assert collector.queue.qsize() == 1, "refused: in memory"
                sent += await exchange.emit(events("binance_usdm", T0 + 180_000, 1))
                await collector.wait_until(_spooled(5))
                assert collector.queue.qsize() == 0
                assert len((spool_dir / "binance_usdm.jsonl").read_bytes().splitlines()) == 5
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 7)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))


def test_a_disk_that_refuses_the_spool_leaves_the_collector_running_without_one(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors import spool as spool_module

    def refuse(path: Path) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "_lock", refuse)
    spec = load_venue("okx")
    config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                             base_url="ws://127.0.0.1:9", spool_dir=tmp_path / "spool")
    collector = Collector(config)
    assert collector.spool is None
    asyncio.run(collector.config.redis.aclose())


def test_lighter_subscribes_the_markets_its_instrument_cache_knows(redis_url: str, tmp_path: Path) -> None:
    """The cache is loaded before the plans are built (Lighter's markets come from its table)."""
    from collectors.instruments import Instrument, InstrumentTable
    from collectors.venues import lighter

    cache = tmp_path / "instruments"
    InstrumentTable("lighter", {"99": Instrument("99", "NEWCOIN", "USDC", "linear_perpetual")}).save(cache)

    async def run() -> Collector:
        async with ExchangeSimulator(["lighter"]) as exchange:
            config = CollectorConfig(venue=load_venue("lighter"), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls["lighter"], instruments_dir=cache,
                                     instruments_every_s=None, health_every_s=0.05)
            collector = Collector(config)
            async with _running(collector):
                await exchange.wait_subscribed("lighter", 1, topic="trade:99")
            return collector

    try:
        collector = asyncio.run(run())
    finally:
        lighter.TABLE._by_native.pop("99", None)
    assert "99" in {s for plan in collector.plans for s in plan.symbols}


def test_a_market_an_instruments_refresh_lists_is_subscribed_at_once(redis_url: str) -> None:
    """Lighter's markets come from its table: the refresh at start lists NEWCOIN (9001), and the
    collector opens a connection for it without waiting for the next listing period."""
    from collectors.venues import lighter

    async def run() -> Collector:
        async with ExchangeSimulator(["lighter"]) as exchange:
            config = CollectorConfig(venue=load_venue("lighter"), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls["lighter"],
                                     instruments_every_s=3600.0, health_every_s=0.05)
            collector = Collector(config)
            async with _running(collector):
                await exchange.wait_subscribed("lighter", 1, topic="trade:9001")
                await collector.wait_until(lambda c: len(c.health.connections_up) == 2)
            return collector

    try:
        collector = asyncio.run(run())
    finally:
        lighter.TABLE._by_native.pop("9001", None)
    assert [plan.symbols for plan in collector.plans][1:] == [("9001",)]


def test_gate_asks_for_decimal_sizes_in_the_handshake(redis_url: str) -> None:
    """Without ``X-Gate-Size-Decimal: 1`` Gate sends sizes as integers, rounding fractional ones."""
    async def run() -> tuple[list[dict[str, str]], list[Liquidation]]:
        async with ExchangeSimulator(["gate"]) as exchange:
            config = CollectorConfig(venue=load_venue("gate"), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls["gate"], instruments_every_s=None,
                                     health_every_s=0.05)
            collector = Collector(config)
            async with _running(collector):
                await exchange.wait_subscribed("gate", len(collector.plans))
                sent = await exchange.emit(events("gate", T0, 2))
                await collector.wait_until(lambda c: c.published == 2)
                headers = [client.headers for client in exchange.venue("gate").clients.values()]
            return headers, sent

    headers, sent = asyncio.run(run())
    assert len(headers) == 3 and all(h.get("x-gate-size-decimal") == "1" for h in headers)
    got = sorted(x.event_id for x in stream_contents(redis_url))
    assert got == sorted(normalized(x).event_id for x in sent)


def test_a_symbol_the_venue_lists_after_the_start_is_subscribed_without_a_restart(redis_url: str) -> None:
    """Bybit has no wildcard topic: a collector asks its listing again and opens a connection for
    what is new (here ETHUSDT, listed after the start), keeping the running ones."""
    from collectors.venues import bybit

    listing = ["BTCUSDT"]

    def plans(base_url: str, symbols: Any) -> list[Any]:
        return bybit._plans(base_url, list(symbols) or list(listing))

    spec = dataclasses.replace(load_venue("bybit"), plans=plans)
    assert spec.relists

    async def run() -> tuple[Collector, list[Liquidation]]:
        async with ExchangeSimulator(["bybit"]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls["bybit"], health_every_s=0.05,
                                     instruments_every_s=0.05)
            collector = Collector(config)
            async with _running(collector):
                await exchange.wait_subscribed("bybit", 1, topic="allLiquidation.BTCUSDT")
                listing.append("ETHUSDT")
                await exchange.wait_subscribed("bybit", 1, topic="allLiquidation.ETHUSDT")
                await collector.wait_until(lambda c: len(c.health.connections_up) == 2)
                sent = await exchange.emit(events("bybit", T0, 4))  # BTC and ETH
                await collector.wait_until(lambda c: c.published == 4)
            return collector, sent

    collector, sent = asyncio.run(run())
    assert [p.label for p in collector.plans] == ["bybit:linear:0", "bybit:linear:0+1"]
    got = sorted(x.event_id for x in stream_contents(redis_url))
    assert got == sorted(normalized(x).event_id for x in sent)


def test_a_listing_that_failed_at_the_start_is_asked_again_soon(redis_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Bybit's instruments-info failing once at the start (a timeout, a rate limit) leaves the
    collector on its few default symbols; the listing is asked again within a minute, not after
    the 6 h period, and the symbols it names are subscribed."""
    from collectors.venues import bybit

    calls: list[str] = []

    def fetch_symbols(category: str, *_: Any) -> list[str]:
        calls.append(category)
        if len(calls) == 1:
            raise OSError("instruments-info timed out")
        return ["BTCUSDT", "NEWUSDT"] if category == "linear" else []

    monkeypatch.setattr(bybit, "rest_url", lambda _base_url: "https://api.bybit.invalid")
    monkeypatch.setattr(bybit, "fetch_symbols", fetch_symbols)
    monkeypatch.setattr(base_module, "RELIST_FIRST_S", 0.05)

    async def run() -> None:
        async with ExchangeSimulator(["bybit"]) as exchange:
            config = CollectorConfig(venue=load_venue("bybit"), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls["bybit"], health_every_s=0.05,
                                     instruments_every_s=6 * 3600.0)
            async with _running(Collector(config)) as collector:
                assert "allLiquidation.NEWUSDT" not in collector.plans[0].new_session().on_open()[0]
                await exchange.wait_subscribed("bybit", 1, topic="allLiquidation.NEWUSDT", timeout=10)

    asyncio.run(run())


def test_a_redis_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Not a line per retry: an outage of an hour would otherwise log one every 30 s."""
    made: list[Backoff] = []

    def tiny(**_: Any) -> Backoff:
        made.append(Backoff(base_s=0.001, cap_s=0.002))
        return made[-1]

    monkeypatch.setattr(publisher_module, "Backoff", tiny)
    spool_dir = tmp_path / "spool"

    async def run(redis: RestartableRedis) -> None:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, spool_dir)) as collector:
                await _through_an_outage(exchange, collector, redis.stop, 3, 4, _spooled(4))
                await collector.wait_until(lambda _: max(b.attempts for b in made) >= 6)
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 7)

    with RestartableRedis(tmp_path / "redis") as redis, \
            caplog.at_level(logging.INFO, logger="collectors"):  # the collector and its publisher
        asyncio.run(run(redis))
    lines = [re.sub(r"\(.*?\)|after \d+s and \d+", "…", r.getMessage()) for r in caplog.records
             if "redis" in r.getMessage() or "spool" in r.getMessage()]
    assert lines == [
        "binance_usdm: redis unavailable; liquidations wait in " + str(spool_dir / "binance_usdm.jsonl"),
        "binance_usdm: redis: unavailable …; retrying with backoff …, logged again when it works",
        "binance_usdm: redis: available again … failed tries",
        "binance_usdm: spool published; back to the in-memory queue",
    ]


def _bybit_btc(redis_url: str, exchange: ExchangeSimulator) -> Collector:
    """A Bybit collector of BTCUSDT alone, on the simulator."""
    return Collector(CollectorConfig(
        venue=load_venue("bybit"), redis=make_async_redis(redis_url), shards=SHARDS,
        base_url=exchange.urls["bybit"], symbols=["BTCUSDT"]))


def test_a_venue_that_refuses_connections_is_logged_once_when_down_and_once_when_back(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Not a line per reconnect attempt: a venue down for an hour would otherwise log one every
    30 s per connection."""
    monkeypatch.setattr(base_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.002))

    async def run() -> str:
        async with ExchangeSimulator(["bybit"]) as exchange:
            collector = _bybit_btc(redis_url, exchange)
            async with _running(collector):
                await exchange.wait_subscribed("bybit", 1)
                await exchange.refuse("bybit")
                await collector.wait_until(lambda c: c.health.reconnects >= 6)
                exchange.accept("bybit")
                await collector.wait_until(lambda c: bool(c.health.connections_up))
            return collector.plans[0].label

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        label = asyncio.run(run())

    def vague(line: str) -> str:  # the cause's class stays
        line = re.sub(r"\((\w+)[^;]*\); retrying with backoff \(.*?\)", r"(\1 …); retrying with backoff (…)",
                      line)
        return re.sub(r"after \d+s and \d+|to ws://.*", "…", line)
    lines = [vague(r.getMessage()) for r in caplog.records if r.getMessage().startswith(f"bybit[{label}]")]
    again = "retrying with backoff (…), logged again when it works"
    assert lines == [  # dropped, then refused: two causes, a line each
        f"bybit[{label}]: connected …",
        f"bybit[{label}]: unavailable (ConnectionClosedError …); {again}",
        f"bybit[{label}]: unavailable (InvalidStatus …); {again}",
        f"bybit[{label}]: available again … failed tries",
    ]


def test_a_venue_refusing_with_another_http_status_is_logged_again_once_per_status(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A venue down (503) that starts answering 451 (a geo-block) within the same outage says
    so: the status is what a user acts on. Statuses taking turns are still a line each."""
    monkeypatch.setattr(base_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.002))

    async def refused_with(collector: Collector, exchange: ExchangeSimulator, status: HTTPStatus) -> None:
        await exchange.refuse("bybit", status=status)
        seen = collector.health.reconnects
        await collector.wait_until(lambda c: c.health.reconnects >= seen + 3)  # the status is retried

    async def run() -> str:
        async with ExchangeSimulator(["bybit"]) as exchange:
            collector = _bybit_btc(redis_url, exchange)
            async with _running(collector):
                await exchange.wait_subscribed("bybit", 1)
                for status in (503, 451, 503, 451):
                    await refused_with(collector, exchange, HTTPStatus(status))
                exchange.accept("bybit")
                await collector.wait_until(lambda c: bool(c.health.connections_up))
            return collector.plans[0].label

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        label = asyncio.run(run())
    lines = [re.sub(r" \(first in [\d.]+s\)| after \d+s and \d+ failed tries| to ws://.*", "", r.getMessage())
             for r in caplog.records if r.getMessage().startswith(f"bybit[{label}]")]
    again = "retrying with backoff, logged again when it works"
    refused = "InvalidStatus: server rejected WebSocket connection: HTTP"
    assert lines == [
        f"bybit[{label}]: connected",
        f"bybit[{label}]: unavailable (ConnectionClosedError: no close frame received or sent); {again}",
        f"bybit[{label}]: unavailable ({refused} 503, body: bybit is down); {again}",
        f"bybit[{label}]: unavailable ({refused} 451, body: bybit is down); {again}",
        f"bybit[{label}]: available again",
    ]


def test_a_geo_blocked_handshake_gives_the_start_of_the_venues_answer_as_the_reason(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Binance answers a restricted region's handshake HTTP 451 with a body saying why: the status
    alone does not tell a geo-block from an outage. The body is one line, cut at 200 characters."""
    monkeypatch.setattr(base_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.002))
    msg = ("Service unavailable from a restricted location according to 'b. Eligibility' in "
           "https://www.binance.com/en/terms. Please contact customer service if you believe you "
           "received this message in error.")
    body = json.dumps({"code": 0, "msg": msg}, indent=2)  # several lines

    async def run() -> tuple[str, str]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            collector = Collector(CollectorConfig(
                venue=load_venue("binance_usdm"), redis=make_async_redis(redis_url), shards=SHARDS,
                base_url=exchange.urls["binance_usdm"], instruments_every_s=None))
            await exchange.refuse("binance_usdm", status=HTTPStatus.UNAVAILABLE_FOR_LEGAL_REASONS, body=body)
            async with _running(collector):
                await collector.wait_until(lambda c: c.health.reconnects >= 2)
                return collector.plans[0].label, collector.health.reason

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        label, reason = asyncio.run(run())
    excerpt = ('{ "code": 0, "msg": "Service unavailable from a restricted location according to '
               "'b. Eligibility' in https://www.binance.com/en/terms. Please contact customer service "
               'if you believe you received this…')
    assert len(excerpt) == 200
    assert reason == f"InvalidStatus: server rejected WebSocket connection: HTTP 451, body: {excerpt}"
    assert [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()] == [
        f"binance_usdm[{label}]: unavailable ({reason}); retrying with backoff (first in 0.0s), "
        "logged again when it works"]


def test_a_collector_started_while_redis_loads_its_data_waits_to_remember_what_it_published(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with Redis just restarted (liq up, docker compose): Redis answers LOADING until
    its data is in memory. Giving up on reading the streams back then, the collector published
    the snapshot OKX replays on subscribe a second time (the aggregator counts it twice)."""
    monkeypatch.setattr(base_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.002))

    async def one_run(exchange: ExchangeSimulator, emit: int, loading: int) -> Collector:
        client = make_async_redis(redis_url)
        xrevrange = client.xrevrange

        async def still_loading(*args: Any, **kwargs: Any) -> Any:
            nonlocal loading
            if loading:
                loading -= 1
                raise syncredis.BusyLoadingError("Redis is loading the dataset in memory")
            return await xrevrange(*args, **kwargs)

        client.xrevrange = still_loading  # type: ignore[method-assign]
        collector = Collector(CollectorConfig(venue=load_venue("okx"), redis=client, shards=SHARDS,
                                              base_url=exchange.urls["okx"], instruments_every_s=None))
        async with _running(collector):
            await exchange.wait_subscribed("okx", len(collector.plans))
            if emit:
                sent = await exchange.emit(events("okx", T0, emit))
                await collector.wait_until(lambda c: c.published == len(sent))
            else:  # the four replayed on subscribe: each judged once, a duplicate or published
                await collector.wait_until(lambda c: c.health.duplicates + c.published == 4)
        return collector

    async def run() -> Collector:
        async with ExchangeSimulator(["okx"]) as exchange:
            await one_run(exchange, 4, loading=0)
            return await one_run(exchange, 0, loading=3)  # a new process, Redis still loading

    again = asyncio.run(run())
    assert (again.published, again.health.duplicates) == (0, 4)
    assert len(stream_contents(redis_url)) == 4


class RefusedOnce:
    """A venue session whose first connection also asks for a topic the venue refuses."""

    def __init__(self, inner: Any, extra: str, first: bool) -> None:
        self.inner, self.extra, self.first = inner, extra, first

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_open(self) -> list[str | bytes]:
        frames: list[str | bytes] = self.inner.on_open()
        return [*frames, self.extra] if self.first else frames


def _bybit_refusing(redis_url: str, exchange: ExchangeSimulator, symbols: list[str]) -> Collector:
    config = CollectorConfig(venue=load_venue("bybit"), shards=SHARDS, redis=make_async_redis(redis_url),
                             base_url=exchange.urls["bybit"], symbols=symbols, health_every_s=0.05,
                             instruments_every_s=None)
    return Collector(config)


def _now_up(collector: Collector) -> bool:
    return collector.health.compute_state(collector.config.clock.now_ms()) == "up"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused topic" in r.getMessage()]


def test_a_topic_bybit_refuses_is_dropped_logged_once_and_the_venue_is_up(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A symbol delisted between the listing and the subscribe: Bybit refuses its topic in the
    request's ack and subscribes the others. The venue is up on those, the refusal is one
    warning naming the topic and Bybit's message, and a reconnect does not ask for it again."""
    refused = "allLiquidation.SOLUSDT"

    async def run() -> None:
        async with ExchangeSimulator([BybitSim(delisted={refused})]) as exchange:
            collector = _bybit_refusing(redis_url, exchange, ["BTCUSDT", "SOLUSDT", "ETHUSDT"])
            async with _running(collector) as collector:
                await collector.wait_until(lambda c: c.plans[0].symbols == ("BTCUSDT", "ETHUSDT")
                                           and c.health.state == "up")
                assert assert_alone(exchange.clients("bybit")).subscriptions == {
                    "allLiquidation.BTCUSDT", "allLiquidation.ETHUSDT"}
                assert await exchange.drop_connections("bybit") == 1
                await collector.wait_until(lambda c: c.health.reconnects == 1 and _now_up(c))
                await exchange.wait_subscribed("bybit", 1)
                sent = await exchange.emit(events("bybit", T0, 2))  # after the new subscribe's ack
                await collector.wait_until(lambda c: c.published == len(sent) == 2)
                assert _now_up(collector) and collector.health.reason == ""
                assert collector.health.venue_errors == 0

    with caplog.at_level("WARNING"):
        asyncio.run(run())
    assert _refusals(caplog) == [
        f"bybit: Bybit refused topic(s) {refused} (error:handler not found,topic:{refused}); "
        "dropped from the subscriptions until a listing names them again"]


def test_a_connection_whose_every_topic_bybit_refuses_is_closed_and_the_venue_is_up(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The inverse endpoint's only symbol is delisted: that connection is closed for good (not
    reopened to be refused again) and the venue is up on the linear one."""
    refused = "allLiquidation.BTCUSD"

    async def run() -> None:
        async with ExchangeSimulator([BybitSim(delisted={refused})]) as exchange:
            collector = _bybit_refusing(redis_url, exchange, ["BTCUSDT", "BTCUSD"])
            async with _running(collector) as collector:
                await collector.wait_until(lambda c: len(c.plans) == 1 and c.health.state == "up")
                assert (collector.health.connections_total, collector.health.reason) == (1, "")
                assert [p.symbols for p in collector.plans] == [("BTCUSDT",)]
                sent = await exchange.emit(events("bybit", T0, 1))  # BTC
                await collector.wait_until(lambda c: c.published == len(sent) == 1)
                assert len(exchange.clients("bybit")) == 1 and collector.health.reconnects == 0

    with caplog.at_level("WARNING"):
        asyncio.run(run())
    assert len(_refusals(caplog)) == 1


def assert_alone(clients: list[SimClient]) -> SimClient:
    assert len(clients) == 1, clients
    return clients[0]


def test_a_refused_subscription_degrades_the_venue_until_the_connection_is_reopened(redis_url: str) -> None:
    """Bybit refuses an inverse topic on its linear endpoint. The connection still delivers its
    other topics, so the venue is not down, but it is not "up" either: it is degraded, and says
    what the venue answered, until that connection is reopened and subscribes cleanly."""
    spec = load_venue("bybit")
    opened: list[int] = []

    def plans(base_url: str, symbols: Any) -> list[Any]:
        def session(plan: Any) -> RefusedOnce:
            opened.append(1)
            extra = '{"op":"subscribe","args":["allLiquidation.BTCUSD"]}'
            return RefusedOnce(plan.new_session(), extra, first=len(opened) == 1)
        return [dataclasses.replace(plan, new_session=lambda plan=plan: session(plan))  # type: ignore[misc]  # a lambda with a default
                for plan in spec.plans(base_url, symbols)]

    async def run() -> None:
        async with ExchangeSimulator(["bybit"]) as exchange:
            config = CollectorConfig(venue=dataclasses.replace(spec, plans=plans), shards=SHARDS,
                                     redis=make_async_redis(redis_url), base_url=exchange.urls["bybit"],
                                     symbols=["BTCUSDT"], health_every_s=0.05, instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                await collector.wait_until(lambda c: c.health.state == "degraded")
                assert "handler not found,topic:allLiquidation.BTCUSD" in collector.health.reason
                stored = await collector.config.redis.hgetall(keys.venue_health("bybit"))
                assert stored[b"venue_errors"] == b"1"
                sent = await exchange.emit(events("bybit", T0, 2)[:1])
                await collector.wait_until(lambda c: c.published == len(sent) == 1)
                assert await exchange.drop_connections("bybit") == 1
                await collector.wait_until(lambda c: c.health.reconnects == 1
                                           and c.health.state == "up")
                assert collector.health.reason == ""

    asyncio.run(run())


@pytest.mark.parametrize(("venue", "notice", "reason"), [
    ("okx", {"event": "notice", "code": "64008", "connId": "sim",
             "msg": "The connection will soon be closed for a service upgrade. Please reconnect."}, "64008"),
    ("bitfinex", {"event": "info", "code": 20051, "msg": "Stopping. Please try to reconnect"}, "20051"),
    ("bitfinex", {"event": "info", "code": 20061, "msg": "Maintenance ended"}, "20061"),
])
def test_a_venue_announcing_a_disconnect_gets_a_new_connection_at_once(
        venue: str, notice: dict[str, Any], reason: str, redis_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """OKX sends notice 64008 before closing connections for an upgrade; Bitfinex sends info 20051
    before a restart and 20061 after maintenance (resubscribe advised). The collector opens a new
    connection, subscribed afresh, instead of waiting for the close or a silent channel."""
    async def run() -> int:
        async with ExchangeSimulator([venue]) as exchange:
            config = CollectorConfig(venue=load_venue(venue), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls[venue], health_every_s=0.05,
                                     instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                assert await exchange.send_raw(venue, json.dumps(notice)) == conns
                await collector.wait_until(lambda c: f"new connection: info {reason}" in c.health.reason
                                           or f"new connection: notice {reason}" in c.health.reason)
                await exchange.wait_subscribed(venue, conns)
                await collector.wait_until(lambda c: len(c.health.connections_up) == conns)
                sent = await exchange.emit(events(venue, T0, 3))
                await collector.wait_until(lambda c: c.published == len(sent))
                assert collector.health.reconnects == conns
                return conns

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        conns = asyncio.run(run())
    said = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "collectors.base" and reason in r.getMessage()]
    assert len(said) == conns, said
    assert all(level == "INFO" and msg.endswith("; reconnecting now") for level, msg in said), said


class Expiring(CountingSim):
    """A venue's simulator whose connections live ``lifetime_s`` (Binance: 24 h)."""

    def __init__(self, inner: Any, lifetime_s: float) -> None:
        super().__init__(inner)
        self.max_lifetime_s = lifetime_s


@pytest.mark.parametrize("venue", ["binance_usdm", "binance_coinm"])
def test_a_connection_the_venue_ends_at_its_lifetime_is_opened_again(venue: str, redis_url: str) -> None:
    """Binance ends every connection after 24 h (here 0.5 s); the collector opens a new one,
    saying the server closed it, and the liquidations after it are published."""
    async def run() -> None:
        sim = Expiring(load_sim(venue), 0.5)
        async with ExchangeSimulator([sim]) as exchange:
            config = CollectorConfig(venue=load_venue(venue), redis=make_async_redis(redis_url),
                                     shards=SHARDS, base_url=exchange.urls[venue], health_every_s=0.05,
                                     instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                ended = "closed by server (1001 connection lifetime of 0.5s reached)"
                await collector.wait_until(lambda c: ended in c.health.reason)
                await exchange.wait_subscribed(venue, conns)
                sent = await exchange.emit(events(venue, T0, 2))
                await collector.wait_until(lambda c: c.published == len(sent) == 2)

    asyncio.run(run())


@pytest.mark.parametrize("venue", ["binance_usdm", "binance_coinm"])
def test_a_connection_near_its_lifetime_is_replaced_before_the_venue_ends_it(venue: str,
                                                                             redis_url: str) -> None:
    """Binance ends connections at 24 h (here 2 s) and replays nothing: a reconnect after that
    loses what happened meanwhile. The collector opens the replacement first, and closes the old
    connection once the new one is subscribed, so a liquidation right after the old one is gone
    still reaches a subscribed connection, and is published once."""
    async def run() -> None:
        sim = Expiring(load_sim(venue), 2.0)
        spec = dataclasses.replace(load_venue(venue), max_connection_s=2.0)
        async with ExchangeSimulator([sim]) as exchange:
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05,
                                     instruments_every_s=None)
            async with _running(Collector(config)) as collector:
                conns = len(collector.plans)
                await exchange.wait_subscribed(venue, conns)
                server = exchange.venue(venue)
                await server.wait_gone(set(server.clients))
                assert exchange.subscribed(venue) == conns, "the replacements were already subscribed"
                sent = await exchange.emit(events(venue, T0, 2))
                assert len(sent) == 2
                await collector.wait_until(lambda c: c.published == 2)
                assert collector.health.reconnects == 0, collector.health.reason

    asyncio.run(run())


class Logged(logging.Handler):
    """Sets ``seen`` once a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def test_a_replacement_refused_by_the_venue_leaves_the_connection_it_replaces_up(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the replacement of a connection near its age limit is refused, the old connection
    still delivers: the venue stays up, and no reconnect is counted. Once the replacement is
    subscribed the old one closes, still with no reconnect."""
    venue = "binance_usdm"

    async def run() -> None:
        spec = dataclasses.replace(load_venue(venue), max_connection_s=0.4)
        async with ExchangeSimulator([load_sim(venue)]) as exchange:
            server, opened = exchange.venue(venue), []
            real_connect = base_module.connect  # type: ignore[attr-defined]  # patched where base looks it up

            def connect(*args: Any, **kwargs: Any) -> Any:  # the venue refuses the second one
                opened.append(args[0])
                server.refusing = server.refusing or len(opened) == 2
                return real_connect(*args, **kwargs)

            monkeypatch.setattr(base_module, "connect", connect)
            refused = Logged("unavailable (InvalidStatus")
            logging.getLogger(base_module.__name__).addHandler(refused)
            config = CollectorConfig(venue=spec, redis=make_async_redis(redis_url), shards=SHARDS,
                                     base_url=exchange.urls[venue], health_every_s=0.05,
                                     instruments_every_s=None)
            try:
                async with _running(Collector(config)) as collector:
                    [label] = [plan.label for plan in collector.plans]
                    await exchange.wait_subscribed(venue, 1)
                    first = set(server.clients)
                    await refused.seen.wait()
                    health = collector.health
                    assert (health.connections_up, health.reconnects, health.reason) == ({label}, 0, "")
                    assert health.compute_state(config.clock.now_ms()) == "up"
                    exchange.accept(venue)
                    await server.wait_gone(first)
                    await exchange.wait_subscribed(venue, 1)
                    assert (health.connections_up, health.reconnects) == ({label}, 0)
            finally:
                logging.getLogger(base_module.__name__).removeHandler(refused)

    asyncio.run(run())


def _htx_pong(message: str | bytes) -> bool:
    text = gzip.decompress(message) if isinstance(message, bytes) else message
    return bool(json.loads(text).get("op") == "pong")


def _deribit_test(message: str | bytes) -> bool:
    return bool(json.loads(message).get("method") == "public/test")


SERVER_PINGS: dict[str, Callable[[str | bytes], bool]] = {"htx": _htx_pong, "deribit": _deribit_test}
"""Venues whose server pings the client, and how the collector's answer looks."""


@pytest.mark.parametrize("venue", sorted(SERVER_PINGS))
def test_the_collector_answers_every_connection_the_venues_own_pings(venue: str, redis_url: str) -> None:
    """HTX pings with ``{"op":"ping"}`` and Deribit with ``test_request``: a client that does not
    answer is disconnected by the real venue, so each connection must answer them."""
    async def run() -> Collector:
        inner = load_sim(venue)
        inner.heartbeat_s = 0.02
        answers: dict[int, int] = {}
        enough = asyncio.Event()

        class Answering(CountingSim):
            def on_client_message(self, client: SimClient, message: str | bytes) -> list[str | bytes]:
                if SERVER_PINGS[venue](message):
                    answers[id(client)] = answers.get(id(client), 0) + 1
                    if len(answers) == conns and min(answers.values()) >= 3:
                        enough.set()
                return super().on_client_message(client, message)

        async with ExchangeSimulator([Answering(inner)]) as exchange:
            collector = Collector(CollectorConfig(
                venue=load_venue(venue), redis=make_async_redis(redis_url), shards=SHARDS,
                base_url=exchange.urls[venue], health_every_s=0.05, instruments_every_s=None))
            conns = len(collector.plans)
            async with _running(collector):
                await exchange.wait_subscribed(venue, conns)
                async with asyncio.timeout(20):  # three answers on each connection
                    await enough.wait()
        return collector

    collector = asyncio.run(run())
    assert (collector.health.reconnects, collector.health.parse_errors) == (0, 0)


def _record_backoff_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The collector's backoffs record how many attempts each delay follows (0: the first after
    a success) and wait 1 ms instead of their delay; the list fills as the test runs."""
    from shared.backoff import Backoff

    attempts: list[int] = []

    class Recording(Backoff):
        def next_delay(self) -> float:
            attempts.append(self.attempts)
            super().next_delay()
            return 0.001

    for module in (base_module, publisher_module):  # the connections' and the publisher's
        monkeypatch.setattr(module, "Backoff", Recording)
    return attempts



@pytest.mark.parametrize(("healthy_after_s", "steps"), [(0.0, [0, 0, 0]), (3600.0, [0, 1, 2])],
                         ids=["healthy-resets", "short-lived-grows"])
def test_the_reconnect_delay_starts_over_after_a_connection_that_lived_long_enough(
        healthy_after_s: float, steps: list[int], redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three drops in a row: each delay is the first step again when the dropped connection had
    been healthy for ``HEALTHY_AFTER_S``, else the delays keep growing."""
    import collectors.base as base_module

    taken = _record_backoff_attempts(monkeypatch)
    monkeypatch.setattr(base_module, "HEALTHY_AFTER_S", healthy_after_s)

    async def run() -> None:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis_url, exchange, None)) as collector:
                for drop in range(1, 4):
                    await exchange.wait_subscribed("binance_usdm", 1)
                    await collector.wait_until(lambda c: len(c.health.connections_up) == 1)
                    assert await exchange.drop_connections("binance_usdm") == 1
                    await collector.wait_until(lambda c, n=drop: c.health.reconnects == n)  # type: ignore[misc]
                await collector.wait_until(lambda c: len(c.health.connections_up) == 1)

    asyncio.run(run())
    assert taken == steps


def test_without_a_spool_what_arrives_between_failed_publishes_waits_in_memory_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis down, no spool: a failed batch is retried while newer liquidations queue behind it;
    every failed retry keeps both, and all are published once, in order. After the recovery, the
    next outage's retries start again from the first delay."""
    steps = _record_backoff_attempts(monkeypatch)

    async def run(redis: RestartableRedis) -> list[Liquidation]:
        async with ExchangeSimulator(["binance_usdm"]) as exchange:
            async with _running(_collector(redis.url, exchange, None)) as collector:
                sent = await _through_an_outage(exchange, collector, redis.stop, 2, 2,
                                                lambda c: c.health.events == 4 and len(steps) >= 1)
                sent += await exchange.emit(events("binance_usdm", T0 + 120_000, 2))
                await collector.wait_until(lambda c: c.health.events == 6)
                queued = len(steps)
                await collector.wait_until(lambda c: len(steps) > queued)  # failed with them queued
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 6)
                redis.stop()
                failed_before = len(steps)
                sent += await exchange.emit(events("binance_usdm", T0 + 180_000, 1))
                await collector.wait_until(lambda c: len(steps) > failed_before)
                assert steps[failed_before] == 0, "a new outage starts from the first delay"
                redis.start_again()
                await collector.wait_until(lambda c: c.published == 7)
            return sent

    with RestartableRedis(tmp_path / "redis") as redis:
        _assert_published_once_in_order(redis.url, asyncio.run(run(redis)))
