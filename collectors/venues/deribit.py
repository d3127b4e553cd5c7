"""Deribit: the public trades feed, keeping trades that carry a ``liquidation`` flag.

Docs: docs.deribit.com (``trades.{kind}.{currency}.{interval}``, ``public/set_heartbeat``)::

    {"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.raw",
     "data":[{"trade_id":"66460463","timestamp":1584058044032,"price":4469.5,"liquidation":"T",
     "instrument_name":"BTC-PERPETUAL","direction":"sell","amount":1120}]}}

Side rule: ``direction`` is the taker side; flag ``T`` (taker liquidated) → order side =
direction, ``M`` (maker liquidated) → order side = opposite of direction, ``MT`` → two events
(one long, one short) each of ``amount``; a sell order means a long was liquidated.

Quantity: perpetuals and inverse futures (``BTC-PERPETUAL``, ``BTC-27DEC25``) give ``amount`` in
USD, base = amount / price; linear ``*_USDC-*`` give it in base. ``event_id`` = ``trade_id``
(``trade_id:long`` / ``trade_id:short`` for ``MT``). Keep-alive: ``public/set_heartbeat`` on
open, then every ``test_request`` heartbeat is answered with ``public/test``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import CONFIRMED, EMPTY, ConnectionPlan, Outgoing, SessionOutput, VenueSpec
from collectors.venues._common import (
    ddmmmyy_expiry,
    decode,
    decode_row,
    each_row,
    make_liquidation,
    market_type,
    position_side,
    server_error,
    with_default_path,
)
from shared.errors import ParseError
from shared.models import Liquidation, Side

NAME = "deribit"
HEARTBEAT_INTERVAL_S = 30
DEFAULT_CURRENCIES = ("BTC", "ETH", "USDC")
FLAGS = frozenset({"T", "M", "MT"})


class Trade(msgspec.Struct):
    trade_id: str | int
    instrument_name: str
    direction: str
    price: float
    amount: float
    timestamp: int
    liquidation: str | None = None
    mark_price: float | None = None
    index_price: float | None = None


class Params(msgspec.Struct):
    channel: str | None = None
    type: str | None = None
    data: list[msgspec.Raw] | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""


class Frame(msgspec.Struct):
    method: str | None = None
    params: Params | None = None
    id: int | str | None = None
    result: Any = None
    error: Any = None


_frame = msgspec.json.Decoder(Frame)
_trade = msgspec.json.Decoder(Trade)


def parse_instrument(name: str) -> Instrument | None:
    """Futures and perpetuals; None for options, spot and combos (no liquidations counted)."""
    parts = name.split("-")
    if len(parts) != 2 or parts[1].startswith("FS"):
        return None
    pair, tail = parts
    base, _, quote = pair.partition("_")
    linear = bool(quote)
    expiry = None if tail == "PERPETUAL" else ddmmmyy_expiry(tail)
    return Instrument(name, base, quote or "USD", market_type(linear, expiry), expiry=expiry)


def channels(symbols: Sequence[str]) -> list[str]:
    """A currency (``BTC``) → every future/perpetual of it; an instrument → that one only."""
    return [
        f"trades.{s}.100ms" if "-" in s else f"trades.future.{s}.100ms" for s in symbols or DEFAULT_CURRENCIES
    ]


def liquidated_sides(flag: str, direction: str) -> list[Side]:
    """The liquidated positions of one trade (two for ``MT``)."""
    taker_side = position_side(direction, long_if="sell", short_if="buy", venue=NAME)
    maker_side: Side = "short" if taker_side == "long" else "long"
    by_flag: dict[str, list[Side]] = {"T": [taker_side], "M": [maker_side], "MT": ["long", "short"]}
    return by_flag[flag]


class DeribitSession:
    """One JSON-RPC connection: set_heartbeat + subscribe; answers test_request."""

    def __init__(self, symbols: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.channels = channels(symbols)
        self.table = TABLE if table is None else table
        self._ids = itertools.count(1)
        self._opening: set[int | str] = set()
        """Ids of the requests ``on_open`` sent that the venue has not answered yet."""

    def _rpc(self, method: str, params: dict[str, Any]) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})

    def on_open(self) -> list[Outgoing]:
        requests = [
            self._rpc("public/set_heartbeat", {"interval": HEARTBEAT_INTERVAL_S}),
            self._rpc("public/subscribe", {"channels": self.channels}),
        ]
        self._opening = {json.loads(request)["id"] for request in requests}
        return list(requests)

    def confirmations(self) -> int:
        """The answers (``result``, no ``error``) to set_heartbeat and subscribe."""
        return 2

    def heartbeat(self) -> Outgoing | None:
        return None

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.method == "heartbeat":
            if frame.params is not None and frame.params.type == "test_request":
                return SessionOutput(replies=[self._rpc("public/test", {})])
            return EMPTY
        if frame.method == "subscription" and frame.params is not None:
            trades = frame.params.data or []
            return each_row(NAME, raw, trades, lambda trade: self._trade(trade, received_ms))
        if frame.id is not None or frame.method is not None:
            if frame.error is not None:
                return server_error(NAME, frame.error)
            if frame.id in self._opening:
                self._opening.discard(frame.id)
                return CONFIRMED
            return EMPTY
        raise ParseError(NAME, "neither a subscription, a heartbeat nor an RPC reply", raw)

    def _trade(self, raw_trade: msgspec.Raw, received_ms: int) -> list[Liquidation] | None:
        """The liquidated sides of one trade (None: no liquidation, or an instrument not parsed)."""
        trade = decode_row(_trade, raw_trade, NAME)
        if trade.liquidation is None:
            return None
        if trade.liquidation not in FLAGS:
            raise ParseError(NAME, f"unknown liquidation flag {trade.liquidation!r}")
        inst = self.table.get(trade.instrument_name) or parse_instrument(trade.instrument_name)
        return None if inst is None else self._events(trade, trade.liquidation, inst, received_ms)

    def _events(self, trade: Trade, flag: str, inst: Instrument, received_ms: int) -> list[Liquidation]:
        sides = liquidated_sides(flag, trade.direction)
        trade_id = str(trade.trade_id)
        extra: dict[str, str | float | int | None] = {
            "exchange_id": trade_id,
            "liquidation_flag": flag,
            "trade_direction": trade.direction,
        }
        if trade.mark_price is not None:
            extra["mark_price"] = trade.mark_price
        return [
            make_liquidation(
                NAME,
                inst,
                side=side,
                side_raw=f"{flag}:{trade.direction}",
                price=trade.price,
                quantity_native=trade.amount,
                native_unit="base" if inst.market_type.startswith("linear") else "USD",
                timestamp_ms=trade.timestamp,
                event_id=f"{trade_id}:{side}" if len(sides) > 1 else trade_id,
                received_ms=received_ms,
                extra=extra,
            )
            for side in sides
        ]


TABLE = InstrumentTable.load(NAME)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    url = with_default_path(base_url, "/ws/api/v2")
    return [ConnectionPlan(url, f"{NAME}:trades", lambda: DeribitSession(symbols))]


VENUE = VenueSpec(
    name=NAME,
    live_url="wss://www.deribit.com/ws/api/v2",
    markets="BTC/ETH inverse perpetuals and futures, USDC linear perpetuals (trades with a liquidation flag)",
    semantics="complete",
    semantics_note="every liquidation trade of the subscribed currencies (trade feed, 100 ms batches)",
    heartbeat_s=float(HEARTBEAT_INTERVAL_S),
    server_heartbeat_s=float(HEARTBEAT_INTERVAL_S),
    usual_gap_s=900.0,
    plans=_plans,
    new_parser=DeribitSession,
    default_symbols=DEFAULT_CURRENCIES,
)
