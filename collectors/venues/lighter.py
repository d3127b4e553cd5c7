"""Lighter (zkLighter perps): the ``liquidation_trades`` of the public ``trade/{market_id}`` channel.

Docs: apidocs.lighter.xyz (market data, WebSocket). Subscribe with
``{"type":"subscribe","channel":"trade/1"}``; frames name the channel ``trade:1``. The first
frame, ``subscribed/trade``, replays recent trades and liquidations and is skipped (history
only; tardis-node does the same). ``update/trade`` frames carry new ``trades`` and
``liquidation_trades``; only the latter count::

    {"type":"update/trade","channel":"trade:1","trades":[],"liquidation_trades":[
     {"trade_id":18237797923,"type":"liquidation","market_id":1,"size":"0.01664",
      "price":"75602.8","usd_amount":"1258.030592","is_maker_ask":true,"timestamp":1776687656653}]}

Side rule: the liquidated account is the taker; ``is_maker_ask: true`` means the taker bought,
so a short was liquidated (``false``: a long).

Units: ``size`` base, ``price`` and ``usd_amount`` USDC. ``market_id`` → symbol via the
instrument table (1 = BTC, 0 = ETH, 2 = SOL; canonical ``BTCUSDC``), kept fresh from the public
``GET /api/v1/orderBooks`` (``{"order_books":[{"symbol":"BTC","market_id":1,...}]}``; spot books,
``ETH/USDC``, are left out); a liquidation on a market the table does not know is dropped with a
warning rather than named by guess.
``event_id`` = ``trade_id``. Keep-alive: ``{"type":"ping"}`` at least every 2 minutes (a server
``ping`` is answered with ``pong``). Limits per IP: 100 connections, 100 subscriptions per
connection (so markets are spread over connections of at most 100), 1000 subscriptions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

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
    make_liquidation,
    num,
    server_error,
    symbol_plans,
    with_default_path,
)
from shared.models import Liquidation

logger = logging.getLogger(__name__)

NAME = "lighter"
PATH = "/stream"
DEFAULT_MARKETS = ("0", "1", "2")
SUBS_PER_CONNECTION = 100
"""Lighter's per-connection subscription limit (per IP: 100 connections, 1000 subscriptions)."""
PING = json.dumps({"type": "ping"})
PONG = json.dumps({"type": "pong"})
QUOTE = "USDC"
ORDER_BOOKS_PATH = "/api/v1/orderBooks"


class Trade(msgspec.Struct, kw_only=True):
    trade_id: int
    type: str
    market_id: int
    size: str | float
    price: str | float
    is_maker_ask: bool
    timestamp: int
    usd_amount: str | float | None = None


class Frame(msgspec.Struct):
    type: str = ""
    channel: str = ""
    liquidation_trades: list[msgspec.Raw] | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""
    error: dict[str, Any] | None = None


_frame = msgspec.json.Decoder(Frame)
_trade = msgspec.json.Decoder(Trade)


class OrderBook(msgspec.Struct):
    symbol: str
    market_id: int


class OrderBooks(msgspec.Struct):
    order_books: list[OrderBook]


_order_books = msgspec.json.Decoder(OrderBooks)


def parse_order_books(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The perpetual markets an ``orderBooks`` answer lists, keyed by ``market_id``; ValueError
    when malformed."""
    return [Instrument(str(b.market_id), b.symbol, QUOTE, "linear_perpetual")
            for b in _order_books.decode(body).order_books if b.symbol and "/" not in b.symbol]


class LighterSession:
    """One connection subscribed to the trade channel of several markets."""

    def __init__(self, markets: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.markets = list(markets) or list(DEFAULT_MARKETS)
        self.table = TABLE if table is None else table
        self._unknown: set[int] = set()

    def on_open(self) -> list[Outgoing]:
        return [json.dumps({"type": "subscribe", "channel": f"trade/{m}"}) for m in self.markets]

    def confirmations(self) -> int:
        """One ``subscribed/trade`` reply (the history snapshot) per market."""
        return len(self.markets)

    def heartbeat(self) -> Outgoing | None:
        return PING

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.error is not None:
            return server_error(NAME, frame.error)
        if frame.type == "ping":
            return SessionOutput(replies=[PONG])
        if frame.type == "subscribed/trade":
            return CONFIRMED
        if frame.type != "update/trade" or not frame.liquidation_trades:
            return EMPTY
        trades = frame.liquidation_trades
        return each_row(NAME, raw, trades, lambda trade: self._liquidation(trade, received_ms))

    def _liquidation(self, raw_trade: msgspec.Raw, received_ms: int) -> Liquidation | None:
        """The liquidation of one trade; None for another kind of trade or an unknown market."""
        trade = decode_row(_trade, raw_trade, NAME)
        if trade.type != "liquidation":
            return None
        inst = self.table.get(str(trade.market_id))
        if inst is None:
            if trade.market_id not in self._unknown:
                self._unknown.add(trade.market_id)
                logger.warning("%s: liquidation on unknown market_id %d dropped", NAME, trade.market_id)
            return None
        extra: dict[str, str | float | int | None] = {"exchange_id": str(trade.trade_id)}
        if trade.usd_amount is not None:
            extra["usd_amount"] = num(trade.usd_amount, NAME, "usd_amount")
        return make_liquidation(
            NAME,
            inst,
            side="short" if trade.is_maker_ask else "long",
            side_raw=f"is_maker_ask={str(trade.is_maker_ask).lower()}",
            price=num(trade.price, NAME, "price"),
            quantity_native=num(trade.size, NAME, "size"),
            native_unit="base",
            timestamp_ms=trade.timestamp,
            event_id=str(trade.trade_id),
            received_ms=received_ms,
            extra=extra,
        )


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """The markets' trade channels (``symbols``, else every market the instrument table knows),
    at most ``SUBS_PER_CONNECTION`` per connection."""
    markets = list(symbols) or sorted(TABLE.natives(), key=int) or list(DEFAULT_MARKETS)
    return symbol_plans(with_default_path(base_url, PATH), f"{NAME}:trade", markets, SUBS_PER_CONNECTION,
                        LighterSession)


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://mainnet.zklighter.elliot.ai" + PATH,
    markets="Lighter USDC perpetuals (every listed market's trade channel, by market_id)",
    semantics="complete",
    semantics_note="every liquidation trade of the subscribed markets; subscribe snapshot skipped",
    heartbeat_s=60.0,
    usual_gap_s=3600.0,
    plans=_plans,
    new_parser=LighterSession,
    relists=True,
    instruments=InstrumentSource(
        live_rest_url="https://mainnet.zklighter.elliot.ai",
        requests=(InstrumentRequest(ORDER_BOOKS_PATH),),
        parse=parse_order_books,
        table=TABLE,
    ),
)
