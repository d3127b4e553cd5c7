"""Price levels: the one rule that puts a liquidation's price on a level (Redis and SQL alike).

A fixed size per base asset where users know it (BTC $100 as in the original system, ETH $10,
SOL $1; ``LIQ_LEVEL_SIZES`` overrides or adds), otherwise ``10 ** (floor(log10(price)) - 2)``:
about 1 % of the price rounded down to a power of ten (DOGE at 0.15 → 0.001, XRP at 2.3 →
0.01). The aggregator keys ``liq:levels:*`` by it and the writer stores it in ``price_level``,
so the Redis clusters and the database heatmap always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from shared.errors import ConfigError

DEFAULT_LEVEL_SIZES: dict[str, float] = {"BTC": 100.0, "ETH": 10.0, "SOL": 1.0}


def level_size(base: str, price: float, overrides: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> float:
    if base in overrides:
        return overrides[base]
    if price <= 0:
        return 1.0
    return float(10.0 ** (math.floor(math.log10(price)) - 2))


def level_index(price: float, size: float) -> int:
    """Which level of ``size`` holds ``price``, counted from 0 (67234.5 with size 100 → 672)."""
    return math.floor(price / size + 1e-9)


def price_level(price: float, size: float) -> float:
    """Start of the level containing ``price`` (67234.5 with size 100 → 67200). Rounded to 12
    significant digits (not decimal places: a level of 4e-11 must not become 0)."""
    return float(f"{level_index(price, size) * size:.12g}")


def check_level_sizes(sizes: Mapping[str, float], variable: str = "LIQ_LEVEL_SIZES") -> None:
    """Every size a finite number above 0 (0 would divide by zero, a negative one put prices on
    levels above them); raises :class:`ConfigError` naming ``variable``."""
    for base, size in sizes.items():
        if not (math.isfinite(size) and size > 0):
            raise ConfigError(variable, "sizes above 0, e.g. BTC=100,ETH=10", f"{base}={size}")


def level_sizes(overrides: Mapping[str, float]) -> dict[str, float]:
    """The sizes in use: the defaults with ``LIQ_LEVEL_SIZES`` over them. Base assets are upper
    case (``btc=50`` sets BTC), as in every ``Liquidation``."""
    return {**DEFAULT_LEVEL_SIZES, **{base.upper(): size for base, size in overrides.items()}}


def level_of(base: str, price: float, sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> float:
    """The level of ``price`` for ``base``."""
    return price_level(price, level_size(base, price, sizes))
