"""Pure bucket math: price-level size and key, 1-minute bucket start, and per-batch folding.

Price levels follow ``shared.levels`` (the same rule the writer stores in the database).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared import keys
from shared.levels import DEFAULT_LEVEL_SIZES, level_index, level_size, price_level
from shared.models import Liquidation, Side

LEVEL_KEYS_KEPT = 100_000
"""Level keys :class:`LevelKeys` remembers at most (then it starts again): about 20 MB."""


def bucket_start(timestamp_ms: int, bucket_ms: int = keys.BUCKET_MS) -> int:
    return timestamp_ms - timestamp_ms % bucket_ms


@dataclass
class HashDelta:
    """Increments for one hash: integer counters and float sums."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)


SIDE_FIELDS: dict[str, tuple[str, str]] = {
    side: (f"{side}_count", f"{side}_usd") for side in ("long", "short")}
"""A bucket's per-side field names."""


class LevelKeys:
    """The ``liq:levels:*`` key of a liquidation, remembered by symbol, side and level: building
    it (the level to 12 significant digits, then the key) was the larger part of folding, and
    prices keep landing on the same levels."""

    def __init__(self, sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> None:
        self.sizes = sizes
        self._known: dict[tuple[str, Side, float, int], str] = {}

    def of(self, liq: Liquidation) -> str:
        size = level_size(liq.base, liq.price, self.sizes)
        level = (liq.symbol, liq.side, size, level_index(liq.price, size))
        key = self._known.get(level)
        if key is None:
            if len(self._known) >= LEVEL_KEYS_KEPT:
                self._known.clear()
            key = self._known[level] = keys.price_level(liq.symbol, price_level(liq.price, size), liq.side)
        return key


def fold(liquidations: Iterable[Liquidation], level_keys: LevelKeys | None = None) -> dict[str, HashDelta]:
    """All hash increments a batch causes, one entry per Redis key.

    Per liquidation, its price-level hash gets ``count``, ``count:{exchange}``, ``value_usd``,
    ``quantity`` (in base units: not for a quantity in contracts of unknown size) and
    ``value_usd:{exchange}``; its 1-minute bucket gets ``count``,
    ``{side}_count``, ``count:{exchange}``, ``value_usd``, ``{side}_usd`` and
    ``value_usd:{exchange}``. (The hot loop of the aggregator: plain dict updates.)
    """
    deltas: dict[str, HashDelta] = {}
    per_exchange: dict[str, tuple[str, str]] = {}
    buckets: dict[tuple[str, int], HashDelta] = {}  # by symbol and minute: the key built once
    level_key_of = (level_keys or LevelKeys()).of
    for liq in liquidations:
        value = liq.notional_usd if liq.notional_known else 0.0
        names = per_exchange.get(liq.exchange)
        if names is None:
            names = per_exchange[liq.exchange] = (f"count:{liq.exchange}", f"value_usd:{liq.exchange}")
        exchange_count, exchange_value = names
        level_key = level_key_of(liq)
        level = deltas.get(level_key) or deltas.setdefault(level_key, HashDelta())
        counts, sums = level.counts, level.sums
        counts["count"] = counts.get("count", 0) + 1
        counts[exchange_count] = counts.get(exchange_count, 0) + 1
        sums["value_usd"] = sums.get("value_usd", 0.0) + value
        if liq.quantity_unit == "base":  # contracts of unknown size are no quantity of the asset
            sums["quantity"] = sums.get("quantity", 0.0) + liq.quantity
        sums[exchange_value] = sums.get(exchange_value, 0.0) + value
        minute = (liq.symbol, liq.timestamp_ms // keys.BUCKET_MS)
        bucket = buckets.get(minute)
        if bucket is None:
            bucket_key = keys.time_bucket(liq.symbol, bucket_start(liq.timestamp_ms))
            bucket = buckets[minute] = deltas.get(bucket_key) or deltas.setdefault(bucket_key, HashDelta())
        side_count, side_usd = SIDE_FIELDS[liq.side]
        counts, sums = bucket.counts, bucket.sums
        counts["count"] = counts.get("count", 0) + 1
        counts[exchange_count] = counts.get(exchange_count, 0) + 1
        counts[side_count] = counts.get(side_count, 0) + 1
        sums["value_usd"] = sums.get("value_usd", 0.0) + value
        sums[side_usd] = sums.get(side_usd, 0.0) + value
        sums[exchange_value] = sums.get(exchange_value, 0.0) + value
    return deltas
