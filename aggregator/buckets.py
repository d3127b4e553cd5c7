"""Pure bucket math: price-level size and key, 1-minute bucket start, and per-batch folding.

Price levels follow ``shared.levels`` (the same rule the writer stores in the database).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared import keys
from shared.levels import DEFAULT_LEVEL_SIZES, level_of
from shared.models import Liquidation


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
        level_key = keys.price_level(liq.symbol, level_of(liq.base, liq.price, sizes), liq.side)
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
