"""The aggregator against a real Redis: exact hash contents, TTL, exactly-once per batch."""

from __future__ import annotations

import asyncio
import math
import random
import re
from typing import cast

import pytest
import redis as syncredis

from aggregator.buckets import fold
from aggregator.service import READ_COUNT, Aggregator, StaleBatch, make_consumer
from shared import codec, keys
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.streams import Message, publish
from tests.factories import liq
from tests.redistypes import TextEntries

pytestmark = pytest.mark.integration


def test_aggregates_exact_sums_and_sets_ttl(redis_url: str) -> None:
    events = [liq(price=67200.0 + i, quantity=0.5, side="long" if i % 3 else "short",
                  timestamp_ms=1_729_512_000_000 + i * 1000) for i in range(90)]

    async def run() -> int:
        client = make_async_redis(redis_url)
        items = [(keys.event_stream(keys.shard_of(e.symbol, 4)), e) for e in events]
        await publish(client, items, keys.EVENT_STREAM_MAXLEN)
        handled = await make_consumer(client, 4, Aggregator(client), name="a1").run_until_idle()
        again = await make_consumer(client, 4, Aggregator(client), name="a2").run_until_idle()
        await client.aclose()
        return handled + again

    assert asyncio.run(run()) == 90
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    longs = [e for e in events if e.side == "long"]
    level = r.hgetall("liq:levels:BTCUSDT:67200:LONG")
    assert int(level["count"]) == len(longs)
    assert float(level["value_usd"]) == pytest.approx(sum(e.notional_usd for e in longs))
    first_minute = [e for e in events if e.timestamp_ms < 1_729_512_060_000]
    bucket = r.hgetall("liq:agg:BTCUSDT:60s:1729512000000")
    assert int(bucket["count"]) == len(first_minute) == 60
    assert int(bucket["short_count"]) == sum(1 for e in first_minute if e.side == "short")
    assert 0 < r.ttl("liq:agg:BTCUSDT:60s:1729512000000") <= keys.L2_TTL_SECONDS
    assert int(r.hgetall("liq:agg:BTCUSDT:60s:1729512060000")["count"]) == 30


def test_a_full_read_is_applied_whole_with_every_entry_claimed_and_acked(redis_url: str) -> None:
    """A read of READ_COUNT entries is one script (its ids claimed and acked 500 at a time),
    then the rest: exact counts and sums, nothing left pending."""
    n = READ_COUNT + 345
    events = [liq(price=67_200.0 + (i % 7) * 100, quantity=0.25 + (i % 3), event_id=f"f{i}",
                  side="long" if i % 4 else "short", timestamp_ms=1_729_512_000_000 + i * 50)
              for i in range(n)]

    async def run() -> tuple[int, int]:
        client = make_async_redis(redis_url)
        await publish(client, [(keys.event_stream(0), e) for e in events], keys.EVENT_STREAM_MAXLEN)
        consumer = make_consumer(client, 1, Aggregator(client), name="full")
        handled = await consumer.run_until_idle()
        await client.aclose()
        return handled, consumer.stats.batches

    handled, batches = asyncio.run(run())
    assert (handled, batches) == (n, 2)
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    assert cast(dict[str, int], r.xpending(keys.event_stream(0), keys.AGGREGATOR_GROUP))["pending"] == 0
    for key, delta in fold(events).items():
        stored = cast(dict[str, str], r.hgetall(key))
        assert {f: int(stored[f]) for f in delta.counts} == delta.counts, key
        for name, value in delta.sums.items():
            assert float(stored[name]) == pytest.approx(value, rel=1e-12), (key, name)
    r.close()


def _apply_in_batches(redis_url: str, batches: list[list[Liquidation]]) -> None:
    """Each batch published to one stream, then drained by the aggregator before the next: every
    batch adds to the sums the ones before it wrote."""
    async def run() -> None:
        client = make_async_redis(redis_url)
        for batch in batches:
            await publish(client, [(keys.event_stream(0), e) for e in batch], keys.EVENT_STREAM_MAXLEN)
            await make_consumer(client, 1, Aggregator(client), name="a1").run_until_idle()
        await client.aclose()

    asyncio.run(run())


def test_sums_read_as_the_decimals_they_are_in_hgetall(redis_url: str) -> None:
    """``redis-cli HGETALL`` shows a sum as people write it: 3 × 6000.03 is 18000.09, over
    batches too (HINCRBYFLOAT's long doubles showed 18000.08999999999999986), and a tiny
    quantity without an exponent."""
    first = [liq(price=20_000.1, quantity=0.3, timestamp_ms=1_729_512_000_000 + i, event_id=f"a{i}")
             for i in range(3)]
    tiny = [liq(price=30_000.0, quantity=0.00001, timestamp_ms=1_729_512_000_100, event_id="t")]

    _apply_in_batches(redis_url, [first[:1], first[1:], tiny])  # each adds to what is stored
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    level = r.hgetall("liq:levels:BTCUSDT:20000:LONG")
    assert (level["count"], level["value_usd"], level["quantity"]) == ("3", "18000.09", "0.9")
    assert r.hget("liq:levels:BTCUSDT:30000:LONG", "quantity") == "0.00001"  # never 1e-05
    r.close()


def test_a_hash_key_of_another_type_costs_only_its_events_and_nothing_is_applied_twice(
        redis_url: str) -> None:
    """Another program SET a level key to a string. Redis would keep the increments a script made
    before its failing command, and the retry would apply them again: the script checks every
    key first, the loop isolates the events of that key, and every other event counts once."""
    events = [liq(price=price, quantity=1.0, side="long", timestamp_ms=1_729_512_000_000 + i * 1000,
                  event_id=f"e{i}") for i, price in enumerate([67_210.0, 67_310.0, 67_220.0, 67_320.0])]
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    r.set("liq:levels:BTCUSDT:67300:LONG", "not a hash")

    async def run() -> int:
        client = make_async_redis(redis_url)
        await publish(client, [(keys.event_stream(0), e) for e in events], keys.EVENT_STREAM_MAXLEN)
        consumer = make_consumer(client, 1, Aggregator(client), name="a1")
        handled = await consumer.run_until_idle()
        await client.aclose()
        return handled

    assert asyncio.run(run()) == 2
    assert r.hgetall("liq:levels:BTCUSDT:67200:LONG")["count"] == "2"
    assert r.hgetall("liq:agg:BTCUSDT:60s:1729512000000")["count"] == "2", "each good event once"
    assert r.get("liq:levels:BTCUSDT:67300:LONG") == "not a hash"
    letters = cast(TextEntries, r.xrange(keys.dead_letter_stream(keys.event_stream(0))))
    assert [f["reason"] for _, f in letters] == [
        "KeyTypeConflict: liq:levels:BTCUSDT:67300:LONG holds a string, not a hash: delete it (or rename it) "
        "and replay the dead letters"] * 2
    assert [codec.decode_liquidation(f["d"].encode()).event_id for _, f in letters] == ["e1", "e3"]
    assert r.xpending(keys.event_stream(0), keys.AGGREGATOR_GROUP)["pending"] == 0


@pytest.mark.parametrize(("field", "value"), [
    ("value_usd", "n/a"), ("value_usd", " 5"), ("value_usd", "1e5000"),
    ("count", "007"), ("count", "-0"), ("count", "9" * 19)])
def test_a_field_redis_would_refuse_to_increment_costs_only_its_events(
        redis_url: str, field: str, value: str) -> None:
    """A field another program set to text would fail HINCRBYFLOAT halfway through the script:
    the values are checked before the first write, so nothing is applied twice."""
    events = [liq(price=67_210.0, quantity=1.0, timestamp_ms=1_729_512_000_000, event_id="e0"),
              liq(price=67_210.0, quantity=2.0, timestamp_ms=1_729_512_120_000, event_id="e1")]
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    r.hset("liq:agg:BTCUSDT:60s:1729512120000", field, value)

    async def run() -> int:
        client = make_async_redis(redis_url)
        await publish(client, [(keys.event_stream(0), e) for e in events], keys.EVENT_STREAM_MAXLEN)
        handled = await make_consumer(client, 1, Aggregator(client), name="a1").run_until_idle()
        await client.aclose()
        return handled

    assert asyncio.run(run()) == 1
    assert r.hgetall("liq:levels:BTCUSDT:67200:LONG")["count"] == "1", "e0 once, e1 never"
    assert r.hgetall("liq:agg:BTCUSDT:60s:1729512120000") == {field: value}
    ((_, letter),) = cast(TextEntries, r.xrange(keys.dead_letter_stream(keys.event_stream(0))))
    assert letter["reason"] == (
        f"KeyTypeConflict: liq:agg:BTCUSDT:60s:1729512120000 field {field} holds {value}, not a number: "
        "delete it (or rename it) and replay the dead letters")


def test_a_batch_another_consumer_claimed_and_applied_is_not_applied_again(redis_url: str) -> None:
    """Consumer A stalls past the claim time with a batch in hand; B claims the entries and
    applies them. When A's script finally runs, it must find them gone and write nothing."""
    events = [liq(quantity=1.0, timestamp_ms=1_729_512_000_000 + k, event_id=f"e{k}") for k in range(3)]
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)

    async def run() -> tuple[int, int]:
        client = make_async_redis(redis_url)
        await publish(client, [(keys.event_stream(0), e) for e in events], keys.EVENT_STREAM_MAXLEN)
        aggregator_a = Aggregator(client)
        a = make_consumer(client, 1, aggregator_a, name="A")
        b = make_consumer(client, 1, Aggregator(client), name="B")
        b.claim_idle_ms = 0  # stands for claim_idle_ms passing while A stalls
        b_handled: list[int] = []

        async def stalled(messages: list[Message[Liquidation]]) -> None:
            b_handled.append(await b.run_until_idle())  # B claims and applies meanwhile
            await aggregator_a.handle(messages)

        a.handler = stalled
        with pytest.raises(StaleBatch, match="3 entries of liq:\\{s0\\}:events are no longer pending"):
            await a.run_until_idle()
        again = await a.run_until_idle()  # what the loop's retry does: nothing is A's any more
        await client.aclose()
        return b_handled[0], again

    assert asyncio.run(run()) == (3, 0)
    assert r.hgetall("liq:agg:BTCUSDT:60s:1729512000000")["count"] == "3", "each event once"
    assert r.xpending(keys.event_stream(0), keys.AGGREGATOR_GROUP)["pending"] == 0


def test_a_group_lost_before_the_batch_is_applied_is_retried_not_dead_lettered(redis_url: str) -> None:
    """The group vanished between the read and the script (Redis restarted, XGROUP DESTROY): the
    script's XCLAIM answers NOGROUP. That is Redis's state, not the data's: nothing is
    dead-lettered, and once the group is created again every event is counted once."""
    events = [liq(quantity=1.0, timestamp_ms=1_729_512_000_000 + k, event_id=f"e{k}") for k in range(3)]
    stream = keys.event_stream(0)
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)

    async def run() -> int:
        client = make_async_redis(redis_url)
        await publish(client, [(stream, e) for e in events], keys.EVENT_STREAM_MAXLEN)
        aggregator = Aggregator(client)
        consumer = make_consumer(client, 1, aggregator, name="a1")

        async def group_lost_first(messages: list[Message[Liquidation]]) -> None:
            consumer.handler = aggregator.handle
            r.xgroup_destroy(stream, keys.AGGREGATOR_GROUP)
            await aggregator.handle(messages)

        consumer.handler = group_lost_first
        with pytest.raises(syncredis.ResponseError, match="NOGROUP"):
            await consumer.run_until_idle()
        handled = await consumer.run_until_idle()  # what the loop's retry does: the group again
        await client.aclose()
        return handled

    assert asyncio.run(run()) == 3
    assert r.exists(keys.dead_letter_stream(stream)) == 0
    assert r.hgetall("liq:agg:BTCUSDT:60s:1729512000000")["count"] == "3", "each event once"
    assert r.xpending(stream, keys.AGGREGATOR_GROUP)["pending"] == 0


def test_the_aggregators_endpoint_counts_its_real_work_exactly(redis_url: str, metrics_port: int) -> None:
    from tests.scrape import scrape, total, value

    events = [liq(price=67200.0 + i, quantity=0.5, timestamp_ms=1_729_512_000_000 + i * 1000)
              for i in range(40)]

    async def run() -> int:
        client = make_async_redis(redis_url)
        await publish(client, [(keys.event_stream(keys.shard_of(e.symbol, 4)), e) for e in events],
                      keys.EVENT_STREAM_MAXLEN)
        consumer = make_consumer(client, 4, Aggregator(client), name="a1")
        consumer.count = 15  # three batches: 15, 15, 10
        await consumer.run_until_idle()
        await client.aclose()
        return consumer.stats.batches

    before = scrape(metrics_port)
    batches = asyncio.run(run())
    after = scrape(metrics_port)
    assert total(after, "liq_events_in_total", component="aggregator") - total(
        before, "liq_events_in_total", component="aggregator") == 40
    assert value(after, "liq_events_out_total", component="aggregator", sink="redis") - value(
        before, "liq_events_out_total", component="aggregator", sink="redis") == 40
    assert value(after, "liq_batch_seconds_count", component="aggregator") - value(
        before, "liq_batch_seconds_count", component="aggregator") == batches == 3
    stream = keys.event_stream(keys.shard_of("BTCUSDT", 4))
    assert value(after, "liq_stream_length", stream=stream) == 40


PLAIN_DECIMAL = re.compile(r"0|[1-9]\d*|(0|[1-9]\d*)\.\d*[1-9]")
"""A sum as the script writes it: digits, no exponent, no sign, no trailing zero or dot."""


@pytest.mark.parametrize(("quantities", "shown"), [
    ([6e14, 6e14], "1200000000000000"),  # %.15g wrote 1.2e+15
    ([9e14, 1e14 + 1.0], "1000000000000001"),  # %.15g wrote 1e+15: the 1 was lost, on every batch
    ([1.23456789012345e-05], "0.0000123456789012345"),  # %.12f wrote 0.000012345679
    ([3e-13], "0.0000000000003"),  # %.12f wrote "0.", the quantity lost
])
def test_a_sum_of_any_size_is_written_as_a_plain_decimal_to_15_significant_digits(
        redis_url: str, quantities: list[float], shown: str) -> None:
    """Each amount is below 1e15, but a sum of them is not; and quantities can be tiny. Every sum
    reads as a plain decimal keeping its 15 significant digits (at least: its integer digits)."""
    events = [liq(price=1.0, quantity=q, timestamp_ms=1_729_512_000_000 + k, event_id=f"q{k}")
              for k, q in enumerate(quantities)]

    _apply_in_batches(redis_url, [[event] for event in events])  # the second adds to what the first wrote
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    level = next(key for key in fold(events[:1]) if key.startswith("liq:levels:"))
    assert r.hget(level, "quantity") == shown
    r.close()


def test_sums_over_random_batches_match_pythons_exact_sums(redis_url: str) -> None:
    """Property: random batches of liquidations whose amounts span 20 orders of magnitude, into
    hashes that existed or not, every sum equal to the exact sum (``math.fsum``) to a relative
    1e-12, and written as a plain decimal."""
    rng = random.Random(20261202)
    symbols = ["BTCUSDT", "PEPEUSDT", "DUSTUSDT"]
    events = []
    for k in range(1500):
        symbol = rng.choice(symbols)
        scale = {"BTCUSDT": 10 ** rng.uniform(-5, 2), "PEPEUSDT": 10 ** rng.uniform(6, 14.4),
                 "DUSTUSDT": 10 ** rng.uniform(-14, -4)}[symbol]
        events.append(liq(symbol=symbol, price=rng.choice([1.0, 0.5, 3.0]), quantity=scale,
                          side=rng.choice(["long", "short"]), timestamp_ms=1_729_512_000_000 + k * 97,
                          event_id=f"r{k}"))

    batches, at = [], 0
    while at < len(events):
        size = rng.randint(1, 60)
        batches.append(events[at:at + size])
        at += size
    _apply_in_batches(redis_url, batches)
    expected: dict[str, dict[str, list[float]]] = {}
    for e in events:
        for key, delta in fold([e]).items():
            for name, value in delta.sums.items():
                expected.setdefault(key, {}).setdefault(name, []).append(value)
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    checked = 0
    for key, sums in expected.items():
        stored = cast(dict[str, str], r.hgetall(key))
        for name, values in sums.items():
            text = stored[name]
            assert PLAIN_DECIMAL.fullmatch(text), (key, name, text)
            exact = math.fsum(values)
            assert float(text) == pytest.approx(exact, rel=1e-12, abs=0), (key, name, text, exact)
            checked += 1
    r.close()
    assert checked > 50


@pytest.mark.parametrize(("stored", "after"), [
    ("999999999999999", "1000000000000000"),  # 15 digits: added in the script, still exact
    ("9007199254740993", "9007199254740994"),  # past a double's exact integers: HINCRBY adds it
    ("999999999999999999", "1000000000000000000"),  # the longest count HINCRBY takes
])
def test_a_count_of_any_length_redis_can_add_to_goes_up_by_exactly_one(
        redis_url: str, stored: str, after: str) -> None:
    event = liq(price=67_210.0, quantity=1.0, timestamp_ms=1_729_512_000_000, event_id="c")
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    r.hset("liq:levels:BTCUSDT:67200:LONG", "count", stored)

    _apply_in_batches(redis_url, [[event]])
    level = r.hgetall("liq:levels:BTCUSDT:67200:LONG")
    assert (level["count"], level["count:bybit"]) == (after, "1")
    r.close()


def test_the_script_adds_random_increments_to_any_counts_and_sums_it_finds_as_redis_would(
        redis_url: str) -> None:
    """Property, on the script itself (increments zero and negative too, which ``fold`` never
    makes): every count comes out as HINCRBY would write it (exact, up to 18 digits, past a
    double's exact integers), every sum as the double sum to 15 significant digits; fields
    absent, a sum without its count, a hash without counts or absent; fields not in the batch
    kept; every key given the TTL."""
    from msgspec.msgpack import encode

    from aggregator.service import APPLY_BATCH_LUA

    rng = random.Random(20261202)
    r = syncredis.Redis.from_url(redis_url, decode_responses=True)
    script = r.register_script(APPLY_BATCH_LUA)
    stored_counts = ["0", "1", "-1", "42", "99999999999999", "-99999999999999", "999999999999999",
                     "-999999999999999", "1000000000000000", "9007199254740991", "9007199254740992",
                     "9007199254740993", "-9007199254740993", "123456789012345678"]
    stored_sums = ["0", "1.5", "-2.25", "62807.6837", "0.00001", "123456789.123", "1e20", "-7"]
    for _ in range(300):
        r.flushdb()
        hashes: list[tuple[str, dict[str, int], dict[str, float]]] = []
        expected: dict[str, dict[str, str | float]] = {}
        for k in range(rng.randint(1, 4)):
            key = f"h{k}"
            counts = {f"c{j}": rng.choice([0, 1, -1, 2, 7, 500, -3, 10**12])
                      for j in range(rng.randint(0, 3))}
            sums = {f"s{j}": rng.choice([0.0, -0.0, 5.0, 0.1, -12.5, rng.uniform(-1e6, 1e6)])
                    for j in range(rng.randint(0 if counts else 1, 3))}
            before = {field: rng.choice(stored_counts) for field in [*counts, "other"] if rng.random() < 0.6}
            before |= {field: rng.choice(stored_sums) for field in sums if rng.random() < 0.6}
            for field, value in before.items():
                r.hset(key, field, value)
            after: dict[str, str | float] = dict(before)
            for field, inc in counts.items():
                after[field] = str(int(before.get(field, "0")) + inc)
            for field, add in sums.items():
                after[field] = float(before.get(field, "0")) + add
            hashes.append((key, counts, sums))
            expected[key] = after
        document = encode([3600, keys.AGGREGATOR_GROUP, "a1",
                           [[len(c), [*c, *s], [*c.values(), *s.values()]] for _, c, s in hashes], []])
        assert script(keys=[key for key, _, _ in hashes], args=[document]) == len(hashes)
        for key, after in expected.items():
            got = r.hgetall(key)
            assert got.keys() == after.keys(), key
            for field, want in after.items():
                if isinstance(want, str):
                    assert got[field] == want, (key, field)
                else:  # a sum: the double, written without exponent to 15 significant digits
                    assert "e" not in got[field], (key, field)
                    assert float(got[field]) == pytest.approx(want, rel=1e-14, abs=1e-300), (key, field)
            assert 0 < r.ttl(key) <= 3600
    r.close()
