"""Binance COIN-M (inverse) futures: ``forceOrder`` on ``dstream``, quantities in USD contracts.

Docs: developers.binance.com/docs/derivatives/coin-margined-futures/websocket-market-streams.
Same event as USD-M (see :mod:`collectors.venues.binance_usdm`) plus ``o.ps`` (the pair)::

    {"e":"forceOrder","E":1591154240950,"o":{"s":"BTCUSD_200925","ps":"BTCUSD","S":"SELL",
     "q":"1","p":"9425.5","ap":"9496.5","X":"FILLED","l":"1","z":"1","T":1591154240949}}

Side rule: Binance ``o.S`` is the liquidation ORDER side: SELL means a long was liquidated.

Quantity: ``o.z`` contracts of ``contractSize`` USD (exchangeInfo: 100 USD for BTC, 10 USD for
every other coin). notional = contracts × size; base = notional / ``o.p`` (the corpus price).
Sampled like USD-M: at most one liquidation per symbol per second.

Instruments endpoint (``VENUE.instruments``, refreshed by ``collectors.refresh``):
``GET /dapi/v1/exchangeInfo`` → ``{"symbols":[{"symbol","contractType","contractSize",
"baseAsset","quoteAsset","deliveryDate",…}]}``. ``contractSize`` is in ``quoteAsset`` (USD) per
contract; a ``contractType`` other than ``PERPETUAL`` is dated, expiring on the UTC date of
``deliveryDate``; a symbol without a ``contractType`` (settled) is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from collectors.instruments import Instrument, InstrumentTable, canonical_asset
from collectors.venue import ConnectionPlan, InstrumentRequest, InstrumentSource, VenueSpec
from collectors.venues._common import make_liquidation, market_type, ms_date, num, yymmdd_expiry
from collectors.venues.binance_usdm import (
    ALL_STREAM,
    CONNECTION_LIFETIME_S,
    ForceOrderSession,
    Order,
    filled,
    order_extra,
    order_side,
    stream_plans,
)
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "binance_coinm"


def contract_size_usd(base: str) -> float:
    """COIN-M ``contractSize``: 100 USD for BTC, 10 USD for the other coins (exchangeInfo)."""
    return 100.0 if canonical_asset(base) == "BTC" else 10.0


def inverse_instrument(symbol: str, pair: str = "") -> Instrument:
    """``BTCUSD_PERP`` / ``ETHUSD_250926`` → inverse Instrument with its USD contract size."""
    head, _, tail = symbol.partition("_")
    pair = pair or head
    dated = tail.isdigit() and len(tail) == 6
    if not pair.endswith("USD") or len(pair) <= 3 or not (dated or tail in ("", "PERP")):
        raise ParseError(NAME, f"unknown symbol {symbol!r}")
    base = pair[:-3]
    expiry = yymmdd_expiry(tail) if dated else None
    return Instrument(symbol, base, "USD", market_type(False, expiry), contract_size_usd(base), "USD", expiry)


class CoinmSession(ForceOrderSession):
    venue = NAME

    def __init__(self, table: InstrumentTable | None = None) -> None:
        self.table = TABLE if table is None else table  # the live table: refreshed in place

    def _liquidation(self, order: Order, received_ms: int) -> Liquidation:
        inst = self.table.get(order.s) or inverse_instrument(order.s, order.ps)
        contracts = filled(order, NAME)
        extra = order_extra(order, NAME)
        if inst.contract_value is not None and inst.contract_value_unit == "USD":
            # An inverse contract is worth its face in USD at any price, so the value "at the
            # average price" is the face value too (exchanges.md 1.2: notional = z × contractSize).
            extra["notional_usd_at_price_avg"] = contracts * inst.contract_value
        return make_liquidation(
            NAME,
            inst,
            side=order_side(order, NAME),
            side_raw=order.S,
            price=num(order.p, NAME, "o.p"),
            quantity_native=contracts,
            native_unit="contracts",
            timestamp_ms=order.T,
            received_ms=received_ms,
            sampled=True,
            extra=extra,
        )


class RestSymbol(msgspec.Struct):
    """One ``symbols[]`` entry of ``GET /dapi/v1/exchangeInfo`` (the fields used here)."""

    symbol: str
    baseAsset: str
    quoteAsset: str
    contractType: str = ""
    contractSize: float = 0.0
    deliveryDate: int = 0


class ExchangeInfo(msgspec.Struct):
    symbols: list[RestSymbol]


_rest = msgspec.json.Decoder(ExchangeInfo)
EXCHANGE_INFO_PATH = "/dapi/v1/exchangeInfo"


def parse_instruments(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The contracts an exchangeInfo answer lists (settled ones skipped); ValueError when malformed."""
    return [rest_instrument(s) for s in _rest.decode(body).symbols if s.contractType]


def rest_instrument(s: RestSymbol) -> Instrument:
    """An exchangeInfo symbol as the table holds it: inverse, ``contractSize`` quote per contract."""
    expiry = None if s.contractType.startswith("PERPETUAL") else ms_date(s.deliveryDate)
    kind = market_type(False, expiry)
    if s.contractSize <= 0:
        return Instrument(s.symbol, s.baseAsset, s.quoteAsset, kind, expiry=expiry)
    return Instrument(s.symbol, s.baseAsset, s.quoteAsset, kind, s.contractSize, s.quoteAsset, expiry)


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    return stream_plans(NAME, base_url, "", symbols, CoinmSession)


VENUE = VenueSpec(
    name=NAME,
    live_url=f"wss://dstream.binance.com/stream?streams={ALL_STREAM}",
    markets="COIN-M inverse perpetuals and quarterly futures (all symbols)",
    semantics="sampled",
    semantics_note="at most 1 liquidation per symbol per second (latest-in-1000ms snapshot)",
    heartbeat_s=60.0,
    max_connection_s=CONNECTION_LIFETIME_S,
    usual_gap_s=300.0,
    plans=_plans,
    new_parser=CoinmSession,
    instruments=InstrumentSource(
        live_rest_url="https://dapi.binance.com",
        requests=(InstrumentRequest(EXCHANGE_INFO_PATH),),
        parse=parse_instruments,
        table=TABLE,
    ),
)
