"""Builders shared by the detector tests: liquidations of a given USD size at a given second."""

from __future__ import annotations

from typing import Any

from shared.models import Liquidation, Side
from tests.factories import liq

T0 = 1_700_000_000_000
PRICE = 50_000.0


def ev(second: float, usd: float = 25_000.0, *, venue: str = "bybit", side: Side = "long",
       symbol: str = "BTCUSDT", price: float = PRICE, event_id: str | None = None,
       **extra: Any) -> Liquidation:
    """A liquidation worth ``usd`` at ``T0 + second`` (the id is unique per venue, time, size)."""
    ts = T0 + int(second * 1000)
    return liq(exchange=venue, symbol=symbol, side=side, price=price, quantity=usd / price,
               timestamp_ms=ts, event_id=event_id or f"{venue}-{symbol}-{ts}-{usd}-{side}", **extra)
