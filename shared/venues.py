"""The names of the venues the system knows: stream values, CLI arguments and health keys.

Names only; each venue's code lives in ``collectors/venues/<name>.py``.
"""

from __future__ import annotations

VENUE_NAMES: tuple[str, ...] = (
    "binance_usdm", "binance_coinm", "bybit", "okx", "bitmex", "deribit", "bitfinex",
    "htx", "gate", "bitget", "kraken_futures", "dydx", "hyperliquid", "lighter",
)


def chosen_venues(requested: str) -> list[str]:
    """The venues a ``--venues a,b`` option names (spaces allowed), or all of them when empty;
    raises ValueError naming the unknown ones."""
    names = [v.strip() for v in requested.split(",") if v.strip()] or list(VENUE_NAMES)
    unknown = sorted(set(names) - set(VENUE_NAMES))
    if unknown:
        raise ValueError(f"unknown venue(s) {', '.join(unknown)}; known: {', '.join(VENUE_NAMES)}")
    return names

