"""The names of the venues the system knows: stream values, CLI arguments and health keys.

Names only; each venue's code lives in ``collectors/venues/<name>.py``.
"""

from __future__ import annotations

VENUE_NAMES: tuple[str, ...] = (
    "binance_usdm", "binance_coinm", "bybit", "okx", "bitmex", "deribit", "bitfinex",
    "htx", "gate", "bitget", "kraken_futures", "dydx", "hyperliquid", "lighter",
)
