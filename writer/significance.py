"""What the writer stores: the one place the "significant liquidation" rules live.

- A liquidation from an event stream is significant when its USD notional is known and at least
  the threshold of its symbol: ``LIQ_SIGNIFICANT_USD`` (default 100 000) unless
  ``LIQ_SIGNIFICANT_USD_BY_SYMBOL`` (``BTCUSDT=250000,...``) names the symbol.
- A cascade member (``liq:cascade:members``) is always stored, whatever its size, with
  ``is_cascade = true``, its cascade id and risk score.

The writer reads every event but stores few: :meth:`SignificanceRules.decode_event` reads an
entry's symbol and notional first (:class:`Insignificant`), and the whole liquidation only when
it is to be stored. On the market load that took the writer's decoding from 0.58 to 0.32 µs
per event. An entry malformed outside those fields is then skipped by the writer as
insignificant rather than dead-lettered; the detector and the aggregator, which read all of
it, dead-letter it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from shared import codec
from shared.models import Amount, Liquidation
from writer.config import WriterSettings

DEFAULT_SIGNIFICANT_USD = 100_000.0


class Insignificant(msgspec.Struct, frozen=True, kw_only=True):
    """What decides an event-stream liquidation's significance, decoded alone: the event of an
    entry that is not stored (its other fields are not read)."""

    symbol: str
    notional_usd: Amount
    notional_known: bool = True


_insignificant_decoder = msgspec.json.Decoder(Insignificant)


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

    def is_significant(self, liq: Liquidation | Insignificant) -> bool:
        """True when an event-stream liquidation must be stored (members always are)."""
        return liq.notional_known and liq.notional_usd >= self.threshold(liq.symbol)

    def decode_event(self, data: bytes) -> Liquidation | Insignificant:
        """An event-stream payload: the whole liquidation when it is significant, else only
        what said it is not."""
        head = _insignificant_decoder.decode(data)
        return codec.decode_liquidation(data) if self.is_significant(head) else head
