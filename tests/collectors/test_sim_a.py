"""Simulator ↔ parser round trips for binance_usdm, binance_coinm, bybit, okx, bitmex, deribit, bitfinex.

Each simulated venue computes its expected Liquidation from the venue's documented rules; the
parser (a fresh ``new_parser()`` session, subscribed through the simulator's own acks) must
reproduce it exactly from the rendered frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
import pytest

from collectors import load_venue
from collectors.sim import binance_usdm
from collectors.sim.protocol import Outgoing, SimClient, SimItem, SimVenue
from collectors.sim.venue_server import load_sim
from collectors.venue import VenueSession
from shared.market import MarketEvent
from shared.models import Liquidation, Side

VENUES_A = ["binance_usdm", "binance_coinm", "bybit", "okx", "bitmex", "deribit", "bitfinex"]
T0 = 1_700_000_000_000


def _event(base: str, side: Side, price: float, notional_usd: float, dt_ms: int) -> MarketEvent:
    return MarketEvent(
        venue="", base=base, side=side, price=price, notional_usd=notional_usd, timestamp_ms=T0 + dt_ms
    )


EVENTS = [
    _event("BTC", "long", 65_000.5, 125_000.0, 0),
    _event("BTC", "short", 64_990.0, 3_456.0, 7),
    _event("ETH", "long", 3_210.25, 50_000.0, 40),
    _event("ETH", "short", 3_199.5, 12.0, 41),
    _event("SOL", "short", 151.237, 8_765.43, 90),
    _event("SOL", "long", 150.001, 20_000.0, 91),
    _event("XRP", "long", 2.3417, 15_000.0, 120),
    _event("DOGE", "short", 0.18743, 4_321.0, 121),
    _event("ADA", "long", 0.7129, 2_500.0, 150),
    _event("SUI", "short", 3.4561, 11_000.0, 151),
]


def _connect(venue: str) -> tuple[SimVenue, SimClient, VenueSession]:
    """A parser session subscribed to the simulator the way a collector would be."""
    sim, spec = load_sim(venue), load_venue(venue)
    url = spec.plans("ws://127.0.0.1:9", ())[0].url
    parts = urlsplit(url)
    client = SimClient(path=parts.path + (f"?{parts.query}" if parts.query else ""))
    session = spec.new_parser()
    on_connect: Callable[[SimClient], list[Outgoing]] | None = getattr(sim, "on_connect", None)
    replies = on_connect(client) if on_connect else []
    for message in session.on_open():
        replies += sim.on_client_message(client, message)
    for reply in replies:
        assert session.on_message(reply, T0).liquidations == []
    return sim, client, session


def _pairs(sim: SimVenue) -> list[tuple[MarketEvent, SimItem]]:
    pairs = [
        (e, sim.materialize(msgspec.structs.replace(e, venue=sim.name), n)) for n, e in enumerate(EVENTS, 1)
    ]
    return [(event, item) for event, item in pairs if item is not None]


def _items(sim: SimVenue) -> list[SimItem]:
    return [item for _event, item in _pairs(sim)]


def _at_receive(liq: Liquidation, received_ms: int) -> Liquidation:
    """A receive-time venue's expected event as received at ``received_ms``."""
    if liq.timestamp_source == "receive":
        return msgspec.structs.replace(liq, timestamp_ms=received_ms)
    return liq


def _feed(session: VenueSession, frames: list[Outgoing], received_ms: int) -> list[Liquidation]:
    out: list[Liquidation] = []
    for frame in frames:
        out += session.on_message(frame, received_ms).liquidations
    return [msgspec.structs.replace(liq, received_ms=0) for liq in out]


@pytest.mark.parametrize("venue", VENUES_A)
def test_each_item_round_trips_exactly(venue: str) -> None:
    sim, client, session = _connect(venue)
    items = _items(sim)
    assert any(item.expected[0].base == "BTC" for item in items)
    for item in items:
        assert item.topic in client.subscriptions, "the collector's default subscription must cover it"
        received = item.expected[0].timestamp_ms  # BitMEX stamps the receive time
        assert _feed(session, sim.frames([item], client), received) == item.expected


@pytest.mark.parametrize("venue", VENUES_A)
def test_batched_frames_round_trip(venue: str) -> None:
    sim, client, session = _connect(venue)
    items = _items(sim)
    got = _feed(session, sim.frames(items, client), T0)
    want = [_at_receive(liq, T0) for item in items for liq in item.expected]
    assert sorted(got, key=lambda x: x.event_id) == sorted(want, key=lambda x: x.event_id)


@pytest.mark.parametrize("venue", VENUES_A)
def test_expected_is_well_formed(venue: str) -> None:
    sim = load_sim(venue)
    for event, item in _pairs(sim):
        for liq in item.expected:
            assert liq.exchange == venue and liq.quantity > 0 and liq.base == event.base
            known = liq.notional_known and liq.quantity_unit == "base" and liq.notional_usd > 0
            assert known or (liq.quantity_unit == "contracts" and liq.notional_usd == 0.0)
        assert json.dumps(item.native)  # JSON-able
        assert event.side in {liq.side for liq in item.expected}  # Deribit MT: both sides


def test_okx_snapshot_replays_same_event_ids() -> None:
    sim, client, session = _connect("okx")
    items = _items(sim)
    first = _feed(session, sim.frames(items, client), T0)
    replay = _feed(session, sim.snapshot(items, client), T0 + 60_000)
    assert [liq.event_id for liq in replay] == [liq.event_id for liq in first]


def test_bitmex_partial_snapshot_counts_nothing() -> None:
    sim, client, session = _connect("bitmex")
    assert _feed(session, sim.snapshot(_items(sim), client), T0) == []


def test_bitfinex_snapshot_and_heartbeat() -> None:
    sim, client, session = _connect("bitfinex")
    items = _items(sim)
    assert _feed(session, sim.snapshot(items, client), T0) == items[-1].expected
    beat = sim.heartbeat(client)
    assert beat is not None and session.on_message(beat, T0).liquidations == []


def test_deribit_heartbeat_is_answered_with_public_test() -> None:
    sim, client, session = _connect("deribit")
    beat = sim.heartbeat(client)
    assert beat is not None, "test_request only after set_heartbeat, which on_open sends"
    replies = session.on_message(beat, T0).replies
    assert [json.loads(r)["method"] for r in replies] == ["public/test"]
    answer = sim.on_client_message(client, replies[0])
    assert session.on_message(answer[0], T0).liquidations == []


def test_deribit_heartbeat_needs_set_heartbeat() -> None:
    assert load_sim("deribit").heartbeat(SimClient(path="/ws/api/v2")) is None


@pytest.mark.parametrize("venue", ["bybit", "okx", "bitmex", "bitfinex"])
def test_app_level_ping_is_answered(venue: str) -> None:
    sim, client, session = _connect(venue)
    ping = session.heartbeat()
    assert ping is not None
    for reply in sim.on_client_message(client, ping):
        assert session.on_message(reply, T0).liquidations == []


def test_binance_usdm_legacy_paths_are_silent() -> None:
    """Since 2026-04-23 USD-M forceOrder is only on /market: legacy /ws and /stream ack, push nothing."""
    sim = binance_usdm.SIM
    for path in ("/ws/!forceOrder@arr", "/stream?streams=!forceOrder@arr"):
        client = SimClient(path=path)
        sim.on_connect(client)
        subscribe = json.dumps({"method": "SUBSCRIBE", "params": ["!forceOrder@arr"], "id": 1})
        assert json.loads(sim.on_client_message(client, subscribe)[0]) == {"result": None, "id": 1}
        assert client.subscriptions == set()
    market = SimClient(path="/market/ws/!forceOrder@arr")
    sim.on_connect(market)
    assert market.subscriptions == {"!forceOrder@arr"}
    (plan,) = load_venue("binance_usdm").plans("ws://127.0.0.1:9", ())
    assert plan.url.startswith("ws://127.0.0.1:9/market/stream?")


def test_bybit_sim_checks_endpoint_and_args_limit() -> None:
    sim = load_sim("bybit")
    linear = SimClient(path="/v5/public/linear")
    ask = {"op": "subscribe", "args": ["allLiquidation.BTCUSDT", "allLiquidation.BTCUSD"]}
    (reply,) = sim.on_client_message(linear, json.dumps(ask))
    assert json.loads(reply)["success"] is False and "allLiquidation.BTCUSD" in json.loads(reply)["ret_msg"]
    assert linear.subscriptions == {"allLiquidation.BTCUSDT"}
    huge = {"op": "subscribe", "args": [f"allLiquidation.COIN{i:05d}USDT" for i in range(1000)]}
    (reply,) = sim.on_client_message(linear, json.dumps(huge))
    assert json.loads(reply)["success"] is False and linear.subscriptions == {"allLiquidation.BTCUSDT"}


def test_deribit_sim_mt_trade_gives_both_sides() -> None:
    sim, client, session = _connect("deribit")
    item = sim.materialize(_event("BTC", "short", 65_000.5, 10_000.0, 0), 5)
    assert item is not None and item.native["liquidation"] == "MT"
    assert [liq.side for liq in item.expected] == ["long", "short"]
    assert _feed(session, sim.frames([item], client), T0) == item.expected
