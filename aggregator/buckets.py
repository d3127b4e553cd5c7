"""Pure bucket math: price-level size and key, 1-minute bucket start, and per-batch folding.

Price levels: a fixed size per base asset where users know it (BTC $100 as in the original
system, ETH $10, SOL $1; configurable), otherwise ``10 ** (floor(log10(price)) - 2)``, i.e.
about 1 % of the price rounded down to a power of ten (DOGE at 0.15 → 0.001).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared import keys
from shared.models import Liquidation

DEFAULT_LEVEL_SIZES: dict[str, float] = {"BTC": 100.0, "ETH": 10.0, "SOL": 1.0}


def level_size(base: str, price: float, overrides: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> float:
    if base in overrides:
        return overrides[base]
    if price <= 0:
        return 1.0
    return float(10.0 ** (math.floor(math.log10(price)) - 2))


def price_level(price: float, size: float) -> float:
    """Start of the level containing ``price`` (67234.5 with size 100 → 67200)."""
    level = math.floor(price / size + 1e-9) * size
    return round(level, 10)


def bucket_start(timestamp_ms: int, bucket_ms: int = keys.BUCKET_MS) -> int:
    return timestamp_ms - timestamp_ms % bucket_ms


@dataclass
class HashDelta:
    """Increments for one hash: integer counters and float sums."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, count_fields: Iterable[str], sum_fields: Mapping[str, float]) -> None:
        for name in count_fields:
            self.counts[name] = self.counts.get(name, 0) + 1
        for name, value in sum_fields.items():
            self.sums[name] = self.sums.get(name, 0.0) + value


def fold(liquidations: Iterable[Liquidation],
         sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> dict[str, HashDelta]:
    """All hash increments a batch causes, one entry per Redis key."""
    deltas: dict[str, HashDelta] = {}
    for liq in liquidations:
        value = liq.notional_usd if liq.notional_known else 0.0
        size = level_size(liq.base, liq.price, sizes)
        level_key = keys.price_level(liq.symbol, price_level(liq.price, size), liq.side)
        deltas.setdefault(level_key, HashDelta()).add(
            ("count", f"count:{liq.exchange}"),
            {"value_usd": value, "quantity": liq.quantity, f"value_usd:{liq.exchange}": value},
        )
        bucket_key = keys.time_bucket(liq.symbol, bucket_start(liq.timestamp_ms))
        deltas.setdefault(bucket_key, HashDelta()).add(
            ("count", f"{liq.side}_count", f"count:{liq.exchange}"),
            {"value_usd": value, f"{liq.side}_usd": value, f"value_usd:{liq.exchange}": value},
        )
    return deltas
