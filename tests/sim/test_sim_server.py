"""ExchangeSimulator over real sockets, with a tiny fake venue defined here (JSON ops, one topic per base)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from collectors.sim.protocol import Outgoing, SimClient, SimItem
from collectors.sim.server import ExchangeSimulator
from shared.market import MarketEvent
from shared.models import Liquidation

TIMEOUT = 5.0


class FakeVenue:
    """``{"op":"subscribe","args":[topic]}`` → ack; ``{"op":"ping"}`` → pong; topic ``liq.<BASE>``."""

    def __init__(self, name: str = "fake", gzip: bool = False, heartbeat_s: float = 0.0) -> None:
        self.name = name
        self.gzip = gzip
        self.heartbeat_s = heartbeat_s

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        if event.base == "DOGE":
            return None
        qty = event.notional_usd / event.price
        native = {"s": f"{event.base}USD", "side": event.side, "p": event.price, "q": qty, "seq": seq}
        expected = Liquidation(
            exchange=self.name, symbol=f"{event.base}-USD", symbol_native=f"{event.base}USD",
            base=event.base, quote="USD", market_type="linear_perpetual", side=event.side,
            price=event.price, quantity=qty, notional_usd=event.notional_usd,
            timestamp_ms=event.timestamp_ms, event_id=f"{self.name}-{seq}",
        )
        return SimItem(native=native, expected=[expected], topic=f"liq.{event.base}")

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        if msg["op"] == "subscribe":
            client.subscriptions.update(msg["args"])
            return [json.dumps({"event": "subscribed", "args": msg["args"]})]
        if msg["op"] == "ping":
            return [json.dumps({"op": "pong"})]
        raise ValueError(f"unknown op {msg['op']}")

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return [json.dumps({"data": [item.native for item in items]})]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return [json.dumps({"snapshot": [item.native for item in recent]})] if recent else []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return json.dumps({"hb": len(client.subscriptions)})


def event(base: str = "BTC", ts: int = 1_700_000_000_000, venue: str = "fake") -> MarketEvent:
    return MarketEvent(venue=venue, base=base, side="long", price=100.0, notional_usd=1000.0, timestamp_ms=ts)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


@asynccontextmanager
async def simulator(*venues: FakeVenue) -> AsyncIterator[ExchangeSimulator]:
    async with ExchangeSimulator(venues or [FakeVenue()]) as sim:
        yield sim


async def recv_json(ws: ClientConnection) -> Any:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    return json.loads(gzip.decompress(raw) if isinstance(raw, bytes) else raw)


async def subscribe(ws: ClientConnection, *topics: str) -> None:
    await ws.send(json.dumps({"op": "subscribe", "args": list(topics)}))
    assert await recv_json(ws) == {"event": "subscribed", "args": list(topics)}


async def ping_pong(ws: ClientConnection) -> list[Any]:
    """Send a ping; every frame received before the pong (they were sent before it)."""
    await ws.send(json.dumps({"op": "ping"}))
    before = []
    while (msg := await recv_json(ws)) != {"op": "pong"}:
        before.append(msg)
    return before


def test_subscribe_ack_ping_pong_and_path() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"] + "/ws/v1?x=1") as ws:
            await subscribe(ws, "liq.BTC")
            assert await ping_pong(ws) == []
            await sim.wait_subscribed("fake", timeout=TIMEOUT)
            [client] = sim.clients("fake")
            assert client.path == "/ws/v1?x=1"
            assert client.subscriptions == {"liq.BTC"}

    run(body)


def test_urls_are_local_and_distinct() -> None:
    async def body() -> None:
        async with simulator(FakeVenue("a"), FakeVenue("b")) as sim:
            assert sim.venues == ("a", "b")
            assert all(url.startswith("ws://127.0.0.1:") for url in sim.urls.values())
            assert len(set(sim.urls.values())) == 2
            with pytest.raises(KeyError, match="not simulated"):
                sim.pause("zzz")

    run(body)


def test_client_frame_the_venue_rejects_keeps_the_connection() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as ws:
            await ws.send(json.dumps({"op": "dance"}))
            await ws.send("not json")
            assert await ping_pong(ws) == []

    run(body)


def test_emit_pushes_only_subscribed_topics_and_keeps_the_truth() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as ws:
            assert await sim.emit([event("BTC", 1)]) == []  # nobody subscribed yet
            await subscribe(ws, "liq.BTC")
            sent = await sim.emit([event("BTC", 2), event("ETH", 3), event("DOGE", 4), event("BTC", 5)])
            frame = await recv_json(ws)
            assert [(d["s"], d["seq"]) for d in frame["data"]] == [("BTCUSD", 2), ("BTCUSD", 5)]
            assert [liq.event_id for liq in sent] == ["fake-2", "fake-5"]
            assert [liq.event_id for liq in sim.sent["fake"]] == ["fake-2", "fake-5"]
            assert [liq.event_id for liq in sim.unsent["fake"]] == ["fake-1", "fake-3"]
            assert (sim.venue("fake").sent_count, sim.venue("fake").unsent_count) == (2, 2)
            assert await ping_pong(ws) == []  # one frame per emit: the venue batches

    run(body)


def test_a_simulator_that_keeps_no_truth_counts_it_and_holds_no_liquidation() -> None:
    """``liq simulate`` runs for days: its servers count what they sent, holding none of it."""
    async def body() -> None:
        async with ExchangeSimulator([FakeVenue()], keep_sent=False) as sim, connect(sim.urls["fake"]) as ws:
            await sim.emit([event("BTC", 1)])
            await subscribe(ws, "liq.BTC")
            for ts in range(2, 1002):
                assert len(await sim.emit([event("BTC", ts), event("ETH", ts)])) == 1
            assert (sim.sent["fake"], sim.unsent["fake"]) == ([], [])
            assert (sim.venue("fake").sent_count, sim.venue("fake").unsent_count) == (1000, 1001)

    run(body)


def test_each_client_gets_its_own_topics_and_events_of_other_venues_are_ignored() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as btc, connect(sim.urls["fake"]) as eth:
            await subscribe(btc, "liq.BTC")
            await subscribe(eth, "liq.ETH")
            await sim.wait_subscribed("fake", count=2, timeout=TIMEOUT)
            await sim.emit([event("BTC", 1), event("ETH", 2), event("BTC", 3, venue="other")])
            assert [d["s"] for d in (await recv_json(btc))["data"]] == ["BTCUSD"]
            assert [d["s"] for d in (await recv_json(eth))["data"]] == ["ETHUSD"]
            assert len(sim.sent["fake"]) == 2

    run(body)


def test_snapshot_replays_recent_delivered_items_on_subscribe() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as first:
            await subscribe(first, "liq.BTC")
            await sim.emit([event("BTC", 1), event("ETH", 2)])
            await recv_json(first)
            async with connect(sim.urls["fake"]) as second:
                await subscribe(second, "liq.BTC", "liq.ETH")
                snapshot = await recv_json(second)
                assert [d["seq"] for d in snapshot["snapshot"]] == [1]  # ETH was never delivered
                await subscribe(second, "liq.BTC")  # no growth: no replay
                assert await ping_pong(second) == []
            assert len(sim.sent["fake"]) == 1

    run(body)


def test_gzip_venue_sends_binary_frames() -> None:
    async def body() -> None:
        async with simulator(FakeVenue(gzip=True)) as sim, connect(sim.urls["fake"]) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["liq.SOL"]}))
            ack = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(ack, bytes) and ack.startswith(b"\x1f\x8b")
            await sim.emit([event("SOL", 1)])
            assert (await recv_json(ws))["data"][0]["s"] == "SOLUSD"

    run(body)


def test_heartbeats_flow_and_pause_silences_them_until_resume() -> None:
    async def body() -> None:
        async with simulator(FakeVenue(heartbeat_s=0.02)) as sim, connect(sim.urls["fake"]) as ws:
            await subscribe(ws, "liq.BTC")
            while await recv_json(ws) != {"hb": 1}:
                pass
            sim.pause("fake")
            await sim.emit([event("BTC", 1)])
            assert all("hb" in msg for msg in await ping_pong(ws))  # acks still flow, no data
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)  # asserting silence takes a bounded wait
            assert [liq.event_id for liq in sim.unsent["fake"]] == ["fake-1"]
            sim.resume("fake")
            await sim.emit([event("BTC", 2)])
            while "hb" in (msg := await recv_json(ws)):
                pass
            assert msg == {"data": [{"s": "BTCUSD", "side": "long", "p": 100.0, "q": 10.0, "seq": 2}]}

    run(body)


def test_drop_connections_aborts_every_client() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as ws:
            await subscribe(ws, "liq.BTC")
            assert await sim.drop_connections("fake") == 1
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is None  # no close frame: 1006
            assert sim.clients("fake") == []

    run(body)


def test_drop_connections_with_a_close_code() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as ws:
            dropping = asyncio.ensure_future(sim.drop_connections("fake", code=1011))
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
            assert await asyncio.wait_for(dropping, TIMEOUT) == 1

    run(body)


def test_send_raw_reaches_clients_unchanged() -> None:
    async def body() -> None:
        async with simulator(FakeVenue(gzip=True)) as sim, connect(sim.urls["fake"]) as ws:
            assert await ping_pong(ws) == []  # the server has registered the client
            assert await sim.send_raw("fake", '{"broken":') == 1
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == '{"broken":'

    run(body)


def test_refuse_then_accept() -> None:
    async def body() -> None:
        async with simulator() as sim:
            url = sim.urls["fake"]
            async with connect(url) as ws:
                await sim.refuse("fake")
                with pytest.raises(ConnectionClosedError):
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
            with pytest.raises(InvalidStatus) as refused:
                await asyncio.wait_for(connect(url), TIMEOUT)
            assert refused.value.response.status_code == 503
            sim.accept("fake")
            async with connect(url) as ws:
                await subscribe(ws, "liq.ETH")

    run(body)


def test_wait_subscribed_names_the_state_on_timeout() -> None:
    async def body() -> None:
        async with simulator() as sim, connect(sim.urls["fake"]) as ws:
            await subscribe(ws, "liq.BTC")
            await sim.wait_subscribed("fake", topic="liq.BTC", timeout=TIMEOUT)
            with pytest.raises(TimeoutError, match=r"liq\.BTC"):
                await sim.wait_subscribed("fake", topic="liq.ETH", timeout=0.05)

    run(body)
