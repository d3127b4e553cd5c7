"""OKX v5: the ``liquidation-orders`` channel for every SWAP and FUTURES instrument.

Docs: okx.com/docs-v5 ``#public-data-websocket-liquidation-orders-channel``. One subscription per
``instType`` covers every instrument; frames nest ``data[]`` (instrument) × ``details[]``::

    {"arg":{"channel":"liquidation-orders","instType":"FUTURES"},"data":[{"instId":"XRP-USD-230929",
     "instType":"FUTURES","uly":"XRP-USD","details":[{"bkLoss":"0","bkPx":"0.55205","posSide":"short",
     "side":"buy","sz":"39","ts":"1680173247614"}]}]}

Side rule: OKX ``details[].side`` is the liquidation ORDER side: sell means a long was liquidated
(``posSide`` is ``net`` in net mode, so it is only a fallback).

Quantity: ``sz`` contracts × ``ctVal``. Inverse (``*-USD-*``): 100 USD per BTC contract, 10 USD
for other coins. Linear: ``ctVal`` in base from the instrument table (0.01 BTC for BTC-USDT);
a linear contract not in the table keeps its quantity in contracts with the notional unknown.
Price = ``bkPx`` (bankruptcy price), timestamp = ``details[].ts``.

Instruments endpoint (``VENUE.instruments``, refreshed by ``collectors.refresh``):
``GET /api/v5/public/instruments?instType=SWAP`` and ``…=FUTURES`` →
``{"code":"0","data":[{"instId","instFamily","ctType","ctVal","ctMult","ctValCcy","expTime",…}]}``;
contract value = ``ctVal`` × ``ctMult`` in ``ctValCcy`` (base for linear, USD for inverse),
base and quote from ``instFamily`` (``uly``), expiry = the UTC date of ``expTime``.

The first push after subscribing may replay recent liquidations. It is NOT dropped: event ids
are deterministic digests, so the downstream dedupe removes replays. Also parsed, because
recorded data holds them: tardis "generated" v3 REST envelopes (``futures/liquidation``,
``swap/liquidation``; ``type`` 3 = long closed, 4 = short closed) and v5 REST envelopes
(``arg.channel == "liquidations"``, ``arg.instId``). Heartbeat: the literal ``ping`` → ``pong``.
Notice ``64008`` (sent 60 s before connections are closed for a service upgrade) gets a new
connection at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from collectors.instruments import Instrument, InstrumentTable, canonical_asset
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
    frame_errors,
    iso_ms,
    make_liquidation,
    market_type,
    ms_date,
    num,
    position_side,
    server_error,
    with_default_path,
    yymmdd_expiry,
)
from shared.errors import ParseError
from shared.models import Liquidation, Side

NAME = "okx"
UPGRADE_NOTICE = "64008"
"""``{"event":"notice","code":"64008",…}``: connections close in 60 s for a service upgrade."""
INST_TYPES = ("SWAP", "FUTURES")
V3_TABLES = ("futures/liquidation", "swap/liquidation")
V3_SIDES: dict[str, Side] = {"3": "long", "4": "short"}

Number = str | float | None


class Detail(msgspec.Struct):
    side: str | None = None
    posSide: str | None = None
    bkPx: Number = None
    sz: Number = None
    ts: str | int | None = None
    bkLoss: Number = None


class Item(Detail):
    """A ``data[]`` entry: a v5 instrument with ``details``, a v5 REST row, or a v3 REST row."""

    instId: str | None = None
    instType: str | None = None
    details: list[msgspec.Raw] | None = None
    """Details kept raw: each is typed on its own (a wrong-typed detail costs only itself)."""
    instrument_id: str | None = None
    type: str | None = None
    size: Number = None
    price: Number = None
    created_at: str | None = None
    loss: Number = None


class Arg(msgspec.Struct):
    channel: str = ""
    instType: str | None = None
    instId: str | None = None


class Frame(msgspec.Struct):
    event: str | None = None
    code: Any = None
    msg: Any = None
    arg: Arg | None = None
    table: str | None = None
    data: list[msgspec.Raw] | None = None
    """Entries kept raw: each is typed on its own (a wrong-typed entry costs only itself)."""


_frame = msgspec.json.Decoder(Frame)
_item = msgspec.json.Decoder(Item)
_detail = msgspec.json.Decoder(Detail)
NestedRow = tuple[str, msgspec.Raw, str | None] | ParseError
"""A ``liquidation-orders`` detail (instId, raw detail, instType), or the error of an entry
of the wrong type or naming no instrument (a bad row like any other)."""


def parse_inst_id(inst_id: str, table: InstrumentTable) -> Instrument | None:
    """Instrument for an OKX instId; None for options and other unsupported kinds."""
    known = table.get(inst_id)
    if known is not None:
        return known
    parts = inst_id.split("-")
    if len(parts) == 2:
        return Instrument(inst_id, parts[0], parts[1], "spot_margin")
    if len(parts) != 3:
        return None
    base, quote, tail = parts
    if tail != "SWAP" and not (tail.isdigit() and len(tail) == 6):
        return None
    expiry = None if tail == "SWAP" else yymmdd_expiry(tail)
    if quote == "USD":
        size = 100.0 if canonical_asset(base) == "BTC" else 10.0
        return Instrument(inst_id, base, quote, market_type(False, expiry), size, "USD", expiry)
    family = table.get(f"{base}-{quote}-SWAP")  # ctVal is set per family: swap == futures
    value, unit = (family.contract_value, family.contract_value_unit) if family else (None, None)
    return Instrument(inst_id, base, quote, market_type(True, expiry), value, unit, expiry)


def order_side(side: str | None, pos_side: str | None) -> Side:
    """``side`` is the order side; ``posSide`` (long/short, or net) only when ``side`` is empty."""
    if side:
        return position_side(side, long_if="sell", short_if="buy", venue=NAME)
    return position_side(pos_side, long_if="long", short_if="short", venue=NAME)


class OkxSession:
    """One OKX public connection: ``liquidation-orders`` for SWAP and FUTURES; text ``ping``."""

    def __init__(self, table: InstrumentTable | None = None) -> None:
        self.table = TABLE if table is None else table  # the live table: refreshed in place

    def on_open(self) -> list[Outgoing]:
        args = [{"channel": "liquidation-orders", "instType": t} for t in INST_TYPES]
        return [json.dumps({"id": "liq", "op": "subscribe", "args": args})]

    def confirmations(self) -> int:
        """One ``{"event":"subscribe","arg":…}`` reply per instrument type."""
        return len(INST_TYPES)

    def heartbeat(self) -> Outgoing | None:
        return "ping"

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        if raw in ("pong", b"pong"):
            return EMPTY
        frame = decode(_frame, raw, NAME)
        with frame_errors(NAME, raw):
            return self._frame(frame, raw, received_ms)

    def _frame(self, frame: Frame, raw: bytes | str, received_ms: int) -> SessionOutput:
        if frame.event is not None:
            if frame.event == "error":
                return server_error(NAME, f"{frame.code}: {frame.msg}")
            if frame.event == "notice" and str(frame.code) == UPGRADE_NOTICE:
                return SessionOutput(reconnect=f"notice {frame.code}: {frame.msg}")
            return CONFIRMED if frame.event == "subscribe" else EMPTY
        data = frame.data or []
        if frame.table in V3_TABLES:
            return each_row(NAME, raw, data, lambda item: self._v3(item, received_ms))
        if frame.arg is None:
            raise ParseError(NAME, "neither an event, a channel push nor a v3 table", raw)
        if frame.arg.channel == "liquidation-orders":
            return each_row(NAME, raw, _nested(data), lambda row: self._nested_row(row, received_ms))
        inst_id = frame.arg.instId
        if frame.arg.channel == "liquidations" and inst_id:
            return each_row(NAME, raw, data, lambda item: self._rest_row(inst_id, item, received_ms))
        return EMPTY

    def _nested_row(self, row: NestedRow, received_ms: int) -> Liquidation | None:
        """One ``liquidation-orders`` detail; an entry ``_nested`` could not use raises its error."""
        if isinstance(row, ParseError):
            raise row
        inst_id, detail, inst_type = row
        return self._detail(inst_id, decode_row(_detail, detail, NAME), inst_type, received_ms)

    def _rest_row(self, inst_id: str, raw_item: msgspec.Raw, received_ms: int) -> Liquidation | None:
        """One row of a v5 REST ``liquidations`` envelope (its instrument named by ``arg``)."""
        item = decode_row(_item, raw_item, NAME)
        return self._detail(inst_id, item, item.instType, received_ms)

    def _detail(self, inst_id: str, detail: Detail, inst_type: str | None,
                received_ms: int) -> Liquidation | None:
        """A v5 detail of ``inst_id``; None for an instrument kind not parsed (options)."""
        inst = parse_inst_id(inst_id, self.table)
        return None if inst is None else self._v5(inst, detail, inst_type == "MARGIN", received_ms)

    def _v5(self, inst: Instrument, d: Detail, margin: bool, received_ms: int) -> Liquidation:
        if d.ts is None:
            raise ParseError(NAME, f"liquidation detail without ts: {d!r}")
        return make_liquidation(
            NAME,
            inst,
            side=order_side(d.side, d.posSide),
            side_raw=d.side or d.posSide or "",
            price=num(d.bkPx, NAME, "bkPx"),
            quantity_native=num(d.sz, NAME, "sz"),
            native_unit="base" if margin or inst.market_type == "spot_margin" else "contracts",
            timestamp_ms=int(num(d.ts, NAME, "ts")),
            received_ms=received_ms,
            extra=_loss(d.bkLoss) | ({"pos_side": d.posSide} if d.posSide else {}),
        )

    def _v3(self, raw_item: msgspec.Raw, received_ms: int) -> Liquidation:
        item = decode_row(_item, raw_item, NAME)
        inst = parse_inst_id(item.instrument_id or "", self.table)
        if inst is None or item.type not in V3_SIDES or item.created_at is None:
            raise ParseError(NAME, f"unusable v3 liquidation row: {item!r}")
        return make_liquidation(
            NAME,
            inst,
            side=V3_SIDES[item.type],
            side_raw=item.type,
            price=num(item.price, NAME, "price"),
            quantity_native=num(item.size, NAME, "size"),
            native_unit="contracts",
            timestamp_ms=_iso(item.created_at),
            received_ms=received_ms,
            extra=_loss(item.loss),
        )


def _nested(items: list[msgspec.Raw]) -> list[NestedRow]:
    """One row per detail of each ``data[]`` entry; an entry of the wrong type or without
    ``instId`` is one row too: its error, which ``each_row`` rejects alone."""
    rows: list[NestedRow] = []
    for raw_item in items:
        try:
            item = decode_row(_item, raw_item, NAME)
        except ParseError as exc:
            rows.append(exc)
            continue
        if item.instId is None:
            entry = bytes(raw_item)[:400].decode(errors="replace")  # the repr of its raw details says nothing
            rows.append(ParseError(NAME, f"liquidation-orders entry without instId: {entry}"))
        else:
            rows += [(item.instId, detail, item.instType) for detail in item.details or []]
    return rows


def _loss(value: Number) -> dict[str, str | float | int | None]:
    return {} if value in (None, "") else {"bankruptcy_loss": num(value, NAME, "loss")}


def _iso(text: str) -> int:
    try:
        return iso_ms(text)
    except ValueError as exc:
        raise ParseError(NAME, f"bad created_at {text!r}") from exc


class RestInstrument(msgspec.Struct):
    """One ``data[]`` row of ``GET /api/v5/public/instruments`` (the fields used here)."""

    instId: str
    instType: str = ""
    instFamily: str = ""
    uly: str = ""
    ctType: str = ""
    ctVal: str = ""
    ctMult: str = ""
    ctValCcy: str = ""
    expTime: str = ""


class RestAnswer(msgspec.Struct):
    code: str
    data: list[RestInstrument]
    msg: str = ""


_rest = msgspec.json.Decoder(RestAnswer)
INSTRUMENTS_PATH = "/api/v5/public/instruments"
CT_TYPES = {"linear": True, "inverse": False}


def parse_instruments(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The SWAP and FUTURES contracts an instruments answer lists; ValueError when malformed."""
    answer = _rest.decode(body)
    if answer.code != "0":
        raise ValueError(f"{NAME} instruments: code {answer.code}: {answer.msg[:200]}")
    listed = (rest_instrument(row) for row in answer.data if row.instType in INST_TYPES)
    return [inst for inst in listed if inst is not None]


def rest_instrument(row: RestInstrument) -> Instrument | None:
    """An instruments row as the table holds it; None for a contract type other than linear/inverse."""
    linear = CT_TYPES.get(row.ctType)
    if linear is None:
        return None
    base, _, quote = (row.instFamily or row.uly).partition("-")
    if not base or not quote:
        raise ValueError(f"{NAME} instrument {row.instId!r} without instFamily/uly")
    expiry = ms_date(int(row.expTime)) if row.instType == "FUTURES" else None
    if not row.ctVal or not row.ctValCcy:
        return Instrument(row.instId, base, quote, market_type(linear, expiry), expiry=expiry)
    value = float(row.ctVal) * float(row.ctMult or "1")
    return Instrument(row.instId, base, quote, market_type(linear, expiry), value, row.ctValCcy, expiry)


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection: the channel is per instType, so ``symbols`` are not needed."""
    url = with_default_path(base_url, "/ws/v5/public")
    return [ConnectionPlan(url, f"{NAME}:public", OkxSession)]


VENUE = VenueSpec(
    name=NAME,
    live_url="wss://ws.okx.com:8443/ws/v5/public",
    markets="SWAP and FUTURES, linear and inverse (all instruments)",
    semantics="partial",
    semantics_note="OKX: the feed 'doesn't represent the total number of liquidations'",
    heartbeat_s=20.0,
    answers_pings=True,
    replays_on_subscribe=True,
    usual_gap_s=120.0,
    plans=_plans,
    new_parser=OkxSession,
    instruments=InstrumentSource(
        live_rest_url="https://www.okx.com",
        requests=tuple(InstrumentRequest(f"{INSTRUMENTS_PATH}?instType={t}") for t in INST_TYPES),
        parse=parse_instruments,
        table=TABLE,
    ),
)
