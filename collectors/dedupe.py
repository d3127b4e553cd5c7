"""Removal of replayed liquidations: a bounded memory of recently seen event ids.

Venues that replay history on (re)subscribe (OKX, Bitfinex, dYdX, Lighter) resend
liquidations already published. Every parser gives a liquidation a deterministic
``event_id``, so the collector drops an event whose (exchange, event_id) it has already seen.
The memory survives reconnects (it belongs to the collector process, not the connection) and
keeps the newest ``capacity`` ids.
"""

from __future__ import annotations

from collections import OrderedDict

from shared.models import Liquidation


class RecentIds:
    """Insertion-ordered set with a capacity; the oldest id is forgotten first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, liq: Liquidation) -> bool:
        """True if this liquidation was already accepted; otherwise remember it."""
        key = (liq.exchange, liq.event_id)
        if key in self._ids:
            return True
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def fresh(self, liquidations: list[Liquidation]) -> tuple[list[Liquidation], int]:
        """The liquidations not seen before, and how many were dropped as duplicates."""
        kept = [liq for liq in liquidations if not self.seen_before(liq)]
        return kept, len(liquidations) - len(kept)
