"""Bybit v5 derivatives: ``allLiquidation.{symbol}`` topics, sharded over linear and inverse connections.

Docs: bybit-exchange/docs ``docs/v5/websocket/public/all-liquidation.mdx``. No wildcard topic
exists, so every symbol is its own topic: with no ``--symbols`` a live collector lists every
trading linear and inverse symbol from ``/v5/market/instruments-info`` (paginated), and the
topics are sharded so that one connection's ``args`` stay within 21,000 characters, on the
``/v5/public/linear`` and ``/v5/public/inverse`` endpoints. Frames batch several liquidations::

    {"topic":"allLiquidation.ROSEUSDT","type":"snapshot","ts":1739502303204,
     "data":[{"T":1739502302929,"s":"ROSEUSDT","S":"Sell","v":"20000","p":"0.04499"}]}

A subscribe refused for topics Bybit's ``ret_msg`` names (a symbol delisted between the listing
and the subscribe) drops those topics (``SessionOutput.refused``, one warning); a refusal naming
none of the session's topics (the args limit, a stray request) degrades the connection.

Side rule: Bybit ``S`` (and the old ``side``) is the POSITION side: Buy means a long was liquidated.

Quantity: linear ``v`` is base coin; inverse ``v`` is USD contracts (1 USD each), base = v / p.
Price is ``p``, the bankruptcy price. Timestamp: ``data[].T`` (allLiquidation); the deprecated
``liquidation.{symbol}`` topic uses the top-level ``ts`` (its ``updatedTime`` / pre-v5 ``time``
when ``ts`` is absent). That old topic (data object ``{symbol, side, price, qty, time}`` pre-v5,
``{updatedTime, symbol, side, size, price}`` in v5) and tardis' ``"generated": true`` REST
envelopes (data array with an ``id``) are still parsed because recorded data contains them.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import CONFIRMED, EMPTY, ConnectionPlan, Outgoing, SessionOutput, VenueSpec
from collectors.venues._common import (
    ddmmmyy_expiry,
    decode,
    decode_row,
    each_row,
    get_json,
    make_liquidation,
    month_code_expiry,
    num,
    position_side,
    server_error,
)
from shared.errors import ParseError
from shared.models import Liquidation

logger = logging.getLogger(__name__)

NAME = "bybit"
TOPIC = "allLiquidation."
ARGS_LIMIT = 21_000
TOPICS_PER_REQUEST = 100
REST_URL = "https://api.bybit.com"
CATEGORY_PATH = "/v5/public/"
CATEGORIES = ("linear", "inverse")
DEFAULT_SYMBOLS = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "BNBUSDT", "ADAUSDT", "LINKUSDT",
    "AVAXUSDT", "SUIUSDT", "LTCUSDT", "BCHUSDT", "DOTUSDT", "TRXUSDT", "TONUSDT", "NEARUSDT",
    "APTUSDT", "ARBUSDT", "OPUSDT", "WIFUSDT", "ENAUSDT", "1000PEPEUSDT", "HYPEUSDT", "BTCPERP",
    "ETHPERP", "BTCUSD", "ETHUSD", "XRPUSD", "SOLUSD", "ADAUSD", "DOTUSD", "LTCUSD", "EOSUSD",
)  # fmt: skip
_TOPIC_WORDS = re.compile(r"[\w.\-]+")
"""The words of a ``ret_msg`` that may be topics (``error:handler not found,topic:a.B,a.C``)."""
_INVERSE_FUTURE = re.compile(r"^([A-Z0-9]+)USD([FGHJKMNQUVXZ])(\d\d)$")


class Row(msgspec.Struct):
    """One liquidation in any of the three shapes (allLiquidation, v5 and pre-v5 liquidation)."""

    T: int | None = None
    s: str | None = None
    S: str | None = None
    v: str | float | None = None
    p: str | float | None = None
    symbol: str | None = None
    side: str | None = None
    size: str | float | None = None
    qty: str | float | None = None
    price: str | float | None = None
    updatedTime: int | None = None
    time: int | None = None
    id: int | str | None = None


class Frame(msgspec.Struct):
    topic: str | None = None
    op: str | None = None
    req_id: str | None = None
    success: bool | None = None
    ret_msg: Any = None
    ts: int | None = None
    data: list[msgspec.Raw] | Row | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""


_frame = msgspec.json.Decoder(Frame)
_row = msgspec.json.Decoder(Row)


def parse_symbol(symbol: str) -> Instrument:
    """Instrument from a Bybit symbol when instruments-info is not at hand."""
    if "-" in symbol:  # BTCUSDT-26DEC25 (USDT futures), BTC-26DEC25 (USDC futures)
        head, _, date = symbol.partition("-")
        base, quote_ = (head[:-4], "USDT") if head.endswith("USDT") else (head, "USDC")
        return Instrument(symbol, base, quote_, "linear_future", expiry=ddmmmyy_expiry(date))
    if symbol.endswith("PERP"):
        return Instrument(symbol, symbol[:-4], "USDC", "linear_perpetual")
    for quote_ in ("USDT", "USDC"):
        if symbol.endswith(quote_) and len(symbol) > 4:
            return Instrument(symbol, symbol[:-4], quote_, "linear_perpetual")
    match = _INVERSE_FUTURE.match(symbol)
    if match:
        expiry = month_code_expiry(match[2], match[3])
        return Instrument(symbol, match[1], "USD", "inverse_future", 1.0, "USD", expiry)
    if symbol.endswith("USD") and len(symbol) > 3:
        return Instrument(symbol, symbol[:-3], "USD", "inverse_perpetual", 1.0, "USD")
    raise ParseError(NAME, f"unknown symbol {symbol!r}")


def is_inverse(inst: Instrument) -> bool:
    return inst.market_type.startswith("inverse")


class BybitSession:
    """One Bybit connection: subscribes its topics, pings with ``{"op":"ping"}``."""

    def __init__(self, topics: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.topics = list(topics) or [f"allLiquidation.{s}" for s in DEFAULT_SYMBOLS]
        self.table = TABLE if table is None else table

    def on_open(self) -> list[Outgoing]:
        step = TOPICS_PER_REQUEST
        return [
            json.dumps({"req_id": f"liq{i // step}", "op": "subscribe", "args": self.topics[i : i + step]})
            for i in range(0, len(self.topics), step)
        ]

    def confirmations(self) -> int:
        """One ack per request (``{"success":true,"op":"subscribe",…}``); a refusal naming only
        this connection's topics answers its request too."""
        return len(self.on_open())

    def heartbeat(self) -> Outgoing | None:
        return '{"op":"ping"}'

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.topic is None:
            if frame.success is False:
                return self._refusal(frame)
            if frame.op is not None or frame.success is not None:
                return CONFIRMED if frame.op == "subscribe" and frame.success else EMPTY
            raise ParseError(NAME, "neither a topic frame nor an op reply", raw)
        if not frame.topic.startswith(("allLiquidation.", "liquidation.")) or frame.data is None:
            return EMPTY
        rows: Sequence[msgspec.Raw | Row] = frame.data if isinstance(frame.data, list) else [frame.data]
        ts = frame.ts if frame.topic.startswith("liquidation.") else None
        return each_row(NAME, raw, rows, lambda row: self._liquidation(
            row if isinstance(row, Row) else decode_row(_row, row, NAME), ts, received_ms))

    def _refusal(self, frame: Frame) -> SessionOutput:
        """A refused request: the session's topics its message names are refused alone (logged
        once, here); a refusal naming none of them is an error of the connection."""
        named = set(_TOPIC_WORDS.findall(str(frame.ret_msg))) if frame.op == "subscribe" else set()
        refused = [topic for topic in self.topics if topic in named]
        if not refused:
            return server_error(NAME, f"{frame.op}: {frame.ret_msg}")
        logger.warning("%s: Bybit refused topic(s) %s (%s); dropped from the subscriptions until a "
                       "listing names them again", NAME, ", ".join(refused), str(frame.ret_msg)[:200])
        self.topics = [topic for topic in self.topics if topic not in refused]
        return SessionOutput(refused=tuple(topic.removeprefix(TOPIC) for topic in refused), confirmed=1)

    def _liquidation(self, row: Row, frame_ts: int | None, received_ms: int) -> Liquidation:
        symbol, side = row.s or row.symbol, row.S or row.side
        ts = row.T or frame_ts or row.updatedTime or row.time
        if symbol is None or side is None or ts is None:
            raise ParseError(NAME, f"liquidation row lacks symbol/side/time: {row!r}")
        inst = self.table.get(symbol) or parse_symbol(symbol)
        extra: dict[str, str | float | int | None] = {}
        if row.updatedTime is not None:
            extra["updated_time_ms"] = row.updatedTime
        if row.id is not None:
            extra["exchange_id"] = str(row.id)
        return make_liquidation(
            NAME,
            inst,
            side=position_side(side, long_if="Buy", short_if="Sell", venue=NAME),
            side_raw=side,
            price=num(_first(row.p, row.price), NAME, "price"),
            quantity_native=num(_first(row.v, row.size, row.qty), NAME, "size"),
            native_unit="contracts" if is_inverse(inst) else "base",
            timestamp_ms=ts,
            event_id=str(row.id) if row.id is not None else "",
            received_ms=received_ms,
            extra=extra,
        )


def _first(*values: str | float | None) -> str | float | None:
    return next((v for v in values if v is not None), None)


def shard_topics(topics: Sequence[str], limit: int = ARGS_LIMIT) -> list[list[str]]:
    """Greedy shards whose JSON ``args`` array (quotes, ``", "`` separators) is ≤ ``limit`` chars."""
    shards: list[list[str]] = []
    size = limit + 1
    for topic in topics:
        cost = len(topic) + 4  # two quotes, a comma and a space
        if size + cost > limit:
            shards.append([])
            size = 1  # the brackets
        shards[-1].append(topic)
        size += cost
    return shards


def category_url(base_url: str, category: str) -> str:
    """``.../v5/public/{category}`` on ``base_url``'s host, keeping any prefix path."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    for suffix in ("linear", "inverse"):
        path = path.removesuffix(CATEGORY_PATH + suffix)
    return f"{parts.scheme}://{parts.netloc}{path}{CATEGORY_PATH}{category}"


def fetch_symbols(
    category: str = "linear", get_json: Callable[[str], Any] = get_json, rest: str = REST_URL
) -> list[str]:
    """Every trading symbol of a category from ``/v5/market/instruments-info`` (paginated)."""
    symbols: list[str] = []
    cursor = ""
    while True:
        url = f"{rest}/v5/market/instruments-info?category={category}&limit=1000"
        page = get_json(url + (f"&cursor={quote(cursor)}" if cursor else ""))
        result = page.get("result") or {}
        symbols += [i["symbol"] for i in result.get("list", []) if i.get("status") == "Trading"]
        cursor = result.get("nextPageCursor") or ""
        if not cursor:
            return symbols


def rest_url(base_url: str) -> str | None:
    """The REST host of a live stream host (``stream.bybit.com`` → ``https://api.bybit.com``)."""
    host = urlsplit(base_url).hostname or ""
    return f"https://{host.replace('stream', 'api', 1)}" if host.startswith("stream") else None


def discover_symbols(base_url: str, get_json: Callable[[str], Any] = get_json) -> dict[str, list[str]]:
    """Every trading symbol per category (linear, inverse) from instruments-info, live hosts only.

    There is no wildcard topic, so full coverage needs the venue's own list (~800 symbols).
    Simulators and other hosts, or a failed listing, get :data:`DEFAULT_SYMBOLS`.
    """
    rest = rest_url(base_url)
    if rest is not None:
        try:
            return {category: fetch_symbols(category, get_json, rest) for category in CATEGORIES}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("bybit: instruments-info failed (%s); subscribing the default symbols", exc)
    return by_category(DEFAULT_SYMBOLS)


def by_category(symbols: Sequence[str]) -> dict[str, list[str]]:
    """Native symbols split into the ``linear`` and ``inverse`` endpoints' lists."""
    out: dict[str, list[str]] = {category: [] for category in CATEGORIES}
    for symbol in symbols:
        inst = TABLE.get(symbol) or _parse_or_none(symbol)
        out["inverse" if inst is not None and is_inverse(inst) else "linear"].append(symbol)
    return out


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """Topics per endpoint (``symbols``, else the discovered list), sharded under the args limit."""
    symbols_by_category = by_category(symbols) if symbols else discover_symbols(base_url)
    plans = []
    for category, names in symbols_by_category.items():
        topics = [f"{TOPIC}{s}" for s in names]
        for n, shard in enumerate(shard_topics(topics)):
            symbols_ = tuple(t.removeprefix(TOPIC) for t in shard)
            plans.append(ConnectionPlan(category_url(base_url, category), f"{NAME}:{category}:{n}",
                                        functools.partial(session_for, symbols_), symbols_, session_for))
    return plans


def _parse_or_none(symbol: str) -> Instrument | None:
    try:
        return parse_symbol(symbol)
    except ParseError:
        return None


def session_for(symbols: Sequence[str]) -> BybitSession:
    """A session subscribing ``symbols``' topics (a plan's, or what is left of them)."""
    return BybitSession([f"{TOPIC}{s}" for s in symbols])


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://stream.bybit.com/v5/public/linear",
    markets="USDT/USDC linear and inverse perpetuals and futures (one topic per symbol)",
    semantics="complete",
    semantics_note="every liquidation, pushed every 500 ms; needs one topic per symbol",
    heartbeat_s=20.0,
    answers_pings=True,
    relists=True,
    usual_gap_s=60.0,
    plans=_plans,
    new_parser=BybitSession,
)
