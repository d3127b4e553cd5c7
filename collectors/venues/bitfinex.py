"""Bitfinex: the ``status`` channel with key ``liq:global`` (every derivative liquidation).

Docs: docs.bitfinex.com/reference/ws-public-status. The subscribe ack gives a ``chanId``; data
frames are arrays keyed only by it, optionally followed by the conf-flag ``seq, ts`` tail (and,
in tardis recordings, ``"liquidations","global"``)::

    [386841,[["pos",143683674,1593522802742,null,"tBTCF0:USTF0",0.00268657,9135.972557016,
      null,0,1,null,9080]],7,1593566593351]

Row: ``["pos", POS_ID, MTS, _, SYMBOL, AMOUNT, BASE_PRICE, _, IS_MATCH, IS_MARKET_SOLD, _,
PRICE_ACQUIRED]``. Side rule: the sign of Bitfinex ``AMOUNT`` is the POSITION: > 0 means a long
was liquidated, < 0 a short.

Only ``IS_MATCH == 0`` rows (the initial trigger) count; match rows repeat the same position.
Price = ``BASE_PRICE`` (as the peer corpus does; ``PRICE_ACQUIRED`` goes to
``extra["price_acquired"]``), quantity = ``|AMOUNT|`` in base, timestamp = ``MTS``,
``event_id`` = ``POS_ID-MTS``. A data frame whose chanId was never acked (``liq parse`` on one
frame) is accepted when its rows start with ``"pos"``. ``[chanId,"hb",…]`` is a heartbeat.
Rows are typed one by one: a row of the wrong shape (a number, ``AMOUNT`` null) is rejected
alone, as a row of bad values is, and the frame's other rows are kept.
Info ``20051`` (server restart) and ``20061`` (maintenance ended) get a new connection at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import CONFIRMED, EMPTY, ConnectionPlan, Outgoing, SessionOutput, VenueSpec
from collectors.venues._common import decode, each_row, make_liquidation, server_error, with_default_path
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "bitfinex"
KEY = "liq:global"
RECONNECT_CODES = frozenset({20051, 20061})
"""``{"event":"info","code":…}`` asking for a new connection: 20051 the server restarts ("please
reconnect"), 20061 maintenance ended (resubscribing every channel is advised)."""


class Row(msgspec.Struct, array_like=True):
    """One ``liq:global`` row, decoded by position (trailing extra elements are ignored)."""

    kind: str
    pos_id: int
    mts: int
    placeholder1: Any
    symbol: str
    amount: float
    base_price: float
    placeholder2: Any
    is_match: int
    is_market_sold: int | None = None
    placeholder3: Any = None
    price_acquired: float | None = None


class Event(msgspec.Struct):
    event: str
    chanId: int | None = None
    key: str | None = None
    code: Any = None
    msg: Any = None


_frame = msgspec.json.Decoder(Event | list[Any])


def parse_symbol(symbol: str) -> Instrument:
    """``tBTCF0:USTF0`` → BTC/USDT linear perpetual; ``tBTCUSD`` → BTC/USD margin pair."""
    pair = symbol.removeprefix("t")
    base, sep, quote = pair.partition(":")
    if not sep:
        if len(pair) != 6:
            raise ParseError(NAME, f"unknown symbol {symbol!r}")
        base, quote = pair[:3], pair[3:]
    perpetual = base.endswith("F0") and quote.endswith("F0")
    if perpetual:
        return Instrument(symbol, base[:-2], quote[:-2], "linear_perpetual")
    return Instrument(symbol, base, quote, "spot_margin")


def _is_liq_row(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and value[0] == "pos"


def rows_of(payload: Any) -> list[Any] | None:
    """The row list of a data payload: a single row, or a list holding at least one ``pos`` row
    (its other elements are bad rows, rejected one by one); None if not rows."""
    if _is_liq_row(payload):
        return [payload]
    if isinstance(payload, list) and any(_is_liq_row(r) for r in payload):
        return payload
    return None


def typed_row(value: Any) -> Row:
    """One ``pos`` row typed by position; anything else (a number, a null ``AMOUNT``) → ParseError."""
    if not _is_liq_row(value):
        raise ParseError(NAME, f"not a pos row: {str(value)[:80]}")
    try:
        return msgspec.convert(value, Row)
    except msgspec.ValidationError as exc:
        raise ParseError(NAME, f"row: {exc}") from exc


class BitfinexSession:
    """One public connection subscribed to ``status``/``liq:global``; routes by chanId."""

    def __init__(self, table: InstrumentTable | None = None) -> None:
        self.table = TABLE if table is None else table
        self.channels: dict[int, str] = {}

    def on_open(self) -> list[Outgoing]:
        return [json.dumps({"event": "subscribe", "channel": "status", "key": KEY})]

    def confirmations(self) -> int:
        return 1

    def heartbeat(self) -> Outgoing | None:
        return json.dumps({"event": "ping", "cid": 1})

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if isinstance(frame, Event):
            if frame.event == "subscribed" and frame.chanId is not None:
                self.channels[frame.chanId] = frame.key or ""
                return CONFIRMED if frame.key == KEY else EMPTY
            elif frame.event == "error":
                return server_error(NAME, f"{frame.code}: {frame.msg}")
            elif frame.event == "info" and frame.code in RECONNECT_CODES:
                return SessionOutput(reconnect=f"info {frame.code}: {frame.msg}")
            return EMPTY
        if len(frame) < 2 or not isinstance(frame[0], int):
            raise ParseError(NAME, "array frame without chanId and payload", raw)
        key = self.channels.get(frame[0])
        if frame[1] == "hb" or key not in (KEY, None):
            return EMPTY
        rows = rows_of(frame[1])
        if rows is not None:
            return self._liquidations(rows, raw, received_ms)
        if key is None or frame[1] == []:  # another channel's data, or an empty snapshot
            return EMPTY
        raise ParseError(NAME, "liq:global payload is not a list of pos rows", raw)

    def _liquidations(self, rows: list[Any], raw: bytes | str, received_ms: int) -> SessionOutput:
        return each_row(NAME, raw, rows, lambda row: self._liquidation(typed_row(row), received_ms))

    def _liquidation(self, row: Row, received_ms: int) -> Liquidation | None:
        """The liquidation of a trigger row (``IS_MATCH`` 0); None for a match row."""
        if row.is_match != 0:
            return None
        if row.amount == 0:
            raise ParseError(NAME, f"zero AMOUNT in row of position {row.pos_id}")
        inst = self.table.get(row.symbol) or parse_symbol(row.symbol)
        return make_liquidation(
            NAME,
            inst,
            side="long" if row.amount > 0 else "short",
            side_raw=repr(row.amount),
            price=row.base_price,
            quantity_native=abs(row.amount),
            native_unit="base",
            timestamp_ms=row.mts,
            event_id=f"{row.pos_id}-{row.mts}",
            received_ms=received_ms,
            extra={
                "exchange_id": str(row.pos_id),
                "price_acquired": row.price_acquired,
                "is_market_sold": row.is_market_sold,
            },
        )


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection: ``liq:global`` covers every symbol."""
    url = with_default_path(base_url, "/ws/2")
    return [ConnectionPlan(url, f"{NAME}:{KEY}", BitfinexSession)]


VENUE = VenueSpec(
    name=NAME,
    live_url="wss://api-pub.bitfinex.com/ws/2",
    markets="USDT-margined perpetuals (F0) and margin positions (liq:global)",
    semantics="complete",
    semantics_note="every liquidation trigger (IS_MATCH=0); an old row is replayed on subscribe",
    heartbeat_s=30.0,
    answers_pings=True,
    replays_on_subscribe=True,
    usual_gap_s=1800.0,
    plans=_plans,
    new_parser=BitfinexSession,
)
