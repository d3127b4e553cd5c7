"""End to end: simulated exchanges → collectors over real WebSockets → Redis Streams → detector,
aggregator and writer → Redis keys and PostgreSQL rows, checked exactly against what the
simulator sent.

The market: a cross-venue BTC cascade (9 liquidations on three venues within 16 s, $1.17M),
then, two minutes later, three small ETH liquidations (which also move event time past the
cascade's quiet period, so its end is published).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from typing import Any, cast

import psycopg
import pytest
import redis as syncredis

from aggregator.service import Aggregator, make_consumer
from collectors import load_venue
from collectors.base import Collector, CollectorConfig
from collectors.sim.server import ExchangeSimulator
from detector.config import DetectorSettings
from detector.service import Detector
from shared import codec, keys
from shared.clock import SYSTEM_CLOCK, FakeClock
from shared.market import MarketEvent
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from tests.redistypes import Entries, Hash
from writer.config import WriterSettings
from writer.migrate import migrate_dsn
from writer.service import Writer

pytestmark = pytest.mark.e2e
SHARDS = 4
VENUES = ("binance_usdm", "bybit", "okx")


def market(t0: int) -> list[MarketEvent]:
    cascade = [MarketEvent(venue=VENUES[i % 3], base="BTC", side="long", price=67_300.0 - 40 * i,
                           notional_usd=(90_000.0, 150_000.0, 120_000.0)[i % 3], timestamp_ms=t0 + 2_000 * i)
               for i in range(9)]
    quiet = [MarketEvent(venue=VENUES[i], base="ETH", side="short", price=3_450.0 + i, notional_usd=12_000.0,
                         timestamp_ms=t0 + 120_000 + 1_500 * i) for i in range(3)]
    return cascade + quiet


async def collect(redis_url: str, t0: int) -> list[Liquidation]:
    """Run the three collectors until every liquidation the simulator sent is published (in the
    market's order, so the detector's input, and so its messages, are the same on every run)."""
    async with ExchangeSimulator(list(VENUES)) as exchange:
        redis = make_async_redis(redis_url)
        collectors = [Collector(CollectorConfig(
            venue=dataclasses.replace(load_venue(v), heartbeat_s=0.2), redis=redis, shards=SHARDS,
            base_url=exchange.urls[v], symbols=list(load_venue(v).default_symbols))) for v in VENUES]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in collectors]
        async with asyncio.timeout(30):
            for venue, c in zip(VENUES, collectors, strict=True):
                await exchange.wait_subscribed(venue, len(c.plans))
            sent: list[Liquidation] = []
            by_venue = dict(zip(VENUES, collectors, strict=True))
            for event in market(t0):  # one at a time, published before the next: the streams
                sent += await exchange.emit([event])  # hold them in time order, run after run
                expected = sum(1 for s in sent if s.exchange == event.venue)
                await by_venue[event.venue].wait_until(lambda col, n=expected: col.published == n)  # type: ignore[misc]
        stop.set()
        await asyncio.gather(*tasks)
        await redis.aclose()
    return sent


async def consume(redis_url: str, pg_dsn: str) -> dict[str, int]:
    redis = make_async_redis(redis_url)
    try:
        clock = FakeClock(SYSTEM_CLOCK.now_ms())
        detector = Detector(redis, DetectorSettings(shards=SHARDS), clock=clock)
        aggregator = make_consumer(redis, SHARDS, Aggregator(redis), name="e2e")
        writer = Writer(redis, WriterSettings(shards=SHARDS, pg_dsn=pg_dsn, batch_age_ms=0), pg_dsn)
        handled = {"detector": await detector.run_until_idle()}
        # What the live ticker does once a minute has passed without a BTC liquidation: the
        # BTC shard's event time, carried forward by the clock, passes the quiet period.
        clock.advance(60.0)
        handled["ended"] = await detector.tick()
        handled["aggregator"] = await aggregator.run_until_idle()
        handled["writer"] = await writer.run_until_idle()
        await writer.aclose()
        return handled
    finally:
        await redis.aclose()


def redis_hashes(client: syncredis.Redis, pattern: str) -> dict[str, dict[str, str]]:
    return {k.decode(): {f.decode(): v.decode() for f, v in cast(Hash, client.hgetall(k)).items()}
            for k in client.scan_iter(match=pattern, count=1000)}


def test_simulator_to_every_storage_level(redis_url: str, pg_dsn: str) -> None:
    migrate_dsn(pg_dsn, "native")
    t0 = SYSTEM_CLOCK.now_ms() - 600_000
    sent = asyncio.run(collect(redis_url, t0))
    assert len(sent) == 12
    btc = sorted((s for s in sent if s.symbol == "BTCUSDT"), key=lambda s: s.timestamp_ms)
    handled = asyncio.run(consume(redis_url, pg_dsn))
    client = syncredis.Redis.from_url(redis_url)
    try:
        # L2 input: every liquidation once in the stream of its symbol's shard.
        streamed = [codec.decode_liquidation(f[b"d"]) for s in keys.event_streams(SHARDS)
                    for _i, f in cast(Entries, client.xrange(s))]
        assert sorted(x.event_id for x in streamed) == sorted(s.event_id for s in sent)
        assert handled["detector"] == handled["aggregator"] == 12
        check_aggregates(client, sent)
        cascades = [codec.decode_cascade(f[b"d"])
                    for _i, f in cast(Entries, client.xrange(keys.CASCADE_STREAM))]
        # Started at the fifth liquidation, already in the top band (so no escalation); ended with
        # all nine.
        assert [(c.phase, c.count, c.band) for c in cascades] == [
            ("start", 5, "extreme"), ("end", 9, "extreme")]
        assert {c.cascade_id for c in cascades} == {cascades[0].cascade_id}
        end = cascades[-1]
        assert (end.symbol, end.count, sorted(end.venues), end.cross_exchange) == (
            "BTCUSDT", 9, sorted(VENUES), True)
        assert end.total_notional_usd == pytest.approx(sum(s.notional_usd for s in btc))
        members = [codec.decode_member(f[b"d"])
                   for _i, f in cast(Entries, client.xrange(keys.CASCADE_MEMBER_STREAM))]
        assert sorted(m.liquidation.event_id for m in members) == sorted(s.event_id for s in btc)
        # The writer reads the collectors' copies of the significant liquidations, not the shards.
        copies = [codec.decode_liquidation(f[b"d"]).event_id
                  for _i, f in cast(Entries, client.xrange(keys.SIGNIFICANT_STREAM))]
        assert sorted(copies) == sorted(s.event_id for s in sent if s.notional_usd >= 100_000)
        assert handled["writer"] == len(copies) + len(cascades) + len(members) == 6 + 2 + 9
        assert handled["ended"] == 1
        status = redis_hashes(client, keys.cascade_status("BTCUSDT"))[keys.cascade_status("BTCUSDT")]
        assert status["state"] == "idle" and status["cascade_id"] == end.cascade_id  # the last one
    finally:
        client.close()
    check_database(pg_dsn, btc, end.cascade_id)


def check_aggregates(client: syncredis.Redis, sent: list[Liquidation]) -> None:
    buckets = redis_hashes(client, "liq:agg:*")
    levels = redis_hashes(client, "liq:levels:*")
    for name, hashes in (("buckets", buckets), ("levels", levels)):
        by_symbol: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for key, fields in hashes.items():
            symbol = key.split(":")[2]
            by_symbol[symbol][0] += int(fields["count"])
            by_symbol[symbol][1] += float(fields["value_usd"])
        for symbol in ("BTCUSDT", "ETHUSDT"):
            mine = [s for s in sent if s.symbol == symbol]
            assert by_symbol[symbol][0] == len(mine), name
            assert by_symbol[symbol][1] == pytest.approx(sum(s.notional_usd for s in mine)), name
    for key in [*buckets, *levels]:
        assert 0 < client.ttl(key) <= keys.L2_TTL_SECONDS


def check_database(dsn: str, btc: list[Liquidation], cascade_id: str) -> None:
    with psycopg.connect(dsn) as conn:
        stored = conn.execute("SELECT event_id, is_cascade, cascade_id, value_usd"
                              " FROM liquidations_significant ORDER BY time").fetchall()
        # Every BTC liquidation is a cascade member (stored whatever its size); ETH ones are small.
        assert stored == [(s.event_id, True, cascade_id, s.notional_usd) for s in btc]
        row: Any = conn.execute("SELECT phase, event_count, cross_exchange FROM cascade_events").fetchall()
        assert row == [("end", 9, True)]
        hourly = conn.execute("SELECT sum(event_count), sum(cascade_event_count) FROM liquidations_hourly"
                              ).fetchone()
        assert hourly == (9, 9)
        assert conn.execute("SELECT sum(cascade_count) FROM liquidation_cascades").fetchone() == (1,)
