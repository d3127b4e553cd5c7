"""Collectors: one per venue, public WebSockets → normalized Liquidation → Redis streams.

``VENUES`` maps each venue name (as used by ``liq collect``/``liq parse`` and stored in
``Liquidation.exchange``) to the module that defines its ``VENUE`` spec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collectors.venue import VenueSpec

VENUES: dict[str, str] = {
    "binance_usdm": "collectors.venues.binance_usdm",
    "binance_coinm": "collectors.venues.binance_coinm",
    "bybit": "collectors.venues.bybit",
    "okx": "collectors.venues.okx",
    "bitmex": "collectors.venues.bitmex",
    "deribit": "collectors.venues.deribit",
    "bitfinex": "collectors.venues.bitfinex",
    "htx": "collectors.venues.htx",
    "gate": "collectors.venues.gate",
    "bitget": "collectors.venues.bitget",
    "kraken_futures": "collectors.venues.kraken_futures",
    "dydx": "collectors.venues.dydx",
    "hyperliquid": "collectors.venues.hyperliquid",
    "lighter": "collectors.venues.lighter",
}


def load_venue(name: str) -> VenueSpec:
    """The ``VENUE`` spec of a venue module; KeyError names the unknown venue."""
    if name not in VENUES:
        raise KeyError(f"unknown venue {name!r}; choose one of: {', '.join(VENUES)}")
    spec: VenueSpec = importlib.import_module(VENUES[name]).VENUE
    return spec
