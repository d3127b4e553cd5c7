"""Two collectors of one venue publishing into one Redis (a second ``liq collect okx`` beside
``liq up``'s, a compose service scaled to 2): each says so once, ``liq status --check`` names
both while it lasts, and it ends when one stops. Real Redis, the collectors' own health writes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from collectors import load_venue
from collectors.base import Collector, CollectorConfig
from shared import keys
from shared.clock import FakeClock
from shared.redisconn import make_async_redis
from shared.status import collect_status, problems, render
from shared.venue_health import STALE_HEALTH_MS

pytestmark = pytest.mark.integration


def test_two_collectors_of_a_venue_are_named_until_one_stops(redis_url: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)  # status reads the real clock

    async def run() -> tuple[list[str], list[str], str]:
        redis = make_async_redis(redis_url)

        def collector() -> Collector:
            return Collector(CollectorConfig(venue=load_venue("okx"), redis=redis, shards=4,
                                             base_url="ws://127.0.0.1:1", clock=clock))

        first, second = collector(), collector()
        for _ in range(3):  # each writes its health once a second, reading who wrote last
            await first._write_health()
            await second._write_health()
            clock.advance(1)
        both = problems(collect_status(redis_url, None, 4))
        text = render(collect_status(redis_url, None, 4))
        for _ in range(STALE_HEALTH_MS // 1000 + 2):  # the second stopped: only the first writes
            await first._write_health()
            clock.advance(1)
        await redis.aclose()
        ids = [first.health.collector_id, second.health.collector_id]
        assert first.health.twin == "" and second.health.twin == ids[0]
        return both, ids, text

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        both, (first_id, second_id), text = asyncio.run(run())
    # the hash's writer first (the second wrote last), then the twin it saw
    assert both == [f"venue okx: two collectors publish it ({second_id} and {first_id}): the aggregator "
                    "counts what both receive twice"]
    assert f"TWO COLLECTORS: {second_id} and {first_id}" in text
    twin_lines = [r.getMessage() for r in caplog.records if "collector of this venue" in r.getMessage()]
    assert twin_lines == [
        f"okx: another collector of this venue ({first_id}) publishes into the same Redis as this one "
        f"({second_id}): the aggregator counts the liquidations both receive twice; stop one",
        f"okx: another collector of this venue ({second_id}) publishes into the same Redis as this one "
        f"({first_id}): the aggregator counts the liquidations both receive twice; stop one",
        "okx: no other collector of this venue publishes into this Redis any more",
    ]
    assert problems(collect_status(redis_url, None, 4)) == []


def test_a_health_hash_another_tool_wrote_badly_is_overwritten_and_the_reports_go_on(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Values no collector writes in ``liq:venue:okx`` (``updated_ms`` not a number, bytes that
    are not UTF-8): the collector reads such a time as absent, says so once and goes on
    writing its health each second. It used to stop writing for good (the venue then showed as
    ``stopped``)."""

    writes: list[tuple[str | bytes, str | bytes, str]] = [  # collector, updated_ms, the writer read
        ("a-tool", "yesterday", "a-tool"), ("b-tool", "1.5", "b-tool"),
        (b"\xff-tool", "7", "\ufffd-tool"), ("c-tool", b"\xff", "c-tool")]

    def saw(writer: str) -> Callable[[Collector], bool]:
        return lambda c: writer in c.twins.last_seen

    async def run() -> tuple[dict[str, int], dict[Any, Any], str]:
        redis = make_async_redis(redis_url)
        collector = Collector(CollectorConfig(venue=load_venue("okx"), redis=redis, shards=4,
                                              base_url="ws://127.0.0.1:1", health_every_s=0.01))
        key, stop = keys.venue_health("okx"), asyncio.Event()
        loop = asyncio.create_task(collector._health_loop(stop))
        try:
            async with asyncio.timeout(10):
                for writer, updated, seen in writes:  # each read once the one before is seen
                    await redis.hset(key, mapping={"collector": writer, "updated_ms": updated})
                    await collector.wait_until(saw(seen))
        finally:
            stop.set()
            await asyncio.wait_for(loop, 10)
        fields = await redis.hgetall(key)
        await redis.aclose()
        return collector.twins.last_seen, fields, collector.health.collector_id

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        last_seen, fields, own_id = asyncio.run(run())
    assert last_seen == {"a-tool": 0, "b-tool": 0, "\ufffd-tool": 7, "c-tool": 0}
    assert fields[b"collector"] == own_id.encode() and fields[b"updated_ms"].isdigit()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "okx: liq:venue:okx holds updated_ms 'yesterday', not a time in ms (another tool writing it?): "
        "read as absent and overwritten; logged once"]


def test_a_health_key_of_another_type_is_logged_once_and_once_when_it_is_written_again(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Another program SET ``liq:venue:okx`` to a string: every health write fails with
    WRONGTYPE, which the loop kept to itself (liq status showed the venue not running, the log
    nothing). One error line names the key; one line says when the writes work again."""
    async def run() -> dict[Any, Any]:
        redis = make_async_redis(redis_url)
        collector = Collector(CollectorConfig(venue=load_venue("okx"), redis=redis, shards=4,
                                              base_url="ws://127.0.0.1:1"))
        key = keys.venue_health("okx")
        await redis.set(key, "not a hash")
        for _ in range(3):  # the loop's steps, a second apart live: refused each time
            await collector._health_step()
        await redis.delete(key)
        for _ in range(2):
            await collector._health_step()
        fields = await redis.hgetall(key)
        await redis.aclose()
        return fields

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        fields = asyncio.run(run())
    assert fields[b"state"] == b"connecting"
    lines = [r.getMessage() for r in caplog.records if "liq:venue:okx" in r.getMessage()]
    assert lines == [
        "okx: Redis refuses the health write to liq:venue:okx (it holds another type, not a hash): "
        "liq status cannot show this venue; delete or rename that key",
        "okx: health written to liq:venue:okx again"]


def test_a_health_write_refused_for_another_reason_is_logged_once_too(
        redis62_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis out of memory (``maxmemory`` reached, ``noeviction``) refuses each health write
    of a venue that is up with the same OOM error: one line while it lasts, naming the error,
    not one per second because redis-py's wording of a pipeline's error quotes the write's
    fields (``silent_s`` changes at each write), and not the remedy of a key of another type.
    The test's own server (the 6.2 one), whose memory limit it lowers."""
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)

    async def run() -> None:
        redis = make_async_redis(redis62_url)
        collector = Collector(CollectorConfig(venue=load_venue("okx"), redis=redis, shards=4,
                                              base_url="ws://127.0.0.1:1", clock=clock))
        collector.health.connections_total = 1
        collector.health.connected("c0", clock.now_ms())
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", 1)
        for _ in range(3):  # the loop's steps, a second apart
            await collector._health_step()
            clock.advance(1)
        await redis.config_set("maxmemory", 0)
        await collector._health_step()
        await redis.aclose()

    with caplog.at_level(logging.INFO, logger="collectors.base"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if "health" in r.getMessage()]
    assert lines == [
        "okx: Redis refuses the health write to liq:venue:okx (OutOfMemoryError: command not allowed "
        "when used memory > 'maxmemory'.): liq status cannot show this venue",
        "okx: health written to liq:venue:okx again"]
