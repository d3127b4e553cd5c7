"""Binance USDⓈ-M futures: the ``forceOrder`` stream, wire types shared with COIN-M, and the USD-M venue.

Docs: developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
(All-Market-Liquidation-Order-Streams). Since 2026-04-23 the stream lives only on
``wss://fstream.binance.com/market``; the legacy ``/ws`` and ``/stream`` paths ack and stay silent.

One liquidation per frame; combined streams wrap it as ``{"stream": ..., "data": ...}``::

    {"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC",
     "q":"0.014","p":"9910","ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}

Subscription: the streams are in the URL; the one request sent is ``LIST_SUBSCRIPTIONS``, whose
answer naming them (``{"result":["!forceOrder@arr"],"id":1}``) confirms them (the venue sends no
other ack, and no frame of its own: WebSocket pings only).

Side rule: Binance ``o.S`` is the liquidation ORDER side: SELL means a long was liquidated.

Feed semantics: sampled. Only the latest liquidation per symbol per 1000 ms is pushed, so every
event carries ``sampled=True``. Normalization (peer-corpus README): price = ``o.p``, quantity =
``o.z`` (``o.q`` when ``z`` is 0), timestamp = ``o.T``, notional = price × quantity.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import (
    CONFIRMED,
    EMPTY,
    ConnectionPlan,
    Outgoing,
    SessionOutput,
    VenueSession,
    VenueSpec,
)
from collectors.venues._common import (
    decode,
    frame_errors,
    make_liquidation,
    market_type,
    num,
    position_side,
    yymmdd_expiry,
)
from shared.errors import ParseError
from shared.models import Liquidation, Side

NAME = "binance_usdm"
ALL_STREAM = "!forceOrder@arr"
MAX_STREAMS = 1024
CONNECTION_LIFETIME_S = 24 * 3600.0
"""Binance ends every connection after 24 h (USD-M and COIN-M)."""
LINEAR_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD1")


class Order(msgspec.Struct):
    """``o`` of a forceOrder event (numbers arrive as strings)."""

    s: str
    S: str
    q: str | float
    p: str | float
    z: str | float
    T: int
    ap: str | float = "0"
    last: str | float = msgspec.field(default="0", name="l")
    X: str = ""
    ps: str = ""


class Event(msgspec.Struct):
    e: str
    o: Order | None = None


class Frame(msgspec.Struct):
    """A raw event, a combined-stream envelope, or a control reply (``{"result":null,"id":1}``)."""

    stream: str | None = None
    data: Event | None = None
    e: str | None = None
    o: Order | None = None
    id: int | str | None = None
    result: list[str] | None = None
    """The streams a ``LIST_SUBSCRIPTIONS`` answer names (null in a SUBSCRIBE ack)."""


LIST_ID = 1
"""The id of the ``LIST_SUBSCRIPTIONS`` request a connection sends once open."""
LIST_SUBSCRIPTIONS = json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": LIST_ID})

_frame = msgspec.json.Decoder(Frame)


def lists_streams(frame: Frame) -> bool:
    """The frame answers the connection's ``LIST_SUBSCRIPTIONS`` with some stream: confirmed."""
    return frame.id == LIST_ID and bool(frame.result)


def force_order(frame: Frame, raw: bytes | str, venue: str) -> Order | None:
    """The forceOrder ``o`` of a frame; None for control replies and other event types."""
    event = frame.data if frame.data is not None else Event(e=frame.e or "", o=frame.o)
    if event.e == "forceOrder":
        if event.o is None:
            raise ParseError(venue, "forceOrder without o", raw)
        return event.o
    if frame.id is not None or frame.stream is not None or event.e:
        return None
    raise ParseError(venue, "neither a forceOrder event nor a control reply", raw)


def order_side(order: Order, venue: str) -> Side:
    return position_side(order.S, long_if="SELL", short_if="BUY", venue=venue)


def filled(order: Order, venue: str) -> float:
    """``z`` (accumulated filled quantity), falling back to ``q`` when nothing is filled yet."""
    qty = num(order.z, venue, "o.z")
    return qty if qty > 0 else num(order.q, venue, "o.q")


def order_extra(order: Order, venue: str) -> dict[str, str | float | int | None]:
    return {
        "price_avg": num(order.ap, venue, "o.ap"),
        "quantity_original": num(order.q, venue, "o.q"),
        "quantity_last_fill": num(order.last, venue, "o.l"),
        "order_status": order.X,
    }


def linear_instrument(symbol: str) -> Instrument:
    """``BTCUSDT`` / ``BTCUSDT_250926`` / ``1000PEPEUSDT`` → Instrument (quantities are base)."""
    pair, _, date = symbol.partition("_")
    quote = next((q for q in LINEAR_QUOTES if pair.endswith(q) and len(pair) > len(q)), None)
    if quote is None or (date and not (date.isdigit() and len(date) == 6)):
        raise ParseError(NAME, f"unknown symbol {symbol!r}")
    expiry = yymmdd_expiry(date) if date else None
    return Instrument(symbol, pair[: -len(quote)], quote, market_type(True, expiry), expiry=expiry)


def stream_url(base_url: str, default_prefix: str, streams: Sequence[str]) -> str:
    """Combined-stream URL on ``base_url``'s host; a bare host gets ``default_prefix``."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    for suffix in ("/stream", "/ws"):
        path = path.removesuffix(suffix)
    return f"{parts.scheme}://{parts.netloc}{path or default_prefix}/stream?streams={'/'.join(streams)}"


def stream_plans(
    venue: str, base_url: str, prefix: str, symbols: Sequence[str], new: Callable[[], VenueSession]
) -> list[ConnectionPlan]:
    """One connection for ``!forceOrder@arr``, or per-symbol streams in chunks of 1024."""
    if not symbols:
        return [ConnectionPlan(stream_url(base_url, prefix, [ALL_STREAM]), f"{venue}:all", new)]
    names = [f"{s.lower()}@forceOrder" for s in symbols]
    chunks = [names[i : i + MAX_STREAMS] for i in range(0, len(names), MAX_STREAMS)]
    return [
        ConnectionPlan(stream_url(base_url, prefix, chunk), f"{venue}:{n}", new)
        for n, chunk in enumerate(chunks)
    ]


class ForceOrderSession:
    """Binance USD-M and COIN-M: streams are in the URL, so only ``LIST_SUBSCRIPTIONS`` is sent,
    its answer the confirmation; WebSocket pings only.

    Subclasses set ``venue`` and turn one ``forceOrder`` into a Liquidation (``_liquidation``).
    """

    venue = NAME

    def on_open(self) -> list[Outgoing]:
        return [LIST_SUBSCRIPTIONS]

    def confirmations(self) -> int:
        return 1

    def heartbeat(self) -> Outgoing | None:
        return None

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, self.venue)
        if lists_streams(frame):
            return CONFIRMED
        order = force_order(frame, raw, self.venue)
        if order is None:
            return EMPTY
        with frame_errors(self.venue, raw):
            return SessionOutput([self._liquidation(order, received_ms)])

    def _liquidation(self, order: Order, received_ms: int) -> Liquidation:
        raise NotImplementedError


class UsdmSession(ForceOrderSession):
    def __init__(self, table: InstrumentTable | None = None) -> None:
        self.table = TABLE if table is None else table

    def _liquidation(self, order: Order, received_ms: int) -> Liquidation:
        inst = self.table.get(order.s) or linear_instrument(order.s)
        price, qty = num(order.p, NAME, "o.p"), filled(order, NAME)
        extra = order_extra(order, NAME)
        extra["notional_usd_at_price_avg"] = qty * num(order.ap, NAME, "o.ap")
        return make_liquidation(
            NAME,
            inst,
            side=order_side(order, NAME),
            side_raw=order.S,
            price=price,
            quantity_native=qty,
            native_unit="base",
            timestamp_ms=order.T,
            received_ms=received_ms,
            sampled=True,
            extra=extra,
        )


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    return stream_plans(NAME, base_url, "/market", symbols, UsdmSession)


VENUE = VenueSpec(
    name=NAME,
    live_url=f"wss://fstream.binance.com/market/stream?streams={ALL_STREAM}",
    markets="USDⓈ-M perpetuals and dated futures (all symbols)",
    semantics="sampled",
    semantics_note="at most 1 liquidation per symbol per second (latest-in-1000ms snapshot)",
    heartbeat_s=60.0,
    max_connection_s=CONNECTION_LIFETIME_S,
    usual_gap_s=120.0,
    plans=_plans,
    new_parser=UsdmSession,
)
