"""A connection is ``subscribing`` until the venue confirms its subscriptions, then ``up``; one the
venue never confirms is ``degraded`` ("subscription not confirmed after N s"), never ``up``.

Every venue's collector against its simulated exchange over real WebSockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from collectors import load_venue
from collectors.base import Collector, CollectorConfig
from collectors.health import VenueHealth
from collectors.sim.server import ExchangeSimulator
from collectors.venues import binance_usdm, bitfinex, deribit
from shared.redisconn import make_async_redis
from shared.venues import VENUE_NAMES

pytestmark = pytest.mark.integration
SHARDS = 4
TIMEOUT_S = 0.3


class States:
    """The venue's state at every step the collector announces (each ``_notify``): connection
    changes and frames, so one between an open and its ack is seen however fast the ack."""

    def __init__(self, collector: Collector) -> None:
        self.seen: list[str] = []
        self.collector = collector
        announce = collector._notify

        async def recording() -> None:
            self.note()
            await announce()

        collector._notify = recording  # type: ignore[method-assign]

    def note(self) -> None:
        state = self.collector.health.compute_state(self.collector.config.clock.now_ms())
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)


@asynccontextmanager
async def collecting(venue: str, redis_url: str, exchange: ExchangeSimulator) -> AsyncIterator[Collector]:
    """``venue``'s collector (its default symbols, subscriptions confirmed within ``TIMEOUT_S``)
    running against ``exchange`` until the block ends."""
    spec = load_venue(venue)
    redis = make_async_redis(redis_url)
    collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                          base_url=exchange.urls[venue], symbols=list(spec.default_symbols),
                                          instruments_every_s=None, health_every_s=0.02,
                                          confirm_timeout_s=TIMEOUT_S))
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        yield collector
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()


async def _until_up(venue: str, redis_url: str) -> list[str]:
    async with ExchangeSimulator([venue]) as exchange, collecting(venue, redis_url, exchange) as collector:
        states = States(collector)
        async with asyncio.timeout(20):
            await collector.wait_until(lambda c: states.seen[-1:] == ["up"] and c.health.state == "up")
        return states.seen


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_a_venue_is_subscribing_until_it_confirms_then_up(venue: str, redis_url: str) -> None:
    seen = asyncio.run(_until_up(venue, redis_url))
    assert "subscribing" in seen, seen
    assert seen[seen.index("up") - 1] == "subscribing", f"up only once the venue confirmed: {seen}"


async def _never_confirmed(venue: str, redis_url: str) -> tuple[list[str], str, int]:
    """The states seen, and the reason and reconnects once degraded (before the collector stops)."""
    async with ExchangeSimulator([venue]) as exchange:
        exchange.ignore_subscribes(venue)
        async with collecting(venue, redis_url, exchange) as collector:
            states = States(collector)
            async with asyncio.timeout(20):
                await collector.wait_until(lambda c: c.health.state == "degraded")
            states.note()
            return list(states.seen), collector.health.reason, collector.health.reconnects


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_a_venue_that_never_confirms_is_degraded_and_never_up(
        venue: str, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="collectors.base"):
        seen, reason, reconnects = asyncio.run(_never_confirmed(venue, redis_url))
    assert "up" not in seen and "subscribing" in seen, seen
    assert seen[-1] == "degraded" and reconnects == 0, seen
    assert reason.endswith("subscription not confirmed after 0.3 s"), reason
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{venue}: state")]
    assert lines.count(f"{venue}: state degraded ({reason})") == 1, lines
    assert f"{venue}: state up" not in lines


def test_a_late_confirmation_brings_the_connection_up_and_a_reopened_one_awaits_again() -> None:
    health = VenueHealth("okx", usual_gap_s=10.0, connections_total=1)
    health.connected("okx:public", 1_000)
    health.awaiting("okx:public")
    assert health.compute_state(1_000) == "subscribing"
    health.not_confirmed("okx:public", 30.0)
    late = "subscription not confirmed after 30 s"
    assert (health.compute_state(2_000), health.reason) == ("degraded", late)
    health.confirmed("okx:public")
    assert (health.compute_state(3_000), health.reason) == ("up", "")
    health.disconnected("okx:public", "closed by server")
    health.not_confirmed("okx:public", 30.0)
    closed = (health.compute_state(4_000), health.reason)
    assert closed == ("down", "closed by server"), "a closed connection awaits nothing"
    health.connected("okx:public", 5_000)
    health.awaiting("okx:public")
    assert (health.compute_state(5_000), health.reason) == ("subscribing", "")


def test_deribit_counts_only_the_answers_to_its_opening_requests() -> None:
    session = deribit.DeribitSession()
    ids = [json.loads(frame)["id"] for frame in session.on_open()]
    reply = session.on_message(json.dumps({"method": "heartbeat", "params": {"type": "test_request"}}), 0)
    (test_id,) = [json.loads(frame)["id"] for frame in reply.replies]
    answers = [{"jsonrpc": "2.0", "id": i, "result": "ok"} for i in (test_id, *ids, ids[0])]
    confirmed = [session.on_message(json.dumps(answer), 0).confirmed for answer in answers]
    assert confirmed == [0, 1, 1, 0] and session.confirmations() == 2


def test_bitfinex_counts_only_the_ack_of_its_own_channel() -> None:
    session = bitfinex.BitfinexSession()
    other = {"event": "subscribed", "channel": "status", "chanId": 5, "key": "deriv:tBTCF0:USTF0"}
    own = {"event": "subscribed", "channel": "status", "chanId": 6, "key": bitfinex.KEY}
    assert [session.on_message(json.dumps(f), 0).confirmed for f in (other, own)] == [0, 1]


def test_binance_is_confirmed_by_its_list_answer_naming_streams() -> None:
    """Its streams are in the URL: the answer to its LIST_SUBSCRIPTIONS naming them confirms the
    connection; an empty list (the legacy path, which delivers nothing), an answer to another id
    or a SUBSCRIBE-style ack does not."""
    session = binance_usdm.UsdmSession()
    (request,) = [json.loads(frame) for frame in session.on_open()]
    assert request == {"method": "LIST_SUBSCRIPTIONS", "id": binance_usdm.LIST_ID}
    answers = [{"result": [], "id": binance_usdm.LIST_ID},
               {"result": ["!forceOrder@arr"], "id": binance_usdm.LIST_ID + 1},
               {"result": None, "id": binance_usdm.LIST_ID},
               {"result": ["!forceOrder@arr"], "id": binance_usdm.LIST_ID}]
    assert [session.on_message(json.dumps(a), 0).confirmed for a in answers] == [0, 0, 0, 1]
    assert session.confirmations() == 1
