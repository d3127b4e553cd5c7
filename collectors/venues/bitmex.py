"""BitMEX: the ``liquidation`` table (active liquidation orders), counted on ``insert`` only.

Docs: bitmex.com/app/wsAPI; swagger ``definitions.Liquidation``. A table diff stream::

    {"table":"liquidation","action":"insert","data":[{"orderID":"dd9cea25-207c-0dab-15b5-b88da776f500",
     "symbol":"XBTUSD","side":"Buy","price":10106,"leavesQty":9214}]}

Side rule: BitMEX ``side`` is the liquidation ORDER side: Buy means a short was liquidated.

Only ``insert`` is a new liquidation (``leavesQty`` is then the full size). ``partial`` (the
snapshot after subscribing), ``update`` (``leavesQty`` shrinking) and ``delete`` (order gone)
produce nothing. The message has no time: ``timestamp_ms`` is the receive time and
``timestamp_source="receive"``; ``event_id`` is ``orderID``. XBTUSD and the XBT quarterlies are
inverse, 1 USD per contract; other contracts (quanto, linear) keep contracts, notional unknown.
Heartbeat: the text ``ping``, answered by ``pong``.

Instruments endpoint (``VENUE.instruments``, refreshed by ``collectors.refresh``):
``GET /api/v1/instrument/active`` → ``[{"symbol","typ","underlying","quoteCurrency","isInverse",
"isQuanto","multiplier","underlyingToSettleMultiplier","expiry",…}]``; futures and perpetuals
only (``typ`` ``FF…``). The documented safe first version: only an inverse, non-quanto contract
with a 1-unit fiat face (``multiplier`` / ``underlyingToSettleMultiplier`` = 1, e.g. XBTUSD:
1 USD) gets a size; every other contract is listed with its size unknown, never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import (
    CONFIRMED,
    EMPTY,
    ConnectionPlan,
    InstrumentRequest,
    InstrumentSource,
    Outgoing,
    SessionOutput,
    VenueSpec,
)
from collectors.venues._common import (
    decode,
    decode_row,
    each_row,
    iso_ms,
    make_liquidation,
    market_type,
    month_code_expiry,
    ms_date,
    num,
    position_side,
    server_error,
    with_default_path,
)
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "bitmex"
_SYMBOL = re.compile(r"^([A-Z0-9]+?)(USDT|USDC|USD|EUR)?(?:([FGHJKMNQUVXZ])(\d\d))?$")
FIAT_FACES = frozenset({"USD", "EUR"})


class Row(msgspec.Struct):
    orderID: str = ""
    symbol: str | None = None
    side: str | None = None
    price: float | str | None = None
    leavesQty: float | str | None = None


class Frame(msgspec.Struct):
    table: str | None = None
    action: str | None = None
    data: list[msgspec.Raw] | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""
    info: str | None = None
    success: bool | None = None
    subscribe: str | None = None
    """The argument a subscribe ack confirms."""
    error: str | None = None


_frame = msgspec.json.Decoder(Frame)
_row = msgspec.json.Decoder(Row)


def parse_symbol(symbol: str) -> Instrument:
    """Instrument of ``XBTUSD``/``XBTZ25`` (inverse), ``XBTUSDT``, ``ETHUSD``, ``ETHUSDZ25``, ``ETHZ25``.

    A dated contract without a quote is quoted in XBT (``ETHZ25`` = ETH/XBT) except XBT's own
    quarterlies (USD). Only XBT against a fiat face (1 USD / 1 EUR per contract) has a known
    contract size; linear and quanto contracts keep contracts with the notional unknown.
    """
    match = _SYMBOL.match(symbol)
    if match is None or not (match[2] or match[3]):
        raise ParseError(NAME, f"unknown symbol {symbol!r}")
    base, quote, month, yy = match.groups()
    quote = quote or ("USD" if base == "XBT" else "XBT")
    expiry = month_code_expiry(month, yy) if month else None
    if base == "XBT" and quote in FIAT_FACES:
        return Instrument(symbol, base, quote, market_type(False, expiry), 1.0, quote, expiry)
    return Instrument(symbol, base, quote, market_type(True, expiry), expiry=expiry)


class BitmexSession:
    """One BitMEX realtime connection subscribed to the ``liquidation`` table."""

    def __init__(self, symbols: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.args = [f"liquidation:{s}" for s in symbols] or ["liquidation"]
        self.table = TABLE if table is None else table  # the live table: refreshed in place

    def on_open(self) -> list[Outgoing]:
        return [json.dumps({"op": "subscribe", "args": self.args})]

    def confirmations(self) -> int:
        """One ack per argument (``{"success":true,"subscribe":"liquidation",…}``)."""
        return len(self.args)

    def heartbeat(self) -> Outgoing | None:
        return "ping"

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        if raw in ("pong", b"pong"):
            return EMPTY
        frame = decode(_frame, raw, NAME)
        if frame.table is None:
            if frame.info is None and frame.success is None and frame.error is None:
                raise ParseError(NAME, "neither a table frame nor a control reply", raw)
            if frame.error is not None:
                return server_error(NAME, frame.error)
            return CONFIRMED if frame.success and frame.subscribe in self.args else EMPTY
        if frame.table != "liquidation" or frame.action != "insert":
            return EMPTY
        return each_row(NAME, raw, frame.data or [], lambda row: self._liquidation(row, received_ms))

    def _liquidation(self, raw_row: msgspec.Raw, received_ms: int) -> Liquidation:
        row = decode_row(_row, raw_row, NAME)
        if not row.orderID or row.symbol is None:
            raise ParseError(NAME, f"insert row lacks orderID/symbol: {row!r}")
        inst = self.table.get(row.symbol) or parse_symbol(row.symbol)
        return make_liquidation(
            NAME,
            inst,
            side=position_side(row.side, long_if="Sell", short_if="Buy", venue=NAME),
            side_raw=row.side or "",
            price=num(row.price, NAME, "price"),
            quantity_native=num(row.leavesQty, NAME, "leavesQty"),
            native_unit="contracts",
            timestamp_ms=received_ms,
            event_id=row.orderID,
            received_ms=received_ms,
            timestamp_source="receive",
            extra={"exchange_id": row.orderID},
        )


class RestInstrument(msgspec.Struct):
    """One instrument of ``GET /api/v1/instrument/active`` (the fields used here)."""

    symbol: str
    typ: str = ""
    underlying: str = ""
    quoteCurrency: str = ""
    isInverse: bool = False
    isQuanto: bool = False
    multiplier: float | None = None
    underlyingToSettleMultiplier: float | None = None
    expiry: str | None = None


_rest = msgspec.json.Decoder(list[RestInstrument])
INSTRUMENTS_PATH = "/api/v1/instrument/active"
DERIVATIVE_TYP = "FF"
"""``typ`` prefix of futures (``FFCCSX``) and perpetuals (``FFWCSX``); spot is ``IF…``, options ``O…``."""


def parse_instruments(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The futures and perpetuals an ``instrument/active`` answer lists; ValueError when malformed."""
    return [rest_instrument(i) for i in _rest.decode(body) if i.typ.startswith(DERIVATIVE_TYP)]


def rest_instrument(i: RestInstrument) -> Instrument:
    """An instrument as the table holds it: a size only for an inverse 1-unit fiat face."""
    if not i.underlying or not i.quoteCurrency:
        raise ValueError(f"{NAME} instrument {i.symbol!r} without underlying/quoteCurrency")
    expiry = ms_date(iso_ms(i.expiry)) if i.expiry else None
    kind = market_type(not i.isInverse, expiry)
    if not _unit_fiat_face(i):
        return Instrument(i.symbol, i.underlying, i.quoteCurrency, kind, expiry=expiry)
    return Instrument(i.symbol, i.underlying, i.quoteCurrency, kind, 1.0, i.quoteCurrency, expiry)


def _unit_fiat_face(i: RestInstrument) -> bool:
    """Inverse, not quanto, quoted in USD/EUR, and one contract worth one unit of the quote."""
    if not i.isInverse or i.isQuanto or i.quoteCurrency not in FIAT_FACES:
        return False
    return bool(i.multiplier and i.multiplier == i.underlyingToSettleMultiplier)


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    url = with_default_path(base_url, "/realtime")
    return [ConnectionPlan(url, f"{NAME}:liquidation", lambda: BitmexSession(symbols))]


VENUE = VenueSpec(
    name=NAME,
    live_url="wss://ws.bitmex.com/realtime",
    markets="XBT inverse perpetual and quarterlies (others: contracts, notional unknown)",
    semantics="complete",
    semantics_note="every liquidation order entering the book (insert); no timestamp, receive time used",
    heartbeat_s=30.0,
    answers_pings=True,
    usual_gap_s=900.0,
    plans=_plans,
    new_parser=BitmexSession,
    instruments=InstrumentSource(
        live_rest_url="https://www.bitmex.com",
        requests=(InstrumentRequest(INSTRUMENTS_PATH),),
        parse=parse_instruments,
        table=TABLE,
    ),
)
