"""``liq detect --replay``: normalized liquidations (JSON lines) in, one JSON line per cascade out.

Input is what ``liq parse`` prints (``collectors.venues._common.liquidation_to_row``): fields
``exchange, symbol, symbol_native, side, price, quantity, notional_usd, timestamp_ms`` and
possibly others; ``notional_usd`` may be null (unknown notional: counts as an event worth
$0), and when the field is absent altogether it is ``price × quantity`` for a base quantity.
Decoding is lenient: unknown fields are ignored, numbers may be strings, ``side`` is
case-insensitive, ``base``/``quote`` default to the split of ``symbol`` at a USD-like quote
(``BTCUSDT`` → BTC/USDT), ``market_type`` to ``linear_perpetual``, and a missing ``event_id``
is derived from (exchange, symbol, side, price, quantity, time). A line that still does not
decode is counted (with its line number and reason, see :class:`ReplayStats`) and skipped.

Events are fed in file order, any venues mixed, through the same :class:`Engine` as live;
the engine's clock is the newest exchange time seen. Each cascade is written when it ends, or
at end of file while still active (``"ended": "eof"``), with the fields of
:func:`cascade_row`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard, get_args

import msgspec

from detector.config import DetectorSettings
from detector.engine import Engine
from detector.lifecycle import Output, ended_cascades
from shared.models import CascadeEvent, Liquidation, MarketType, Side, plausible_amount, plausible_epoch_ms

MARKET_TYPES: frozenset[str] = frozenset(get_args(MarketType))
SIDES: frozenset[str] = frozenset(get_args(Side))
QUOTES: tuple[str, ...] = ("FDUSD", "USDT", "USDC", "BUSD", "USD")
"""Quote suffixes, longest first, that ``split_symbol`` recognises."""
MAX_BAD_SAMPLES = 5


class ReplayRow(msgspec.Struct, kw_only=True):
    exchange: str
    symbol: str
    side: str
    price: float
    timestamp_ms: int
    quantity: float = 0.0
    notional_usd: float | None | msgspec.UnsetType = msgspec.UNSET
    quantity_unit: str = "base"
    symbol_native: str = ""
    base: str = ""
    quote: str = ""
    market_type: str = "linear_perpetual"
    event_id: str | None = None
    sampled: bool = False
    notional_known: bool = True


_decoder = msgspec.json.Decoder(ReplayRow, strict=False)


def derive_event_id(row: ReplayRow) -> str:
    text = "|".join((row.exchange, row.symbol, row.side, repr(row.price), repr(row.quantity),
                     str(row.timestamp_ms)))
    return "replay-" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` → (``BTC``, ``USDT``); a symbol without a known quote → (symbol, "")."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, ""


def _notional(row: ReplayRow) -> float | None:
    """The row's notional, None when unknown (null, or absent without a base quantity)."""
    if isinstance(row.notional_usd, msgspec.UnsetType):
        if row.quantity_unit == "base" and row.quantity > 0 and row.price > 0:
            return row.price * row.quantity
        return None
    return row.notional_usd


def _is_side(text: str) -> TypeGuard[Side]:
    return text in SIDES


def _is_market_type(text: str) -> TypeGuard[MarketType]:
    return text in MARKET_TYPES


def to_liquidation(row: ReplayRow) -> Liquidation:
    """A decoded row as a Liquidation; ValueError for a side that is neither long nor short."""
    side = row.side.strip().lower()
    if not _is_side(side):
        raise ValueError(f"side must be long or short, got {row.side!r}")
    notional = _notional(row)
    for name, value in (("price", row.price), ("quantity", row.quantity), ("notional_usd", notional or 0.0)):
        if not plausible_amount(value):  # NaN too: the live decoder refuses what this refuses
            raise ValueError(f"{name} must be a number in [0, 1e15), got {value!r}")
    if not plausible_epoch_ms(row.timestamp_ms):
        raise ValueError(f"timestamp_ms must be epoch milliseconds, got {row.timestamp_ms!r}")
    known = row.notional_known and notional is not None
    market_type: MarketType = row.market_type if _is_market_type(row.market_type) else "linear_perpetual"
    base, quote = split_symbol(row.symbol)
    return Liquidation(
        exchange=row.exchange, symbol=row.symbol, symbol_native=row.symbol_native or row.symbol,
        base=row.base or base, quote=row.quote or quote, market_type=market_type,
        side=side,
        price=row.price, quantity=row.quantity, notional_usd=float(notional or 0.0) if known else 0.0,
        notional_known=known, timestamp_ms=row.timestamp_ms,
        event_id=row.event_id or derive_event_id(row), sampled=row.sampled,
    )


def decode_line(line: str | bytes) -> Liquidation:
    """One JSON line → Liquidation; raises msgspec errors for a line that is not one."""
    return to_liquidation(_decoder.decode(line))


def cascade_row(end: CascadeEvent, start: CascadeEvent | None, ended: str) -> dict[str, Any]:
    """What a replay prints for one cascade (``band`` is the band of the peak score)."""
    return {
        "cascade_id": end.cascade_id, "symbol": end.symbol, "start_ms": end.start_ms,
        "end_ms": end.end_ms, "detected_ms": start.published_ms if start else end.start_ms,
        "venues": end.venues, "count": end.count, "total_notional_usd": end.total_notional_usd,
        "long_notional_usd": end.long_notional_usd, "short_notional_usd": end.short_notional_usd,
        "peak_risk_score": end.peak_risk_score, "risk_score": end.risk_score, "band": end.band,
        "cross_exchange": end.cross_exchange, "factors": msgspec.to_builtins(end.factors), "ended": ended,
    }


@dataclass
class ReplayStats:
    """What a replay read: non-blank lines, events fed, bad lines (the first few with reasons)."""

    lines: int = 0
    events: int = 0
    bad_lines: int = 0
    cascades: int = 0
    bad_samples: list[tuple[int, str]] = field(default_factory=list)

    def bad(self, line_no: int, reason: str) -> None:
        self.bad_lines += 1
        if len(self.bad_samples) < MAX_BAD_SAMPLES:
            self.bad_samples.append((line_no, reason[:200]))


def replay(lines: Iterable[str | bytes], settings: DetectorSettings | None = None,
           stats: ReplayStats | None = None) -> Iterator[dict[str, Any]]:
    """Yield one cascade row per cascade found in ``lines``, in the order the cascades end."""
    engine = Engine(settings or DetectorSettings())
    stats = stats if stats is not None else ReplayStats()
    starts: dict[str, CascadeEvent] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        stats.lines += 1
        try:
            liq = decode_line(line)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            stats.bad(line_no, str(exc))
            continue
        stats.events += 1
        yield from _rows(engine.feed(liq), starts, "quiet", stats)
    yield from _rows(engine.flush(), starts, "eof", stats)


def _rows(outputs: Iterable[Output], starts: dict[str, CascadeEvent], ended: str,
          stats: ReplayStats) -> Iterator[dict[str, Any]]:
    for end, start in ended_cascades(outputs, starts):
        stats.cascades += 1
        yield cascade_row(end, start, ended)
