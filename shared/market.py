"""The simulated market's event: one labelled liquidation, as the model made it, before a venue formats it.

Used by the exchange simulator (``liq simulate``, which renders each event in its venue's wire
format) and by the detector's evaluation (``liq evaluate``), so both see the same market.

The model itself (``MarketModel``) lives in ``shared/market_model.py``; this module holds only
the event type both sides agree on.
"""

from __future__ import annotations

import msgspec

from shared.models import Side


class MarketEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One liquidation as the market model produced it, before any venue formats it.

    ``base`` is the asset (``BTC``); each venue decides which of its contracts carries it.
    ``cascade_id`` is non-empty when the event belongs to a labelled cascade.
    """

    venue: str
    base: str
    side: Side
    price: float
    notional_usd: float
    timestamp_ms: int
    cascade_id: str = ""
    scenario: str = ""
