"""The detector against a real Redis: exact stream messages and status hashes, shards, restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from detector.config import DetectorSettings
from detector.service import REBUILD_SLACK_MS, Detector, consumer_name
from shared import codec, keys, servers
from shared.backoff import Backoff
from shared.clock import FakeClock
from shared.models import CascadeEvent, CascadeMember, Liquidation
from shared.redisconn import make_async_redis
from shared.streams import publish
from tests.detector.helpers import T0, ev
from tests.outages import RETRYING, Counted, outage_lines, redis_down_and_back
from tests.redistypes import Entries

pytestmark = pytest.mark.integration

R = TypeVar("R")
BTC_SHARD = keys.shard_of("BTCUSDT", 4)  # 3
ETH_SHARD = keys.shard_of("ETHUSDT", 4)  # 0
CLOCK_START = T0 + 60_000


def run(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[R]]) -> R:
    async def main() -> R:
        client = make_async_redis(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


async def put(client: aioredis.Redis, events: Sequence[Liquidation]) -> list[str]:
    items = [(keys.event_stream(keys.shard_of(e.symbol, 4)), e) for e in events]
    return await publish(client, items, keys.EVENT_STREAM_MAXLEN)


def detector(client: aioredis.Redis, shards: list[int], clock: FakeClock | None = None) -> Detector:
    return Detector(client, DetectorSettings(shards=4), shards, clock or FakeClock(CLOCK_START))


def cascades(r: syncredis.Redis) -> list[CascadeEvent]:
    rows: Any = r.xrange(keys.CASCADE_STREAM)
    return [codec.decode_cascade(codec.entry_payload(f)) for _, f in rows]


def members(r: syncredis.Redis) -> list[CascadeMember]:
    rows: Any = r.xrange(keys.CASCADE_MEMBER_STREAM)
    return [codec.decode_member(codec.entry_payload(f)) for _, f in rows]


def status(r: syncredis.Redis, symbol: str) -> dict[str, str]:
    raw: Any = r.hgetall(keys.cascade_status(symbol))
    return {k.decode(): v.decode() for k, v in raw.items()}


BTC = [ev(k * 5, venue="bybit" if k % 2 else "okx") for k in range(5)]  # $125K in 20 s, 2 venues


@pytest.fixture(params=[1000, 2], ids=["one-page", "pages-of-2"])
def page(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The warm restart reads streams and pending lists in pages: also in pages of two entries."""
    from detector import service

    monkeypatch.setattr(service, "PAGE", request.param)
    return int(request.param)


def test_start_members_status_and_end(redis_url: str, r: syncredis.Redis) -> None:
    clock = FakeClock(CLOCK_START)

    async def body(client: aioredis.Redis) -> tuple[int, int, list[str]]:
        ids = await put(client, BTC)
        det = detector(client, [BTC_SHARD], clock)
        handled = await det.run_until_idle()
        clock.advance(40.0)  # event time carried 40 s past the last event: quiet for > 30 s
        ended = await det.tick()
        return handled, ended, ids

    handled, ended, ids = run(redis_url, body)
    assert (handled, ended) == (5, 1)
    start, end = cascades(r)
    assert (start.phase, start.cascade_id, start.count, start.total_notional_usd) == (
        "start", f"BTCUSDT-{T0}", 5, 125_000.0)
    assert (start.start_ms, start.end_ms, start.venues, start.cross_exchange) == (
        T0, T0 + 20_000, ["bybit", "okx"], True)
    assert start.published_ms == CLOCK_START  # the injected clock stamps live messages
    assert (end.phase, end.cascade_id, end.count, end.end_ms, end.published_ms) == (
        "end", start.cascade_id, 5, T0 + 20_000, CLOCK_START + 40_000)
    assert end.peak_risk_score == start.risk_score and end.band == start.band
    assert [(m.cascade_id, m.liquidation) for m in members(r)] == [(start.cascade_id, e) for e in BTC]
    assert status(r, "BTCUSDT") == {
        "state": "idle", "cascade_id": start.cascade_id, "risk_score": "0.0000", "band": "low", "count": "0",
        "total_usd": "0.00", "venues": "", "updated_ms": str(CLOCK_START + 40_000), "entry_id": ids[-1],
        "ended_through_ms": str(T0 + 20_000)}
    assert 0 < r.ttl(keys.cascade_status("BTCUSDT")) <= keys.L2_TTL_SECONDS
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


def test_the_alert_delay_is_measured_from_the_triggering_liquidations_receipt(redis_url: str) -> None:
    """``liq_cascade_alert_seconds``: collector receipt of the liquidation that starts a cascade
    → its start published (the injected clock stands still: 250 ms is the receipt's age)."""
    from prometheus_client import REGISTRY

    def sample(suffix: str) -> float:
        return REGISTRY.get_sample_value(f"liq_cascade_alert_seconds_{suffix}") or 0.0

    received = [msgspec.structs.replace(e, received_ms=CLOCK_START - 250 - 1000 * (4 - k))
                for k, e in enumerate(BTC)]
    count, total = sample("count"), sample("sum")

    async def body(client: aioredis.Redis) -> None:
        await put(client, received)
        await detector(client, [BTC_SHARD]).run_until_idle()

    run(redis_url, body)
    assert (sample("count") - count, sample("sum") - total) == (1, pytest.approx(0.25))  # type: ignore[comparison-overlap]  # approx equals a float


def test_active_status_hash_is_exact(redis_url: str, r: syncredis.Redis) -> None:
    async def body(client: aioredis.Redis) -> list[str]:
        ids = await put(client, BTC)
        await detector(client, [BTC_SHARD]).run_until_idle()
        return ids

    ids = run(redis_url, body)
    (start,) = cascades(r)
    assert status(r, "BTCUSDT") == {
        "state": "active", "cascade_id": f"BTCUSDT-{T0}", "risk_score": f"{start.risk_score:.4f}",
        "peak_risk_score": f"{start.peak_risk_score:.4f}", "band": start.band, "published_band": start.band,
        "count": "5", "total_usd": "125000.00", "long_usd": "125000.00", "short_usd": "0.00",
        "venues": "bybit,okx", "start_ms": str(T0), "detected_ms": str(T0 + 20_000),
        "last_event_ms": str(T0 + 20_000), "updated_ms": str(CLOCK_START), "entry_id": ids[-1]}


def test_two_detectors_on_disjoint_shards(redis_url: str, r: syncredis.Redis) -> None:
    eth = [ev(k, 30_000.0, symbol="ETHUSDT") for k in range(5)]

    async def body(client: aioredis.Redis) -> tuple[dict[str, int], dict[str, int], int]:
        await put(client, BTC + eth)
        a, b = detector(client, [BTC_SHARD]), detector(client, [ETH_SHARD])
        handled = await a.run_until_idle() + await b.run_until_idle()
        return a.published, b.published, handled

    pa, pb, handled = run(redis_url, body)
    assert handled == 10
    assert pa == pb == {"start": 1, "escalate": 0, "end": 0, "member": 5}
    assert sorted(c.symbol for c in cascades(r)) == ["BTCUSDT", "ETHUSDT"]
    assert status(r, "ETHUSDT")["total_usd"] == "150000.00" and status(r, "BTCUSDT")["count"] == "5"
    groups = {g["name"].decode(): g for g in r.xinfo_groups(keys.event_stream(ETH_SHARD))}
    assert [c["name"].decode() for c in r.xinfo_consumers(keys.event_stream(ETH_SHARD), "detector")] == [
        consumer_name(ETH_SHARD)]
    assert groups["detector"]["pending"] == 0


def test_a_restarted_detector_continues_only_the_cascades_of_its_own_shards(
        redis_url: str, r: syncredis.Redis) -> None:
    """Two processes on disjoint shards, both with an active cascade: the BTC process restarts
    and ends its own cascade; the ETH cascade is the other process's, which ends it once."""
    clock = FakeClock(CLOCK_START)
    eth = [ev(k, 30_000.0, symbol="ETHUSDT") for k in range(5)]

    async def body(client: aioredis.Redis) -> tuple[int, int]:
        await put(client, BTC + eth)
        await detector(client, [BTC_SHARD], clock).run_until_idle()
        eth_process = detector(client, [ETH_SHARD], clock)
        await eth_process.run_until_idle()
        btc_again = detector(client, [BTC_SHARD], clock)
        await btc_again.run_until_idle()
        assert sorted(btc_again.engine.active) == ["BTCUSDT"]
        clock.advance(40.0)
        return await btc_again.tick(), await eth_process.tick()

    assert run(redis_url, body) == (1, 1)
    assert sorted((c.symbol, c.phase) for c in cascades(r)) == [
        ("BTCUSDT", "end"), ("BTCUSDT", "start"), ("ETHUSDT", "end"), ("ETHUSDT", "start")]


def test_warm_restart_rebuilds_window_without_a_second_start(redis_url: str, r: syncredis.Redis,
                                                             page: int) -> None:
    clock = FakeClock(CLOCK_START)

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        await detector(client, [BTC_SHARD], clock).run_until_idle()
        await put(client, [ev(25, venue="okx"), ev(26, venue="deribit")])
        again = detector(client, [BTC_SHARD], clock)  # a new process: fresh engine
        await again.run_until_idle()
        clock.advance(40.0)
        await again.tick()
        return again

    again = run(redis_url, body)
    assert again.rebuilt == 5 and again.published == {"start": 0, "escalate": 0, "end": 1, "member": 2}
    window = again.engine.symbols["BTCUSDT"]
    seen = [*BTC, ev(25, venue="okx"), ev(26, venue="deribit")]
    assert window.cleared_ids.keys() == {e.event_id for e in seen}
    phases = [(c.phase, c.count) for c in cascades(r)]
    assert phases == [("start", 5), ("end", 7)]
    end = cascades(r)[-1]
    assert end.venues == ["bybit", "deribit", "okx"] and end.total_notional_usd == 175_000.0
    assert len(members(r)) == 7


def test_a_status_hash_another_program_wrote_lets_the_other_symbols_warm_start(
        redis_url: str, r: syncredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """ETHUSDT's active status hash says ``count=many``: the warm start (tried twice, Redis failing
    the first time after the hashes were read) logs it once, ETHUSDT starts fresh (its rebuilt
    cascade, unconfirmed, is fenced) and BTCUSDT's cascade is continued and ends once."""
    from detector.lifecycle import Unreadable

    clock = FakeClock(CLOCK_START)
    eth = [ev(k, 30_000.0, symbol="ETHUSDT") for k in range(5)]

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC + eth)
        await detector(client, [BTC_SHARD, ETH_SHARD], clock).run_until_idle()
        r.hset(keys.cascade_status("ETHUSDT"), "count", "many")
        again = detector(client, [BTC_SHARD, ETH_SHARD], clock)
        rebuild = again._rebuild

        async def fails_once(stream: str) -> int:
            again._rebuild = rebuild  # type: ignore[method-assign]
            raise syncredis.exceptions.ConnectionError("gone")
        again._rebuild = fails_once  # type: ignore[method-assign]
        with pytest.raises(syncredis.exceptions.ConnectionError):
            await again.warm_start()
        await again.warm_start()
        assert again.engine.active.keys() == {"BTCUSDT"}
        clock.advance(40.0)
        assert await again.tick() == 1
        return again

    with caplog.at_level(logging.WARNING, logger="detector.service"):
        again = run(redis_url, body)
    assert again.unreadable == {"ETHUSDT": Unreadable("count", "many")}
    assert [(rec.levelname, rec.getMessage()) for rec in caplog.records] == [
        ("WARNING", "detect-s0,3: liq:cascade:status:ETHUSDT: cannot read count='many', so ETHUSDT "
                    "starts fresh, as if it had no status")]
    assert sorted((c.symbol, c.phase) for c in cascades(r)) == [
        ("BTCUSDT", "end"), ("BTCUSDT", "start"), ("ETHUSDT", "start")]


def test_late_copies_of_an_ended_cascade_start_nothing_after_a_restart(redis_url: str,
                                                                       r: syncredis.Redis) -> None:
    clock = FakeClock(CLOCK_START)
    copies = [ev(k * 5, venue="gate") for k in range(5)]  # the burst's times, from another venue

    async def body(client: aioredis.Redis) -> None:
        await put(client, BTC)
        first = detector(client, [BTC_SHARD], clock)
        await first.run_until_idle()
        clock.advance(40.0)
        assert await first.tick() == 1
        restarted = detector(client, [BTC_SHARD], clock)  # rebuilds the ended cascade, fences it
        await restarted.run_until_idle()
        await put(client, copies)
        await restarted.run_until_idle()
        clock.advance(40.0)
        assert await restarted.tick() == 0, "the rebuilt cascade was fenced: it does not end twice"

    run(redis_url, body)
    cascade_id = "BTCUSDT-1700000000000"
    assert [(c.phase, c.cascade_id) for c in cascades(r)] == [("start", cascade_id), ("end", cascade_id)]


def test_an_end_caused_by_another_symbols_event_rewrites_the_ended_symbols_status(
        redis_url: str, r: syncredis.Redis) -> None:
    """SOLUSDT shares ETHUSDT's shard: its event moves the shard's time past ETHUSDT's quiet
    period. ETHUSDT's status must say idle, or a restart adopts it and ends it a second time."""
    assert keys.shard_of("SOLUSDT", 4) == ETH_SHARD
    clock = FakeClock(CLOCK_START)
    eth = [ev(k * 5, symbol="ETHUSDT", venue="bybit" if k % 2 else "okx") for k in range(5)]

    async def body(client: aioredis.Redis) -> None:
        await put(client, eth)
        first = detector(client, [ETH_SHARD], clock)
        await first.run_until_idle()
        await put(client, [ev(60, 1_000.0, symbol="SOLUSDT")])  # ETHUSDT quiet since 20 s
        await first.run_until_idle()
        assert [(c.phase, c.symbol) for c in cascades(r)] == [("start", "ETHUSDT"), ("end", "ETHUSDT")]
        assert status(r, "ETHUSDT")["state"] == "idle"
        restarted = detector(client, [ETH_SHARD], clock)
        await restarted.run_until_idle()
        clock.advance(60.0)
        await restarted.tick()

    run(redis_url, body)
    assert [(c.phase, c.symbol) for c in cascades(r)] == [("start", "ETHUSDT"), ("end", "ETHUSDT")]


def test_a_restarted_detector_keeps_the_entry_mark_of_a_status_it_rewrites_unfed(
        redis_url: str, r: syncredis.Redis) -> None:
    """An adopted cascade whose entries are past the rebuild's reach, ended by another symbol's
    event before its own symbol is fed again: the rewritten status keeps its entry_id (the mark
    that stops a later restart from feeding published entries again)."""
    clock = FakeClock(CLOCK_START)
    stream = keys.event_stream(ETH_SHARD)

    def add(entry_id: str, liq: Liquidation) -> None:
        r.xadd(stream, {codec.PAYLOAD_FIELD: codec.encode(liq)}, id=entry_id)

    async def body(client: aioredis.Redis) -> None:
        for k in range(5):  # stream ids far older than the next entry: outside the rebuild's reach
            add(f"1000-{k + 1}", ev(k * 5, symbol="ETHUSDT", venue="bybit" if k % 2 else "okx"))
        add("10000000-0", ev(21, 1_000.0, symbol="SOLUSDT"))  # ETHUSDT still in its quiet period
        await detector(client, [ETH_SHARD], clock).run_until_idle()
        restarted = detector(client, [ETH_SHARD], clock)
        await restarted.run_until_idle()
        add("10000001-0", ev(60, 1_000.0, symbol="SOLUSDT"))  # ends ETHUSDT's cascade
        await restarted.run_until_idle()

    run(redis_url, body)
    assert [c.phase for c in cascades(r)] == ["start", "end"]
    assert status(r, "ETHUSDT")["state"] == "idle" and status(r, "ETHUSDT")["entry_id"] == "1000-5"


async def seconds_with_an_end(det: Detector, clock: FakeClock, seconds: int = 40) -> list[int]:
    """Tick once a second for ``seconds`` seconds; the seconds whose tick published an end."""
    ended_at = []
    for second in range(1, seconds + 1):
        clock.advance(1.0)
        if await det.tick():
            ended_at.append(second)
    return ended_at


def test_ticks_carry_event_time_from_the_last_feed_not_from_earlier_ticks(redis_url: str,
                                                                          r: syncredis.Redis) -> None:
    """Event time 40 s behind the wall clock (a backlog): a tick a second ends the cascade after
    30 s of quiet, not sooner because each tick re-counted the idle time since the feed."""
    clock = FakeClock(CLOCK_START)  # the last event is at T0 + 20 s, the wall clock at T0 + 60 s

    async def body(client: aioredis.Redis) -> list[int]:
        await put(client, BTC)
        det = detector(client, [BTC_SHARD], clock)
        await det.run_until_idle()
        return await seconds_with_an_end(det, clock)

    assert run(redis_url, body) == [30]
    assert [c.phase for c in cascades(r)] == ["start", "end"]


@pytest.mark.parametrize("lose", ["deleted", "trimmed"])
def test_an_adopted_cascade_on_a_shard_with_no_entries_left_ends_on_the_live_schedule_once(
        redis_url: str, r: syncredis.Redis, lose: str) -> None:
    """The shard's stream was deleted or trimmed before a restart: the rebuild feeds nothing, but
    the cascade its status hash keeps active ends after 30 s of quiet on the live ticks' clock
    (the wall clock less the lag, as without the restart: second 31), once."""
    clock = FakeClock(T0 + 21_000)  # the last event is at T0 + 20 s
    stream = keys.event_stream(BTC_SHARD)

    async def ticks(det: Detector) -> list[int]:
        await det.run_until_idle()
        return await seconds_with_an_end(det, clock)

    async def body(client: aioredis.Redis) -> tuple[list[int], list[int]]:
        await put(client, BTC)
        await detector(client, [BTC_SHARD], clock).run_until_idle()
        if lose == "deleted":
            r.delete(stream)
        else:
            r.xtrim(stream, maxlen=0)
        first = await ticks(detector(client, [BTC_SHARD], clock))
        return first, await ticks(detector(client, [BTC_SHARD], clock))

    assert run(redis_url, body) == ([31], [])
    cascade_id = f"BTCUSDT-{T0}"
    assert [(c.phase, c.cascade_id, c.count) for c in cascades(r)] == [
        ("start", cascade_id, 5), ("end", cascade_id, 5)]
    assert (status(r, "BTCUSDT")["state"], status(r, "BTCUSDT")["cascade_id"]) == ("idle", cascade_id)


def test_an_entry_replayed_for_another_group_is_neither_fed_nor_rebuilt(redis_url: str,
                                                                         r: syncredis.Redis) -> None:
    """``liq dlq replay --group writer`` adds the event back with ``for=writer``: the detector
    acks it unhandled, and a restart does not put it into the window either."""
    replayed = ev(22, venue="deribit")

    async def body(client: aioredis.Redis) -> tuple[Detector, Detector]:
        await put(client, BTC)
        await client.xadd(keys.event_stream(BTC_SHARD), {codec.PAYLOAD_FIELD: codec.encode(replayed),
                                                         codec.TARGET_GROUP_FIELD: b"writer"})
        first = detector(client, [BTC_SHARD])
        await first.run_until_idle()
        again = detector(client, [BTC_SHARD])
        await again.run_until_idle()
        return first, again

    first, again = run(redis_url, body)
    assert first.engine.events == 5 and again.rebuilt == 5
    assert replayed.event_id not in again.engine.symbols["BTCUSDT"].cleared_ids
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


def test_redelivery_after_a_crash_before_the_ack_publishes_nothing_twice(
        redis_url: str, r: syncredis.Redis) -> None:
    async def body(client: aioredis.Redis) -> tuple[int, Detector]:
        await put(client, BTC)
        crashed = detector(client, [BTC_SHARD])

        async def no_ack(_: Any) -> None:  # published, then died before XACK
            return None
        crashed.consumers[0]._ack = no_ack  # type: ignore[method-assign,assignment]
        await crashed.run_until_idle()
        pending = (await client.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP))["pending"]
        again = detector(client, [BTC_SHARD])
        await again.run_until_idle()
        await put(client, [ev(21)])
        await again.run_until_idle()
        return pending, again

    pending, again = run(redis_url, body)
    assert pending == 5 and again.skipped == 5
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert [m.liquidation.event_id for m in members(r)] == [e.event_id for e in BTC] + [ev(21).event_id]
    assert status(r, "BTCUSDT")["count"] == "6"
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


def test_redelivery_after_a_crash_before_publishing_publishes_once(
        redis_url: str, r: syncredis.Redis, page: int) -> None:
    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        stream = keys.event_stream(BTC_SHARD)
        await client.xgroup_create(stream, keys.DETECTOR_GROUP, id="0", mkstream=True)
        read: Any = await client.xreadgroup(keys.DETECTOR_GROUP, consumer_name(BTC_SHARD), {stream: ">"})
        assert len(read[stream.encode()]) == 5  # delivered, then the process died: nothing published
        again = detector(client, [BTC_SHARD])
        await again.run_until_idle()
        return again

    again = run(redis_url, body)
    assert again.rebuilt == 0 and again.skipped == 0
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert len(members(r)) == 5 and status(r, "BTCUSDT")["state"] == "active"


def test_entries_published_before_a_restart_count_as_dropped_once_through_a_failed_publication(
        redis_url: str, r: syncredis.Redis, metrics_port: int) -> None:
    """After a restart, the 5 entries published but not acked are redelivered with a new one
    and skipped; the publication fails (for the new entry), so all 6 are redelivered, and the 5
    skipped again: liq_events_dropped_total{reason="published_before"} counts them once."""
    from tests.scrape import scrape, value

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        crashed = detector(client, [BTC_SHARD])

        async def no_ack(_: Any) -> None:  # published, then died before XACK
            return None
        crashed.consumers[0]._ack = no_ack  # type: ignore[method-assign,assignment]
        await crashed.run_until_idle()
        await put(client, [ev(21)])
        stream = keys.event_stream(BTC_SHARD)  # delivered too, then the process died
        await client.xreadgroup(keys.DETECTOR_GROUP, consumer_name(BTC_SHARD), {stream: ">"})
        again = detector(client, [BTC_SHARD])
        with publication_refused(r):
            await again.run_until_idle()
        await again.run_until_idle()
        return again

    def dropped(scraped: Any) -> float:
        return value(scraped, "liq_events_dropped_total", component="detector", reason="published_before")

    before = scrape(metrics_port)
    again = run(redis_url, body)
    assert dropped(scrape(metrics_port)) - dropped(before) == 5
    assert again.skipped == 5 + 5 + 1  # per delivery: twice the 5, and ev(21) fed once
    assert [m.liquidation.event_id for m in members(r)] == [e.event_id for e in BTC] + [ev(21).event_id]
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


@contextmanager
def publication_refused(r: syncredis.Redis) -> Iterator[None]:
    """A real Redis error for the publication inside the block, which must raise it:
    ``liq:cascades`` holds a string (WRONGTYPE), so the script fails at its type check, before
    it writes anything."""
    aside = keys.CASCADE_STREAM + ":aside"
    if r.exists(keys.CASCADE_STREAM):
        r.rename(keys.CASCADE_STREAM, aside)
    r.set(keys.CASCADE_STREAM, "not a stream")
    try:
        with pytest.raises(syncredis.exceptions.ResponseError, match="WRONGTYPE"):
            yield
    finally:
        r.delete(keys.CASCADE_STREAM)
        if r.exists(aside):
            r.rename(aside, keys.CASCADE_STREAM)


def test_a_failed_publication_is_retried_without_feeding_the_batch_twice(
        redis_url: str, r: syncredis.Redis) -> None:
    clock = FakeClock(CLOCK_START)

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        det = detector(client, [BTC_SHARD], clock)
        with publication_refused(r):
            await det.run_until_idle()
        assert det.engine.events == 5 and cascades(r) == []
        await det.run_until_idle()  # the same entries, redelivered from the pending list
        return det

    det = run(redis_url, body)
    assert det.engine.events == 5 and det.skipped == 5
    assert [(c.phase, c.count, c.total_notional_usd) for c in cascades(r)] == [("start", 5, 125_000.0)]
    assert [m.liquidation.event_id for m in members(r)] == [e.event_id for e in BTC]
    assert status(r, "BTCUSDT")["count"] == "5"
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


def test_an_end_whose_publication_failed_goes_out_with_the_next_publication(
        redis_url: str, r: syncredis.Redis) -> None:
    clock = FakeClock(CLOCK_START)

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        det = detector(client, [BTC_SHARD], clock)
        await det.run_until_idle()
        clock.advance(40.0)
        with publication_refused(r):
            await det.tick()
        assert await det.tick() == 0  # nothing new ended, but the outbox goes out
        return det

    det = run(redis_url, body)
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5), ("end", 5)]
    assert status(r, "BTCUSDT")["state"] != "active"
    assert det.outbox == [] and det.published["end"] == 1


def failing_on(bad: Liquidation, det: Detector) -> Detector:
    """``det`` with an engine that raises on ``bad``: a bug that only this event triggers."""
    real_feed = det.engine.feed

    def feed(liq: Liquidation, lane: int = 0) -> Any:
        if liq.event_id == bad.event_id:
            raise KeyError("a bug")
        return real_feed(liq, lane)
    det.engine.feed = feed  # type: ignore[method-assign]
    return det


def test_an_event_the_engine_fails_on_is_dead_lettered_and_no_other_is_fed_twice(
        redis_url: str, r: syncredis.Redis) -> None:
    bad = ev(21, venue="okx")

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, [*BTC[:4], bad, BTC[4]])  # the first half of the split was all fed
        det = failing_on(bad, detector(client, [BTC_SHARD]))
        assert await det.run_until_idle() == 5
        return det

    det = run(redis_url, body)
    assert det.engine.events == 5
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert [m.liquidation.event_id for m in members(r)] == [e.event_id for e in BTC]
    (_, fields), = cast(Entries, r.xrange(keys.dead_letter_stream(keys.event_stream(BTC_SHARD))))
    assert codec.decode_liquidation(fields[b"d"]) == bad and fields[b"reason"] == b"KeyError: 'a bug'"
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


@pytest.mark.parametrize("bad_at", [4, 5], ids=["would-start", "would-join"])
def test_an_event_scoring_fails_on_is_dead_lettered_not_acked_as_a_duplicate(
        redis_url: str, r: syncredis.Redis, monkeypatch: pytest.MonkeyPatch, bad_at: int) -> None:
    """Scoring raises on every window holding one event (a bug it alone triggers), after the
    event entered the window: its redelivery must fail again, to be dead-lettered, and the
    window and the cascade must not count it."""
    from detector.lifecycle import SymbolDetector

    bad = ev(21, venue="deribit")
    real_score = SymbolDetector.score_window

    def score_window(self: SymbolDetector) -> Any:
        if bad.event_id in self.ring:
            raise ValueError("a scoring bug")
        return real_score(self)
    monkeypatch.setattr(SymbolDetector, "score_window", score_window)

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, [*BTC[:bad_at], bad, *BTC[bad_at:]])
        det = detector(client, [BTC_SHARD])
        assert await det.run_until_idle() == 5
        return det

    assert run(redis_url, body).engine.events == 5, "the bad event, fed at each split, is not counted"
    assert [(c.phase, c.count, c.total_notional_usd) for c in cascades(r)] == [("start", 5, 125_000.0)]
    assert [m.liquidation.event_id for m in members(r)] == [e.event_id for e in BTC]
    assert (status(r, "BTCUSDT")["count"], status(r, "BTCUSDT")["venues"]) == ("5", "bybit,okx")
    (_, fields), = cast(Entries, r.xrange(keys.dead_letter_stream(keys.event_stream(BTC_SHARD))))
    assert codec.decode_liquidation(fields[b"d"]) == bad and fields[b"reason"] == b"ValueError: a scoring bug"
    assert r.xpending(keys.event_stream(BTC_SHARD), keys.DETECTOR_GROUP)["pending"] == 0


def test_a_restart_skips_the_event_the_engine_failed_on_instead_of_crash_looping(
        redis_url: str, r: syncredis.Redis) -> None:
    """The rebuild reads the entries the live loop handled, dead-lettered ones included."""
    bad = ev(21, venue="okx")

    async def body(client: aioredis.Redis) -> Detector:
        await put(client, [*BTC[:4], bad, BTC[4]])
        await failing_on(bad, detector(client, [BTC_SHARD])).run_until_idle()
        again = failing_on(bad, detector(client, [BTC_SHARD]))
        await again.warm_start()
        return again

    again = run(redis_url, body)
    assert again.warmed and (again.rebuilt, again.engine.events) == (5, 5)
    assert again.engine.active.keys() == {"BTCUSDT"}, "the cascade goes on, without the bad event"


def test_a_publication_refused_halfway_publishes_nothing_twice(redis_url: str, r: syncredis.Redis) -> None:
    """The member stream holds a string: the script would have added the start to
    ``liq:cascades`` before failing on the members, and the retry would add it again."""
    r.set(keys.CASCADE_MEMBER_STREAM, "not a stream")

    async def body(client: aioredis.Redis) -> None:
        await put(client, BTC)
        det = detector(client, [BTC_SHARD])
        with pytest.raises(syncredis.exceptions.ResponseError, match="liq:cascade:members holds a string"):
            await det.run_until_idle()
        assert r.xlen(keys.CASCADE_STREAM) == 0, "nothing written before the failure"
        r.delete(keys.CASCADE_MEMBER_STREAM)
        await det.run_until_idle()

    run(redis_url, body)
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert len(members(r)) == 5


def test_a_publication_whose_reply_was_lost_is_written_once(redis_url: str, r: syncredis.Redis) -> None:
    """Redis ran the publication, then the connection dropped before the reply: the retry sends
    it again with its sequence number and writes nothing the second time."""
    async def body(client: aioredis.Redis) -> Detector:
        await put(client, BTC)
        det = detector(client, [BTC_SHARD])
        real_script = det.publish_script
        lost = [True]

        async def reply_lost(**kwargs: Any) -> Any:
            result = await real_script(**kwargs)
            if lost and lost.pop():
                raise syncredis.exceptions.ConnectionError("connection lost before the reply")
            return result

        det.publish_script = reply_lost  # type: ignore[assignment]
        with pytest.raises(syncredis.exceptions.ConnectionError):
            await det.run_until_idle()
        assert det.unconfirmed is not None and det.unconfirmed.seq == 1
        await det.run_until_idle()
        return det

    det = run(redis_url, body)
    assert [(c.phase, c.count) for c in cascades(r)] == [("start", 5)]
    assert len(members(r)) == 5 and det.unconfirmed is None
    assert r.get(keys.detector_publications(det.name)) == b"1"
    again = run(redis_url, lambda client: _warm(detector(client, [BTC_SHARD])))
    assert again.next_seq == 2, "a restart continues the numbering"


async def _warm(det: Detector) -> Detector:
    await det.warm_start()
    return det


def test_a_redis_outage_under_a_running_detector_is_two_lines_not_one_per_tick_or_shard(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shard's consumer and the ticker both lose Redis: one outage, two lines."""
    server = servers.start_redis(tmp_path)

    async def body() -> None:
        nonlocal server
        client = make_async_redis(server.url)
        det = Detector(client, DetectorSettings(shards=4, tick_s=0.001), [BTC_SHARD], FakeClock(CLOCK_START))
        for consumer in det.consumers:
            consumer.backoff = Backoff(base_s=0.001, cap_s=0.002)
        det._heartbeat = heartbeat = Counted(det._heartbeat)  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(det.run(stop))
        server = await redis_down_and_back(server, tmp_path, heartbeat)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(body())
    finally:
        server.stop()
    assert outage_lines(caplog, "detector.service") == [
        ("WARNING", f"detect-s3: redis: unavailable {RETRYING}"),
        ("INFO", "detect-s3: redis: available again after …s and … failed tries"),
        ("INFO", "detect-s3: 0 events, published {'start': 0, 'escalate': 0, 'end': 0, 'member': 0}"),
    ]
    assert [r.getMessage() for r in caplog.records
            if r.name == "shared.streams" and "ConnectionError" in r.getMessage()] == []


def test_a_detector_started_while_redis_is_down_warms_up_once_it_answers_with_two_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The warm start is retried with the backoff (not every second), logged when it begins
    failing and when it succeeds, not at every retry."""
    port = servers.free_port()

    async def body() -> servers.RedisServer:
        client = make_async_redis(f"redis://127.0.0.1:{port}/0")
        det = Detector(client, DetectorSettings(shards=4), [BTC_SHARD], FakeClock(CLOCK_START))
        det.backoff = Backoff(base_s=0.001, cap_s=0.002)
        det.warm_start = warm = Counted(det.warm_start)  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(det.run(stop))
        await warm.until(lambda w: w.failed >= 5)
        server = servers.start_redis(tmp_path, port=port)
        await warm.until(lambda w: w.ok == 1)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        return server

    with caplog.at_level(logging.INFO, logger="detector.service"):
        server = asyncio.run(body())
    server.stop()
    assert outage_lines(caplog, "detector.service") == [
        ("WARNING", f"detect-s3: warm start: unavailable {RETRYING}"),
        ("INFO", "detect-s3: warm start: available again after …s and … failed tries"),
        ("INFO", "detect-s3: 0 events, published {'start': 0, 'escalate': 0, 'end': 0, 'member': 0}"),
    ]


def test_a_detector_stopped_before_redis_ever_answered_does_not_say_redis_came_back(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C during the warm start's outage: the log says it stopped, not "available again"."""
    port = servers.free_port()

    async def body() -> None:
        client = make_async_redis(f"redis://127.0.0.1:{port}/0")
        det = Detector(client, DetectorSettings(shards=4), [BTC_SHARD], FakeClock(CLOCK_START))
        det.backoff = Backoff(base_s=0.001, cap_s=0.002)
        det.warm_start = warm = Counted(det.warm_start)  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(det.run(stop))
        await warm.until(lambda w: w.failed >= 3)
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()
        assert not det.warmed and warm.ok == 0

    with caplog.at_level(logging.INFO, logger="detector.service"):
        asyncio.run(body())
    assert outage_lines(caplog, "detector.service") == [
        ("WARNING", f"detect-s3: warm start: unavailable {RETRYING}"),
        ("INFO", "detect-s3: stopped before the warm start succeeded: nothing was consumed"),
    ]


def test_the_detectors_endpoint_counts_events_cascades_and_drops_exactly(redis_url: str,
                                                                         metrics_port: int) -> None:
    """Scraped over HTTP: 6 entries in, one stamped 10 minutes after its receipt dropped as
    from the future, one cascade started and ended, its 5 members published."""
    from tests.scrape import scrape, total, value

    clock = FakeClock(CLOCK_START)
    received = [msgspec.structs.replace(e, received_ms=CLOCK_START - 100) for e in BTC]
    ahead = ev(30, venue="okx", received_ms=T0 - 600_000)  # exchange time 10 min past its receipt

    async def body(client: aioredis.Redis) -> None:
        await put(client, [*received, ahead])
        det = detector(client, [BTC_SHARD], clock)
        await det.run_until_idle()
        clock.advance(40.0)
        await det.tick()

    before = scrape(metrics_port)
    run(redis_url, body)
    after = scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert total(after, "liq_events_in_total", component="detector") - total(
        before, "liq_events_in_total", component="detector") == 6
    assert delta("liq_events_dropped_total", component="detector", reason="from_future") == 1
    assert (delta("liq_cascades_total", phase="start"), delta("liq_cascades_total", phase="end")) == (1, 1)
    assert delta("liq_events_out_total", component="detector", sink=keys.CASCADE_STREAM) == 2
    assert delta("liq_events_out_total", component="detector", sink=keys.CASCADE_MEMBER_STREAM) == 5
    assert delta("liq_cascade_alert_seconds_count") == 1


def test_every_eighth_event_fed_is_timed_into_the_hot_path_histogram(redis_url: str) -> None:
    """17 events fed: the 8th and the 16th are timed (``DETECT_TIMED_EVERY``), not one per event."""
    from prometheus_client import REGISTRY

    from shared.metrics import DETECT_TIMED_EVERY

    def timed() -> float:
        return REGISTRY.get_sample_value("liq_detect_event_seconds_count") or 0.0

    events = [ev(k, usd=1_000.0) for k in range(17)]  # $17K: no cascade

    async def body(client: aioredis.Redis) -> int:
        await put(client, events)
        det = detector(client, [BTC_SHARD])
        await det.run_until_idle()
        return det.engine.events

    before = timed()
    assert run(redis_url, body) == 17
    assert DETECT_TIMED_EVERY == 8
    assert timed() - before == 2


def test_the_rebuild_reads_back_a_window_and_a_quiet_period_and_its_slack_no_further(
        redis_url: str, r: syncredis.Redis) -> None:
    """The warm restart feeds the entries from ``window + quiet + 10 s`` before the group's last
    delivered one (that edge included), not one millisecond older."""
    stream, last, reach = BTC_SHARD_STREAM, far_past_reach(), REBUILD_REACH_MS
    times = [last - reach - 1, last - reach, last - 1, last]

    async def body(client: aioredis.Redis) -> tuple[int, int]:
        for k, ms in enumerate(times):  # $1,000 each: no cascade, only the window to rebuild
            entry = ev((ms - T0) / 1000, 1_000.0, venue="okx", event_id=f"okx-{k}")
            r.xadd(stream, {codec.PAYLOAD_FIELD: codec.encode(entry)}, id=f"{ms}-0")
        first = detector(client, [BTC_SHARD])
        await first.run_until_idle()
        restarted = detector(client, [BTC_SHARD])
        await restarted.warm_start()
        return first.engine.events, restarted.rebuilt

    assert run(redis_url, body) == (4, 3)


BTC_SHARD_STREAM = keys.event_stream(BTC_SHARD)


REBUILD_REACH_MS = (DetectorSettings().window_ms + DetectorSettings().quiet_ms + REBUILD_SLACK_MS)
"""How far back the warm start rebuilds: the window, the quiet period and the slack."""


def far_past_reach() -> int:
    """A time for the last event far enough from T0 that the rebuild reaches back past T0."""
    return T0 + 10 * REBUILD_REACH_MS


async def drained_then_restarted(client: aioredis.Redis) -> Detector:
    """A detector drains the BTC shard; a new one (the restart) warm-starts after it."""
    await detector(client, [BTC_SHARD]).run_until_idle()
    restarted = detector(client, [BTC_SHARD])
    await restarted.warm_start()
    return restarted


def add_at(r: syncredis.Redis, stream: str, times: list[int], venue: str) -> None:
    """One ``venue`` liquidation at each of ``times`` (ms), that time its entry id too."""
    for ms in times:
        entry = ev((ms - T0) / 1000, venue=venue, event_id=f"{venue}-{ms}")
        r.xadd(stream, {codec.PAYLOAD_FIELD: codec.encode(entry)}, id=f"{ms}-0")


def test_a_restart_does_not_start_a_cascade_from_the_tail_of_one_that_ended_before_it(
        redis_url: str, r: syncredis.Redis) -> None:
    """A cascade whose window begins before the rebuild's reach ended before the restart: its
    later events, rebuilt into the window, are not counted again with the events after its end
    (the end had cleared them, and refuses them as late)."""
    stream, last = BTC_SHARD_STREAM, far_past_reach()
    ended = [last - 103_000, last - 80_000, last - 70_000, last - 60_000, last - 50_000]
    after_end = [last - 15_000, last]  # the first one ends the cascade (quiet since last - 50 s)
    cascade_id = f"BTCUSDT-{ended[0]}"

    add = partial(add_at, r, stream)

    async def body(client: aioredis.Redis) -> None:
        add(ended, "okx")
        add(after_end, "bybit")
        restarted = await drained_then_restarted(client)
        add([last + 5_000, last + 6_000], "gate")  # four events since the end: no rule
        await restarted.run_until_idle()

    run(redis_url, body)
    assert [(c.phase, c.cascade_id, c.count) for c in cascades(r)] == [
        ("start", cascade_id, 5), ("end", cascade_id, 5)]
    assert len(members(r)) == 5


def test_a_restarted_detector_keeps_naming_the_last_ended_cascade_in_the_idle_status(
        redis_url: str, r: syncredis.Redis) -> None:
    """The idle status hash names the symbol's last cascade; a restart whose rebuild no longer
    reaches that cascade's window (or opens and fences a piece of it under another id) keeps
    the published id, and its end time, when it rewrites the hash."""
    stream, last = BTC_SHARD_STREAM, far_past_reach()
    burst = [last - 103_000 + k * 1_000 for k in range(8)]  # $200K in 8 s: its piece in reach holds
    cascade_id = f"BTCUSDT-{burst[0]}"

    add = partial(add_at, r, stream)

    async def body(client: aioredis.Redis) -> None:
        add(burst, "okx")
        add([last], "bybit")  # ends the cascade
        await detector(client, [BTC_SHARD]).run_until_idle()
        restarted = detector(client, [BTC_SHARD])
        await restarted.warm_start()  # rebuilds BTCUSDT-<burst[3]> from the burst's last 5, fences it
        add([last + 5_000], "gate")
        await restarted.run_until_idle()

    run(redis_url, body)
    assert [(c.phase, c.cascade_id) for c in cascades(r)] == [("start", cascade_id), ("end", cascade_id)]
    shown = status(r, "BTCUSDT")
    assert (shown["state"], shown["cascade_id"], shown["ended_through_ms"], shown["count"]) == (
        "idle", cascade_id, str(burst[-1]), "2")


def test_a_late_copy_of_an_ended_cascades_event_joins_no_cascade_continued_after_a_restart(
        redis_url: str, r: syncredis.Redis) -> None:
    """A cascade ended, another started on the same symbol, the detector restarted and continued
    it: a late copy of the first cascade's burst (another venue's) is refused, as it was before
    the restart, instead of joining the continued cascade and moving its start back."""
    stream, last = BTC_SHARD_STREAM, far_past_reach()
    first = [last - 103_000, last - 80_000, last - 70_000, last - 60_000, last - 50_000]
    second = [last - 15_000 + k * 1_000 for k in range(5)] + [last - 5_000, last]  # ends the first
    first_id, second_id = f"BTCUSDT-{first[0]}", f"BTCUSDT-{second[0]}"

    add = partial(add_at, r, stream)

    async def body(client: aioredis.Redis) -> None:
        add(first, "okx")
        add(second, "bybit")
        restarted = await drained_then_restarted(client)
        late = ev((first[-1] - 2_000 - T0) / 1000, venue="gate", event_id="gate-late")
        r.xadd(stream, {codec.PAYLOAD_FIELD: codec.encode(late)}, id=f"{last + 1_000}-0")
        await restarted.run_until_idle()

    run(redis_url, body)
    assert [(c.phase, c.cascade_id) for c in cascades(r)] == [
        ("start", first_id), ("end", first_id), ("start", second_id)]
    assert [m.liquidation.event_id for m in members(r) if m.cascade_id == second_id] == [
        f"bybit-{ms}" for ms in second]
    shown = status(r, "BTCUSDT")
    assert (shown["state"], shown["cascade_id"], shown["count"], shown["start_ms"]) == (
        "active", second_id, "7", str(second[0]))
