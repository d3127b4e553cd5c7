"""Unit tests of the venue sessions htx, gate, bitget, kraken_futures, dydx, hyperliquid and lighter."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from collectors import load_venue
from collectors.venue import VenueSession
from collectors.venues import gate, htx, hyperliquid, lighter
from shared.errors import ParseError
from shared.models import Liquidation

RX = 1_781_000_000_000
VENUES_B = ("htx", "gate", "bitget", "kraken_futures", "dydx", "hyperliquid", "lighter")


def raw(frame: Any) -> str | bytes:
    return frame if isinstance(frame, str | bytes) else json.dumps(frame)


def feed(session: VenueSession, frame: Any) -> list[Liquidation]:
    return session.on_message(raw(frame), RX).liquidations


def one(session: VenueSession, frame: Any) -> Liquidation:
    (liq,) = feed(session, frame)
    assert liq.received_ms == RX
    return liq


def parser(venue: str) -> VenueSession:
    return load_venue(venue).new_parser()


def assert_control(session: VenueSession, *frames: Any) -> None:
    for frame in frames:
        output = session.on_message(raw(frame), RX)
        assert output.liquidations == [] and output.replies == [], frame


def assert_malformed(session: VenueSession, *frames: Any) -> None:
    for frame in frames:
        with pytest.raises(ParseError):
            session.on_message(raw(frame), RX)


# --------------------------------------------------------------------------- every venue


@pytest.mark.parametrize("venue", VENUES_B)
def test_spec_and_plans_on_a_local_url(venue: str) -> None:
    spec = load_venue(venue)
    assert spec.name == venue and spec.live_url.startswith("wss://")
    assert spec.gzip is (venue == "htx")
    assert spec.semantics == {"bitget": "aggregated", "hyperliquid": "partial"}.get(venue, "complete")
    plans = spec.plans("ws://127.0.0.1:9", list(spec.default_symbols))
    assert plans and all(p.url.startswith("ws://127.0.0.1:9/") for p in plans)
    assert len({p.label for p in plans}) == len(plans)
    for plan in plans:
        assert all(isinstance(m, str) and json.loads(m) for m in plan.new_session().on_open())


@pytest.mark.parametrize("venue", VENUES_B)
def test_not_json_is_a_parse_error(venue: str) -> None:
    assert_malformed(parser(venue), "{this is not json", b"\x00\x01")


# --------------------------------------------------------------------------- HTX


def htx_notify(*orders: dict[str, Any], code: str = "BTC-USDT") -> dict[str, Any]:
    return {"op": "notify", "topic": f"public.{code}.liquidation_orders", "ts": RX, "data": list(orders)}


def htx_order(**fields: Any) -> dict[str, Any]:
    order = {"symbol": "BTC", "contract_code": "BTC-USDT", "direction": "sell", "offset": "close",
             "volume": 9, "price": 60_000.5, "created_at": RX - 5}
    return {**order, **fields}


def test_htx_subscribes_per_code_on_three_endpoints() -> None:
    plans = htx.VENUE.plans(htx.VENUE.live_url, ["BTC-USDT", "ETH-USD", "BTC"])
    assert [p.url for p in plans] == [
        "wss://api.hbdm.com/linear-swap-notification",
        "wss://api.hbdm.com/swap-notification",
        "wss://api.hbdm.com/futures-notification",
    ]
    topics = [json.loads(m)["topic"] for p in plans for m in p.new_session().on_open()]
    assert topics == [f"public.{c}.liquidation_orders" for c in ("BTC-USDT", "ETH-USD", "BTC")]
    assert parser("htx").heartbeat() is None


def test_htx_answers_both_ping_forms_with_the_same_ts() -> None:
    session = parser("htx")
    out = session.on_message(json.dumps({"op": "ping", "ts": "1489474081631"}), RX)
    assert out.liquidations == []
    assert [json.loads(r) for r in out.replies] == [{"op": "pong", "ts": "1489474081631"}]
    out = session.on_message(gzip.compress(b'{"ping": 1492420473027}'), RX)
    assert [json.loads(r) for r in out.replies] == [{"pong": 1492420473027}]


def test_htx_accepts_gzip_and_plain_frames_alike() -> None:
    frame = htx_notify(htx_order(amount=0.009, trade_turnover=540.0045))
    assert feed(parser("htx"), gzip.compress(json.dumps(frame).encode())) == feed(parser("htx"), frame)


def test_htx_control_and_malformed_frames() -> None:
    session = parser("htx")
    ack = {"op": "sub", "cid": "1", "topic": "public.BTC-USDT.liquidation_orders", "ts": RX, "err-code": 0}
    refused = {**ack, "err-code": 2011, "err-msg": "invalid topic"}
    assert_control(session, ack, refused, {"op": "notify", "topic": "public.BTC-USDT.other", "data": []})
    assert_malformed(
        session,
        b"\x1f\x8b\x08\x00broken",
        htx_notify({"contract_code": "BTC-USDT", "direction": "sell"}),
        htx_notify(htx_order(direction="close")),
        htx_notify(htx_order(contract_code="WHAT")),
    )


@pytest.mark.parametrize(("direction", "side"), [("sell", "long"), ("buy", "short")])
def test_htx_direction_is_the_order_side(direction: str, side: str) -> None:
    liq = one(parser("htx"), htx_notify(htx_order(direction=direction)))
    assert (liq.side, liq.side_raw) == (side, direction)


def test_htx_linear_uses_amount_and_turnover() -> None:
    liq = one(parser("htx"), htx_notify(htx_order(amount=0.009, trade_turnover=540.0045)))
    assert (liq.symbol, liq.market_type, liq.quantity, liq.notional_usd) == (
        "BTCUSDT", "linear_perpetual", 0.009, 540.0045)
    assert (liq.quantity_native, liq.quantity_native_unit, liq.contract_value) == (9.0, "contracts", 0.001)
    assert liq.timestamp_ms == RX - 5 and len(liq.event_id) == 32


def test_htx_linear_without_amount_uses_the_contract_size_or_stays_in_contracts() -> None:
    liq = one(parser("htx"), htx_notify(htx_order(volume=20)))
    assert liq.quantity == pytest.approx(0.02) and liq.notional_usd == pytest.approx(0.02 * 60_000.5)
    unknown = one(parser("htx"), htx_notify(htx_order(contract_code="ZZZ-USDT", symbol="ZZZ", volume=20)))
    assert (unknown.quantity, unknown.quantity_unit, unknown.notional_known) == (20.0, "contracts", False)
    order = htx_order(contract_code="ZZZ-USDT", symbol="ZZZ", volume=20, amount=200,
                      trade_turnover=12_000_099)
    priced = one(parser("htx"), htx_notify(order))
    assert (priced.quantity, priced.quantity_unit, priced.notional_usd, priced.notional_known) == (
        200.0, "base", 12_000_099.0, True)  # the turnover, not 200 x 60_000.5 = 12_000_100
    assert (priced.contract_value, priced.contract_value_unit) == (10.0, "ZZZ")  # amount / volume


@pytest.mark.parametrize(
    ("code", "symbol", "value", "market_type", "expiry"),
    [
        ("BTC-USD", "BTC", 100.0, "inverse_perpetual", None),
        ("XRP-USD", "XRP", 10.0, "inverse_perpetual", None),
        ("BTC200925", "BTC", 100.0, "inverse_future", "2020-09-25"),
        ("ETH210326", "ETH", 10.0, "inverse_future", "2021-03-26"),
    ],
)
def test_htx_coin_margined_contract_sizes(
    code: str, symbol: str, value: float, market_type: str, expiry: str | None
) -> None:
    liq = one(parser("htx"), htx_notify(htx_order(contract_code=code, symbol=symbol, volume=7, price=250.0)))
    assert (liq.symbol, liq.market_type, liq.expiry) == (f"{symbol}USD", market_type, expiry)
    assert (liq.notional_usd, liq.contract_value, liq.contract_value_unit) == (7 * value, value, "USD")
    assert liq.quantity == pytest.approx(7 * value / 250.0)


def test_htx_linear_future_code() -> None:
    liq = one(parser("htx"), htx_notify(htx_order(contract_code="BTC-USDT-250627", amount=0.009)))
    assert (liq.symbol, liq.market_type, liq.expiry) == ("BTCUSDT", "linear_future", "2025-06-27")


# --------------------------------------------------------------------------- Gate


def gate_update(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"time": RX // 1000, "time_ms": RX, "channel": gate.CHANNEL, "event": "update",
            "result": list(rows)}


def gate_row(**fields: Any) -> dict[str, Any]:
    return {"price": "65000.5", "size": -124, "time": RX - 9, "contract": "BTC_USDT", **fields}


def test_gate_subscribes_all_contracts_on_usdt_btc_and_usd1() -> None:
    plans = gate.VENUE.plans(gate.VENUE.live_url, [])
    assert [p.url for p in plans] == ["wss://fx-ws.gateio.ws/v4/ws/usdt", "wss://fx-ws.gateio.ws/v4/ws/btc",
                                      "wss://fx-ws.gateio.ws/v4/ws/usd1"]
    (usd1,) = gate.VENUE.plans("ws://127.0.0.1:9", ["BTC_USD1"])
    assert usd1.url == "ws://127.0.0.1:9/v4/ws/usd1"
    (sub,) = [json.loads(m) for m in plans[0].new_session().on_open()]
    assert (sub["channel"], sub["event"], sub["payload"]) == (gate.CHANNEL, "subscribe", ["!all"])
    assert isinstance(sub["time"], int)
    (only,) = gate.VENUE.plans("ws://127.0.0.1:9", ["ETH_USDT"])
    assert only.url == "ws://127.0.0.1:9/v4/ws/usdt"
    assert json.loads(only.new_session().on_open()[0])["payload"] == ["ETH_USDT"]


def test_gate_heartbeat_and_control_frames() -> None:
    session = parser("gate")
    ping = json.loads(str(session.heartbeat()))
    assert ping["channel"] == "futures.ping" and isinstance(ping["time"], int)
    assert_control(
        session,
        {"time": 1, "channel": "futures.pong", "event": "", "result": None},
        {"time": 1, "channel": gate.CHANNEL, "event": "subscribe", "result": {"status": "success"}},
        {"time": 1, "channel": gate.CHANNEL, "event": "subscribe", "error": {"code": 2, "message": "x"}},
        {"time": 1, "channel": "futures.trades", "event": "update", "result": []},
    )


def test_gate_malformed_rows() -> None:
    assert_malformed(
        parser("gate"),
        gate_update({"price": "1", "size": 1, "time": RX}),
        gate_update(gate_row(size=0)),
        gate_update(gate_row(size="abc")),
        gate_update(gate_row(time=None)),
        gate_update(gate_row(contract="NOPE")),
    )


@pytest.mark.parametrize(("size", "side"), [(-124, "long"), (124, "short"), ("-3.5", "long"), ("2", "short")])
def test_gate_size_sign_is_the_order_side(size: int | str, side: str) -> None:
    liq = one(parser("gate"), gate_update(gate_row(size=size)))
    assert (liq.side, liq.side_raw) == (side, str(size))
    assert liq.quantity_native == abs(float(size))


def test_gate_contracts_times_quanto_multiplier() -> None:
    liq = one(parser("gate"), gate_update(gate_row()))
    assert liq.quantity == pytest.approx(124 * 0.0001)
    assert liq.notional_usd == pytest.approx(124 * 0.0001 * 65000.5)
    assert (liq.symbol, liq.contract_value, liq.contract_value_unit) == ("BTCUSDT", 0.0001, "BTC")
    inverse = one(parser("gate"), gate_update(gate_row(contract="BTC_USD", size=300, price=60000)))
    assert (inverse.symbol, inverse.market_type) == ("BTCUSD", "inverse_perpetual")
    assert inverse.notional_usd == 300.0
    assert inverse.quantity == pytest.approx(300 / 60000)
    unknown = one(parser("gate"), gate_update(gate_row(contract="ZZZ_USDT", size=5)))
    assert (unknown.quantity, unknown.quantity_unit, unknown.notional_known, unknown.notional_usd) == (
        5.0, "contracts", False, 0.0)


@pytest.mark.parametrize(
    ("fields", "expected_ms"),
    [
        ({"time": 1_781_000_000}, 1_781_000_000_000),
        ({"time": 1_781_000_000_123}, 1_781_000_000_123),
        ({"time": 1_781_000_000.5}, 1_781_000_000_500),
        ({"time": 1_781_000_000, "time_ms": 1_781_000_000_042}, 1_781_000_000_042),
    ],
)
def test_gate_time_in_seconds_or_ms(fields: dict[str, Any], expected_ms: int) -> None:
    assert one(parser("gate"), gate_update(gate_row(**fields))).timestamp_ms == expected_ms


def test_gate_batch_keeps_every_row() -> None:
    rows = [gate_row(size=-1), gate_row(size=-2), gate_row(contract="ETH_USDT", size=3, price="3000")]
    liqs = feed(parser("gate"), gate_update(*rows))
    assert [liq.symbol for liq in liqs] == ["BTCUSDT", "BTCUSDT", "ETHUSDT"]
    assert len({liq.event_id for liq in liqs}) == 3


# --------------------------------------------------------------------------- Bitget


def bitget_frame(*rows: dict[str, Any], inst_type: str = "usdt-futures") -> dict[str, Any]:
    return {"action": "update", "arg": {"instType": inst_type, "topic": "liquidation"},
            "data": list(rows), "ts": RX}


def bitget_row(**fields: Any) -> dict[str, Any]:
    return {"symbol": "ETHUSDT", "side": "buy", "price": "2500", "amount": "5000", "ts": str(RX), **fields}


def test_bitget_subscribe_ping_and_control() -> None:
    session = parser("bitget")
    assert [json.loads(m) for m in session.on_open()] == [
        {"op": "subscribe", "args": [{"instType": "usdt-futures", "topic": "liquidation"}]}
    ]
    assert session.heartbeat() == "ping"
    assert_control(
        session,
        "pong",
        b"pong",
        {"event": "subscribe", "arg": {"instType": "usdt-futures", "topic": "liquidation"}},
        {"event": "error", "code": 30001, "msg": "topic does not exist"},
        bitget_frame(),
        {**bitget_frame(bitget_row()), "action": "snapshot"},  # a subscribe replay: history
    )
    assert_malformed(
        session,
        "ping?",
        bitget_frame(bitget_row(side="close")),
        bitget_frame(bitget_row(ts="x")),
        bitget_frame({"symbol": "ETHUSDT", "side": "buy"}),
    )


@pytest.mark.parametrize(("side_raw", "side"), [("buy", "long"), ("sell", "short")])
def test_bitget_side_is_the_position_side(side_raw: str, side: str) -> None:
    liq = one(parser("bitget"), bitget_frame(bitget_row(side=side_raw)))
    assert (liq.side, liq.side_raw) == (side, side_raw)


def test_bitget_amount_is_quote() -> None:
    liq = one(parser("bitget"), bitget_frame(bitget_row()))
    assert (liq.quantity, liq.notional_usd, liq.quantity_native, liq.quantity_native_unit) == (
        2.0, 5000.0, 5000.0, "USDT")
    assert (liq.symbol, liq.base, liq.timestamp_ms, liq.sampled) == ("ETHUSDT", "ETH", RX, True)


def test_bitget_batches_symbols_and_rejects_unknown_ones() -> None:
    upper = one(parser("bitget"), bitget_frame(bitget_row(), inst_type="USDT-FUTURES"))
    assert (upper.symbol, upper.quote) == ("ETHUSDT", "USDT")
    liqs = feed(parser("bitget"), bitget_frame(bitget_row(), bitget_row(symbol="APEUSDT", price="0.5")))
    assert [(liq.symbol, liq.base) for liq in liqs] == [("ETHUSDT", "ETH"), ("APEUSDT", "APE")]
    assert_malformed(parser("bitget"), bitget_frame(bitget_row(symbol="BTCUSD")))


# --------------------------------------------------------------------------- Kraken Futures


def kraken_trade(**fields: Any) -> dict[str, Any]:
    trade = {"feed": "trade", "product_id": "PI_XBTUSD", "uid": "u-1", "side": "sell",
             "type": "liquidation", "seq": 1, "time": RX, "qty": 12_000, "price": 60_000.0}
    return {**trade, **fields}


def test_kraken_subscribes_trade_and_heartbeat_feeds() -> None:
    session = load_venue("kraken_futures").plans("ws://127.0.0.1:9", ["PF_XBTUSD"])[0].new_session()
    assert [json.loads(m) for m in session.on_open()] == [
        {"event": "subscribe", "feed": "trade", "product_ids": ["PF_XBTUSD"]},
        {"event": "subscribe", "feed": "heartbeat"},
    ]
    assert session.heartbeat() is None


def test_kraken_control_frames_and_ordinary_trades_give_nothing() -> None:
    assert_control(
        parser("kraken_futures"),
        {"event": "info", "version": 1},
        {"event": "subscribed", "feed": "trade", "product_ids": ["PI_XBTUSD"]},
        {"event": "alert", "message": "Bad request"},
        {"feed": "heartbeat", "time": RX},
        {"feed": "trade_snapshot", "product_id": "PI_XBTUSD", "trades": [kraken_trade()]},
        kraken_trade(type="fill"),
    )
    assert_malformed(parser("kraken_futures"), kraken_trade(side="flat"), kraken_trade(qty=None),
                     kraken_trade(product_id="XX_FOO"), kraken_trade(product_id="FI_XBTUSD_999999"))


def test_kraken_trade_without_uid_gets_the_digest() -> None:
    """``uid`` is optional in the trade feed (tardis-node types it so): the event still counts."""
    trade = kraken_trade()
    del trade["uid"]
    liq = one(parser("kraken_futures"), trade)
    assert len(liq.event_id) == 32 and "exchange_id" not in liq.extra
    assert (liq.side, liq.notional_usd) == ("long", 12_000.0)
    assert one(parser("kraken_futures"), trade).event_id == liq.event_id


@pytest.mark.parametrize(("taker", "side"), [("sell", "long"), ("buy", "short")])
def test_kraken_taker_side(taker: str, side: str) -> None:
    liq = one(parser("kraken_futures"), kraken_trade(side=taker))
    assert (liq.side, liq.side_raw, liq.event_id, liq.extra["exchange_id"]) == (side, taker, "u-1", "u-1")


def test_kraken_inverse_usd_contracts_and_linear_base() -> None:
    inverse = one(parser("kraken_futures"), kraken_trade())
    assert (inverse.symbol, inverse.market_type) == ("BTCUSD", "inverse_perpetual")
    assert inverse.notional_usd == 12_000.0
    assert inverse.quantity == pytest.approx(0.2) and inverse.contract_value == 1.0
    linear = one(parser("kraken_futures"), kraken_trade(product_id="PF_ETHUSD", qty=1.5, price=3000.0))
    assert (linear.symbol, linear.market_type, linear.quantity, linear.notional_usd) == (
        "ETHUSD", "linear_perpetual", 1.5, 4500.0)
    assert linear.quantity_native_unit == "base"
    dated = one(parser("kraken_futures"), kraken_trade(product_id="FI_XBTUSD_240628"))
    assert (dated.market_type, dated.expiry, dated.notional_usd) == ("inverse_future", "2024-06-28", 12_000.0)


# --------------------------------------------------------------------------- dYdX


def dydx_trade(**fields: Any) -> dict[str, Any]:
    trade = {"id": "0001", "side": "SELL", "size": "0.5", "price": "60000", "type": "LIQUIDATED",
             "createdAt": "2026-06-09T10:13:20.123Z"}
    return {**trade, **fields}


def dydx_frame(*trades: dict[str, Any], kind: str = "channel_data") -> dict[str, Any]:
    return {"type": kind, "connection_id": "c", "message_id": 3, "id": "BTC-USD", "channel": "v4_trades",
            "contents": {"trades": list(trades)}}


def test_dydx_subscribes_each_market() -> None:
    session = parser("dydx")
    assert [json.loads(m) for m in session.on_open()] == [
        {"type": "subscribe", "channel": "v4_trades", "id": m}
        for m in ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "SUI-USD")
    ]
    assert session.heartbeat() is None


def test_dydx_only_liquidated_trades_count() -> None:
    session = parser("dydx")
    assert_control(
        session,
        {"type": "connected", "connection_id": "c", "message_id": 0},
        {"type": "error", "message": "Invalid subscribe message", "connection_id": "c"},
        dydx_frame(dydx_trade(type="LIMIT")),
        {"type": "channel_data", "id": "BTC-USD", "channel": "v4_markets", "contents": {}},
    )
    liqs = feed(session, dydx_frame(dydx_trade(type="LIMIT", id="a"), dydx_trade(id="b")))
    assert [liq.event_id for liq in liqs] == ["b"]


def test_dydx_subscribed_snapshot_is_skipped_and_batches_are_returned() -> None:
    snapshot = dydx_frame(dydx_trade(), kind="subscribed")
    assert feed(parser("dydx"), snapshot) == []
    batch = {"type": "channel_batch_data", "id": "ETH-USD", "channel": "v4_trades",
             "contents": [{"trades": [dydx_trade(id="x")]}, {"trades": [dydx_trade(id="y", side="BUY")]}]}
    liqs = feed(parser("dydx"), batch)
    assert [(liq.event_id, liq.symbol, liq.side) for liq in liqs] == [
        ("x", "ETHUSD", "long"), ("y", "ETHUSD", "short")]


@pytest.mark.parametrize(("taker", "side"), [("SELL", "long"), ("BUY", "short")])
def test_dydx_taker_side_units_and_time(taker: str, side: str) -> None:
    liq = one(parser("dydx"), dydx_frame(dydx_trade(side=taker)))
    assert (liq.side, liq.side_raw, liq.symbol, liq.quote, liq.quantity, liq.notional_usd) == (
        side, taker, "BTCUSD", "USD", 0.5, 30_000.0)
    assert liq.timestamp_ms == 1_781_000_000_123 and liq.extra["exchange_id"] == "0001"


def test_dydx_malformed_trades() -> None:
    assert_malformed(
        parser("dydx"),
        dydx_frame(dydx_trade(createdAt="yesterday")),
        dydx_frame(dydx_trade(side="HOLD")),
        dydx_frame({"id": "1", "type": "LIQUIDATED"}),
        dydx_frame(dydx_trade(size="")),
    )


# --------------------------------------------------------------------------- Hyperliquid

WATCHED = "0x00000000000000000000000000000000000000aa"
OTHER = "0x00000000000000000000000000000000000000bb"


def hl_fill(**fields: Any) -> dict[str, Any]:
    fill = {"coin": "BTC", "px": "66653.0", "sz": "0.5", "side": "A", "time": RX, "dir": "Open Short",
            "tid": 745, "liquidation": {"liquidatedUser": OTHER, "markPx": "66607.0", "method": "market"}}
    return {**fill, **fields}


def hl_user(*fills: dict[str, Any]) -> dict[str, Any]:
    return {"channel": "user", "data": {"fills": list(fills)}}


def test_hyperliquid_one_connection_per_address() -> None:
    spec = load_venue("hyperliquid")
    plans = spec.plans("ws://127.0.0.1:9", [WATCHED, OTHER])
    assert [p.url for p in plans] == ["ws://127.0.0.1:9/ws"] * 2
    assert json.loads(plans[0].new_session().on_open()[0]) == {
        "method": "subscribe", "subscription": {"type": "userEvents", "user": WATCHED}}
    assert [p.url for p in spec.plans(spec.live_url, [])] == ["wss://api.hyperliquid.xyz/ws"]
    assert parser("hyperliquid").on_open() == []


def test_hyperliquid_ping_and_control_frames() -> None:
    session = parser("hyperliquid")
    assert json.loads(str(session.heartbeat())) == {"method": "ping"}
    assert_control(
        session,
        {"channel": "pong"},
        {"channel": "subscriptionResponse", "data": {"method": "subscribe", "subscription": {}}},
        {"channel": "error", "data": "Error parsing JSON into valid websocket request"},
        {"channel": "user", "data": {"liquidation": {"lid": 1, "liquidator": OTHER}}},
        hl_user(hl_fill(liquidation=None)),
        {"channel": "trades", "data": [{"coin": "BTC"}]},
    )
    assert_malformed(session, {"channel": "user"}, hl_user(hl_fill(side="X")), hl_user({"coin": "BTC"}),
                     hl_user(hl_fill(coin="@107")))


@pytest.mark.parametrize(
    ("fill_side", "liquidated", "side"),
    [("A", OTHER, "short"), ("B", OTHER, "long"), ("A", WATCHED, "long"), ("B", WATCHED, "short")],
)
def test_hyperliquid_side_depends_on_who_was_liquidated(fill_side: str, liquidated: str, side: str) -> None:
    session = hyperliquid.HyperliquidSession(WATCHED.upper().replace("0X", "0x"))
    liquidation = {"liquidatedUser": liquidated, "markPx": "1.0", "method": "backstop"}
    liq = one(session, hl_user(hl_fill(side=fill_side, liquidation=liquidation)))
    assert (liq.side, liq.side_raw) == (side, fill_side)


def test_hyperliquid_user_fills_name_the_account() -> None:
    data = {"isSnapshot": False, "user": OTHER, "fills": [hl_fill(side="B")]}
    frame = {"channel": "userFills", "data": data}
    assert one(parser("hyperliquid"), frame).side == "short"  # OTHER was liquidated and bought


def test_hyperliquid_user_fills_snapshot_is_history() -> None:
    """``userFills`` replays the account's past fills first (``isSnapshot: true``): not counted."""
    data = {"isSnapshot": True, "user": OTHER, "fills": [hl_fill(side="B")]}
    assert_control(parser("hyperliquid"), {"channel": "userFills", "data": data})


def test_hyperliquid_watches_at_most_ten_users() -> None:
    """Per IP, user subscriptions may name at most 10 distinct users."""
    addresses = [f"0x{n:040x}" for n in range(12)]
    plans = load_venue("hyperliquid").plans("ws://127.0.0.1:9", addresses + [addresses[0].upper()])
    users = [json.loads(p.new_session().on_open()[0])["subscription"]["user"] for p in plans]
    assert users == addresses[: hyperliquid.MAX_USERS] and hyperliquid.MAX_USERS == 10


def test_hyperliquid_units_and_extra() -> None:
    liq = one(parser("hyperliquid"), hl_user(hl_fill(coin="ETH", px="2500", sz="2")))
    assert (liq.symbol, liq.quote, liq.quantity, liq.notional_usd, liq.event_id) == (
        "ETHUSDC", "USDC", 2.0, 5000.0, "745")
    assert liq.extra == {"exchange_id": "745", "liquidated_user": OTHER, "liquidation_method": "market",
                         "mark_price": 66607.0}


# --------------------------------------------------------------------------- Lighter


def lighter_trade(**fields: Any) -> dict[str, Any]:
    trade = {"trade_id": 18237797923, "type": "liquidation", "market_id": 1, "size": "0.01664",
             "price": "75602.8", "usd_amount": "1258.030592", "is_maker_ask": True, "timestamp": RX}
    return {**trade, **fields}


def lighter_frame(*liquidations: dict[str, Any], kind: str = "update/trade") -> dict[str, Any]:
    return {"type": kind, "channel": "trade:1", "trades": [], "liquidation_trades": list(liquidations)}


def test_lighter_subscribes_and_pings() -> None:
    session = lighter.VENUE.plans("ws://127.0.0.1:9", ["1"])[0].new_session()
    assert [json.loads(m) for m in session.on_open()] == [{"type": "subscribe", "channel": "trade/1"}]
    assert json.loads(str(session.heartbeat())) == {"type": "ping"}
    out = session.on_message('{"type":"ping"}', RX)
    assert out.liquidations == [] and [json.loads(r) for r in out.replies] == [{"type": "pong"}]


def test_lighter_spreads_markets_over_connections_of_100_subscriptions() -> None:
    markets = [str(n) for n in range(250)]
    plans = lighter.VENUE.plans("ws://127.0.0.1:9", markets)
    subs = [[json.loads(m)["channel"] for m in p.new_session().on_open()] for p in plans]
    assert [len(s) for s in subs] == [100, 100, 50]
    assert sum(subs, []) == [f"trade/{m}" for m in markets]
    assert len({p.label for p in plans}) == 3 and plans[0].label == "lighter:trade"


def test_lighter_snapshot_and_control_frames_give_nothing() -> None:
    assert_control(
        parser("lighter"),
        {"type": "connected", "session_id": "s"},
        {"type": "pong"},
        {"error": {"code": 30005, "message": "Invalid Channel"}},
        lighter_frame(lighter_trade(), kind="subscribed/trade"),
        lighter_frame(),
        {"type": "update/trade", "channel": "trade:1", "trades": []},
        lighter_frame(lighter_trade(type="trade")),
        lighter_frame(lighter_trade(market_id=999)),
    )
    assert_malformed(parser("lighter"), lighter_frame({"trade_id": 1, "type": "liquidation"}),
                     lighter_frame(lighter_trade(size="x")))


@pytest.mark.parametrize(("maker_ask", "side"), [(True, "short"), (False, "long")])
def test_lighter_taker_is_liquidated(maker_ask: bool, side: str) -> None:
    liq = one(parser("lighter"), lighter_frame(lighter_trade(is_maker_ask=maker_ask)))
    assert liq.side == side and liq.side_raw == f"is_maker_ask={str(maker_ask).lower()}"


def test_lighter_market_id_units_and_ids() -> None:
    liq = one(parser("lighter"), lighter_frame(lighter_trade(market_id=0, size="2", price="2500")))
    assert (liq.symbol, liq.symbol_native, liq.quantity, liq.notional_usd) == ("ETHUSDC", "0", 2.0, 5000.0)
    assert (liq.event_id, liq.extra["exchange_id"], liq.extra["usd_amount"]) == (
        "18237797923", "18237797923", 1258.030592)


@pytest.mark.parametrize(("fill_side", "direction", "side"), [
    ("A", "Liquidated Cross Long", "long"), ("B", "Liquidated Isolated Short", "short"),
    ("A", "Open Short", "short"), ("B", "Close Short", "long")])
def test_hyperliquid_the_liquidated_accounts_own_fill_is_known_by_its_dir(
        fill_side: str, direction: str, side: str) -> None:
    """Without a watched address (``liq parse``, a recording), ``dir`` tells the liquidated
    account's own fill from the counterparty's."""
    liq = one(parser("hyperliquid"), hl_user(hl_fill(side=fill_side, dir=direction)))
    assert (liq.side, liq.side_raw) == (side, fill_side)


def test_hyperliquid_k_coins_are_thousands_as_other_venues_name_them() -> None:
    liq = one(parser("hyperliquid"), hl_user(hl_fill(coin="kPEPE", px="0.0123", sz="1000")))
    assert (liq.symbol_native, liq.base, liq.symbol, liq.quantity) == (
        "kPEPE", "1000PEPE", "1000PEPEUSDC", 1000.0)
    assert one(parser("hyperliquid"), hl_user(hl_fill(coin="HYPE"))).symbol == "HYPEUSDC"


def test_lighter_shipped_table_names_markets_beyond_the_first_ten() -> None:
    frame = {"type": "update/trade", "channel": "trade:11", "trades": [], "liquidation_trades": [
        {"trade_id": 5, "type": "liquidation", "market_id": 11, "size": "2", "price": "5",
         "usd_amount": "10", "is_maker_ask": False, "timestamp": RX}]}
    liq = one(parser("lighter"), frame)
    assert (liq.symbol_native, liq.symbol, liq.side, liq.notional_usd) == ("11", "DOTUSDC", "long", 10.0)


def test_lighter_order_books_answer_lists_perpetuals_only() -> None:
    from collectors.venue import InstrumentRequest

    body = json.dumps({"code": 200, "order_books": [
        {"symbol": "TAO", "market_id": 13, "status": "active"},
        {"symbol": "ETH/USDC", "market_id": 2048, "status": "active"}]}).encode()
    request = InstrumentRequest(lighter.ORDER_BOOKS_PATH)
    [tao] = lighter.parse_order_books(body, request)
    assert (tao.symbol_native, tao.symbol, tao.market_type) == ("13", "TAOUSDC", "linear_perpetual")
    with pytest.raises(ValueError):
        lighter.parse_order_books(b'{"code": 200}', request)


def test_lighter_subscribes_every_market_its_table_knows_and_relists() -> None:
    """No symbols given: every market of the instrument table (shipped, cached, refreshed from
    orderBooks), at most 100 per connection; the collector asks again for new listings."""
    plans = lighter.VENUE.plans("ws://127.0.0.1:9", [])
    markets = [m for p in plans for m in p.symbols]
    assert markets == sorted(lighter.TABLE.natives(), key=int) and {"0", "1", "2", "11", "67"} <= set(markets)
    subs = [json.loads(m)["channel"] for p in plans for m in p.new_session().on_open()]
    assert subs == [f"trade/{m}" for m in markets]
    assert lighter.VENUE.relists and lighter.VENUE.default_symbols == ()


def test_dydx_subscribes_every_active_listed_market_32_per_connection() -> None:
    from collectors.venues import dydx

    tickers = [f"M{n:03d}-USD" for n in range(70)]
    listing = {"markets": {t: {"ticker": t, "status": "ACTIVE"} for t in tickers}}
    listing["markets"]["OLD-USD"] = {"ticker": "OLD-USD", "status": "FINAL_SETTLEMENT"}
    urls: list[str] = []

    def fetch(url: str) -> Any:
        urls.append(url)
        return listing

    markets = dydx.discover_markets(dydx.VENUE.live_url, fetch)
    assert urls == ["https://indexer.dydx.trade/v4/perpetualMarkets"]
    assert markets == tickers, "active ones only"

    def down(url: str) -> Any:
        raise OSError("unreachable")

    assert dydx.discover_markets(dydx.VENUE.live_url, down) == list(dydx.DEFAULT_MARKETS)
    assert dydx.discover_markets("ws://127.0.0.1:9", fetch) == list(dydx.DEFAULT_MARKETS) and len(urls) == 1
    plans = dydx.VENUE.plans("ws://127.0.0.1:9", markets)
    assert [len(p.symbols) for p in plans] == [32, 32, 6]
    assert [p.label for p in plans] == ["dydx:trades", "dydx:trades:1", "dydx:trades:2"]
    subs = [json.loads(m)["id"] for p in plans for m in p.new_session().on_open()]
    assert subs == markets
    assert dydx.VENUE.relists and dydx.VENUE.default_symbols == ()


def test_kraken_subscribes_every_tradeable_listed_product() -> None:
    from collectors.venues import kraken_futures

    listing = {"result": "success", "instruments": [
        {"symbol": "PF_XBTUSD", "type": "flexible_futures", "tradeable": True},
        {"symbol": "PI_ETHUSD", "type": "futures_inverse", "tradeable": True},
        {"symbol": "FF_XBTUSD_261225", "type": "flexible_futures", "tradeable": True},
        {"symbol": "PF_OLDUSD", "type": "flexible_futures", "tradeable": False},
        {"symbol": "in_xbtusd", "type": "spot index", "tradeable": False},
        {"symbol": "rr_xbtusd", "type": "spot index", "tradeable": False}]}
    live = kraken_futures.VENUE.live_url
    assert kraken_futures.discover_products(live, lambda url: listing) == [
        "FF_XBTUSD_261225", "PF_XBTUSD", "PI_ETHUSD"]

    def down(url: str) -> Any:
        raise OSError("unreachable")

    assert kraken_futures.discover_products(live, down) == list(kraken_futures.DEFAULT_PRODUCTS)
    assert kraken_futures.discover_products("ws://127.0.0.1:9", lambda url: listing) == list(
        kraken_futures.DEFAULT_PRODUCTS)
    products = [f"PF_C{n:03d}USD" for n in range(300)]
    plans = kraken_futures.VENUE.plans("ws://127.0.0.1:9", products)
    assert [len(p.symbols) for p in plans] == [250, 50] and plans[0].label == "kraken_futures:trade"
    first = json.loads(plans[1].new_session().on_open()[0])
    assert first == {"event": "subscribe", "feed": "trade", "product_ids": products[250:]}
    assert kraken_futures.VENUE.relists and kraken_futures.VENUE.default_symbols == ()
