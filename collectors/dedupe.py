"""Removal of replayed liquidations: a bounded memory of recently seen event ids.

Venues that replay history on (re)subscribe (OKX, Bitfinex, dYdX, Lighter) resend
liquidations already published. Every parser gives a liquidation a deterministic
``event_id``, so the collector drops an event whose (exchange, event_id) it has already seen.
The memory survives reconnects (it belongs to the collector process, not the connection) and
keeps the newest ``capacity`` ids, as 64-bit hashes of (exchange, event_id): about 140 bytes
each, 7 MB for a full memory of 50,000 (the pairs themselves, with their id strings, took about
260 bytes, 52 MB for the 200,000 kept before, in each of the 14 collectors). 50,000 is far more
than any venue replays (OKX, dYdX and Lighter send their recent trades, Bitfinex a row up to
about 12 h old: 50,000 Bitfinex liquidations in 12 h would be over one a second). Two ids
whose hashes are equal are one chance in 2**64 / 50,000 per liquidation.

Within one frame, equal ids are not replays: a venue without ids gets digests of each
liquidation's own facts, and two liquidations of one contract with the same time, side, price
and size are still two (Gate sends every liquidation of a contract and second in one frame).
:func:`number_repeats` tells them apart by their place among their equals, so a frame replayed
whole is still recognized as a replay.
"""

from __future__ import annotations

import msgspec

from shared.models import Liquidation
from shared.recent import RecentKeys


def number_repeats(liquidations: list[Liquidation]) -> list[Liquidation]:
    """One frame's liquidations, the k-th repeat of an id renamed ``<id>:<k>`` (pure)."""
    if len(liquidations) < 2:
        return liquidations
    seen: dict[str, int] = {}
    out: list[Liquidation] = []
    for liq in liquidations:
        k = seen.get(liq.event_id, 0)
        seen[liq.event_id] = k + 1
        out.append(liq if k == 0 else msgspec.structs.replace(liq, event_id=f"{liq.event_id}:{k}"))
    return out


class RecentIds:
    """The newest ``capacity`` (exchange, event_id) pairs accepted, kept as their hashes."""

    def __init__(self, capacity: int = 50_000) -> None:
        self._ids: RecentKeys[int] = RecentKeys(capacity)

    @property
    def capacity(self) -> int:
        return self._ids.capacity

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, liq: Liquidation) -> bool:
        """True if this liquidation was already accepted; otherwise remember it."""
        return self._ids.add(hash((liq.exchange, liq.event_id)))

    def fresh(self, liquidations: list[Liquidation]) -> tuple[list[Liquidation], int]:
        """The liquidations not seen before, and how many were dropped as duplicates."""
        kept = [liq for liq in liquidations if not self.seen_before(liq)]
        return kept, len(liquidations) - len(kept)
