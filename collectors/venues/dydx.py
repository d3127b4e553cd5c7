"""dYdX v4 (indexer WebSocket): liquidations are the ``LIQUIDATED`` trades of ``v4_trades``.

Docs: docs.dydx.exchange (indexer WebSocket, ``v4_trades``). One subscription per market
(``{"type":"subscribe","channel":"v4_trades","id":"BTC-USD"}``); every trade of that market
arrives, and only ``type == "LIQUIDATED"`` ones are liquidations::

    {"type":"channel_data","id":"BTC-USD","channel":"v4_trades","contents":{"trades":[
     {"id":"014f495a0000000200000005","side":"SELL","size":"3.9","price":"22.87",
      "type":"LIQUIDATED","createdAt":"2024-08-04T07:34:50.628Z"}]}}

Side rule: ``side`` is the taker side, and the taker is the liquidated account: SELL means a
long was liquidated.

Snapshot policy: the ``subscribed`` reply carries recent trades, old ``LIQUIDATED`` ones
included (a probe saw 78 in a snapshot and none live in 24 minutes). It is history, so it is
skipped, like Lighter's and Kraken's snapshots and as tardis-node does (its mapper reads only
``channel_data``): replayed on every reconnect and restart, it would count the same
liquidations again in the Redis levels and buckets, which are not idempotent.

Units: ``size`` is base, ``price`` USD (USDC collateral); canonical symbol ``BTC-USD`` → ``BTCUSD``.
Timestamp: ``createdAt`` (ISO-8601). ``channel_batch_data`` (``batched: true``) is a list of
contents and is handled the same way. Heartbeat: WebSocket-level pings from the indexer,
answered by the client library; there is no application ping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import CONFIRMED, EMPTY, ConnectionPlan, Outgoing, SessionOutput, VenueSpec
from collectors.venues._common import (
    decode,
    decode_row,
    each_row,
    get_json,
    iso_ms,
    listed_or_default,
    make_liquidation,
    num,
    position_side,
    server_error,
    symbol_plans,
    with_default_path,
)
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "dydx"
PATH = "/v4/ws"
CHANNEL = "v4_trades"
DEFAULT_MARKETS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD", "SUI-USD")
LIVE_HOST = "indexer.dydx.trade"
SUBS_PER_CONNECTION = 32
"""The indexer caps one connection at 32 subscriptions per channel."""
_CONTROL = frozenset({"connected", "subscribed", "unsubscribed", "error"})
"""Frames that carry no live trade (``subscribed``: the history snapshot)."""


class Trade(msgspec.Struct):
    id: str
    side: str
    size: str | float
    price: str | float
    type: str
    createdAt: str


class Contents(msgspec.Struct):
    trades: list[msgspec.Raw] = []
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""


class Frame(msgspec.Struct):
    type: str
    channel: str = ""
    id: str = ""
    contents: Contents | list[Contents] | None = None
    message: str = ""


_frame = msgspec.json.Decoder(Frame)
_trade = msgspec.json.Decoder(Trade)


def market_instrument(market: str) -> Instrument:
    """``BTC-USD`` → BTC/USD linear perpetual (sizes are base, so no contract size is needed)."""
    base, sep, quote = market.partition("-")
    if not sep or not base or not quote:
        raise ParseError(NAME, f"unknown market {market!r}")
    return Instrument(market, base, quote, "linear_perpetual")


class DydxSession:
    """One connection subscribed to ``v4_trades`` of several markets; WebSocket pings only."""

    def __init__(self, markets: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.markets = list(markets) or list(DEFAULT_MARKETS)
        self.table = TABLE if table is None else table

    def on_open(self) -> list[Outgoing]:
        return [json.dumps({"type": "subscribe", "channel": CHANNEL, "id": m}) for m in self.markets]

    def confirmations(self) -> int:
        """One ``subscribed`` reply (the history snapshot) per market."""
        return len(self.markets)

    def heartbeat(self) -> Outgoing | None:
        return None

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.type == "error":
            return server_error(NAME, frame.message)
        if frame.type == "subscribed" and frame.channel == CHANNEL:
            return CONFIRMED
        if frame.type in _CONTROL or frame.channel != CHANNEL or frame.contents is None:
            return EMPTY
        batches = frame.contents if isinstance(frame.contents, list) else [frame.contents]
        trades = [trade for batch in batches for trade in batch.trades]
        return each_row(NAME, raw, trades, lambda trade: self._liquidation(frame.id, trade, received_ms))

    def _liquidation(self, market: str, raw_trade: msgspec.Raw, received_ms: int) -> Liquidation | None:
        """The liquidation of one trade; None for a trade that is no liquidation."""
        trade = decode_row(_trade, raw_trade, NAME)
        if trade.type != "LIQUIDATED":
            return None
        return make_liquidation(
            NAME,
            self.table.get(market) or market_instrument(market),
            side=position_side(trade.side, long_if="SELL", short_if="BUY", venue=NAME),
            side_raw=trade.side,
            price=num(trade.price, NAME, "price"),
            quantity_native=num(trade.size, NAME, "size"),
            native_unit="base",
            timestamp_ms=iso_ms(trade.createdAt),
            event_id=trade.id,
            received_ms=received_ms,
            extra={"exchange_id": trade.id},
        )


def discover_markets(base_url: str, fetch: Callable[[str], Any] = get_json) -> list[str]:
    """Every ACTIVE perpetual market from the indexer's ``GET /v4/perpetualMarkets``
    (``{"markets": {"BTC-USD": {"ticker": "BTC-USD", "status": "ACTIVE", …}}}``), live host
    only; the simulator, another host or a failed listing get :data:`DEFAULT_MARKETS`."""
    def active() -> list[str]:
        markets = fetch(f"https://{LIVE_HOST}/v4/perpetualMarkets")["markets"]
        return sorted(t for t, m in markets.items() if m.get("status") == "ACTIVE")

    return listed_or_default(NAME, base_url, LIVE_HOST, active, DEFAULT_MARKETS)


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """The markets' ``v4_trades`` (``symbols``, else the listed ones), at most
    ``SUBS_PER_CONNECTION`` per connection."""
    markets = list(symbols) or discover_markets(base_url)
    return symbol_plans(with_default_path(base_url, PATH), f"{NAME}:trades", markets, SUBS_PER_CONNECTION,
                        DydxSession)


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://indexer.dydx.trade" + PATH,
    markets="dYdX v4 perpetuals (every listed market's v4_trades, 32 per connection)",
    semantics="complete",
    semantics_note="every LIQUIDATED trade of the subscribed markets; subscribe snapshot skipped",
    heartbeat_s=30.0,
    usual_gap_s=3600.0,
    plans=_plans,
    new_parser=DydxSession,
    relists=True,
)
