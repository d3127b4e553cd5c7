"""Builders of test payloads (one place, so tests don't repeat Liquidation boilerplate)."""

from __future__ import annotations

from typing import Any

from shared.models import Liquidation, Side


def liq(
    *,
    exchange: str = "bybit",
    symbol: str = "BTCUSDT",
    side: Side = "long",
    price: float = 67234.5,
    quantity: float = 1.0,
    timestamp_ms: int = 1_700_000_000_000,
    event_id: str | None = None,
    **extra: Any,
) -> Liquidation:
    base = symbol[:-4] if symbol.endswith(("USDT", "USDC")) else symbol[:-3]
    quote = symbol[len(base):]
    return Liquidation(
        exchange=exchange, symbol=symbol, symbol_native=symbol, base=base, quote=quote,
        market_type="linear_perpetual", side=side, price=price, quantity=quantity,
        notional_usd=round(price * quantity, 8), timestamp_ms=timestamp_ms,
        event_id=event_id or f"{exchange}-{timestamp_ms}-{price}-{quantity}-{side}", **extra,
    )
