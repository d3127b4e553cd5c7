"""Hyperliquid: liquidation fills of configured accounts (there is NO public market-wide feed).

Docs: hyperliquid.gitbook.io (WebSocket subscriptions, ``WsFill``). The public ``trades``
channel carries no liquidation marker; a fill carries a ``liquidation`` object only on the
per-account channels of the accounts involved. So this venue watches a few addresses given as
``symbols`` (by default the HLP liquidator vault, which sees backstop liquidations only), one
connection per address subscribed to ``userEvents`` (channel ``user``, whose frames do not name
the account); ``userFills`` frames, which do, are parsed too::

    {"channel":"user","data":{"fills":[{"coin":"BTC","px":"66653.0","sz":"0.001","side":"A",
     "time":1781528065899,"dir":"Open Short","tid":745210434703679,"liquidation":{
     "liquidatedUser":"0x3608…04fb","markPx":"66607.0","method":"market"}}]}}

Side rule: ``side`` is the subscribed account's fill side (``A`` sell, ``B`` buy). When that
account is ``liquidatedUser``, ``A`` means a long was liquidated; otherwise the account is the
counterparty and the rule inverts (``A`` → a short was liquidated). A fill whose ``dir`` is
``Liquidated Cross|Isolated Long|Short`` is the liquidated account's own, whoever watches; any
other fill of an unknown account (``liq parse``) counts as the counterparty's, as in the peer
corpus.

Limits (semantics "partial"): only liquidations that touch a subscribed account are seen
(market-method liquidations against other makers are invisible), and one liquidation spanning
several fills yields one record per fill (quantity = that fill's ``sz``). Per IP Hyperliquid
allows 10 connections, 10 distinct users in user subscriptions (extra addresses are dropped
with a warning), 1000 subscriptions and 2000 messages a minute. Units: ``sz`` base, ``px``
USDC; canonical ``BTCUSDC``; a ``k`` coin is a thousand of the coin (``kPEPE`` → ``1000PEPEUSDC``,
as other venues name it). ``event_id`` = ``tid``. A ``userFills`` snapshot
(``isSnapshot: true``, the account's past fills replayed on subscribe) is skipped as history.
Heartbeat: ``{"method":"ping"}`` → ``{"channel":"pong"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

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
from shared.models import Liquidation, Side

logger = logging.getLogger(__name__)

NAME = "hyperliquid"
PATH = "/ws"
QUOTE = "USDC"
HLP_LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"
"""Watched by default: the HLP liquidator vault as a third-party project names it. UNCONFIRMED
(not in Hyperliquid's docs); check it against a ``method: "backstop"`` fill, override with symbols."""
FILL_CHANNELS = ("user", "userFills")
MAX_USERS = 10
"""Distinct users across user-specific subscriptions per IP (also 10 connections per IP)."""
PING = json.dumps({"method": "ping"})
LIQUIDATED_DIR = "Liquidated"
"""How the ``dir`` of the liquidated account's own fill starts (``Liquidated Cross Long``)."""


class FillLiquidation(msgspec.Struct):
    liquidatedUser: str | None = None
    markPx: str | float | None = None
    method: str | None = None


class Fill(msgspec.Struct, kw_only=True):
    coin: str
    px: str | float
    sz: str | float
    side: str
    time: int
    tid: int
    dir: str = ""
    liquidation: FillLiquidation | None = None


class FillData(msgspec.Struct):
    fills: list[msgspec.Raw] = []
    """Fills kept raw: each is typed on its own (a wrong-typed fill costs only itself)."""
    user: str = ""
    isSnapshot: bool = False


class Frame(msgspec.Struct):
    channel: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


_frame = msgspec.json.Decoder(Frame)
_fill_data = msgspec.json.Decoder(FillData)
_fill = msgspec.json.Decoder(Fill)


def coin_instrument(coin: str) -> Instrument:
    """``BTC`` → BTC/USDC linear perpetual, ``kPEPE`` → 1000PEPE/USDC; spot pairs (``@107``) are
    never liquidated."""
    if not coin or coin.startswith("@"):
        raise ParseError(NAME, f"not a perpetual: {coin!r}")
    base = "1000" + coin[1:] if len(coin) > 1 and coin[0] == "k" and coin[1].isupper() else coin
    return Instrument(coin, base, QUOTE, "linear_perpetual")


def fill_position(fill_side: str, account_is_liquidated: bool) -> Side:
    """The liquidated position from the account's fill side (``A`` sell / ``B`` buy).

    The liquidated account's own sell closes a long; the counterparty's side is the opposite.
    """
    sell, buy = ("A", "B") if account_is_liquidated else ("B", "A")
    return position_side(fill_side, long_if=sell, short_if=buy, venue=NAME)


class HyperliquidSession:
    """One connection watching one account's ``userEvents`` (or none, for ``liq parse``)."""

    def __init__(self, address: str = "", table: InstrumentTable | None = None) -> None:
        self.address = address.lower()
        self.table = TABLE if table is None else table

    def on_open(self) -> list[Outgoing]:
        if not self.address:
            return []
        sub = {"type": "userEvents", "user": self.address}
        return [json.dumps({"method": "subscribe", "subscription": sub})]

    def confirmations(self) -> int:
        """The ``subscriptionResponse`` to the one subscribe (none without an address)."""
        return 1 if self.address else 0

    def heartbeat(self) -> Outgoing | None:
        return PING

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.channel == "error":
            return server_error(NAME, bytes(frame.data).decode(errors="replace"))
        if frame.channel == "subscriptionResponse":
            return CONFIRMED
        if frame.channel not in FILL_CHANNELS:
            return EMPTY
        data = decode(_fill_data, bytes(frame.data), NAME)
        if data.isSnapshot:  # userFills replays the account's past fills on subscribe: history only
            return EMPTY
        account = (data.user or self.address).lower()
        return each_row(NAME, raw, data.fills, lambda fill: self._liquidation(fill, account, received_ms))

    def _liquidation(self, raw_fill: msgspec.Raw, account: str, received_ms: int) -> Liquidation | None:
        """The liquidation of one fill; None for a fill that is no liquidation."""
        fill = decode_row(_fill, raw_fill, NAME)
        liq = fill.liquidation
        if liq is None:
            return None
        liquidated = (liq.liquidatedUser or "").lower()
        extra: dict[str, str | float | int | None] = {
            "exchange_id": str(fill.tid),
            "liquidated_user": liq.liquidatedUser,
            "liquidation_method": liq.method,
            "mark_price": num(liq.markPx, NAME, "markPx") if liq.markPx is not None else None,
        }
        return make_liquidation(
            NAME,
            self.table.get(fill.coin) or coin_instrument(fill.coin),
            side=fill_position(fill.side, fill.dir.startswith(LIQUIDATED_DIR) or (
                bool(account) and account == liquidated)),
            side_raw=fill.side,
            price=num(fill.px, NAME, "px"),
            quantity_native=num(fill.sz, NAME, "sz"),
            native_unit="base",
            timestamp_ms=fill.time,
            event_id=str(fill.tid),
            received_ms=received_ms,
            extra=extra,
        )


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection per watched address (the HLP liquidator vault when none is given).

    Hyperliquid allows at most ``MAX_USERS`` distinct users in user subscriptions per IP; the
    addresses beyond that are dropped with a warning rather than refused by the server.
    """
    url = with_default_path(base_url, PATH)
    addresses = list(dict.fromkeys(a.lower() for a in symbols)) or [HLP_LIQUIDATOR]
    if len(addresses) > MAX_USERS:
        logger.warning("%s: %d addresses given, watching the first %d (per-IP user limit)",
                       NAME, len(addresses), MAX_USERS)
        addresses = addresses[:MAX_USERS]
    return [ConnectionPlan(url, f"{NAME}:{a[:10]}", _factory(a)) for a in addresses]


def _factory(address: str) -> Callable[[], HyperliquidSession]:
    return lambda: HyperliquidSession(address)


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://api.hyperliquid.xyz" + PATH,
    markets="Hyperliquid perpetuals, as seen from the fills of configured accounts",
    semantics="partial",
    semantics_note="partial: only liquidations touching subscribed accounts; no public feed",
    heartbeat_s=30.0,
    answers_pings=True,
    usual_gap_s=86400.0,
    plans=_plans,
    new_parser=HyperliquidSession,
    default_symbols=(HLP_LIQUIDATOR,),
)
