"""The publisher: its stop with liquidations both on disk and in memory (no Redis needed), and
a batch it sends again after Redis ran it (a real Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import msgspec
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from collectors.publisher import Publisher
from shared import codec, keys
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.significance import SignificanceRules, publication
from shared.streams import PUBLISH_LUA, publish
from tests.factories import liq
from tests.redisproxy import CuttingProxy
from tests.redistypes import Entries


def _liqs(n: int, start: int = 0) -> list[Liquidation]:
    return [liq(event_id=f"e{i}", timestamp_ms=1_700_000_000_000 + i) for i in range(start, start + n)]


def test_a_stop_moves_the_queue_behind_what_the_spool_holds_and_leaves_it_on_disk(tmp_path: Path) -> None:
    """The queue holds liquidations beside a waiting spool only after the disk refused a write;
    at stop they go to the spool, behind its lines, for the next start (nothing stays in memory)."""
    async def run() -> list[str]:
        async def nothing() -> None:
            return None

        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never reached: stop is set
        publisher = Publisher("okx", client, 4, nothing, tmp_path)
        assert publisher.spool is not None
        publisher.spool.append(_liqs(2))
        for item in _liqs(3, start=2):
            publisher.queue.put_nowait(item)
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(publisher.run(stop), 5)
        assert publisher.queue.empty()
        await client.aclose()
        return [x.event_id for x in publisher.spool.waiting()]

    assert asyncio.run(run()) == [f"e{i}" for i in range(5)]


class Killed(Exception):
    """Stands for the collector killed at that point (SIGKILL, the OOM killer)."""


def _published_ids(r: syncredis.Redis) -> list[str]:
    return [codec.decode_liquidation(fields[b"d"]).event_id
            for stream in keys.event_streams(4) for _, fields in cast(Entries, r.xrange(stream))]


async def _nothing() -> None:
    return None


@pytest.mark.integration
def test_a_collector_killed_after_publishing_its_spool_publishes_it_once(
        redis_url: str, r: syncredis.Redis, tmp_path: Path) -> None:
    """Killed between Redis taking the spool's batch and the spool recording it: the next start
    sends that batch again, and the publisher's mark keeps Redis from adding it twice."""
    async def run() -> int:
        client = make_async_redis(redis_url)
        first = Publisher("okx", client, 4, _nothing, tmp_path)
        assert first.spool is not None
        first.spool.append(_liqs(7))

        def killed() -> None:
            raise Killed

        first.spool.commit = killed  # type: ignore[method-assign]
        with pytest.raises(Killed):
            await asyncio.wait_for(first.run(asyncio.Event()), 10)
        assert sorted(_published_ids(r)) == sorted(f"e{i}" for i in range(7))
        progress = asyncio.Event()

        async def progressed() -> None:
            progress.set()

        restarted = Publisher("okx", client, 4, progressed, tmp_path)
        assert restarted.spool is not None and restarted.spool.pending == 7
        restarted.put(_liqs(2, start=7))  # behind the spool's lines
        stop = asyncio.Event()
        task = asyncio.create_task(restarted.run(stop))
        while restarted.spool.pending:
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        return restarted.published

    assert asyncio.run(run()) == 9
    assert sorted(_published_ids(r)) == sorted(f"e{i}" for i in range(9))


@pytest.mark.integration
def test_a_batch_whose_reply_was_lost_is_published_once(redis_url: str, r: syncredis.Redis,
                                                         tmp_path: Path) -> None:
    """Redis ran the batch and the connection died before its reply: the publisher retries
    it (from its spool) and the liquidations are in the streams once each."""
    async def run() -> int:
        r.script_load(PUBLISH_LUA)  # else the lost reply may be NOSCRIPT's
        proxy = CuttingProxy(redis_url)
        client = make_async_redis(await proxy.start())
        assert await client.ping()
        progress = asyncio.Event()

        async def progressed() -> None:
            progress.set()

        publisher = Publisher("okx", client, 4, progressed, tmp_path)
        proxy.lose_reply = True
        publisher.put(_liqs(5))
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        await asyncio.wait_for(progress.wait(), 10)  # the failed attempt
        assert proxy.cut and publisher.published == 0
        assert len(_published_ids(r)) == 5  # Redis ran it
        proxy.cut = False
        while publisher.published < 5:  # the retry, from the spool
            progress.clear()
            await asyncio.wait_for(progress.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        proxy.server.close()
        return publisher.published

    assert asyncio.run(run()) == 5
    assert sorted(_published_ids(r)) == sorted(f"e{i}" for i in range(5))


@pytest.mark.integration
def test_the_publisher_keeps_each_stream_to_its_maxlen(redis_url: str, r: syncredis.Redis) -> None:
    """``LIQ_STREAM_MAXLEN`` reaches the publisher through the collector's config, and XADD
    trims with it: 1,000 liquidations into a stream kept to about 100 entries leave its newest
    (MAXLEN ~ trims whole nodes of at most 100 entries), not all 1,000."""
    from collectors import load_venue
    from collectors.base import Collector, CollectorConfig

    async def run() -> None:
        client = make_async_redis(redis_url)
        config = CollectorConfig(venue=load_venue("okx"), redis=client, shards=4, base_url="ws://127.0.0.1:1",
                                 stream_maxlen=100)
        collector = Collector(config)
        publisher = collector.publisher
        assert publisher.maxlen == 100
        publisher.put(_liqs(1000))
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        await asyncio.wait_for(collector.wait_until(lambda c: c.publisher.published == 1000), 30)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()

    asyncio.run(run())
    ids = _published_ids(r)
    assert 100 <= len(ids) < 200
    assert ids == [f"e{i}" for i in range(1000 - len(ids), 1000)]


def _sized(usd: list[float]) -> list[Liquidation]:
    """One liquidation per amount, in order (BTCUSDT at a price of 50,000)."""
    return [liq(event_id=f"s{i}", price=50_000.0, quantity=v / 50_000.0, timestamp_ms=1_700_000_000_000 + i)
            for i, v in enumerate(usd)]


def _significant_ids(r: syncredis.Redis) -> list[str]:
    return [codec.decode_liquidation(fields[b"d"]).event_id
            for _, fields in cast(Entries, r.xrange(keys.SIGNIFICANT_STREAM))]


def test_publication_copies_each_significant_liquidation_right_after_its_event() -> None:
    batch = _sized([99_999.0, 100_000.0, 5_000.0, 250_000.0])
    shard = keys.event_stream_of("BTCUSDT", 4)
    assert [(s, x.event_id) for s, x in publication(batch, 4, SignificanceRules())] == [
        (shard, "s0"), (shard, "s1"), (keys.SIGNIFICANT_STREAM, "s1"), (shard, "s2"),
        (shard, "s3"), (keys.SIGNIFICANT_STREAM, "s3")]
    by_symbol = SignificanceRules(by_symbol={"BTCUSDT": 200_000.0})
    assert [x.event_id for s, x in publication(batch, 4, by_symbol) if s == keys.SIGNIFICANT_STREAM] == ["s3"]
    unknown = msgspec.structs.replace(batch[3], notional_known=False)
    assert publication([unknown], 4, SignificanceRules()) == [(shard, unknown)]


@pytest.mark.integration
def test_a_longer_batch_sent_again_adds_its_new_events_and_copies_once(redis_url: str,
                                                                      r: syncredis.Redis) -> None:
    """The mark skips the prefix Redis ran before: copies follow their events, so the pairs of
    the shorter batch are the longer one's prefix, and no copy is added twice or lost."""
    batch = _sized([150_000.0, 1_000.0, 2_000.0, 300_000.0, 120_000.0, 10.0, 400_000.0])
    rules = SignificanceRules()

    async def run() -> list[int]:
        client = make_async_redis(redis_url)
        mark = keys.publisher_mark("okx")
        first = await publish(client, publication(batch[:4], 4, rules), 1000, mark)
        again = await publish(client, publication(batch, 4, rules), 1000, mark)
        await client.aclose()
        return [len(first), len(again)]

    assert asyncio.run(run()) == [4 + 2, 3 + 2]
    assert sorted(_published_ids(r)) == sorted(x.event_id for x in batch)
    assert _significant_ids(r) == ["s0", "s3", "s4", "s6"]


@pytest.mark.integration
def test_the_collectors_threshold_decides_what_is_copied(redis_url: str, r: syncredis.Redis) -> None:
    """``LIQ_SIGNIFICANT_USD*`` reach the publisher through the collector's config."""
    from collectors import load_venue
    from collectors.base import Collector, CollectorConfig

    async def run() -> None:
        client = make_async_redis(redis_url)
        config = CollectorConfig(venue=load_venue("okx"), redis=client, shards=4, base_url="ws://127.0.0.1:1",
                                 significance=SignificanceRules(default_usd=50_000.0))
        collector = Collector(config)
        collector.publisher.put(_sized([49_999.0, 50_000.0, 75_000.0]))
        stop = asyncio.Event()
        task = asyncio.create_task(collector.publisher.run(stop))
        await asyncio.wait_for(collector.wait_until(lambda c: c.publisher.published == 3), 30)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()

    asyncio.run(run())
    assert sorted(_published_ids(r)) == ["s0", "s1", "s2"]
    assert _significant_ids(r) == ["s1", "s2"]
