"""Preallocated numpy ring buffer over one symbol's last window of liquidations; pure.

Columns (one numpy array each, allocated once): exchange time, notional, price, side
(1 = long liquidated), venue index, and the event's weight for the count rule (1.0, or more
for a sampled feed whose 1-per-second cap is binding, see ``detector.scoring``). A parallel
Python list keeps the Liquidation objects, so the detector can publish a window's events as
cascade members without copying them, and another each event's contribution to the running
sums as one tuple, which an eviction takes back (reading six numpy scalars one at a time cost
more than the rest of an eviction).

Running sums move by O(1) on every push and eviction, so neither the cascade rule nor the
risk score scans an array: weighted count, notional (total, long, short, institutional),
weighted long count, per-venue event counts and time sums, and the notional-weighted first
two moments of price relative to a reference price (unknown notionals weigh $1). They are
reset to exact zeros whenever the window empties; :func:`stats_from_columns` recomputes
them from the columns with numpy (the tests hold the two equal, wraparound included).

Eviction is by time: an event leaves once its time is at or before ``newest - window`` (the
window is ``(newest - window, newest]``). Events leave from the tail in arrival order; after a
late event arrived (inside the window, but older than events ahead of it), the window is
compacted whenever one behind the tail has left it. When more than
``capacity`` events are live, the oldest is overwritten (wraparound keeps the newest) and
``overflowed`` counts it; its id stays known (``in``, through ``clear`` too) until its time
leaves the window, so that its redelivery is still a duplicate.

``newest_ms`` is the newest time ever pushed (it survives ``clear``, so the caller can keep
rejecting late events); the window's span is measured from the newest time pushed since the
window was last empty (if an overflow overwrites that very event, the span keeps it: a
window of ``capacity`` events that all arrived late is not worth a scan).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from detector.scoring import WindowStats
from shared.models import Liquidation

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
G = TypeVar("G", bound=np.generic)
_NEVER = -(2**62)
INITIAL_SLOTS = 64
Part = tuple[float, float, bool, int, float, int]
"""An event's contribution: USD (0 when unknown), price, long, venue, weight, time (ms)."""
_NO_PART: Part = (0.0, 0.0, False, 0, 0.0, _NEVER)


class Ring:
    """The live window of one symbol."""

    __slots__ = (
        "_alloc", "_ids", "_late_live", "_m", "_max_ms", "_mq", "_mqq", "_overwritten", "_p0", "_parts",
        "_t0", "_venue_n", "_venue_t",
        "capacity", "count",
        "inst_usd", "institutional_usd", "is_long", "items", "last_sampled", "long_count", "long_usd",
        "newest_ms", "notional", "overflowed", "price", "short_usd", "size", "tail", "total_usd", "ts",
        "venue", "venues_live", "weight",
    )

    def __init__(self, capacity: int, n_venues: int, institutional_usd: float) -> None:
        if capacity < 2:
            raise ValueError("ring capacity must be at least 2")
        self.capacity = capacity
        self.institutional_usd = institutional_usd
        self._alloc = min(capacity, INITIAL_SLOTS)
        """Slots allocated: they double as the window fills, up to ``capacity`` (a quiet symbol
        among thousands costs a few KiB, not the full capacity)."""
        self.ts: IntArray = np.zeros(self._alloc, dtype=np.int64)
        self.notional: FloatArray = np.zeros(self._alloc, dtype=np.float64)
        self.price: FloatArray = np.zeros(self._alloc, dtype=np.float64)
        self.is_long: npt.NDArray[np.bool_] = np.zeros(self._alloc, dtype=np.bool_)
        self.venue: npt.NDArray[np.int16] = np.zeros(self._alloc, dtype=np.int16)
        self.weight: FloatArray = np.zeros(self._alloc, dtype=np.float64)
        self.items: list[Liquidation | None] = [None] * self._alloc
        self._parts: list[Part] = [_NO_PART] * self._alloc
        """Per slot, what its event added to the running sums (``_move``'s arguments)."""
        self.last_sampled: list[int] = [_NEVER] * (2 * n_venues)
        """Per sampling cap (``detector.scoring.sampled_cap``: venue, and side where the cap is
        per side), the newest time of a sampled event pushed; ``clear`` keeps it."""
        self._venue_n: list[int] = [0] * n_venues
        self._venue_t: list[float] = [0.0] * n_venues
        self.venues_live: set[int] = set()
        self._ids: set[str] = set()
        """The ids of the live events, and of the overwritten ones still in the window."""
        self._overwritten: deque[tuple[int, str]] = deque()
        """(time, id) of the events overflow overwrote whose id is still in ``_ids``, in order."""
        self.tail = 0
        self.size = 0
        self.overflowed = 0
        self.newest_ms = _NEVER
        self._zero_sums()

    def _zero_sums(self) -> None:
        self.count = 0.0
        self.long_count = 0.0
        self.total_usd = 0.0
        self.long_usd = 0.0
        self.short_usd = 0.0
        self.inst_usd = 0.0
        self._m = 0.0
        self._mq = 0.0
        self._mqq = 0.0
        self._p0 = 0.0
        self._t0 = 0
        self._max_ms = _NEVER
        self._late_live = False
        for v in self.venues_live:
            self._venue_n[v] = 0
            self._venue_t[v] = 0.0
        self.venues_live.clear()

    def __len__(self) -> int:
        return self.size

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def push(self, item: Liquidation, venue: int, weight: float) -> None:
        """Append one event (the caller has checked it is not a duplicate and not too late)."""
        if self.size == self._alloc:
            if self._alloc < self.capacity:
                self._grow()
            else:
                self._overwrite_tail()
        if self.size == 0:
            self._p0 = item.price if item.price > 0 else 1.0
            self._t0 = item.timestamp_ms
        i = (self.tail + self.size) % self._alloc
        usd = item.notional_usd if item.notional_known else 0.0
        is_long = item.side == "long"
        ts = item.timestamp_ms
        self.ts[i] = ts
        self.notional[i] = usd
        self.price[i] = item.price
        self.is_long[i] = is_long
        self.venue[i] = venue
        self.weight[i] = weight
        self.items[i] = item
        self._parts[i] = (usd, item.price, is_long, venue, weight, ts)
        self._ids.add(item.event_id)
        self.size += 1
        self._move(usd, item.price, is_long, venue, weight, ts, 1)
        if ts > self.newest_ms:
            self.newest_ms = ts
        if ts > self._max_ms:
            self._max_ms = ts
        elif ts < self._max_ms:
            self._late_live = True  # arrival order is no longer time order

    def _move(self, usd: float, price: float, is_long: bool, venue: int, weight: float, ts: int,
              sign: int) -> None:
        """Add (sign 1) or remove (sign -1) one event's contribution to the running sums."""
        self.count += sign * weight
        self.total_usd += sign * usd
        if is_long:
            self.long_usd += sign * usd
            self.long_count += sign * weight
        else:
            self.short_usd += sign * usd
        if usd >= self.institutional_usd:
            self.inst_usd += sign * usd
        mass = usd if usd > 0 else 1.0
        q = price / self._p0 - 1.0
        self._m += sign * mass
        self._mq += sign * mass * q
        self._mqq += sign * mass * q * q
        n = self._venue_n[venue] + sign
        self._venue_n[venue] = n
        self._venue_t[venue] += sign * (ts - self._t0)
        if n == 0:
            self.venues_live.discard(venue)
        elif sign > 0 and n == 1:
            self.venues_live.add(venue)

    def _grow(self) -> None:
        """Twice the slots (at most ``capacity``), the live events moved to the front in order."""
        size = min(self.capacity, 2 * self._alloc)
        for name in ("ts", "notional", "price", "is_long", "venue", "weight"):
            old: npt.NDArray[Any] = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[:self.size] = self.column(old)
            setattr(self, name, new)
        live = [self.items[(self.tail + k) % self._alloc] for k in range(self.size)]
        self.items = [*live, *([None] * (size - self.size))]
        parts = [self._parts[(self.tail + k) % self._alloc] for k in range(self.size)]
        self._parts = [*parts, *([_NO_PART] * (size - self.size))]
        self.tail = 0
        self._alloc = size

    def _overwrite_tail(self) -> None:
        """Drop the oldest event to make room, keeping its id until its time leaves the window."""
        item = self.items[self.tail]
        self._drop_tail(forget=False)
        self.overflowed += 1
        if item is not None:
            self._overwritten.append((item.timestamp_ms, item.event_id))

    def _drop_tail(self, forget: bool = True) -> None:
        i = self.tail
        item = self.items[i]
        if item is not None and forget:
            self._ids.discard(item.event_id)
        self.items[i] = None
        self.tail = (i + 1) % self._alloc
        self.size -= 1
        if self.size == 0:
            self._zero_sums()  # exact zeros: no drift from float subtraction
            return
        usd, price, is_long, venue, weight, ts = self._parts[i]
        self._move(usd, price, is_long, venue, weight, ts, -1)

    def evict(self, cutoff_ms: int) -> int:
        """Drop the events whose time is <= ``cutoff_ms``; return how many left.

        In arrival order from the tail, which is time order unless a late event arrived: then
        the window is compacted, since a late event behind a newer one would otherwise stay
        counted after its time left the window."""
        dropped = 0
        while self.size and self._parts[self.tail][5] <= cutoff_ms:
            self._drop_tail()
            dropped += 1
        if self._overwritten:
            self._forget_overwritten(cutoff_ms)
        if self._late_live and self.size and bool((self.column(self.ts) <= cutoff_ms).any()):
            dropped += self._compact(cutoff_ms)
        return dropped

    def _forget_overwritten(self, cutoff_ms: int) -> None:
        """Forget the ids of overwritten events in overflow order up to the first one still in
        the window (one overwritten after it, older, goes with it or later: never too early)."""
        overwritten, ids = self._overwritten, self._ids
        while overwritten and overwritten[0][0] <= cutoff_ms:
            ids.discard(overwritten.popleft()[1])

    def _compact(self, cutoff_ms: int) -> int:
        """Keep only the events after ``cutoff_ms``."""
        return self._keep_only(lambda item: item.timestamp_ms > cutoff_ms)

    def withdraw(self, event_id: str) -> int:
        """Take the event ``event_id`` back out of the window (its handling failed after it was
        pushed); returns how many left. What it evicted on its way in stays out."""
        return self._keep_only(lambda item: item.event_id != event_id)

    def _keep_only(self, keep: Callable[[Liquidation], bool]) -> int:
        """Keep only the live events ``keep`` accepts, in arrival order, with exact sums;
        returns how many left."""
        kept = []
        for k in range(self.size):
            i = (self.tail + k) % self._alloc
            item = self.items[i]
            if item is not None and keep(item):
                kept.append((item, int(self.venue[i]), float(self.weight[i])))
        dropped = self.size - len(kept)
        self.clear()
        for item, venue, weight in kept:
            self.push(item, venue, weight)
        return dropped

    def clear(self) -> None:
        for k in range(self.size):
            item = self.items[(self.tail + k) % self._alloc]
            self.items[(self.tail + k) % self._alloc] = None
            if item is not None:
                self._ids.discard(item.event_id)
        self.tail = 0
        self.size = 0
        self._zero_sums()

    def column(self, values: npt.NDArray[G]) -> npt.NDArray[G]:
        """The live part of a column in arrival order: a view, or a copy when it wraps around."""
        end = self.tail + self.size
        if end <= self._alloc:
            return values[self.tail:end]
        return np.concatenate((values[self.tail:], values[:end - self._alloc]))

    def live_items(self) -> list[Liquidation]:
        """The live Liquidations, oldest first."""
        out: list[Liquidation] = []
        for k in range(self.size):
            item = self.items[(self.tail + k) % self._alloc]
            if item is not None:
                out.append(item)
        return out

    def oldest_ms(self) -> int:
        """Time of the first-arrived live event (0 when empty)."""
        return int(self.ts[self.tail]) if self.size else 0

    def stats(self) -> WindowStats:
        """The window's running sums, in the form the score needs."""
        mean_q = self._mq / self._m if self._m > 0 else 0.0
        var_q = max(0.0, self._mqq / self._m - mean_q * mean_q) if self._m > 0 else 0.0
        venue_times = [self._t0 + self._venue_t[v] / self._venue_n[v] for v in self.venues_live]
        mean_price_rel = 1.0 + mean_q  # the window's mean price over the reference price
        return WindowStats(
            size=self.size, count=self.count, long_count=self.long_count, total_usd=self.total_usd,
            long_usd=self.long_usd, short_usd=self.short_usd, inst_usd=self.inst_usd,
            span_ms=(self._max_ms - int(self.ts[self.tail])) if self.size else 0,
            # no spread to speak of when the prices are all 0 (a venue that sent none)
            price_rel_std=math.sqrt(var_q) / mean_price_rel if self.size and mean_price_rel > 0 else 0.0,
            venue_times=venue_times,
        )


def stats_from_columns(ring: Ring) -> WindowStats:
    """The same sums recomputed from the columns with numpy (exact; for tests and audits)."""
    ts, usd = ring.column(ring.ts), ring.column(ring.notional)
    price, is_long = ring.column(ring.price), ring.column(ring.is_long)
    venue, weight = ring.column(ring.venue), ring.column(ring.weight)
    if len(ts) == 0:
        return WindowStats()
    mass = np.where(usd > 0, usd, 1.0)
    mean = float((mass * price).sum() / mass.sum())
    std = float(np.sqrt((mass * (price - mean) ** 2).sum() / mass.sum())) if mean > 0 else 0.0
    return WindowStats(
        size=len(ts), count=float(weight.sum()), long_count=float(weight[is_long].sum()),
        total_usd=float(usd.sum()), long_usd=float(usd[is_long].sum()), short_usd=float(usd[~is_long].sum()),
        inst_usd=float(usd[usd >= ring.institutional_usd].sum()), span_ms=int(ts.max() - ts[0]),
        price_rel_std=std / mean if mean > 0 else 0.0,
        venue_times=[float(ts[venue == v].mean()) for v in np.unique(venue)],
    )
