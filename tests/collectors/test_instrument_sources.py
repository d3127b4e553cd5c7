"""The venue half of the instrument refresh: each venue's ``parse_instruments`` and its simulator's answer.

For okx, gate, htx, binance_coinm and bitmex (the venues whose quantities need contract sizes):
the simulator's instruments answer parses to exactly what it declares (``SIM.listed()``), a
trimmed copy of each real API's answer parses to exact instruments that agree with the shipped
fallback table and the parsers' documented rules, malformed answers raise ValueError, and a
liquidation of a listing the fallback table lacks is only sized after a refresh. Unit tests: no
servers; every test uses its own table, never the modules' live ``TABLE``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from collectors import VENUES as ALL_VENUES
from collectors import load_venue
from collectors.instruments import Instrument, InstrumentTable
from collectors.sim.protocol import SimClient, SimItem
from collectors.sim.venue_server import load_sim
from collectors.venue import InstrumentRequest, InstrumentSource, VenueSession
from collectors.venues import binance_coinm, bitmex, gate, htx, okx
from shared.market import MarketEvent
from shared.models import Liquidation

VENUES = ("okx", "gate", "htx", "binance_coinm", "bitmex")
T0 = 1_781_000_000_000

SESSIONS: dict[str, Callable[[InstrumentTable], VenueSession]] = {
    "okx": lambda table: okx.OkxSession(table=table),
    "gate": lambda table: gate.GateSession(table=table),
    "htx": lambda table: htx.HtxSession(table=table),
    "binance_coinm": lambda table: binance_coinm.CoinmSession(table=table),
    "bitmex": lambda table: bitmex.BitmexSession(table=table),
}
"""A session of the venue reading ``table`` instead of the module's live one."""

RULES: dict[str, Callable[[str], Instrument]] = {
    "okx": lambda s: okx.parse_inst_id(s, InstrumentTable("okx")) or Instrument(s, "", "", "spot_margin"),
    "gate": gate.contract_instrument,
    "htx": htx.code_instrument,
    "binance_coinm": binance_coinm.inverse_instrument,
    "bitmex": bitmex.parse_symbol,
}
"""What each session assumes for a contract missing from its table (the documented rules)."""


def source_of(venue: str) -> InstrumentSource:
    source = load_venue(venue).instruments
    assert source is not None
    return source


def request(venue: str, path: str) -> InstrumentRequest:
    (found,) = [r for r in source_of(venue).requests if r.path == path]
    return found


def refreshed_from_sim(venue: str) -> list[Instrument]:
    """What a refresh against the simulator reads: every request's answer, parsed."""
    source, sim = source_of(venue), load_sim(venue)
    out: list[Instrument] = []
    for req in source.requests:
        body = sim.rest(req.path, req.body)  # type: ignore[attr-defined]
        assert body is not None, f"the simulator does not answer {req.path}"
        out += source.parse(body, req)
    return out


def by_native(instruments: list[Instrument]) -> dict[str, Instrument]:
    keyed = {i.symbol_native: i for i in instruments}
    assert len(keyed) == len(instruments), "a contract listed twice"
    return keyed


# --------------------------------------------------------------------------- every venue


@pytest.mark.parametrize("venue", VENUES)
def test_the_module_wires_its_endpoint_to_the_live_table(venue: str) -> None:
    module = {"okx": okx, "gate": gate, "htx": htx, "binance_coinm": binance_coinm, "bitmex": bitmex}[venue]
    spec, source = load_venue(venue), source_of(venue)
    assert source.table is module.TABLE and source.parse is module.parse_instruments
    assert source.live_rest_url.startswith("https://") and source.requests
    sessions = [spec.new_parser()] + [plan.new_session() for plan in spec.plans("ws://127.0.0.1:9", ())]
    for session in sessions:
        assert vars(session)["table"] is module.TABLE, "sessions must read the table a refresh updates"
    assert vars(SESSIONS[venue](InstrumentTable(venue)))["table"] is not module.TABLE


@pytest.mark.parametrize("venue", VENUES)
def test_the_simulated_answer_parses_to_what_the_simulator_lists(venue: str) -> None:
    sim = load_sim(venue)
    listed = sim.listed()  # type: ignore[attr-defined]
    assert by_native(refreshed_from_sim(venue)) == by_native(listed)
    assert sim.rest("/no/such/path", None) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("venue", VENUES)
def test_the_simulated_listing_agrees_with_the_fallback_and_adds_to_it(venue: str) -> None:
    shipped = InstrumentTable.load(venue)
    listed = load_sim(venue).listed()  # type: ignore[attr-defined]
    for inst in listed:
        assert shipped.get(inst.symbol_native) in (None, inst), inst.symbol_native
    assert any(shipped.get(i.symbol_native) is None and i.contract_value for i in listed)


@pytest.mark.parametrize("venue", VENUES)
def test_a_new_listing_is_sized_only_after_a_refresh(venue: str) -> None:
    """NEWCOIN is in no fallback table: its liquidation is in contracts (or mis-sized by the
    generic rule) until the table is updated from the instruments endpoint."""
    sim, table = load_sim(venue), InstrumentTable.load(venue)
    event = MarketEvent(venue=venue, base="NEWCOIN", side="long", price=2.5, notional_usd=5_000.0,
                        timestamp_ms=T0)
    item = sim.materialize(event, 1)
    assert item is not None
    if venue == "htx":  # frames without amount/trade_turnover: the size must come from the table
        native = {k: v for k, v in item.native.items() if k not in ("amount", "trade_turnover")}
        item = SimItem(native=native, expected=item.expected, topic=item.topic)
    session = SESSIONS[venue](table)
    frames = sim.frames([item], SimClient(path="/ws"))

    def parse() -> list[Liquidation]:
        liqs = [liq for frame in frames for liq in session.on_message(frame, T0).liquidations]
        return [msgspec.structs.replace(liq, received_ms=0) for liq in liqs]

    (before,) = parse()
    table.update(refreshed_from_sim(venue))
    (after,) = parse()
    assert [after] == item.expected
    assert after.quantity_unit == "base" and after.notional_known and after.notional_usd > 0
    assert before.quantity_unit == "contracts" or before.contract_value != after.contract_value


# --------------------------------------------------------------------------- real answers

OKX_SWAP = b"""{"code":"0","msg":"","data":[
{"alias":"","baseCcy":"","category":"1","ctMult":"1","ctType":"linear","ctVal":"0.01","ctValCcy":"BTC",
 "expTime":"","instFamily":"BTC-USDT","instId":"BTC-USDT-SWAP","instType":"SWAP","lever":"100",
 "listTime":"1573557408000","lotSz":"0.01","maxLmtSz":"100000000","maxMktSz":"12000","minSz":"0.01",
 "optType":"","quoteCcy":"","ruleType":"normal","settleCcy":"USDT","state":"live","stk":"","tickSz":"0.1",
 "uly":"BTC-USDT"},
{"alias":"","baseCcy":"","category":"1","ctMult":"1","ctType":"inverse","ctVal":"100","ctValCcy":"USD",
 "expTime":"","instFamily":"BTC-USD","instId":"BTC-USD-SWAP","instType":"SWAP","lever":"100",
 "listTime":"1573557408000","lotSz":"1","maxLmtSz":"1000000","maxMktSz":"30000","minSz":"1",
 "optType":"","quoteCcy":"","ruleType":"normal","settleCcy":"BTC","state":"live","stk":"","tickSz":"0.1",
 "uly":"BTC-USD"}]}"""

OKX_FUTURES = b"""{"code":"0","msg":"","data":[
{"alias":"quarter","baseCcy":"","category":"1","ctMult":"1","ctType":"inverse","ctVal":"100",
 "ctValCcy":"USD","expTime":"1758873600000","instFamily":"BTC-USD","instId":"BTC-USD-250926",
 "instType":"FUTURES","lever":"100","listTime":"1742544000000","lotSz":"1","minSz":"1","optType":"",
 "quoteCcy":"","settleCcy":"BTC","state":"live","stk":"","tickSz":"0.1","uly":"BTC-USD"},
{"alias":"quarter","baseCcy":"","category":"1","ctMult":"1","ctType":"linear","ctVal":"0.1",
 "ctValCcy":"ETH","expTime":"1758873600000","instFamily":"ETH-USDT","instId":"ETH-USDT-250926",
 "instType":"FUTURES","lever":"100","listTime":"1742544000000","lotSz":"1","minSz":"1","optType":"",
 "quoteCcy":"","settleCcy":"USDT","state":"live","stk":"","tickSz":"0.01","uly":"ETH-USDT"}]}"""

GATE_USDT = b"""[
{"name":"BTC_USDT","type":"direct","quanto_multiplier":"0.0001","ref_discount_rate":"0",
 "order_price_deviate":"0.5","maintenance_rate":"0.005","mark_type":"index","last_price":"38026",
 "mark_price":"37985.6","index_price":"37954.92","mark_price_round":"0.01","in_delisting":false,
 "risk_limit_base":"1000000","order_price_round":"0.1","order_size_min":1,"funding_interval":28800,
 "leverage_min":"1","leverage_max":"100","maker_fee_rate":"-0.00025","taker_fee_rate":"0.00075",
 "funding_rate":"0.002053","order_size_max":1000000,"funding_next_apply":1610035200,
 "trade_size":28530850594,"position_size":5223816,"orders_limit":50,"enable_bonus":true,
 "create_time":1669688556,"status":"trading","launch_time":1609899548},
{"name":"ETH_USDT","type":"direct","quanto_multiplier":"0.01","maintenance_rate":"0.005",
 "mark_type":"index","last_price":"2613.5","mark_price":"2613.41","in_delisting":false,
 "order_price_round":"0.01","order_size_min":1,"funding_interval":28800,"leverage_min":"1",
 "leverage_max":"100","order_size_max":1000000,"status":"trading","create_time":1669688556}]"""

GATE_BTC = b"""[
{"name":"BTC_USD","type":"inverse","quanto_multiplier":"0","maintenance_rate":"0.005",
 "mark_type":"index","last_price":"38026","mark_price":"37985.6","in_delisting":false,
 "order_price_round":"0.1","order_size_min":1,"funding_interval":28800,"leverage_min":"1",
 "leverage_max":"100","order_size_max":1000000,"status":"trading","create_time":1591920000}]"""

HTX_LINEAR = b"""{"status":"ok","data":[
{"symbol":"BTC","contract_code":"BTC-USDT","contract_size":0.001,"price_tick":0.1,"delivery_date":"",
 "delivery_time":"","create_date":"20201021","contract_status":1,"settlement_date":"1603699200000",
 "support_margin_mode":"all","business_type":"swap","pair":"BTC-USDT","contract_type":"swap",
 "trade_partition":"USDT"},
{"symbol":"BTC","contract_code":"BTC-USDT-250627","contract_size":0.001,"price_tick":0.1,
 "delivery_date":"20250627","delivery_time":"1751011200000","create_date":"20250314","contract_status":1,
 "settlement_date":"1742544000000","support_margin_mode":"cross","business_type":"futures",
 "pair":"BTC-USDT","contract_type":"quarter","trade_partition":"USDT"}],"ts":1742500000000}"""

HTX_SWAP = b"""{"status":"ok","data":[
{"symbol":"BTC","contract_code":"BTC-USD","contract_size":100.0,"price_tick":0.1,"delivery_time":"",
 "create_date":"20200325","contract_status":1,"settlement_date":"1603699200000"}],"ts":1742500000000}"""

HTX_FUTURES = b"""{"status":"ok","data":[
{"symbol":"BTC","contract_code":"BTC250627","contract_type":"quarter","contract_size":100.0,
 "price_tick":0.01,"delivery_date":"20250627","delivery_time":"1751011200000","create_date":"20250314",
 "contract_status":1,"settlement_time":"1742544000000"}],"ts":1742500000000}"""

BINANCE_COINM = b"""{"timezone":"UTC","serverTime":1752000000000,"rateLimits":[{"rateLimitType":
"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":2400}],"exchangeFilters":[],"symbols":[
{"symbol":"BTCUSD_PERP","pair":"BTCUSD","contractType":"PERPETUAL","deliveryDate":4133404800000,
 "onboardDate":1597042800000,"contractStatus":"TRADING","contractSize":100,"marginAsset":"BTC",
 "maintMarginPercent":"2.5000","requiredMarginPercent":"5.0000","baseAsset":"BTC","quoteAsset":"USD",
 "pricePrecision":1,"quantityPrecision":0,"baseAssetPrecision":8,"quotePrecision":8,
 "equalQtyPrecision":4,"triggerProtect":"0.0500","underlyingType":"COIN","underlyingSubType":[],
 "filters":[{"filterType":"PRICE_FILTER","minPrice":"1000","maxPrice":"4520958","tickSize":"0.1"}],
 "orderTypes":["LIMIT","MARKET"],"timeInForce":["GTC","IOC"],"liquidationFee":"0.015000"},
{"symbol":"ETHUSD_250926","pair":"ETHUSD","contractType":"CURRENT_QUARTER","deliveryDate":1758873600000,
 "onboardDate":1742544000000,"contractStatus":"TRADING","contractSize":10,"marginAsset":"ETH",
 "baseAsset":"ETH","quoteAsset":"USD","pricePrecision":2,"quantityPrecision":0,"underlyingType":"COIN",
 "filters":[],"orderTypes":["LIMIT"],"timeInForce":["GTC"]},
{"symbol":"BTCUSD_250627","pair":"BTCUSD","contractType":"","deliveryDate":1751011200000,
 "onboardDate":1734681600000,"contractStatus":"DELIVERED","contractSize":100,"marginAsset":"BTC",
 "baseAsset":"BTC","quoteAsset":"USD","pricePrecision":1,"quantityPrecision":0,"underlyingType":"COIN",
 "filters":[],"orderTypes":["LIMIT"],"timeInForce":["GTC"]}]}"""

BITMEX_ACTIVE = b"""[
{"symbol":"XBTUSD","rootSymbol":"XBT","state":"Open","typ":"FFWCSX","listing":"2016-05-13T12:00:00.000Z",
 "front":"2016-05-13T12:00:00.000Z","expiry":null,"settle":null,"positionCurrency":"USD",
 "underlying":"XBT","quoteCurrency":"USD","underlyingSymbol":"XBT=","reference":"BMEX",
 "isQuanto":false,"isInverse":true,"initMargin":0.01,"maintMargin":0.0035,"taker":0.0005,
 "multiplier":-100000000,"underlyingToPositionMultiplier":null,"underlyingToSettleMultiplier":-100000000,
 "quoteToSettleMultiplier":null,"settlCurrency":"XBt","lotSize":100,"tickSize":0.5},
{"symbol":"XBTZ25","rootSymbol":"XBT","state":"Open","typ":"FFCCSX","listing":"2025-03-21T12:00:00.000Z",
 "front":"2025-11-28T12:00:00.000Z","expiry":"2025-12-26T12:00:00.000Z","settle":"2025-12-26T12:00:00.000Z",
 "positionCurrency":"USD","underlying":"XBT","quoteCurrency":"USD","underlyingSymbol":"XBT=",
 "isQuanto":false,"isInverse":true,"multiplier":-100000000,"underlyingToPositionMultiplier":null,
 "underlyingToSettleMultiplier":-100000000,"quoteToSettleMultiplier":null,"settlCurrency":"XBt",
 "lotSize":100,"tickSize":0.5},
{"symbol":"ETHUSD","rootSymbol":"ETH","state":"Open","typ":"FFWCSX","listing":"2018-07-18T12:00:00.000Z",
 "expiry":null,"positionCurrency":"","underlying":"ETH","quoteCurrency":"USD","underlyingSymbol":"ETH=",
 "isQuanto":true,"isInverse":false,"multiplier":100,"underlyingToPositionMultiplier":null,
 "underlyingToSettleMultiplier":null,"quoteToSettleMultiplier":100000000,"settlCurrency":"XBt",
 "lotSize":1,"tickSize":0.05},
{"symbol":"XBTUSDT","rootSymbol":"XBT","state":"Open","typ":"FFWCSX","listing":"2021-11-10T04:00:00.000Z",
 "expiry":null,"positionCurrency":"XBT","underlying":"XBT","quoteCurrency":"USDT","underlyingSymbol":"XBTT=",
 "isQuanto":false,"isInverse":false,"multiplier":1,"underlyingToPositionMultiplier":1000000,
 "underlyingToSettleMultiplier":null,"quoteToSettleMultiplier":1000000,"settlCurrency":"USDt",
 "lotSize":1000,"tickSize":0.5},
{"symbol":"XBT_USDT","rootSymbol":"XBT","state":"Open","typ":"IFXXXP","listing":"2022-05-23T10:00:00.000Z",
 "expiry":null,"underlying":"XBT","quoteCurrency":"USDT","isQuanto":false,"isInverse":false,
 "multiplier":100,"underlyingToPositionMultiplier":1000000,"quoteToSettleMultiplier":1000000,
 "settlCurrency":"USDt","lotSize":1000,"tickSize":0.5}]"""

OKX_PATH = "/api/v5/public/instruments?instType="
HTX_LINEAR_PATH = "/linear-swap-api/v1/swap_contract_info?business_type=all"
SAMPLES: list[tuple[str, str, bytes, list[Instrument]]] = [
    ("okx", OKX_PATH + "SWAP", OKX_SWAP, [
        Instrument("BTC-USDT-SWAP", "BTC", "USDT", "linear_perpetual", 0.01, "BTC"),
        Instrument("BTC-USD-SWAP", "BTC", "USD", "inverse_perpetual", 100.0, "USD"),
    ]),
    ("okx", OKX_PATH + "FUTURES", OKX_FUTURES, [
        Instrument("BTC-USD-250926", "BTC", "USD", "inverse_future", 100.0, "USD", "2025-09-26"),
        Instrument("ETH-USDT-250926", "ETH", "USDT", "linear_future", 0.1, "ETH", "2025-09-26"),
    ]),
    ("gate", "/api/v4/futures/usdt/contracts", GATE_USDT, [
        Instrument("BTC_USDT", "BTC", "USDT", "linear_perpetual", 0.0001, "BTC"),
        Instrument("ETH_USDT", "ETH", "USDT", "linear_perpetual", 0.01, "ETH"),
    ]),
    ("gate", "/api/v4/futures/btc/contracts", GATE_BTC, [
        Instrument("BTC_USD", "BTC", "USD", "inverse_perpetual", 1.0, "USD"),
    ]),
    ("htx", HTX_LINEAR_PATH, HTX_LINEAR, [
        Instrument("BTC-USDT", "BTC", "USDT", "linear_perpetual", 0.001, "BTC"),
        Instrument("BTC-USDT-250627", "BTC", "USDT", "linear_future", 0.001, "BTC", "2025-06-27"),
    ]),
    ("htx", "/swap-api/v1/swap_contract_info", HTX_SWAP, [
        Instrument("BTC-USD", "BTC", "USD", "inverse_perpetual", 100.0, "USD"),
    ]),
    ("htx", "/api/v1/contract_contract_info", HTX_FUTURES, [
        Instrument("BTC250627", "BTC", "USD", "inverse_future", 100.0, "USD", "2025-06-27"),
    ]),
    ("binance_coinm", "/dapi/v1/exchangeInfo", BINANCE_COINM, [
        Instrument("BTCUSD_PERP", "BTC", "USD", "inverse_perpetual", 100.0, "USD"),
        Instrument("ETHUSD_250926", "ETH", "USD", "inverse_future", 10.0, "USD", "2025-09-26"),
    ]),
    ("bitmex", "/api/v1/instrument/active", BITMEX_ACTIVE, [
        Instrument("XBTUSD", "XBT", "USD", "inverse_perpetual", 1.0, "USD"),
        Instrument("XBTZ25", "XBT", "USD", "inverse_future", 1.0, "USD", "2025-12-26"),
        Instrument("ETHUSD", "ETH", "USD", "linear_perpetual"),
        Instrument("XBTUSDT", "XBT", "USDT", "linear_perpetual"),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("venue", "path", "body", "expected"), SAMPLES, ids=[s[1] for s in SAMPLES])
def test_a_real_answer_parses_to_exact_instruments(
    venue: str, path: str, body: bytes, expected: list[Instrument]
) -> None:
    assert source_of(venue).parse(body, request(venue, path)) == expected


@pytest.mark.parametrize(("venue", "path", "body", "expected"), SAMPLES, ids=[s[1] for s in SAMPLES])
def test_a_real_answer_agrees_with_the_fallback_table_and_the_documented_rules(
    venue: str, path: str, body: bytes, expected: list[Instrument]
) -> None:
    shipped = InstrumentTable.load(venue)
    for inst in source_of(venue).parse(body, request(venue, path)):
        assert shipped.get(inst.symbol_native) in (None, inst), inst.symbol_native
        rule = RULES[venue](inst.symbol_native)
        assert rule.contract_value is None or rule == inst, inst.symbol_native


def test_gate_quanto_and_bitmex_non_unit_inverse_contracts_are_listed_unsized() -> None:
    quanto = b'[{"name":"ETH_USD","type":"direct","quanto_multiplier":"0.000001"}]'
    assert gate.parse_instruments(quanto, request("gate", "/api/v4/futures/btc/contracts")) == [
        Instrument("ETH_USD", "ETH", "USD", "linear_perpetual")
    ]
    row = json.loads(BITMEX_ACTIVE)[0] | {"symbol": "XBTUSD100", "multiplier": -10_000_000_000}
    body = json.dumps([row]).encode()
    assert bitmex.parse_instruments(body, request("bitmex", "/api/v1/instrument/active")) == [
        Instrument("XBTUSD100", "XBT", "USD", "inverse_perpetual")
    ]


COMMON_MALFORMED = (b"", b"not json", b"<html>502 Bad Gateway</html>", b"null")
MALFORMED: dict[str, tuple[bytes, ...]] = {
    "okx": (b"[]", b'{"code":"0","data":{}}', b'{"code":"50011","msg":"Too Many Requests","data":[]}',
            b'{"code":"0","data":[{"instId":"BTC-USD-250926","instType":"FUTURES","ctType":"inverse",'
            b'"instFamily":"BTC-USD","ctVal":"100","ctValCcy":"USD","expTime":""}]}',
            b'{"code":"0","data":[{"instId":"X-SWAP","instType":"SWAP","ctType":"linear","ctVal":"1"}]}'),
    "gate": (b"{}", b'[{"type":"direct"}]', b'{"label":"INVALID_PARAM_VALUE","message":"settle"}',
             b'[{"name":"BTCUSDT","type":"direct","quanto_multiplier":"0.0001"}]',
             b'[{"name":"BTC_USDT","type":"direct","quanto_multiplier":"lots"}]'),
    "htx": (b"[]", b'{"status":"error","err_code":1014,"err_msg":"This contract does not exist."}',
            b'{"status":"ok","data":[{"symbol":"BTC","contract_code":"BTCUSDT","contract_size":0.001}]}',
            b'{"status":"ok","data":[{"symbol":"BTC","contract_code":"BTC-USDT","contract_size":"x"}]}'),
    "binance_coinm": (b"{}", b'{"symbols":{}}', b'{"code":-1003,"msg":"Too many requests."}',
                      b'{"symbols":[{"symbol":"BTCUSD_PERP","contractType":"PERPETUAL"}]}'),
    "bitmex": (b"{}", b'{"error":{"message":"Rate limit exceeded","name":"RateLimitError"}}',
               b'[{"symbol":"XBTUSD","typ":"FFWCSX"}]',
               b'[{"symbol":"XBTZ25","typ":"FFCCSX","underlying":"XBT","quoteCurrency":"USD","expiry":"soon"}]'),
}  # fmt: skip


@pytest.mark.parametrize(
    ("venue", "body"), [(v, b) for v in VENUES for b in COMMON_MALFORMED + MALFORMED[v]]
)
def test_a_malformed_answer_raises_value_error(venue: str, body: bytes) -> None:
    source = source_of(venue)
    with pytest.raises(ValueError):
        source.parse(body, source.requests[0])


@pytest.mark.parametrize("venue", sorted(ALL_VENUES))
def test_a_session_reads_the_table_it_is_given_even_an_empty_one(venue: str) -> None:
    """``table or TABLE`` would swap an empty table (falsy: it has a length) for the live one."""
    table = InstrumentTable(venue)
    session_class: Any = type(load_venue(venue).new_parser())
    assert session_class(table=table).table is table
