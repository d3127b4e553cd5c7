"""A collector's Prometheus endpoint after real work: scraped over HTTP, every series exact.

One venue's collector runs against its simulated exchange over real WebSockets and publishes to a
real Redis; the test counts what the simulator sent (frames, liquidations, a malformed frame, a
dropped connection) and compares it with the scrape. Counters are process-wide, so the test
compares the scrape after the work with one taken before it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec
import pytest

from collectors import load_venue
from collectors.base import Collector, CollectorConfig
from collectors.sim.protocol import Outgoing
from collectors.sim.server import ExchangeSimulator
from shared.redisconn import make_async_redis
from tests.collectors.test_collector_live import T0, events
from tests.scrape import scrape, value

pytestmark = pytest.mark.integration
VENUE = "binance_usdm"  # no application heartbeat: every frame it receives is one the test sent


def test_a_collectors_endpoint_counts_its_real_work_exactly(redis_url: str, metrics_port: int) -> None:
    before = scrape(metrics_port)
    work = asyncio.run(_run(redis_url, metrics_port))
    after = work["scrape"]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    n = work["liquidations"]
    assert delta("liq_events_in_total", component="collector", source=VENUE) == work["frames"]
    assert delta("liq_events_out_total", component="collector", sink=VENUE) == n
    assert delta("liq_parse_errors_total", venue=VENUE) == 1
    assert delta("liq_duplicates_dropped_total", venue=VENUE) == 0
    assert delta("liq_reconnects_total", venue=VENUE) == work["conns"]
    assert delta("liq_collector_publish_seconds_count", venue=VENUE) == n  # one batch per liquidation
    assert delta("liq_collector_publish_seconds_bucket", venue=VENUE, le="+Inf") == n
    assert value(after, "liq_collector_spooled", venue=VENUE) == 0
    assert value(after, "liq_venue_last_event_ms", venue=VENUE) == work["last_event_ms"]
    assert {label: value(after, "liq_venue_connected", venue=VENUE, conn=label)
            for label in work["labels"]} == dict.fromkeys(work["labels"], 1.0)


async def _run(url: str, port: int) -> dict[str, Any]:
    spec = dataclasses.replace(load_venue(VENUE), heartbeat_s=0.05)
    async with ExchangeSimulator([VENUE]) as exchange:
        server = exchange.venue(VENUE)
        frames = 0
        plain_send = server.send

        async def counting_send(conn: object, frame: Outgoing, raw: bool = False) -> bool:
            nonlocal frames
            ok = await plain_send(conn, frame, raw)  # type: ignore[arg-type]
            frames += ok
            return ok

        server.send = counting_send  # type: ignore[method-assign]
        redis = make_async_redis(url)
        collector = Collector(CollectorConfig(
            venue=spec, redis=redis, shards=4, base_url=exchange.urls[VENUE], instruments_every_s=None,
            symbols=list(spec.default_symbols), health_every_s=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        conns = len(collector.plans)

        async def publish_one(k: int) -> int:
            """Emit event k alone and wait until it is published: one publish per liquidation."""
            event = msgspec.structs.replace(events(VENUE, T0, k + 1)[k], timestamp_ms=T0 + k)
            target = collector.published + len(await exchange.emit([event]))
            await collector.wait_until(lambda c: c.published == target)
            return target

        async with asyncio.timeout(20):
            await exchange.wait_subscribed(VENUE, conns)
            for k in range(4):
                await publish_one(k)
            assert await exchange.send_raw(VENUE, "{this is not json") == conns
            await collector.wait_until(lambda c: c.health.parse_errors == 1)
            assert await exchange.drop_connections(VENUE) == conns
            await exchange.wait_subscribed(VENUE, conns)
            await collector.wait_until(lambda c: len(c.health.connections_up) == conns)
            # one more after the reconnect: every frame sent before it has been received
            sent = await publish_one(4)
            up_labels = sorted(collector.health.connections_up)
            scraped = await asyncio.to_thread(scrape, port)  # while running: the connections are up
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()
        return {"frames": frames, "liquidations": sent, "conns": conns, "labels": up_labels,
                "last_event_ms": collector.health.last_event_ms, "scrape": scraped}
