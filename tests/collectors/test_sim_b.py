"""Simulator ↔ parser round trips for htx, gate, bitget, kraken_futures, dydx, hyperliquid, lighter.

Each simulated venue computes its expected Liquidation from the venue's documented rules; the
venue's sessions (built by ``plans`` on a local URL, subscribed through the simulator's own
acks) must reproduce it exactly from the rendered frames.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
import pytest

from collectors import load_venue
from collectors.sim.protocol import Outgoing, SimClient, SimItem, SimVenue
from collectors.sim.venue_server import load_sim, wants
from collectors.venue import VenueSession
from shared.market import MarketEvent
from shared.models import Liquidation, Side

VENUES_B = ("htx", "gate", "bitget", "kraken_futures", "dydx", "hyperliquid", "lighter")
T0 = 1_781_000_000_000
RX = T0 + 500

_ROWS: list[tuple[str, Side, float, float, int]] = [
    ("BTC", "long", 65_000.5, 125_000.0, 0),
    ("BTC", "short", 64_990.0, 3_456.0, 7),
    ("ETH", "long", 3_210.25, 50_000.0, 40),
    ("ETH", "short", 3_199.5, 12.0, 41),
    ("SOL", "short", 151.237, 9_000.0, 90),
    ("XRP", "long", 2.3417, 15_000.0, 120),
    ("DOGE", "short", 0.18743, 4_321.0, 121),
    ("ADA", "long", 0.7129, 2_500.0, 150),
    ("SUI", "short", 3.4561, 11_000.0, 151),
]
EVENTS = [
    MarketEvent(venue="", base=base, side=side, price=price, notional_usd=usd, timestamp_ms=T0 + dt)
    for base, side, price, usd, dt in _ROWS
]

Connection = tuple[SimClient, VenueSession]


def inflate(frame: Outgoing) -> Outgoing:
    return gzip.decompress(frame) if isinstance(frame, bytes) and frame[:2] == b"\x1f\x8b" else frame


def handle(session: VenueSession, frames: list[Outgoing]) -> list[Liquidation]:
    """Feed frames (inflated, as the connection loop does) and return what the session produced."""
    out = [session.on_message(inflate(f), RX) for f in frames]
    return [msgspec.structs.replace(liq, received_ms=0) for o in out for liq in o.liquidations]


def connect(venue: str, recent: list[SimItem] | None = None) -> tuple[SimVenue, list[Connection]]:
    """Every connection a collector would open, subscribed through the simulator's acks.

    The subscribe snapshot (of ``recent``, as the server replays it) must produce nothing.
    """
    sim, spec = load_sim(venue), load_venue(venue)
    connections = []
    for plan in spec.plans("ws://127.0.0.1:9", list(spec.default_symbols)):
        client, session = SimClient(path=urlsplit(plan.url).path), plan.new_session()
        assert handle(session, subscribe(sim, client, session, recent or [])) == []
        connections.append((client, session))
    return sim, connections


def subscribe(
    sim: SimVenue, client: SimClient, session: VenueSession, recent: list[SimItem]
) -> list[Outgoing]:
    """What the server sends a new client: connect greeting, acks, then the snapshot of ``recent``."""
    on_connect: Callable[[SimClient], list[Outgoing]] | None = getattr(sim, "on_connect", None)
    frames = on_connect(client) if on_connect else []
    for message in session.on_open():
        frames += sim.on_client_message(client, message)
    return frames + sim.snapshot([item for item in recent if wants(client, item)], client)


def materialize(sim: SimVenue, events: list[MarketEvent]) -> list[SimItem]:
    items = [sim.materialize(msgspec.structs.replace(e, venue=sim.name), n) for n, e in enumerate(events, 1)]
    return [item for item in items if item is not None]


def deliver(sim: SimVenue, connections: list[Connection], items: list[SimItem]) -> list[Liquidation]:
    got = []
    for client, session in connections:
        mine = [item for item in items if wants(client, item)]
        got += handle(session, sim.frames(mine, client)) if mine else []
    return got


def by_id(liqs: list[Liquidation]) -> list[Liquidation]:
    return sorted(liqs, key=lambda liq: (liq.timestamp_ms, liq.event_id))


@pytest.mark.parametrize("venue", VENUES_B)
def test_round_trip_reproduces_expected_exactly(venue: str) -> None:
    sim, connections = connect(venue)
    items = materialize(sim, EVENTS)
    assert {item.expected[0].base for item in items} >= {"BTC", "ETH"}
    assert {liq.side for item in items for liq in item.expected} == {"long", "short"}
    for item in items:
        assert sum(wants(client, item) for client, _ in connections) == 1, "delivered on one connection"
    expected = [liq for item in items for liq in item.expected]
    assert by_id(deliver(sim, connections, items)) == by_id(expected)
    assert len({liq.event_id for liq in expected}) == len(expected)


@pytest.mark.parametrize("venue", VENUES_B)
def test_one_event_per_emit_also_round_trips(venue: str) -> None:
    sim, connections = connect(venue)
    for item in materialize(sim, EVENTS):
        assert deliver(sim, connections, [item]) == item.expected


@pytest.mark.parametrize("venue", VENUES_B)
def test_unsimulated_base_is_skipped(venue: str) -> None:
    event = MarketEvent(venue=venue, base="PEPE", side="long", price=1.0, notional_usd=10.0, timestamp_ms=T0)
    assert load_sim(venue).materialize(event, 1) is None


@pytest.mark.parametrize("venue", VENUES_B)
def test_heartbeats_in_both_directions_are_understood(venue: str) -> None:
    sim, connections = connect(venue)
    for client, session in connections:
        ping = session.heartbeat()
        if ping is not None:
            assert handle(session, sim.on_client_message(client, ping)) == []
        server_ping = sim.heartbeat(client)
        if server_ping is not None:
            output = session.on_message(inflate(server_ping), RX)
            assert output.liquidations == []
            for reply in output.replies:
                assert sim.on_client_message(client, reply) == []


@pytest.mark.parametrize("venue", ["dydx", "lighter", "kraken_futures"])
def test_subscribe_snapshot_replays_recent_items_and_is_skipped(venue: str) -> None:
    """The snapshot on subscribe carries recent liquidations: history, skipped by the collector."""
    sim, connections = connect(venue)
    items = materialize(sim, EVENTS)
    deliver(sim, connections, items)
    plan = load_venue(venue).plans("ws://127.0.0.1:9", list(load_venue(venue).default_symbols))[0]
    client, session = SimClient(path=urlsplit(plan.url).path), plan.new_session()
    frames = subscribe(sim, client, session, items)
    text = " ".join(str(inflate(f)) for f in frames)
    assert all(liq.event_id in text for item in items for liq in item.expected), "snapshot carries them"
    assert handle(session, frames) == []


def test_htx_frames_are_gzip_and_server_pings_get_pongs() -> None:
    sim, [(client, session), *_] = connect("htx")
    (item,) = materialize(sim, EVENTS[:1])
    (frame,) = sim.frames([item], client)
    assert isinstance(frame, bytes) and frame[:2] == b"\x1f\x8b"
    ping = sim.heartbeat(client)
    assert isinstance(ping, bytes)
    assert len(session.on_message(gzip.decompress(ping), RX).replies) == 1


@pytest.mark.parametrize("venue", ["htx", "gate", "bitget"])
def test_identical_rows_get_distinct_digests(venue: str) -> None:
    """Venues without an id: the simulator never emits two rows a collector would merge."""
    sim, connections = connect(venue)
    items = materialize(sim, [EVENTS[0], EVENTS[0], EVENTS[0]])
    ids = [item.expected[0].event_id for item in items]
    assert len(set(ids)) == 3
    assert by_id(deliver(sim, connections, items)) == by_id([i.expected[0] for i in items])


def test_gate_btc_and_usd1_settle_connections_get_no_usdt_contracts() -> None:
    sim, connections = connect("gate")
    usdt, btc, usd1 = (client for client, _ in connections)
    assert usdt.path.endswith("/usdt") and btc.path.endswith("/btc") and usd1.path.endswith("/usd1")
    items = materialize(sim, EVENTS)
    assert all(wants(usdt, item) and not wants(btc, item) and not wants(usd1, item) for item in items)
    assert btc.subscriptions == usd1.subscriptions == {"!all"}


def test_hyperliquid_fills_reach_every_watched_account() -> None:
    sim, spec = load_sim("hyperliquid"), load_venue("hyperliquid")
    plans = spec.plans("ws://127.0.0.1:9", ["0x" + "a" * 40, "0x" + "b" * 40])
    items = materialize(sim, EVENTS[:2])
    for plan in plans:
        client, session = SimClient(path="/ws"), plan.new_session()
        for message in session.on_open():
            sim.on_client_message(client, message)
        assert client.state["user"] == json.loads(plan.new_session().on_open()[0])["subscription"]["user"]
        assert handle(session, sim.frames(items, client)) == [i.expected[0] for i in items]


def test_kraken_greets_with_info_and_acks_subscriptions() -> None:
    sim = load_sim("kraken_futures")
    session = load_venue("kraken_futures").new_parser()
    client = SimClient(path="/ws/v1")
    frames = subscribe(sim, client, session, [])
    events = [json.loads(f)["event"] for f in frames]
    assert events == ["info", "subscribed", "subscribed"]
    assert handle(session, frames) == []
