"""Unit tests of _common and the sessions of binance_usdm/coinm, bybit, okx, bitmex, deribit, bitfinex."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from collectors import load_venue
from collectors.instruments import Instrument
from collectors.venue import VenueSession
from collectors.venues import _common, bybit, deribit
from shared.errors import ParseError
from shared.models import Liquidation

RX = 1_700_000_000_000


def feed(session: VenueSession, frame: Any, received_ms: int = RX) -> list[Liquidation]:
    raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    return session.on_message(raw, received_ms).liquidations


def parser(venue: str) -> VenueSession:
    return load_venue(venue).new_parser()


def assert_control(session: VenueSession, *frames: Any) -> None:
    for frame in frames:
        raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
        output = session.on_message(raw, RX)
        assert output.liquidations == [] and output.replies == [], frame


def assert_malformed(session: VenueSession, *frames: Any) -> None:
    for frame in frames:
        raw = frame if isinstance(frame, str | bytes) else json.dumps(frame)
        with pytest.raises(ParseError):
            session.on_message(raw, RX)


# --------------------------------------------------------------------------- _common


def test_common_contracts_conversions() -> None:
    inverse = Instrument("X", "BTC", "USD", "inverse_perpetual", 100.0, "USD")
    liq = _common.make_liquidation(
        "v", inverse, side="long", side_raw="SELL", price=50_000.0, quantity_native=3,
        native_unit="contracts", timestamp_ms=RX,
    )  # fmt: skip
    assert (liq.quantity, liq.notional_usd, liq.contract_value_unit) == (300 / 50_000.0, 300.0, "USD")
    linear = Instrument("Y", "BTC", "USDT", "linear_perpetual", 0.01, "BTC")
    liq = _common.make_liquidation(
        "v", linear, side="short", side_raw="buy", price=20_000.0, quantity_native=30,
        native_unit="contracts", timestamp_ms=RX,
    )  # fmt: skip
    assert liq.quantity == pytest.approx(0.3) and liq.notional_usd == pytest.approx(6000.0)
    assert liq.quantity_native_unit == "contracts" and liq.contract_value == 0.01


def test_common_unknown_contract_size_keeps_contracts() -> None:
    inst = Instrument("IOST-USDT-SWAP", "IOST", "USDT", "linear_perpetual")
    liq = _common.make_liquidation(
        "okx", inst, side="long", side_raw="sell", price=0.01, quantity_native=7,
        native_unit="contracts", timestamp_ms=RX,
    )  # fmt: skip
    assert (liq.quantity, liq.quantity_unit, liq.notional_known, liq.notional_usd) == (
        7,
        "contracts",
        False,
        0.0,
    )
    row = _common.liquidation_to_row(msgspec.structs.replace(liq, extra={"price_avg": 1.5}))
    assert row["notional_usd"] is None and row["price_avg"] == 1.5 and "extra" not in row


def test_common_helpers() -> None:
    assert _common.event_digest("A", 1, "long", 2.0, 3.0) == _common.event_digest("A", 1, "long", 2, 3)
    assert _common.event_digest("A", 1, "long", 2.0, 3.0) != _common.event_digest("A", 1, "short", 2.0, 3.0)
    assert _common.yymmdd_expiry("200925") == "2020-09-25"
    assert _common.ddmmmyy_expiry("7MAR25") == "2025-03-07"
    assert _common.month_code_expiry("Z", "25") == "2025-12-26"
    assert _common.iso_ms("2020-12-18T00:30:58.559Z") == 1608251458559
    assert _common.with_default_path("ws://h:1", "/ws/2") == "ws://h:1/ws/2"
    assert _common.with_default_path("ws://h:1/x", "/ws/2") == "ws://h:1/x"
    with pytest.raises(ParseError):
        _common.num("", "v", "price")
    with pytest.raises(ParseError):
        _common.position_side("HOLD", long_if="SELL", short_if="BUY", venue="v")


# --------------------------------------------------------------------------- Binance


def force_order(symbol: str = "BTCUSDT", side: str = "SELL", z: str = "0.5", **extra: Any) -> dict[str, Any]:
    order = {"s": symbol, "S": side, "o": "LIMIT", "f": "IOC", "q": "0.5", "p": "60000", "ap": "60010",
             "X": "FILLED", "l": "0.5", "z": z, "T": 1_700_000_000_123, **extra}  # fmt: skip
    return {"e": "forceOrder", "E": 1_700_000_000_130, "o": order}


def test_binance_usdm_url_is_market_endpoint() -> None:
    spec = load_venue("binance_usdm")
    assert spec.live_url.startswith("wss://fstream.binance.com/market/")
    assert spec.plans(spec.live_url, ())[0].url == spec.live_url
    assert (
        spec.plans("ws://127.0.0.1:5", ())[0].url == "ws://127.0.0.1:5/market/stream?streams=!forceOrder@arr"
    )
    url = spec.plans("wss://fstream.binance.com/market", ["BTCUSDT", "ETHUSDT"])[0].url
    assert url == "wss://fstream.binance.com/market/stream?streams=btcusdt@forceOrder/ethusdt@forceOrder"
    # streams are in the URL: the one request only asks the venue to list them (its confirmation)
    opening = [json.loads(m) for m in parser("binance_usdm").on_open()]
    assert spec.semantics == "sampled" and opening == [{"method": "LIST_SUBSCRIPTIONS", "id": 1}]


@pytest.mark.parametrize(("side", "position"), [("SELL", "long"), ("BUY", "short")])
def test_binance_usdm_side_and_fields(side: str, position: str) -> None:
    (liq,) = feed(parser("binance_usdm"), {"stream": "!forceOrder@arr", "data": force_order(side=side)})
    assert (liq.side, liq.side_raw, liq.sampled) == (position, side, True)
    assert (liq.price, liq.quantity, liq.timestamp_ms) == (60000.0, 0.5, 1_700_000_000_123)
    assert liq.notional_usd == 30000.0 and liq.extra["price_avg"] == 60010.0


def test_binance_usdm_dated_symbol_and_fallback_quantity() -> None:
    (liq,) = feed(parser("binance_usdm"), force_order("ETHUSDT_250926", z="0"))
    assert (liq.symbol, liq.base, liq.market_type, liq.expiry) == (
        "ETHUSDT",
        "ETH",
        "linear_future",
        "2025-09-26",
    )
    assert liq.quantity == 0.5  # z == 0 -> q


def test_binance_usdm_busd_margined_contracts_have_a_usd_notional() -> None:
    """Binance USD-M listed BUSD-margined contracts (recordings hold them): BUSD is a USD coin."""
    (liq,) = feed(parser("binance_usdm"), force_order("BTCBUSD"))
    assert (liq.symbol, liq.quote, liq.notional_known, liq.notional_usd) == ("BTCBUSD", "BUSD", True, 30000.0)


def test_an_event_time_in_microseconds_makes_the_frame_malformed() -> None:
    micro = force_order()
    micro["o"]["T"] = 1_700_000_000_123_000
    with pytest.raises(ParseError, match="event time 1700000000123000 is not epoch milliseconds"):
        parser("binance_usdm").on_message(json.dumps(micro), RX)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("p", "1e20", "price 1e+20 is outside"), ("z", "1e16", "quantity 1e+16 is outside")])
def test_an_absurd_amount_makes_the_frame_malformed(field: str, value: str, reason: str) -> None:
    frame = force_order()
    frame["o"][field] = value
    with pytest.raises(ParseError, match=re.escape(reason)):
        parser("binance_usdm").on_message(json.dumps(frame), RX)


def test_binance_usdm_ids_are_deterministic() -> None:
    first, second = feed(parser("binance_usdm"), force_order()), feed(parser("binance_usdm"), force_order())
    assert first[0].event_id == second[0].event_id


def test_binance_usdm_control_and_malformed() -> None:
    session = parser("binance_usdm")
    assert_control(session, {"result": None, "id": 1}, {"e": "markPriceUpdate", "E": 1})
    bad_price = force_order()
    bad_price["o"]["p"] = "abc"
    assert_malformed(session, b"{nope", {"e": "forceOrder"}, {"foo": 1}, [1, 2], bad_price,
                     force_order(side="HOLD"), force_order("BTCUSDT_2509"))  # fmt: skip


@pytest.mark.parametrize(
    ("symbol", "size"), [("BTCUSD_PERP", 100.0), ("ETHUSD_PERP", 10.0), ("LINKUSD_250926", 10.0)]
)
def test_binance_coinm_contract_sizes(symbol: str, size: float) -> None:
    (liq,) = feed(parser("binance_coinm"), force_order(symbol, side="BUY", z="3", ps=symbol.split("_")[0]))
    assert (liq.side, liq.quantity_native, liq.quantity_native_unit) == ("short", 3.0, "contracts")
    assert (liq.contract_value, liq.notional_usd) == (size, 3 * size)
    assert liq.quantity == pytest.approx(3 * size / 60000.0) and liq.quote == "USD"
    assert liq.market_type.startswith("inverse") and liq.sampled


def test_binance_coinm_plan_url_and_malformed() -> None:
    spec = load_venue("binance_coinm")
    assert spec.plans("ws://127.0.0.1:5", ())[0].url == "ws://127.0.0.1:5/stream?streams=!forceOrder@arr"
    assert_malformed(parser("binance_coinm"), force_order("BTCUSDT"), "{}")


# --------------------------------------------------------------------------- Bybit


def all_liq(*rows: dict[str, Any], symbol: str = "BTCUSDT") -> dict[str, Any]:
    return {
        "topic": f"allLiquidation.{symbol}",
        "type": "snapshot",
        "ts": 1_739_502_303_204,
        "data": list(rows),
    }


def test_bybit_subscribe_heartbeat_and_control() -> None:
    session = bybit.BybitSession(["allLiquidation.BTCUSDT", "allLiquidation.ETHUSDT"])
    (message,) = session.on_open()
    assert json.loads(message)["args"] == ["allLiquidation.BTCUSDT", "allLiquidation.ETHUSDT"]
    assert json.loads(session.heartbeat() or "") == {"op": "ping"}
    assert_control(
        session,
        {"success": True, "ret_msg": "pong", "conn_id": "x", "req_id": "", "op": "ping"},
        {"success": True, "ret_msg": "", "conn_id": "x", "req_id": "liq0", "op": "subscribe"},
        {"topic": "tickers.BTCUSDT", "data": {"symbol": "BTCUSDT"}},
    )
    assert_malformed(session, "not json", {"hello": 1}, all_liq({"s": "BTCUSDT", "S": "Buy", "v": "1"}),
                     all_liq({"T": 1, "s": "BTCUSDT", "S": "Up", "v": "1", "p": "2"}))  # fmt: skip


def test_bybit_batch_sides_and_inverse() -> None:
    rows = [{"T": RX + 1, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "60000"},
            {"T": RX + 2, "s": "BTCUSDT", "S": "Sell", "v": "0.25", "p": "60100"}]  # fmt: skip
    long, short = feed(parser("bybit"), all_liq(*rows))
    assert (long.side, short.side) == ("long", "short")
    assert (long.timestamp_ms, long.notional_usd) == (RX + 1, 30000.0)
    assert long.event_id != short.event_id
    inverse_row = {"T": RX + 3, "s": "XRPUSD", "S": "Sell", "v": "100", "p": "0.5"}
    (inverse,) = feed(parser("bybit"), all_liq(inverse_row))
    assert (inverse.quantity, inverse.notional_usd, inverse.quantity_native_unit) == (
        200.0,
        100.0,
        "contracts",
    )


def test_bybit_symbols() -> None:
    cases = {
        "BTCPERP": ("BTC", "USDC", "linear_perpetual", None),
        "BTC-26DEC25": ("BTC", "USDC", "linear_future", "2025-12-26"),
        "ETHUSDT-26DEC25": ("ETH", "USDT", "linear_future", "2025-12-26"),
        "BTCUSDH26": ("BTC", "USD", "inverse_future", "2026-03-27"),
        "1000PEPEUSDT": ("1000PEPE", "USDT", "linear_perpetual", None),
    }
    for symbol, want in cases.items():
        inst = bybit.parse_symbol(symbol)
        assert (inst.base, inst.quote, inst.market_type, inst.expiry) == want


def test_bybit_sharding_stays_within_args_limit() -> None:
    symbols = [f"COIN{i:04d}USDT" for i in range(3000)] + [f"C{i}USD" for i in range(300)]
    plans = load_venue("bybit").plans("wss://stream.bybit.com/v5/public/linear", symbols)
    assert len(plans) > 2
    seen: list[str] = []
    for plan in plans:
        session = plan.new_session()
        assert isinstance(session, bybit.BybitSession)
        args = [a for m in session.on_open() for a in json.loads(m)["args"]]
        assert len(json.dumps(args)) <= bybit.ARGS_LIMIT
        category = "inverse" if args[0].endswith("USD") else "linear"
        assert plan.url == f"wss://stream.bybit.com/v5/public/{category}"
        seen += args
    assert sorted(seen) == sorted(f"allLiquidation.{s}" for s in symbols)


def test_bybit_urls_and_symbol_listing() -> None:
    assert bybit.category_url("ws://127.0.0.1:7", "inverse") == "ws://127.0.0.1:7/v5/public/inverse"
    assert bybit.category_url("ws://h/v5/public/linear", "inverse") == "ws://h/v5/public/inverse"
    pages = {
        "": {"result": {"list": [{"symbol": "BTCUSDT", "status": "Trading"}], "nextPageCursor": "c2"}},
        "c2": {"result": {"list": [{"symbol": "OLDUSDT", "status": "Closed"},
                                   {"symbol": "ETHUSDT", "status": "Trading"}]}},
    }  # fmt: skip

    def fake(url: str) -> Any:
        return pages["c2" if "cursor=c2" in url else ""]

    assert bybit.fetch_symbols("linear", fake) == ["BTCUSDT", "ETHUSDT"]


def test_bybit_discovers_every_symbol_on_live_host() -> None:
    """No wildcard topic: a live collector lists linear AND inverse symbols (paginated) itself."""
    pages = {
        "linear": {"result": {"list": [{"symbol": "BTCUSDT", "status": "Trading"},
                                       {"symbol": "BTCPERP", "status": "Trading"}]}},
        "inverse": {"result": {"list": [{"symbol": "BTCUSD", "status": "Trading"},
                                        {"symbol": "BTCUSDH26", "status": "Trading"}]}},
    }  # fmt: skip
    urls: list[str] = []

    def fake(url: str) -> Any:
        urls.append(url)
        return pages["inverse" if "category=inverse" in url else "linear"]

    found = bybit.discover_symbols("wss://stream.bybit.com/v5/public/linear", fake)
    assert found == {"linear": ["BTCUSDT", "BTCPERP"], "inverse": ["BTCUSD", "BTCUSDH26"]}
    assert all(u.startswith("https://api.bybit.com/v5/market/instruments-info?category=") for u in urls)

    def down(url: str) -> Any:
        raise OSError("unreachable")

    fallback = bybit.discover_symbols("wss://stream.bybit.com/v5/public/linear", down)
    assert sorted(fallback["linear"] + fallback["inverse"]) == sorted(bybit.DEFAULT_SYMBOLS)
    assert bybit.discover_symbols("ws://127.0.0.1:9", fake) == fallback and len(urls) == 2


def test_bybit_default_plans_split_linear_and_inverse() -> None:
    """Without symbols (the CLI default) topics go to the endpoint of their category."""
    assert load_venue("bybit").default_symbols == ()
    plans = load_venue("bybit").plans("ws://127.0.0.1:9", ())
    assert [p.url.rsplit("/", 1)[1] for p in plans] == ["linear", "inverse"]
    linear, inverse = (
        {a for m in p.new_session().on_open() for a in json.loads(m)["args"]} for p in plans
    )
    assert "allLiquidation.BTCUSDT" in linear and "allLiquidation.BTCUSD" in inverse
    assert not linear & inverse and len(linear | inverse) == len(bybit.DEFAULT_SYMBOLS)


# --------------------------------------------------------------------------- OKX


def okx_push(
    inst_id: str = "BTC-USDT-SWAP", side: str = "sell", sz: str = "30", **detail: Any
) -> dict[str, Any]:
    d = {
        "bkLoss": "0",
        "bkPx": "20000",
        "ccy": "",
        "posSide": "long",
        "side": side,
        "sz": sz,
        "ts": "1680173247614",
    }
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [{"instId": inst_id, "instType": "SWAP", "details": [{**d, **detail}]}]}  # fmt: skip


def test_okx_subscribe_ping_and_control() -> None:
    session = parser("okx")
    (message,) = session.on_open()
    args = json.loads(message)["args"]
    assert {a["instType"] for a in args} == {"SWAP", "FUTURES"}
    assert {a["channel"] for a in args} == {"liquidation-orders"}
    assert session.heartbeat() == "ping"
    error = {"event": "error", "code": "60012", "msg": "x"}
    tickers = {"arg": {"channel": "tickers"}, "data": []}
    assert_control(session, "pong", {"event": "subscribe", "arg": args[0], "connId": "a"}, error, tickers)
    assert_malformed(
        session, "ping?", {"data": []}, okx_push(side="hold"), okx_push(sz="x"), okx_push(ts=None)
    )


@pytest.mark.parametrize(("side", "position"), [("sell", "long"), ("buy", "short")])
def test_okx_sides_and_first_message_kept(side: str, position: str) -> None:
    session = parser("okx")
    first = feed(session, okx_push(side=side))
    replay = feed(session, okx_push(side=side))
    assert [liq.side for liq in first] == [position]
    assert first[0].quantity == pytest.approx(0.3) and first[0].notional_usd == pytest.approx(6000.0)
    assert replay[0].event_id == first[0].event_id


def test_okx_net_mode_and_unknown_contract() -> None:
    (liq,) = feed(parser("okx"), okx_push("IOST-USDT-SWAP", posSide="net"))
    assert (liq.side, liq.quantity_unit, liq.quantity, liq.notional_known) == (
        "long",
        "contracts",
        30.0,
        False,
    )
    assert _common.liquidation_to_row(liq)["notional_usd"] is None
    (inverse,) = feed(parser("okx"), okx_push("ETH-USD-SWAP", side="buy", sz="5"))
    assert (inverse.side, inverse.notional_usd, inverse.contract_value) == ("short", 50.0, 10.0)
    assert feed(parser("okx"), okx_push("BTC-USD-250926-100000-C")) == []  # options are not counted


# --------------------------------------------------------------------------- BitMEX


def bitmex(action: str, **row: Any) -> dict[str, Any]:
    data = {"orderID": "abc-1", "symbol": "XBTUSD", "side": "Sell", "price": 50000, "leavesQty": 1000, **row}
    return {"table": "liquidation", "action": action, "data": [data]}


@pytest.mark.parametrize(("side", "position"), [("Sell", "long"), ("Buy", "short")])
def test_bitmex_insert_only(side: str, position: str) -> None:
    session = parser("bitmex")
    (liq,) = feed(session, bitmex("insert", side=side), received_ms=RX + 5)
    assert (liq.side, liq.event_id, liq.timestamp_ms, liq.timestamp_source) == (
        position,
        "abc-1",
        RX + 5,
        "receive",
    )
    assert (liq.notional_usd, liq.quantity) == (1000.0, 0.02)
    assert_control(session, bitmex("partial"), bitmex("update", leavesQty=10), bitmex("delete"))


def test_bitmex_subscribe_ping_control_malformed() -> None:
    session = parser("bitmex")
    assert json.loads(session.on_open()[0]) == {"op": "subscribe", "args": ["liquidation"]}
    assert session.heartbeat() == "ping"
    assert_control(session, "pong", {"info": "Welcome"}, {"success": True, "subscribe": "liquidation"},
                   {"table": "trade", "action": "insert", "data": []})  # fmt: skip
    assert_malformed(session, "[", {"x": 1}, bitmex("insert", side="Up"), bitmex("insert", orderID=""))


def test_bitmex_quanto_keeps_contracts() -> None:
    (liq,) = feed(parser("bitmex"), bitmex("insert", symbol="ETHUSD", price=3000, leavesQty=7))
    assert (liq.symbol, liq.quantity_unit, liq.notional_known) == ("ETHUSD", "contracts", False)


@pytest.mark.parametrize(
    ("symbol", "want"),
    [
        ("XBTUSD", ("BTCUSD", "inverse_perpetual", None, "base")),
        ("XBTZ25", ("BTCUSD", "inverse_future", "2025-12-26", "base")),
        ("XBTUSDT", ("BTCUSDT", "linear_perpetual", None, "contracts")),
        ("XBTUSDTH26", ("BTCUSDT", "linear_future", "2026-03-27", "contracts")),
        ("ETHUSDZ25", ("ETHUSD", "linear_future", "2025-12-26", "contracts")),  # quanto future
        ("ETHZ25", ("ETHBTC", "linear_future", "2025-12-26", "contracts")),  # ETH/XBT future
    ],
)
def test_bitmex_symbols(symbol: str, want: tuple[str, str, str | None, str]) -> None:
    """XBT is BTC; only XBT's 1-USD inverse contracts have a known size (the others: contracts)."""
    (liq,) = feed(parser("bitmex"), bitmex("insert", symbol=symbol, price=50000, leavesQty=100))
    assert (liq.symbol, liq.market_type, liq.expiry, liq.quantity_unit) == want
    assert liq.notional_known == (want[3] == "base")
    assert_malformed(parser("bitmex"), bitmex("insert", symbol="XBT"))


# --------------------------------------------------------------------------- Deribit


def trades(*rows: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {"channel": "trades.future.BTC.100ms", "data": list(rows)},
    }


def trade(
    flag: str | None, direction: str, name: str = "BTC-PERPETUAL", amount: float = 1000
) -> dict[str, Any]:
    row = {"trade_id": "77", "timestamp": 1_584_058_044_032, "price": 40000.0, "instrument_name": name,
           "direction": direction, "amount": amount}  # fmt: skip
    return row | ({"liquidation": flag} if flag else {})


@pytest.mark.parametrize(
    ("flag", "direction", "position"),
    [("T", "sell", "long"), ("T", "buy", "short"), ("M", "buy", "long"), ("M", "sell", "short")],
)
def test_deribit_side_rules(flag: str, direction: str, position: str) -> None:
    (liq,) = feed(parser("deribit"), trades(trade(flag, direction)))
    assert (liq.side, liq.event_id, liq.notional_usd, liq.quantity) == (position, "77", 1000.0, 0.025)


def test_deribit_mt_gives_two_events() -> None:
    events = feed(parser("deribit"), trades(trade("MT", "buy"), trade(None, "sell")))
    assert sorted(liq.side for liq in events) == ["long", "short"]
    assert len({liq.event_id for liq in events}) == 2
    assert all(liq.quantity_native == 1000 and liq.notional_usd == 1000 for liq in events)


def test_deribit_linear_and_options() -> None:
    (liq,) = feed(parser("deribit"), trades(trade("T", "sell", "ETH_USDC-PERPETUAL", amount=2.5)))
    assert (liq.symbol, liq.quantity, liq.notional_usd) == ("ETHUSDC", 2.5, 100000.0)
    assert feed(parser("deribit"), trades(trade("T", "sell", "BTC-27DEC25-100000-C"))) == []
    (future,) = feed(parser("deribit"), trades(trade("M", "sell", "BTC-27DEC25")))
    assert (future.market_type, future.expiry) == ("inverse_future", "2025-12-27")


def test_deribit_heartbeat_and_control() -> None:
    session = deribit.DeribitSession()
    methods = [json.loads(m)["method"] for m in session.on_open()]
    assert methods == ["public/set_heartbeat", "public/subscribe"]
    test_request = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
    (reply,) = session.on_message(json.dumps(test_request), RX).replies
    assert json.loads(reply)["method"] == "public/test"
    assert_control(session, {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "heartbeat"}},
                   {"jsonrpc": "2.0", "id": 2, "result": ["trades.future.BTC.100ms"]},
                   {"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "x"}})  # fmt: skip
    assert_malformed(session, "{", {"x": 1}, trades(trade("X", "buy")), trades({"trade_id": 1}))


# --------------------------------------------------------------------------- Bitfinex

ACK = {"event": "subscribed", "channel": "status", "chanId": 5, "key": "liq:global"}


def pos(amount: float, is_match: int = 0, pos_id: int = 9) -> list[Any]:
    return [
        "pos",
        pos_id,
        1_593_522_802_742,
        None,
        "tBTCF0:USTF0",
        amount,
        9000.0,
        None,
        is_match,
        1,
        None,
        8900,
    ]


def test_bitfinex_routing_hb_and_matches() -> None:
    session = parser("bitfinex")
    assert json.loads(session.on_open()[0]) == {
        "event": "subscribe",
        "channel": "status",
        "key": "liq:global",
    }
    assert_control(session, {"event": "info", "version": 2}, ACK, [5, "hb"], [5, "hb", 3, 1], [5, []],
                   [5, [pos(1.0, is_match=1)]], {"event": "pong", "cid": 1})  # fmt: skip
    long, short = feed(
        session, [5, [pos(0.5), pos(-2.0, pos_id=10), pos(3.0, is_match=1)], 7, 1_593_566_593_351]
    )
    assert (long.side, long.quantity, long.price, long.notional_usd) == ("long", 0.5, 9000.0, 4500.0)
    assert (short.side, short.quantity, short.event_id) == ("short", 2.0, "10-1593522802742")
    assert long.extra["price_acquired"] == 8900 and long.symbol == "BTCUSDT"


def test_bitfinex_unknown_channel() -> None:
    session = parser("bitfinex")
    assert len(feed(session, [77, [pos(0.5)], 1, 2, "liquidations", "global"])) == 1  # no ack seen
    assert len(feed(session, [77, pos(0.5)])) == 1  # a single row payload
    assert_control(session, [78, [[1, 2, 3]]])  # some other channel's data
    session.on_message(json.dumps({**ACK, "chanId": 6, "key": "deriv:tBTCF0:USTF0"}), RX)
    assert_control(session, [6, [pos(1.0)]])  # acked, but not liq:global


def test_bitfinex_malformed() -> None:
    session = parser("bitfinex")
    session.on_message(json.dumps(ACK), RX)
    bad = pos(0.5)
    bad[6] = "x"
    assert_malformed(session, "[5,", [5], ["x", []], [5, [[1, 2]]], [5, [bad]], [5, [pos(0.0)]], "null")


@pytest.mark.parametrize(("venue", "frame", "detail"), [
    ("bybit", {"success": False, "ret_msg": "error:handler not found,topic:liquidation.BTCUSDT",
               "op": "subscribe"}, "handler not found"),
    ("okx", {"event": "error", "code": "60018", "msg": "Wrong URL or channel:liquidations"}, "60018"),
    ("bitfinex", {"event": "error", "msg": "subscribe: dup", "code": 10301}, "subscribe: dup"),
    ("bitmex", {"error": "Unknown table: liquidations"}, "Unknown table"),
    ("deribit", {"jsonrpc": "2.0", "id": 2, "error": {"code": 11050, "message": "bad_request"}},
     "bad_request"),
    ("hyperliquid", {"channel": "error", "data": "Error parsing JSON into valid websocket request"},
     "Error parsing JSON"),
])
def test_a_refused_subscription_or_error_reply_is_logged_not_mistaken_for_a_quiet_market(
        venue: str, frame: dict[str, Any], detail: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        assert_control(parser(venue), frame)
        output = parser(venue).on_message(json.dumps(frame), RX)
    assert f"{venue}: the venue answered with an error" in caplog.text and detail in caplog.text
    assert detail in output.error, "the collector marks the venue degraded with it"


def test_a_bybit_refusal_naming_its_own_topics_refuses_those_alone(caplog: pytest.LogCaptureFixture) -> None:
    """Bybit refuses a symbol delisted since the listing by name: that topic is refused alone
    (one warning with Bybit's words), not the connection; a refusal naming none of the session's
    topics (the args limit) stays an error of the connection."""
    session = bybit.session_for(("BTCUSDT", "ETHUSDT", "ETHUSDT-26DEC25"))
    ret_msg = "error:handler not found,topic:allLiquidation.ETHUSDT,allLiquidation.XRPUSDT"
    frame = {"success": False, "ret_msg": ret_msg, "op": "subscribe", "req_id": "liq0"}
    with caplog.at_level("WARNING"):
        output = session.on_message(json.dumps(frame), RX)
    assert (output.refused, output.error) == (("ETHUSDT",), "")
    assert [r.getMessage() for r in caplog.records] == [
        f"bybit: Bybit refused topic(s) allLiquidation.ETHUSDT ({ret_msg}); dropped from the "
        "subscriptions until a listing names them again"]
    whole = {"success": False, "ret_msg": "error:args size exceeds 21000 characters", "op": "subscribe"}
    output = session.on_message(json.dumps(whole), RX)
    assert (output.refused, output.error) == ((), "subscribe: error:args size exceeds 21000 characters")
