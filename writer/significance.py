"""What the writer stores: the one place the "significant liquidation" rules live.

- A liquidation from an event stream is significant when its USD notional is known and at least
  the threshold of its symbol: ``LIQ_SIGNIFICANT_USD`` (default 100 000) unless
  ``LIQ_SIGNIFICANT_USD_BY_SYMBOL`` (``BTCUSDT=250000,...``) names the symbol.
- A cascade member (``liq:cascade:members``) is always stored, whatever its size, with
  ``is_cascade = true``, its cascade id and risk score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.models import Liquidation
from writer.config import WriterSettings

DEFAULT_SIGNIFICANT_USD = 100_000.0


@dataclass(frozen=True)
class SignificanceRules:
    default_usd: float = DEFAULT_SIGNIFICANT_USD
    by_symbol: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: WriterSettings) -> SignificanceRules:
        return cls(
            default_usd=settings.significant_usd,
            by_symbol={k.upper(): v for k, v in settings.significant_usd_by_symbol.items()},
        )

    def threshold(self, symbol: str) -> float:
        return self.by_symbol.get(symbol.upper(), self.default_usd)

    def is_significant(self, liq: Liquidation) -> bool:
        """True when an event-stream liquidation must be stored (members always are)."""
        return liq.notional_known and liq.notional_usd >= self.threshold(liq.symbol)
