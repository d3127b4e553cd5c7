"""Every simulated venue (``collectors/sim/<venue>.py``) against its collector session over real sockets.

For each venue whose simulator module and collector module both exist, the collector's own
connection plans (URL + ``on_open`` subscribe frames) are played by a raw websockets client;
a few MarketEvents are emitted and the frames must arrive. The second test feeds them to the
collector's session and compares with the simulator's truth (``sent``).
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collectors import VENUES, load_venue
from collectors.sim.protocol import Outgoing, SimClient, SimItem, SimVenue
from collectors.sim.server import ExchangeSimulator, load_sim
from collectors.venue import VenueSession
from shared.clock import SYSTEM_CLOCK
from shared.errors import ParseError
from shared.market import MarketEvent
from shared.market_model import BASES, LISTED, PRICE_RANGE, canonical_symbol_for, market_type_for
from shared.models import Liquidation, Side

TIMEOUT = 10.0


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


SIMULATED = [name for name in VENUES if _exists(f"collectors.sim.{name}")]
READY = [name for name in SIMULATED if _exists(f"collectors.venues.{name}")]
WATCH = {"hyperliquid": ["0x" + "5e" * 20]}
"""Subscription keys for venues that watch nothing by default (Hyperliquid: user addresses)."""


def text(frame: Outgoing) -> str:
    raw = gzip.decompress(frame) if isinstance(frame, bytes) and frame[:2] == b"\x1f\x8b" else frame
    return raw.decode() if isinstance(raw, bytes) else raw


class Recording:
    """A SimVenue wrapper that counts client frames and records every data frame it renders."""

    def __init__(self, sim: SimVenue) -> None:
        self.sim = sim
        self.name = sim.name
        self.gzip = sim.gzip
        self.heartbeat_s = sim.heartbeat_s
        self.client_frames = 0
        self.wanted = sys.maxsize
        self.enough = asyncio.Event()
        self.data_frames: list[str] = []

    def __getattr__(self, attr: str) -> Any:  # optional hooks such as on_connect
        return getattr(self.sim, attr)

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        return self.sim.materialize(event, seq)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        self.client_frames += 1
        self.expect(self.wanted)
        return self.sim.on_client_message(client, message)

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        frames = self.sim.frames(items, client)
        self.data_frames.extend(text(f) for f in frames)
        return frames

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return self.sim.snapshot(recent, client)

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return self.sim.heartbeat(client)

    def expect(self, client_frames: int) -> None:
        """Set ``enough`` once the server has handled ``client_frames`` client frames."""
        self.wanted = client_frames
        if self.client_frames >= client_frames:
            self.enough.set()


@dataclass
class Collector:
    """The collector side: one raw connection per plan, each frame through the plan's session."""

    received: list[str] = field(default_factory=list)
    liquidations: list[Liquidation] = field(default_factory=list)
    parse_errors: list[ParseError] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read(self, ws: ClientConnection, session: VenueSession) -> None:
        try:
            async for raw in ws:
                await self.on_frame(ws, session, raw)
        except ConnectionClosed:
            pass

    async def on_frame(self, ws: ClientConnection, session: VenueSession, raw: str | bytes) -> None:
        frame = text(raw)
        self.received.append(frame)
        try:
            output = session.on_message(frame, SYSTEM_CLOCK.now_ms())
        except ParseError as exc:
            self.parse_errors.append(exc)
        else:
            self.liquidations.extend(output.liquidations)
            for reply in output.replies:
                await ws.send(reply)
        async with self.changed:
            self.changed.notify_all()


def market(venue: str, t0: int | None = None) -> list[MarketEvent]:
    t0 = SYSTEM_CLOCK.now_ms() if t0 is None else t0
    prices = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
    sides: tuple[Side, ...] = ("long", "short")
    return [
        MarketEvent(venue=venue, base=base, side=side, price=price, notional_usd=25_000.0 + 10 * i,
                    timestamp_ms=t0 + i)
        for i, (base, price, side) in enumerate(
            (b, p, s) for b, p in prices.items() for s in sides
        )
    ]


@dataclass
class Exchange:
    sim: ExchangeSimulator
    recording: Recording
    collector: Collector
    sent: list[Liquidation]


async def subscribe(
    name: str, sim: ExchangeSimulator, recording: Recording, stack: AsyncExitStack
) -> Collector:
    """Open the collector's plans on the simulated venue and send their ``on_open`` frames."""
    spec = load_venue(name)
    collector = Collector()
    opened = recording.client_frames
    for plan in spec.plans(sim.urls[name], WATCH.get(name, spec.default_symbols)):
        ws = await stack.enter_async_context(connect(plan.url, open_timeout=TIMEOUT))
        session = plan.new_session()
        for frame in session.on_open():
            await ws.send(frame)
            opened += 1
        reader = asyncio.ensure_future(collector.read(ws, session))
        stack.callback(reader.cancel)
    recording.expect(opened)
    await asyncio.wait_for(recording.enough.wait(), TIMEOUT)
    return collector


async def exchange(name: str, stack: AsyncExitStack) -> Exchange:
    """Connect the collector's plans to the simulated venue, subscribe, emit a small market."""
    recording = Recording(load_sim(name))
    sim = await stack.enter_async_context(ExchangeSimulator([recording]))
    collector = await subscribe(name, sim, recording, stack)
    await sim.wait_subscribed(name, timeout=TIMEOUT)
    sent = await sim.emit(market(name))
    assert sent, f"{name}: nothing sent; subscriptions {[c.subscriptions for c in sim.clients(name)]}"
    return Exchange(sim, recording, collector, sent)


async def wait_for(collector: Collector, done: Any, what: str) -> None:
    async with collector.changed:
        try:
            await asyncio.wait_for(collector.changed.wait_for(done), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"{what} within {TIMEOUT}s; received {collector.received[-5:]}")


@pytest.mark.parametrize("name", READY)
def test_sim_venue_frames_arrive(name: str) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            ex = await exchange(name, stack)
            rendered = Counter(ex.recording.data_frames)
            assert rendered, f"{name}: emit rendered no data frame"
            await wait_for(ex.collector, lambda: not rendered - Counter(ex.collector.received),
                           f"{name}: the rendered data frames did not all arrive")

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize("name", READY)
def test_sim_venue_matches_its_collector(name: str) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            ex = await exchange(name, stack)
            want = {liq.event_id for liq in ex.sent}
            await wait_for(ex.collector, lambda: want <= {liq.event_id for liq in ex.collector.liquidations},
                           f"{name}: the collector did not produce every sent liquidation")
            assert ex.collector.parse_errors == []
            by_id = {liq.event_id: liq for liq in ex.collector.liquidations}
            for expected in ex.sent:
                got = by_id[expected.event_id]
                assert (got.symbol, got.side, got.base) == (expected.symbol, expected.side, expected.base)
                assert got.quantity == pytest.approx(expected.quantity, rel=1e-6)
                assert got.notional_usd == pytest.approx(expected.notional_usd, rel=1e-6)

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize("name", READY)
def test_sim_venue_replay_only_repeats_sent_liquidations(name: str) -> None:
    """A late subscriber gets the venue's snapshot; it must never add liquidations beyond ``sent``."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            ex = await exchange(name, stack)
            subscribed = ex.sim.subscribed(name)
            late = await subscribe(name, ex.sim, ex.recording, stack)
            await ex.sim.wait_subscribed(name, count=2 * subscribed, timeout=TIMEOUT)
            markers = await ex.sim.emit(market(name, SYSTEM_CLOCK.now_ms() + 1000))
            marker_ids = {liq.event_id for liq in markers}
            await wait_for(late, lambda: marker_ids <= {liq.event_id for liq in late.liquidations},
                           f"{name}: the late subscriber did not get the markers")
            sent_ids = {liq.event_id for liq in ex.sim.sent[name]}
            assert {liq.event_id for liq in late.liquidations} <= sent_ids
            assert late.parse_errors == []

    asyncio.run(asyncio.wait_for(body(), 30))


def test_every_simulated_venue_loads() -> None:
    for name in SIMULATED:
        sim = load_sim(name)
        assert sim.name == name
        assert sim.heartbeat_s >= 0


RENAMED = {
    "bybit": ("allLiquidation.", "liquidation."),  # the topic Bybit retired
    "okx": ("liquidation-orders", "liquidations"),
    "bitmex": ('"liquidation"', '"liquidations"'),
    "bitfinex": ("liq:global", "liq:globl"),
    "deribit": ("public/subscribe", "public/subscrib"),
    "hyperliquid": ("userEvents", "liquidations"),
    "gate": ("futures.public_liquidates", "futures.liquidates"),
    "htx": (".liquidation_orders", ".liquidation"),
    "bitget": ('"liquidation"', '"liquidations"'),
    "kraken_futures": ('"trade"', '"trades"'),
    "dydx": ("v4_trades", "v4_trade"),
    "lighter": ('"trade/', '"trades/'),
}
"""Per venue that subscribes by message: a channel or method renamed, as a collector could send it."""


@pytest.mark.parametrize("name", sorted(RENAMED))
def test_a_request_the_venue_refuses_gets_its_error_reply_which_the_session_reports(name: str) -> None:
    """The venue answers what it does not serve with its error frame (not silence, as if the
    market were quiet), and the collector's session hands that error on for the venue's health."""
    async def run() -> str:
        spec = load_venue(name)
        async with ExchangeSimulator([name]) as sim:
            plan = spec.plans(sim.urls[name], WATCH.get(name, spec.default_symbols))[0]
            session = plan.new_session()
            old, new = RENAMED[name]
            request = next(str(f) for f in session.on_open() if old in str(f))
            async with connect(plan.url, open_timeout=TIMEOUT) as ws, asyncio.timeout(TIMEOUT):
                await ws.send(request.replace(old, new))
                while True:
                    output = session.on_message(text(await ws.recv()), 0)
                    assert not output.liquidations
                    if output.error:
                        return output.error

    assert asyncio.run(run())


@pytest.mark.parametrize("venue", VENUES)
def test_each_simulator_renders_exactly_the_bases_and_symbols_the_market_model_gives_it(venue: str) -> None:
    """``shared.market_model`` keeps its own copy of what each simulator lists and on which symbol
    (the model may not import collectors). A base one renders and the other does not list would be
    liquidations generated and never sent; a symbol or market type the model has otherwise would
    put cascade labels and ``liq evaluate``'s events on another symbol than the pipeline sees."""
    sim = load_sim(venue)
    rendered: dict[str, tuple[str, str]] = {}
    for base in BASES:
        event = MarketEvent(venue=venue, base=base, side="long", price=sum(PRICE_RANGE[base]) / 2,
                            notional_usd=5_000.0, timestamp_ms=1_781_000_000_000)
        item = sim.materialize(event, 1)
        if item is not None:
            rendered[base] = (item.expected[0].symbol, item.expected[0].market_type)
    assert rendered == {base: (canonical_symbol_for(venue, base), market_type_for(venue, base))
                        for base in LISTED[venue]}
