"""The shared consumer loop against a real Redis: ack only after the side effect, retries,
dead letters, reclaiming from a dead consumer, until-idle draining."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from unittest import mock

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from redis.typing import StreamIdT

from shared import codec, keys, servers
from shared.backoff import Backoff
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.status import redis_status, render
from shared.streams import PUBLISH_LUA, Handler, Message, SinkRetry, StreamConsumer, publish
from tests.factories import liq
from tests.redisproxy import CuttingProxy
from tests.redistypes import Entries, ReadGroup

pytestmark = pytest.mark.integration
STREAM = keys.event_stream(0)


def _consumer(client: aioredis.Redis, handler: Handler[Liquidation], name: str = "c1",
              **kw: Any) -> StreamConsumer[Liquidation]:
    return StreamConsumer(redis=client, group="g", consumer=name, streams=[STREAM],
                          decode=codec.decode_liquidation, handler=handler, component="test", **kw)


async def _seed(url: str, n: int) -> list[Liquidation]:
    client = make_async_redis(url)
    items = [liq(timestamp_ms=1_700_000_000_000 + i, quantity=1 + i) for i in range(n)]
    await publish(client, [(STREAM, x) for x in items], keys.EVENT_STREAM_MAXLEN)
    await client.aclose()
    return items


def _pending(url: str) -> int:
    info = syncredis.Redis.from_url(url).xpending(STREAM, "g")
    return int(info["pending"])


@pytest.mark.parametrize("protocol", ["", "?protocol=2", "?protocol=3"])
def test_until_idle_handles_every_entry_once_and_acks(redis_url: str, protocol: str) -> None:
    """Whatever the protocol (RESP3 answers XREADGROUP with a map, RESP2 with a list)."""
    async def run() -> list[Liquidation]:
        sent = await _seed(redis_url, 1234)
        seen: list[Liquidation] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            seen.extend(m.value for m in batch)

        client = make_async_redis(redis_url + protocol)
        consumer = _consumer(client, handler, count=500)
        assert await consumer.run_until_idle() == 1234
        assert await consumer.run_until_idle() == 0
        await client.aclose()
        assert seen == sent
        return seen

    asyncio.run(run())
    assert _pending(redis_url) == 0


def test_failed_handler_acks_nothing_and_the_retry_sees_the_same_entries(redis_url: str) -> None:
    async def run() -> None:
        await _seed(redis_url, 10)
        calls: list[int] = []

        async def flaky(batch: list[Message[Liquidation]]) -> None:
            calls.append(len(batch))
            if len(calls) == 1:
                raise SinkRetry("database down")

        client = make_async_redis(redis_url)
        consumer = _consumer(client, flaky)
        with pytest.raises(SinkRetry):
            await consumer.run_until_idle()
        assert _pending(redis_url) == 10
        consumer._pending_first = True
        assert await consumer.run_until_idle() == 10
        await client.aclose()
        assert calls == [10, 10]

    asyncio.run(run())
    assert _pending(redis_url) == 0


def _user_who_may_not_xack(redis_url: str, r: syncredis.Redis) -> str:
    """The URL of a Redis user ``acker`` who may do anything but XACK (a real XACK failure,
    NOPERM); ``r.acl_setuser("acker", commands=["+xack"])`` lets it ack again."""
    r.acl_setuser("acker", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                  commands=["+@all", "-xack"])
    return redis_url.replace("redis://", "redis://acker:pw@")


def test_an_entry_committed_but_not_acked_is_acked_without_a_second_side_effect(
        redis_url: str, r: syncredis.Redis) -> None:
    """A real XACK failure: the consumer's Redis user may not XACK (NOPERM) for one attempt."""
    url = _user_who_may_not_xack(redis_url, r)

    async def run() -> list[int]:
        await _seed(redis_url, 6)
        calls: list[int] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            calls.append(len(batch))

        client = make_async_redis(url)
        consumer = _consumer(client, handler)
        with pytest.raises(syncredis.exceptions.NoPermissionError):
            await consumer.run_until_idle()
        assert _pending(redis_url) == 6
        r.acl_setuser("acker", commands=["+xack"])
        assert await consumer.run_until_idle() == 0  # nothing handled again, all acked
        assert consumer._done_unacked == set(), "acked at last: no longer remembered"
        await _seed(redis_url, 2)
        assert await consumer.run_until_idle() == 2
        await client.aclose()
        return calls

    try:
        assert asyncio.run(run()) == [6, 2]
    finally:
        r.acl_deluser("acker")
    assert _pending(redis_url) == 0


def test_entries_whose_failed_xack_reached_redis_are_forgotten_once_nothing_is_pending(
        redis_url: str, r: syncredis.Redis) -> None:
    """An XACK whose reply was lost after Redis ran it (or entries another consumer claimed and
    acked) leaves entries remembered that are never delivered again: once this consumer's pending
    list reads empty, none of them can come back, so they are forgotten (else a long-running
    consumer keeps up to a batch of ids per lost reply for ever)."""
    url = _user_who_may_not_xack(redis_url, r)

    async def run() -> list[int]:
        await _seed(redis_url, 6)
        calls: list[int] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            calls.append(len(batch))

        client = make_async_redis(url)
        consumer = _consumer(client, handler)
        with pytest.raises(syncredis.exceptions.NoPermissionError):
            await consumer.run_until_idle()
        assert len(consumer._done_unacked) == 6
        ids = [entry_id for entry_id, _ in cast(Entries, r.xrange(STREAM))]
        assert r.xack(STREAM, "g", *ids) == 6  # the lost reply's XACK did reach Redis
        r.acl_setuser("acker", commands=["+xack"])
        assert await consumer.run_until_idle() == 0
        assert consumer._done_unacked == set(), "none of them can be delivered again"
        await client.aclose()
        return calls

    try:
        assert asyncio.run(run()) == [6]
    finally:
        r.acl_deluser("acker")
    assert _pending(redis_url) == 0


def test_an_entry_the_handler_can_never_process_is_isolated_and_dead_lettered(
        redis_url: str, r: syncredis.Redis) -> None:
    """The handler commits a batch whole or raises; one bad entry among 10 costs only itself."""
    async def run() -> tuple[list[Liquidation], list[int], StreamConsumer[Liquidation]]:
        sent = await _seed(redis_url, 10)
        committed: list[Liquidation] = []
        calls: list[int] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            calls.append(len(batch))
            if any(m.value.quantity == 7 for m in batch):
                raise ZeroDivisionError("a bug this entry triggers")
            committed.extend(m.value for m in batch)

        client = make_async_redis(redis_url)
        consumer = _consumer(client, handler)
        assert await consumer.run_until_idle() == 9
        await client.aclose()
        assert sorted(committed, key=lambda x: x.quantity) == [x for x in sent if x.quantity != 7]
        return sent, calls, consumer

    sent, calls, consumer = asyncio.run(run())
    assert calls == [10, 5, 5, 2, 1, 1, 3]  # halves until the 7th entry is alone
    assert consumer.stats.dead_lettered == 1 and _pending(redis_url) == 0
    (_, fields), = cast(Entries, r.xrange(keys.dead_letter_stream(STREAM)))
    assert fields[b"reason"] == b"ZeroDivisionError: a bug this entry triggers"
    assert fields[b"stage"] == b"handle" and fields[b"group"] == b"g"
    assert codec.decode_liquidation(fields[b"d"]) == sent[6]
    report = redis_status(r, shards=1)
    (dead,) = report["dead_letters"]
    assert dead == {"stream": keys.dead_letter_stream(STREAM), "length": 1, "last_id": dead["last_id"],
                    "last_group": "g", "last_stage": "handle",
                    "last_reason": "ZeroDivisionError: a bug this entry triggers"}
    assert (f"  {keys.dead_letter_stream(STREAM):<24} len=1        last: g handle: ZeroDivisionError: a bug "
            "this entry triggers") in render(report).splitlines()


def test_a_server_failure_is_never_taken_for_bad_data(redis_url: str, r: syncredis.Redis) -> None:
    async def run() -> None:
        await _seed(redis_url, 4)

        async def down(batch: list[Message[Liquidation]]) -> None:
            raise SinkRetry("database down")

        client = make_async_redis(redis_url)
        consumer = _consumer(client, down)
        with pytest.raises(SinkRetry):
            await consumer.run_until_idle()
        await client.aclose()
        assert consumer.stats.dead_lettered == 0

    asyncio.run(run())
    assert _pending(redis_url) == 4
    assert r.exists(keys.dead_letter_stream(STREAM)) == 0


def test_a_pending_entry_trimmed_before_it_was_processed_is_dead_lettered_with_its_id(
        redis_url: str, r: syncredis.Redis) -> None:
    async def run() -> StreamConsumer[Liquidation]:
        await _seed(redis_url, 3)

        async def down(batch: list[Message[Liquidation]]) -> None:
            raise SinkRetry("database down")

        async def fine(batch: list[Message[Liquidation]]) -> None:
            raise AssertionError("a trimmed entry has nothing to handle")

        client = make_async_redis(redis_url)
        with pytest.raises(SinkRetry):
            await _consumer(client, down).run_until_idle()
        await client.xtrim(STREAM, maxlen=0)  # MAXLEN caught up with a consumer that was down
        consumer = _consumer(client, fine)
        assert await consumer.run_until_idle() == 0
        await client.aclose()
        return consumer

    consumer = asyncio.run(run())
    assert consumer.stats.dead_lettered == 3 and _pending(redis_url) == 0
    dead = cast(Entries, r.xrange(keys.dead_letter_stream(STREAM)))
    assert [f[b"reason"] for _, f in dead] == [
        b"stream entry was deleted (trimmed by MAXLEN) before it was processed"] * 3
    assert all(f[b"stage"] == b"decode" and b"d" not in f for _, f in dead)


def test_claiming_a_trimmed_entry_on_redis_62_dead_letters_it_once_with_its_id(redis62_url: str) -> None:
    """Redis 6.2's XAUTOCLAIM answers nil, without the id, for a pending entry that was trimmed."""
    async def run() -> StreamConsumer[Liquidation]:
        sent = await _seed(redis62_url, 3)
        client = make_async_redis(redis62_url)

        async def crash(batch: list[Message[Liquidation]]) -> None:
            raise SinkRetry("process died mid-batch")

        with pytest.raises(SinkRetry):
            await _consumer(client, crash, name="dead").run_until_idle()
        first_id = cast(Entries, await client.xrange(STREAM, count=1))[0][0]
        await client.xdel(STREAM, first_id)
        got: list[Liquidation] = []

        async def ok(batch: list[Message[Liquidation]]) -> None:
            got.extend(m.value for m in batch)

        alive = _consumer(client, ok, name="alive", claim_idle_ms=0)
        assert await alive.run_until_idle() == 2
        assert got == sent[1:]
        dead = cast(Entries, await client.xrange(keys.dead_letter_stream(STREAM)))
        assert [f[b"source_id"] for _, f in dead] == [first_id]
        await client.aclose()
        return alive

    alive = asyncio.run(run())
    assert alive.stats.dead_lettered == 1 and _pending(redis62_url) == 0


def test_run_retries_with_backoff_until_the_sink_recovers(redis_url: str) -> None:
    async def run() -> None:
        await _seed(redis_url, 7)
        stop = asyncio.Event()
        attempts = 0
        stored: list[Liquidation] = []

        async def sink(batch: list[Message[Liquidation]]) -> None:
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise SinkRetry("still down")
            stored.extend(m.value for m in batch)
            stop.set()

        client = make_async_redis(redis_url)
        consumer = _consumer(client, sink, block_ms=50)
        consumer.backoff.base_s = 0.001
        await asyncio.wait_for(consumer.run(stop), timeout=30)
        await client.aclose()
        assert attempts == 3 and len(stored) == 7 and consumer.stats.retries == 2

    asyncio.run(run())
    assert _pending(redis_url) == 0


def test_undecodable_entry_is_dead_lettered_and_the_rest_processed(
        redis_url: str, r: syncredis.Redis) -> None:
    async def run() -> int:
        await _seed(redis_url, 3)
        r.xadd(STREAM, {"d": b"{not json"})
        seen: list[Liquidation] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            seen.extend(m.value for m in batch)

        client = make_async_redis(redis_url)
        consumer = _consumer(client, handler)
        await consumer.run_until_idle()
        await client.aclose()
        return len(seen)

    assert asyncio.run(run()) == 3
    assert r.xlen(keys.dead_letter_stream(STREAM)) == 1
    assert _pending(redis_url) == 0


def test_a_full_dead_letter_stream_is_an_error_in_the_log(
        redis_url: str, r: syncredis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Past its cap, a dead-letter stream trims its oldest entries: that loss must be said."""
    monkeypatch.setattr(keys, "DEAD_LETTER_MAXLEN", 2)
    for _ in range(3):
        r.xadd(STREAM, {"d": b"{not json"})

    async def run() -> None:
        async def handler(batch: list[Message[Liquidation]]) -> None:
            raise AssertionError("nothing decodes")

        client = make_async_redis(redis_url)
        await _consumer(client, handler).run_until_idle()
        await client.aclose()

    asyncio.run(run())
    assert r.xlen(keys.dead_letter_stream(STREAM)) == 3, "approximate trimming keeps whole nodes"
    assert (f"test: {keys.dead_letter_stream(STREAM)} holds 3 entries, its cap: the oldest are being "
            "dropped; see liq dlq list, then replay or drop them") in caplog.text


@pytest.mark.parametrize(("bad", "field"), [
    ({"timestamp_ms": 1_700_000_000_000_000}, b"timestamp_ms"),  # microseconds: year 55000
    ({"price": 1e200, "quantity": 1e200}, b"price"),  # its notional would add up to infinity
])
def test_an_unusable_payload_is_dead_lettered_with_the_field_named(
        redis_url: str, r: syncredis.Redis, bad: dict[str, Any], field: bytes) -> None:
    """A payload that decodes as JSON but that no consumer could use never reaches a handler."""

    async def run() -> list[Liquidation]:
        await _seed(redis_url, 2)
        r.xadd(STREAM, {"d": codec.encode(liq(**bad))})
        seen: list[Liquidation] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            seen.extend(m.value for m in batch)

        client = make_async_redis(redis_url)
        await _consumer(client, handler).run_until_idle()
        await client.aclose()
        return seen

    assert [x.timestamp_ms for x in asyncio.run(run())] == [1_700_000_000_000, 1_700_000_000_001]
    (_, fields), = cast(Entries, r.xrange(keys.dead_letter_stream(STREAM)))
    assert field in fields[b"reason"] and fields[b"stage"] == b"decode" and fields[b"group"] == b"g"
    assert _pending(redis_url) == 0


def test_entries_of_a_dead_consumer_are_claimed_by_another(redis_url: str) -> None:
    async def run() -> None:
        await _seed(redis_url, 5)
        client = make_async_redis(redis_url)

        async def crash(batch: list[Message[Liquidation]]) -> None:
            raise SinkRetry("process died mid-batch")

        dead = _consumer(client, crash, name="dead")
        with pytest.raises(SinkRetry):
            await dead.run_until_idle()
        assert _pending(redis_url) == 5
        got: list[Liquidation] = []

        async def ok(batch: list[Message[Liquidation]]) -> None:
            got.extend(m.value for m in batch)

        alive = _consumer(client, ok, name="alive", claim_idle_ms=0)
        assert await alive.run_until_idle() == 5
        assert alive.stats.claimed == 5 and len(got) == 5
        await client.aclose()

    asyncio.run(run())
    assert _pending(redis_url) == 0


def test_claims_follow_the_cursor_past_the_entries_live_consumers_hold(redis_url: str,
                                                                     r: syncredis.Redis) -> None:
    """One XAUTOCLAIM scans at most ten times its COUNT: 280 entries a live consumer holds ahead
    of 20 a dead one left must not hide those 20."""
    asyncio.run(_seed(redis_url, 300))
    r.xgroup_create(STREAM, "g", id="0")
    read = cast(ReadGroup, r.xreadgroup("g", "live", {STREAM: ">"}, count=300))
    ids = [entry_id for entry_id, _ in read[0][1]]
    r.xclaim(STREAM, "g", "dead", 0, cast(list[StreamIdT], ids[-20:]), idle=120_000)
    got: list[str] = []

    async def ok(batch: list[Message[Liquidation]]) -> None:
        got.extend(m.id for m in batch)

    async def run() -> int:
        client = make_async_redis(redis_url)
        alive = _consumer(client, ok, name="alive", count=10, claim_idle_ms=60_000)
        handled = await alive.run_until_idle()
        await client.aclose()
        return handled

    forget = StreamConsumer._forget_dead_consumers
    with mock.patch.object(StreamConsumer, "_forget_dead_consumers", autospec=True,
                           side_effect=forget) as looked:  # Redis 6.2 counts no XINFO subcommand
        assert asyncio.run(run()) == 20
    assert got == [i.decode() for i in ids[-20:]]
    assert looked.call_count == 1, "dead consumers are looked for once per claim period, not per batch"
    held = {c["name"].decode(): c["pending"] for c in r.xinfo_consumers(STREAM, "g")}
    assert held == {"live": 280, "dead": 0, "alive": 0}


@pytest.mark.parametrize(("forget_idle_ms", "left"), [(0, {"holding", "me"}),
                                                      (3_600_000, {"gone", "holding", "me"})])
def test_consumers_idle_with_nothing_pending_are_forgotten(redis_url: str, r: syncredis.Redis,
                                                           forget_idle_ms: int, left: set[str]) -> None:
    """A restarted process leaves its old consumer behind: one idle past ``forget_idle_ms`` with
    nothing pending is deleted; one holding an entry is kept (deleting it would drop the entry)."""
    asyncio.run(_seed(redis_url, 3))
    r.xgroup_create(STREAM, "g", id="0")
    r.xreadgroup("g", "holding", {STREAM: ">"}, count=1)
    r.xgroup_createconsumer(STREAM, "g", "gone")

    async def ok(batch: list[Message[Liquidation]]) -> None:
        return None

    async def run() -> int:
        client = make_async_redis(redis_url)
        me = _consumer(client, ok, name="me", claim_idle_ms=10**9, forget_idle_ms=forget_idle_ms)
        handled = await me.run_until_idle()
        await client.aclose()
        return handled

    assert asyncio.run(run()) == 2
    assert {c["name"].decode() for c in r.xinfo_consumers(STREAM, "g")} == left
    assert _pending(redis_url) == 1


def test_a_connection_lost_mid_publish_adds_none_of_the_batch(redis_url: str, r: syncredis.Redis) -> None:
    """The collector retries a batch whose publish failed: had Redis kept the part it received,
    the retry would add those entries twice (and the aggregator count them twice)."""
    items = [(STREAM, liq(timestamp_ms=1_700_000_000_000 + i, quantity=1 + i)) for i in range(200)]
    batch_bytes = sum(len(codec.encode(x)) for _, x in items)

    async def run() -> None:
        proxy = CuttingProxy(redis_url)
        client = make_async_redis(await proxy.start())
        assert await client.ping()
        proxy.budget = batch_bytes // 2  # the connection dies with half of the batch sent
        with pytest.raises((ConnectionError, OSError, syncredis.RedisError)):
            await publish(client, items, keys.EVENT_STREAM_MAXLEN)
        assert proxy.cut
        await client.aclose()
        proxy.server.close()

    asyncio.run(run())
    assert r.xlen(STREAM) == 0


MARK = keys.publisher_mark("okx")


def _quantities(r: syncredis.Redis) -> list[float]:
    return [codec.decode_liquidation(f[b"d"]).quantity for _, f in cast(Entries, r.xrange(STREAM))]


def test_a_batch_sent_again_after_redis_ran_it_adds_only_what_it_had_not(
        redis_url: str, r: syncredis.Redis) -> None:
    """Redis ran the publish and its reply was lost: the collector sends the batch again (from
    its spool, longer by what arrived meanwhile). With the publisher's mark nothing is added
    twice, so the aggregator counts each liquidation once."""
    batch = [(STREAM, liq(timestamp_ms=1_700_000_000_000 + i, quantity=1 + i)) for i in range(5)]
    later = [(STREAM, liq(timestamp_ms=1_700_000_000_100 + i, quantity=10 + i)) for i in range(2)]

    async def run() -> list[list[str]]:
        r.script_load(PUBLISH_LUA)  # else the lost reply may be NOSCRIPT's
        proxy = CuttingProxy(redis_url)
        client = make_async_redis(await proxy.start())
        assert await client.ping()
        proxy.lose_reply = True
        with pytest.raises((ConnectionError, OSError, syncredis.RedisError)):
            await publish(client, batch, keys.EVENT_STREAM_MAXLEN, MARK)
        assert proxy.cut and r.xlen(STREAM) == 5  # Redis ran it
        proxy.cut = False
        again = await publish(client, batch + later, keys.EVENT_STREAM_MAXLEN, MARK)
        same = await publish(client, batch + later, keys.EVENT_STREAM_MAXLEN, MARK)  # again, whole
        await client.aclose()
        proxy.server.close()
        return [again, same]

    again, same = asyncio.run(run())
    assert _quantities(r) == [1, 2, 3, 4, 5, 10, 11]
    assert [i.decode() for i, _ in cast(Entries, r.xrange(STREAM))][5:] == again
    assert same == []
    assert r.hget(MARK, "n") == b"7"


def test_only_a_batch_starting_with_the_marks_payloads_skips_them(redis_url: str, r: syncredis.Redis) -> None:
    """A batch shorter than the last one, one that starts with its second entry, one that starts
    with the same entry as the last but differs at its size, another venue's, and one published
    without a mark: each is added whole."""
    first = [(STREAM, liq(timestamp_ms=1_700_000_000_000 + i, quantity=1 + i)) for i in range(3)]
    other = (STREAM, liq(timestamp_ms=1_700_000_000_100, quantity=9))

    async def run() -> list[int]:
        client = make_async_redis(redis_url)
        added = [len(await publish(client, first, keys.EVENT_STREAM_MAXLEN, MARK))]
        for items, mark in [(first[:2], MARK), (first[1:], MARK), ([first[1], other], MARK),
                            (first, keys.publisher_mark("gate")), (first, None)]:
            added.append(len(await publish(client, items, keys.EVENT_STREAM_MAXLEN, mark)))
        await client.aclose()
        return added

    assert asyncio.run(run()) == [3, 2, 2, 2, 3, 3]
    assert r.xlen(STREAM) == 15


def test_a_mark_of_another_type_fails_the_batch_before_anything_is_added(
        redis_url: str, r: syncredis.Redis) -> None:
    r.set(MARK, "not a hash")

    async def run() -> None:
        client = make_async_redis(redis_url)
        with pytest.raises(syncredis.ResponseError, match="WRONGTYPE"):
            await publish(client, [(STREAM, liq())], keys.EVENT_STREAM_MAXLEN, MARK)
        await client.aclose()

    asyncio.run(run())
    assert r.xlen(STREAM) == 0


def test_each_consumer_reports_its_groups_backlog_as_metrics(redis_url: str) -> None:
    from prometheus_client import REGISTRY

    from shared import backlog

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    async def run() -> list[backlog.Backlog]:
        await _seed(redis_url, 10)
        client = make_async_redis(redis_url)
        held: list[int] = []

        async def handler(batch: list[Message[Liquidation]]) -> None:
            held.append(len(batch))

        consumer = _consumer(client, handler, count=4, backlog_every_s=0.0)
        await consumer.ensure_groups()
        before = await backlog.report(client, "g", [STREAM, "liq:no-such-stream"])
        assert gauge("liq_stream_lag", stream=STREAM, group="g") == 10
        assert await consumer.run_until_idle() == 10  # the loop reports before each read
        await client.aclose()
        return before

    assert asyncio.run(run()) == [backlog.Backlog(STREAM, "g", length=10, pending=0, lag=10)]
    assert gauge("liq_stream_length", stream=STREAM) == 10
    assert gauge("liq_stream_pending", stream=STREAM, group="g") == 0
    assert gauge("liq_stream_lag", stream=STREAM, group="g") == 0


def test_backlog_reads_its_group_from_an_xinfo_reply() -> None:
    from shared.backlog import Backlog, group_backlog

    reply = [{"name": b"writer", "pending": 3, "lag": 7}, {"name": b"aggregator", "pending": 0, "lag": None}]
    assert group_backlog("s", "writer", 20, reply) == Backlog("s", "writer", 20, 3, 7)
    assert group_backlog("s", "aggregator", 20, reply) == Backlog("s", "aggregator", 20, 0, None)
    assert group_backlog("s", "detector", 20, reply) is None


def test_a_failure_to_dead_letter_repeats_no_handled_entry(redis_url: str, r: syncredis.Redis) -> None:
    """The handler committed the good entries; the dead-letter write then failed (a Redis blip):
    the retry dead-letters the bad entry and hands the good ones to nobody a second time."""
    calls: collections.Counter[str] = collections.Counter()

    async def run() -> None:
        await _seed(redis_url, 3)
        r.xadd(STREAM, {"d": b"not json"})

        async def handler(batch: list[Message[Liquidation]]) -> None:
            calls.update(m.id for m in batch)  # a side effect that must not repeat

        client = make_async_redis(redis_url)
        consumer = _consumer(client, handler)
        r.set(keys.dead_letter_stream(STREAM), "not a stream")  # dead-lettering fails
        with pytest.raises(syncredis.RedisError, match="holds a string, not a stream"):
            await consumer.run_until_idle()
        r.delete(keys.dead_letter_stream(STREAM))
        await consumer.run_until_idle()
        await client.aclose()

    asyncio.run(run())
    assert sorted(calls.values()) == [1, 1, 1]
    assert r.xlen(keys.dead_letter_stream(STREAM)) == 1 and _pending(redis_url) == 0


def test_a_stream_key_of_another_type_fails_the_whole_batch_and_adds_nothing(
        redis_url: str, r: syncredis.Redis) -> None:
    """A MULTI would have added the batch's other entries and failed on that key only: the
    collector's retry would then add them again, as long as the key stays wrong."""
    bad = keys.event_stream(3)
    r.set(bad, "not a stream")
    items = [(STREAM, liq(quantity=1.0)), (bad, liq(quantity=2.0)), (STREAM, liq(quantity=3.0))]

    async def run() -> list[str]:
        client = make_async_redis(redis_url)
        with pytest.raises(syncredis.ResponseError, match=r"liq:\{s3\}:events holds a string, not a stream"):
            await publish(client, items, keys.EVENT_STREAM_MAXLEN)
        assert r.xlen(STREAM) == 0
        r.delete(bad)
        r.script_flush()  # a restarted Redis has forgotten the script: it is loaded again
        ids = await publish(client, items, keys.EVENT_STREAM_MAXLEN)
        await client.aclose()
        return ids

    ids = asyncio.run(run())
    assert [entry_id.decode() for entry_id, _ in cast(Entries, r.xrange(STREAM))] == [ids[0], ids[2]]
    assert [entry_id.decode() for entry_id, _ in cast(Entries, r.xrange(bad))] == [ids[1]]
    assert [codec.decode_liquidation(f[b"d"]).quantity
            for _, f in cast(Entries, r.xrange(STREAM))] == [1.0, 3.0]


class SignallingBackoff(Backoff):
    """Tiny delays, and an event set at each retry: a test awaits the consumer's first retry."""

    def __init__(self) -> None:
        super().__init__(base_s=0.01, cap_s=0.05)
        self.retried = asyncio.Event()

    def next_delay(self) -> float:
        self.retried.set()
        return super().next_delay()


async def _handled(got: list[Liquidation], changed: asyncio.Condition, n: int) -> None:
    async with asyncio.timeout(30), changed:
        await changed.wait_for(lambda: len(got) >= n)


@pytest.mark.parametrize("persistent", [True, False], ids=["data-kept", "data-lost"])
def test_a_running_consumer_resumes_after_redis_restarts(tmp_path: Path, persistent: bool) -> None:
    """Redis stopped under a running consumer and started again. Without its data (no
    persistence, a lost volume, a FLUSHALL) the group is gone: the consumer creates it again
    and handles what the collectors publish next, instead of retrying NOGROUP forever."""
    server = servers.start_redis(tmp_path, persistent=persistent)
    got: list[Liquidation] = []
    changed = asyncio.Condition()

    async def handler(batch: list[Message[Liquidation]]) -> None:
        got.extend(m.value for m in batch)
        async with changed:
            changed.notify_all()

    async def run() -> None:
        nonlocal server
        before = await _seed(server.url, 3)
        client = make_async_redis(server.url)
        consumer = _consumer(client, handler, block_ms=50)
        consumer.backoff = backoff = SignallingBackoff()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await _handled(got, changed, 3)
        server.stop()
        await asyncio.wait_for(backoff.retried.wait(), 30)
        server = servers.start_redis(tmp_path, port=server.port, persistent=persistent)
        after = [liq(timestamp_ms=1_700_000_001_000 + i, quantity=10 + i) for i in range(4)]
        await publish(client, [(STREAM, x) for x in after], keys.EVENT_STREAM_MAXLEN)
        await _handled(got, changed, 7)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        assert got == before + after

    try:
        asyncio.run(run())
        assert _pending(server.url) == 0
    finally:
        server.stop()


def test_an_outage_is_one_line_when_it_begins_and_one_when_it_ends_not_one_per_retry(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> StreamConsumer[Liquidation]:
        await _seed(redis_url, 7)
        stop = asyncio.Event()
        attempts = 0

        async def sink(batch: list[Message[Liquidation]]) -> None:
            nonlocal attempts
            attempts += 1
            if attempts <= 6:
                raise SinkRetry("database write failed: OperationalError: connection refused")
            stop.set()

        client = make_async_redis(redis_url)
        consumer = _consumer(client, sink, block_ms=50)
        consumer.backoff = Backoff(base_s=0.001, cap_s=0.002)
        with caplog.at_level(logging.INFO, logger="shared.streams"):
            await asyncio.wait_for(consumer.run(stop), timeout=30)
        await client.aclose()
        return consumer

    consumer = asyncio.run(run())
    assert consumer.stats.retries == 6 and consumer.backoff.attempts == 0
    lines = [(r.levelname, re.sub(r"after \d+s", "after Ns", r.getMessage()))
             for r in caplog.records if r.name == "shared.streams"]
    assert lines == [
        ("WARNING", f"test on {STREAM}: unavailable (SinkRetry: database write failed: OperationalError: "
                    "connection refused); retrying with backoff (first in 0.0s), logged again when it works"),
        ("INFO", f"test on {STREAM}: available again after Ns and 6 failed tries"),
    ]


def test_a_group_lost_while_its_stream_is_kept_resumes_after_the_last_entry_read(redis_url: str,
                                                                                  r: syncredis.Redis) -> None:
    """XGROUP DESTROY, or a Redis that kept the stream and not the group: the group is created
    again after the last entry this consumer read, not at the stream's start, which would hand
    every entry still in the stream to the handler a second time (the aggregator would count
    them twice)."""
    got: list[Liquidation] = []
    changed = asyncio.Condition()

    async def handler(batch: list[Message[Liquidation]]) -> None:
        got.extend(m.value for m in batch)
        async with changed:
            changed.notify_all()

    async def run() -> None:
        before = await _seed(redis_url, 3)
        client = make_async_redis(redis_url)
        consumer = _consumer(client, handler, block_ms=50)
        consumer.backoff = backoff = SignallingBackoff()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await _handled(got, changed, 3)
        r.xgroup_destroy(STREAM, "g")
        await asyncio.wait_for(backoff.retried.wait(), 30)
        after = [liq(timestamp_ms=1_700_000_001_000 + i, quantity=10 + i) for i in range(2)]
        await publish(client, [(STREAM, x) for x in after], keys.EVENT_STREAM_MAXLEN)
        await _handled(got, changed, 5)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        assert got == before + after

    asyncio.run(run())
    assert _pending(redis_url) == 0


def test_a_group_whose_consumer_died_is_still_reported_by_the_others(redis_url: str,
                                                                     metrics_port: int) -> None:
    """The dead consumer reports nothing: the backlog of its group must come from a live one,
    or the alert on a growing liq_stream_lag never fires for the group that needs it."""
    from tests.scrape import scrape, value

    async def run() -> None:
        await _seed(redis_url, 13)
        client = make_async_redis(redis_url)
        await client.xgroup_create(STREAM, "dead", id="0")

        async def handler(batch: list[Message[Liquidation]]) -> None:
            pass

        consumer = _consumer(client, handler, backlog_every_s=0.0)
        assert await consumer.run_until_idle() == 13
        await client.aclose()

    asyncio.run(run())
    after = scrape(metrics_port)
    assert ("liq_stream_lag", frozenset({"stream": STREAM, "group": "dead"}.items())) in after
    assert value(after, "liq_stream_lag", stream=STREAM, group="dead") == 13
    assert value(after, "liq_stream_pending", stream=STREAM, group="dead") == 0
    assert value(after, "liq_stream_lag", stream=STREAM, group="g") == 0


def test_publish_trims_each_stream_to_about_maxlen_keeping_the_newest(redis_url: str,
                                                                     r: syncredis.Redis) -> None:
    """``MAXLEN ~``: Redis trims whole nodes of ``stream-node-max-entries`` entries, so a stream
    holds at least ``maxlen`` and fewer than ``maxlen`` plus one node, the newest ones."""
    setting = r.config_get("stream-node-max-entries")["stream-node-max-entries"]
    assert setting is not None
    node = int(setting)

    async def run() -> list[str]:
        client = make_async_redis(redis_url)
        ids: list[str] = []
        for batch in range(10):
            items = [(STREAM, liq(quantity=1 + batch * node + i)) for i in range(node)]
            ids += await publish(client, items, maxlen=node // 2)
        await client.aclose()
        return ids

    ids = asyncio.run(run())
    kept = [entry_id.decode() for entry_id, _ in cast(Entries, r.xrange(STREAM))]
    assert node // 2 <= len(kept) < node // 2 + node
    assert kept == ids[-len(kept):], "the oldest entries go first"


def test_a_consumer_that_reads_while_the_idle_ones_are_forgotten_keeps_its_entry(
        redis_url: str, r: syncredis.Redis) -> None:
    """A consumer seen idle with nothing pending that reads just before it is deleted holds an
    entry: deleting it then would drop that entry from the group's pending list for good."""
    asyncio.run(_seed(redis_url, 3))
    r.xgroup_create(STREAM, "g", id="0")
    r.xgroup_createconsumer(STREAM, "g", "other")
    read: list[int] = []

    async def ok(batch: list[Message[Liquidation]]) -> None:
        return None

    async def run() -> int:
        client = make_async_redis(redis_url)
        execute: Callable[..., Awaitable[Any]] = client.execute_command

        async def other_reads_first(*args: Any, **options: Any) -> Any:
            name = " ".join(str(a).upper() for a in args[:2])
            if not read and name.startswith(("XGROUP DELCONSUMER", "EVAL")):
                read.append(len(cast(ReadGroup, r.xreadgroup("g", "other", {STREAM: ">"}, count=1))))
            return await execute(*args, **options)

        client.execute_command = other_reads_first  # type: ignore[method-assign]
        me = _consumer(client, ok, name="me", claim_idle_ms=10**9, forget_idle_ms=0)
        handled = await me.run_until_idle()
        await client.aclose()
        return handled

    assert asyncio.run(run()) == 2
    assert read == [1]
    held = {c["name"]: c["pending"] for c in cast(Any, r.xpending(STREAM, "g"))["consumers"]}
    assert held == {b"other": 1}



def test_a_backlog_redis_no_longer_tells_is_no_longer_shown(redis_url: str, r: syncredis.Redis) -> None:
    """A lag Redis cannot count any more (an entry deleted before the group read it), a group or
    a stream gone: the series is removed, not left at its last value for an alert to fire on."""
    from prometheus_client import REGISTRY

    stream = "liq:test:backlog-gone"
    ids = [r.xadd(stream, {"k": str(k)}) for k in range(5)]
    for group in ("a", "b"):
        r.xgroup_create(stream, group, id="0")

    def reported() -> dict[str, float | None]:
        asyncio.run(_report(redis_url, stream))
        series = {f"{name} {group}": REGISTRY.get_sample_value(f"liq_stream_{name}",
                                                               {"stream": stream, "group": group})
                  for name in ("lag", "pending") for group in ("a", "b")}
        return {**series, "length": REGISTRY.get_sample_value("liq_stream_length", {"stream": stream})}

    assert reported() == {"lag a": 5, "lag b": 5, "pending a": 0, "pending b": 0, "length": 5}
    r.xdel(stream, ids[2])
    assert reported() == {"lag a": None, "lag b": None, "pending a": 0, "pending b": 0, "length": 4}
    r.xgroup_destroy(stream, "b")
    assert reported() == {"lag a": None, "lag b": None, "pending a": 0, "pending b": None, "length": 4}
    r.delete(stream)
    assert reported() == {"lag a": None, "lag b": None, "pending a": None, "pending b": None, "length": None}


async def _report(url: str, stream: str) -> None:
    from shared import backlog

    client = make_async_redis(url)
    await backlog.report(client, "a", [stream])
    await client.aclose()


@pytest.mark.parametrize(("exc", "kind", "text"), [
    (syncredis.ConnectionError("Error 111 connecting"), "unreachable", "Error 111 connecting"),
    (syncredis.TimeoutError("Timeout reading"), "unreachable", "Timeout reading"),
    (syncredis.BusyLoadingError("Redis is loading"), "loading", "Redis is loading"),
    (syncredis.AuthenticationError("invalid password"), "error", "AuthenticationError: invalid password"),
    (syncredis.exceptions.AuthorizationError("no perm"), "error", "AuthorizationError: no perm"),
    (syncredis.ResponseError("WRONGTYPE x"), "error", "ResponseError: WRONGTYPE x"),
    (OSError(28, "No space left on device"), "error", "OSError: [Errno 28] No space left on device"),
    (SinkRetry("database down"), "error", "SinkRetry: database down"),
])
def test_a_redis_failure_is_read_one_way_and_only_redis_out_of_service_is_the_shared_outage(
        exc: BaseException, kind: str, text: str) -> None:
    """liq status and the loops' outages read a failure with one function: redis-py's
    AuthenticationError and BusyLoadingError are ConnectionErrors, yet Redis answered; outage_of
    had put a refused password in the shared "Redis unreachable" outage, status a loading Redis."""
    from shared.backoff import Outage
    from shared.streams import outage_of, redis_failure

    own, shared = Outage("own", logging.getLogger("test")), Outage("redis", logging.getLogger("test"))
    assert (redis_failure(exc).kind, redis_failure(exc).text) == (kind, text)
    assert outage_of(exc, own, shared) is (own if kind == "error" else shared)
    assert outage_of(exc, own, None) is own
