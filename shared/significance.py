"""The one place the "significant liquidation" rules live, and where a liquidation is published.

- A liquidation is significant when its USD notional is known and at least the threshold of
  its symbol: ``LIQ_SIGNIFICANT_USD`` (default 100 000) unless ``LIQ_SIGNIFICANT_USD_BY_SYMBOL``
  (``BTCUSDT=250000,...``) names the symbol. The writer stores it.
- A cascade member (``liq:cascade:members``) is always stored, whatever its size, with
  ``is_cascade = true``, its cascade id and risk score.

Routing at the source (:func:`publication`): a collector publishes each liquidation to its
symbol's event shard and, when it is significant, a copy to ``liq:significant`` right after it,
in the same script run (both or neither). The writer reads that stream, not the shards: on the
market load 612 of 200,000 events (0.3 %) are significant, and reading every event to skip the
rest cost the writer 4.4 µs of Python and Redis about 1.5 µs per event (``BENCHMARKS.md``).
The writer applies the rules again to what it reads, so a writer given a higher threshold than
the collectors stores only what its own threshold keeps.

:meth:`SignificanceRules.decode_event` reads an entry's symbol and notional first
(:class:`Insignificant`), and the whole liquidation only when it is to be stored: the writer
uses it for what its group on the event shards still holds from before the significant stream
(``writer.service``). An entry malformed outside those fields is then skipped as insignificant
rather than dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from shared import codec, keys
from shared.models import Amount, Liquidation
from shared.settings import CommonSettings

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
    def from_settings(cls, settings: CommonSettings) -> SignificanceRules:
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


def publication(liquidations: Sequence[Liquidation], shards: int,
                rules: SignificanceRules) -> list[tuple[str, Liquidation]]:
    """The (stream, liquidation) pairs a collector publishes for ``liquidations``, in order: each
    to its symbol's event shard, followed by its copy to ``liq:significant`` when it is
    significant. A copy follows its event, so that the pairs of a longer batch sent again
    start with those of the shorter one (``shared.streams.publish`` skips that prefix)."""
    items: list[tuple[str, Liquidation]] = []
    for liq in liquidations:
        items.append((keys.event_stream_of(liq.symbol, shards), liq))
        if rules.is_significant(liq):
            items.append((keys.SIGNIFICANT_STREAM, liq))
    return items
