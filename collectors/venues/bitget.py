"""Bitget UTA (v3 public WebSocket): the all-symbol ``liquidation`` topic of USDT futures.

Peers: tardis-node ``src/mappers/bitget.ts``, aggr ``bitget.ts`` (Bitget's own page for this
topic was not found). One subscription covers every symbol
(``{"op":"subscribe","args":[{"instType":"usdt-futures","topic":"liquidation"}]}``); frames
batch several symbols::

    {"action":"update","arg":{"instType":"usdt-futures","topic":"liquidation"},
     "data":[{"symbol":"APEUSDT","side":"buy","price":"0.1649","amount":"13.70319",
              "ts":"1777358886549"}],"ts":1777358897167}

Side rule: ``side`` is the POSITION side: ``buy`` means a long was liquidated.

Units: ``amount`` is a QUOTE (USDT) value, so quantity = amount / price and notional = amount
(peer-corpus doubt 1). ``ts`` is a ms string. No exchange id: ``event_id`` is the digest.
Feed semantics: aggregated, at most one long and one short record per symbol per second, so
every event carries ``sampled=True``. A frame with ``action: "snapshot"`` (a subscribe replay)
is history and skipped, as tardis does. Heartbeat: the text ``ping``, answered by ``pong``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import CONFIRMED, EMPTY, ConnectionPlan, Outgoing, SessionOutput, VenueSpec
from collectors.venues._common import (
    decode,
    decode_row,
    each_row,
    make_liquidation,
    num,
    position_side,
    server_error,
    with_default_path,
)
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "bitget"
PATH = "/v3/ws/public"
TOPIC = "liquidation"
QUOTES = {"usdt-futures": "USDT", "usdc-futures": "USDC"}
DEFAULT_INST_TYPES = ("usdt-futures",)


class Row(msgspec.Struct):
    symbol: str
    side: str
    price: str | float
    amount: str | float
    ts: str | int


class Arg(msgspec.Struct):
    instType: str = ""
    topic: str = ""


class Frame(msgspec.Struct):
    action: str = ""
    event: str = ""
    arg: Arg | None = None
    data: list[msgspec.Raw] | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""
    msg: str = ""


_frame = msgspec.json.Decoder(Frame)
_row = msgspec.json.Decoder(Row)


def symbol_instrument(symbol: str, inst_type: str) -> Instrument:
    """``APEUSDT`` under ``usdt-futures`` → APE/USDT linear perpetual."""
    quote = QUOTES.get(inst_type.lower())
    if quote is None or not symbol.endswith(quote) or len(symbol) <= len(quote):
        raise ParseError(NAME, f"unknown symbol {symbol!r} ({inst_type})")
    return Instrument(symbol, symbol[: -len(quote)], quote, "linear_perpetual")


class BitgetSession:
    """One connection subscribed to the liquidation topic of some instrument types."""

    def __init__(self, inst_types: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.inst_types = list(inst_types) or list(DEFAULT_INST_TYPES)
        self.table = TABLE if table is None else table

    def on_open(self) -> list[Outgoing]:
        args = [{"instType": t, "topic": TOPIC} for t in self.inst_types]
        return [json.dumps({"op": "subscribe", "args": args})]

    def confirmations(self) -> int:
        """One ack per instrument type (``{"event":"subscribe","arg":…}``)."""
        return len(self.inst_types)

    def heartbeat(self) -> Outgoing | None:
        return "ping"

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        if raw in ("pong", b"pong"):
            return EMPTY
        frame = decode(_frame, raw, NAME)
        if frame.event == "error":
            return server_error(NAME, frame.msg)
        if frame.event == "subscribe" and frame.arg is not None and frame.arg.topic == TOPIC:
            return CONFIRMED
        if frame.arg is None or frame.arg.topic != TOPIC or not frame.data or frame.action == "snapshot":
            return EMPTY  # a snapshot (on subscribe) is history; tardis maps only "update"
        inst_type = frame.arg.instType
        return each_row(NAME, raw, frame.data, lambda row: self._liquidation(row, inst_type, received_ms))

    def _liquidation(self, raw_row: msgspec.Raw, inst_type: str, received_ms: int) -> Liquidation:
        row = decode_row(_row, raw_row, NAME)
        inst = self.table.get(row.symbol) or symbol_instrument(row.symbol, inst_type)
        return make_liquidation(
            NAME,
            inst,
            side=position_side(row.side, long_if="buy", short_if="sell", venue=NAME),
            side_raw=row.side,
            price=num(row.price, NAME, "price"),
            quantity_native=num(row.amount, NAME, "amount"),
            native_unit=inst.quote,
            timestamp_ms=int(row.ts),  # ValueError → ParseError via frame_errors
            received_ms=received_ms,
            sampled=True,
        )


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection; the topic covers every symbol, so ``symbols`` may only name instTypes."""
    inst_types = [s for s in symbols if s in QUOTES] or list(DEFAULT_INST_TYPES)
    url = with_default_path(base_url, PATH)
    return [ConnectionPlan(url, f"{NAME}:liquidation", lambda: BitgetSession(inst_types))]


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://ws.bitget.com" + PATH,
    markets="Bitget USDT-margined futures (all symbols, one subscription)",
    semantics="aggregated",
    semantics_note="at most one long and one short record per symbol per second (aggregated)",
    heartbeat_s=25.0,
    answers_pings=True,
    usual_gap_s=60.0,
    plans=_plans,
    new_parser=BitgetSession,
)
