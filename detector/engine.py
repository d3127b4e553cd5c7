"""The detector's pure core: ``feed(liquidation) -> outputs``, ``tick(now) -> outputs``; no I/O.

One :class:`~detector.lifecycle.SymbolDetector` per canonical symbol, so the same market on
different venues meets in one window. Time is exchange time, kept per *lane*: an ordered source
of events (the live detector's lanes are its shard streams; a replay has one). A lane's clock is
its *watermark*, the newest ``timestamp_ms`` fed through it. Every ``feed`` ends the cascades of
its lane whose quiet period has passed by that watermark (replay needs nothing else); live mode
also calls ``tick(now, lane)`` with the lane's event time carried forward by the wall clock, so
a cascade that simply stops still gets its end message. Lanes keep one shard's backlog (after a
restart, say) from being judged by another shard's clock: a symbol always comes through one
lane, and only its own lane's time can end its cascade.

Outputs are :class:`~shared.models.CascadeEvent` (start/escalate/end) and
:class:`~shared.models.CascadeMember` messages, in the order they must be published.
``published_ms`` is the event time of the decision, or the injected clock's time when a
clock is given (live mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from detector.config import DetectorSettings
from detector.lifecycle import NEVER, NO_OUTPUT, Output, Rules, SavedStatus, SymbolDetector
from shared.clock import Clock
from shared.models import CascadeEvent, Liquidation

FUTURE_TOLERANCE_MS = 300_000
"""An event stamped more than this after its receipt (``received_ms``) comes from a clock that is
wrong: it is dropped. Event time is shared by all symbols, so one such event would otherwise end
every active cascade and make the good venues' events of its symbol look late. (Five minutes:
far above network delay, and safe for a local clock that drifts.)"""

WATERMARK_LEAD_MS = 5_000
"""How far past its receipt an event's time may move its lane's watermark. An event stamped a
minute or two ahead (within :data:`FUTURE_TOLERANCE_MS`) still counts in its symbol's window, but
it no longer ends the other symbols' cascades early; with a local clock that lags the venues by
more than this, cascades end that much later instead."""

MAX_VENUES = 64
"""Venue indexes per window (the 14 known venues and room for more; the rest share the last)."""


def rules_of(settings: DetectorSettings) -> Rules:
    return Rules(window_ms=settings.window_ms, min_count=settings.min_count, min_usd=settings.min_usd,
                 quiet_ms=settings.quiet_ms, sampled_weight=settings.sampled_weight,
                 sampled_gap_ms=settings.sampled_gap_ms, capacity=settings.ring_capacity)


@dataclass(slots=True)
class Lane:
    """The event time of one ordered source of events, and the cascades active in it."""

    watermark: int = 0
    next_due_ms: float = math.inf
    """No cascade of this lane is due to end before this event time (a lower bound, so a feed
    scans the active cascades only when one may really be due)."""
    active: dict[str, SymbolDetector] = field(default_factory=dict)


class Engine:
    """All symbols' windows and cascades."""

    def __init__(self, settings: DetectorSettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.rules = rules_of(self.settings)
        self.params = self.settings.scoring()
        self.clock = clock
        self.symbols: dict[str, SymbolDetector] = {}
        self.lanes: dict[int, Lane] = {}
        self.venues: dict[str, int] = {}
        self.events = 0
        """Distinct events fed: each event once, when its feed returned (late ones and those dropped
        as from the future included). A feed that raised (its event is delivered again, or
        dead-lettered) and a duplicate (an id the window holds, or held before an end) do not count."""
        self.from_future = 0
        """Events dropped for a time after their receipt (see :data:`FUTURE_TOLERANCE_MS`)."""
        self.carried: list[Output] = []
        """End messages of a feed that then failed on its event: they go out with the next
        feed or tick instead of being lost."""

    def detector(self, symbol: str) -> SymbolDetector:
        det = self.symbols.get(symbol)
        if det is None:
            det = self.symbols[symbol] = SymbolDetector(symbol, self.rules, self.params, MAX_VENUES)
        return det

    def venue_index(self, venue: str) -> int:
        index = self.venues.get(venue)
        if index is None:
            index = self.venues[venue] = min(len(self.venues), MAX_VENUES - 1)
        return index

    @property
    def active(self) -> dict[str, SymbolDetector]:
        """Every lane's active cascades together (a new dict: for status, not the hot path)."""
        return {symbol: det for ln in self.lanes.values() for symbol, det in ln.active.items()}

    @property
    def watermark(self) -> int:
        """The newest event time of any lane."""
        return max((lane.watermark for lane in self.lanes.values()), default=0)

    def lane(self, key: int) -> Lane:
        found = self.lanes.get(key)
        if found is None:
            found = self.lanes[key] = Lane()
        return found

    def feed(self, liq: Liquidation, lane: int = 0) -> list[Output] | tuple[Output, ...]:
        """Process one liquidation from ``lane``; returns the messages it caused (usually none)."""
        ts = liq.timestamp_ms
        if liq.received_ms and ts > liq.received_ms + FUTURE_TOLERANCE_MS:
            self.from_future += 1
            self.events += 1
            return NO_OUTPUT
        ln = self.lanes.get(lane) or self.lane(lane)
        ended: list[Output] | None = None
        mark = ts if not liq.received_ms else min(ts, liq.received_ms + WATERMARK_LEAD_MS)
        if mark > ln.watermark:
            ln.watermark = mark
            if mark >= ln.next_due_ms:
                ended = self._end_due(ln, mark)
        if self.carried:
            ended, self.carried = [*self.carried, *(ended or ())], []
        det = self.symbols.get(liq.symbol) or self.detector(liq.symbol)
        before, duplicates = det.cascade, det.duplicates
        try:
            out = det.on_event(liq, self.venues.get(liq.exchange) or self.venue_index(liq.exchange))
        except Exception:
            self.carried = ended or []
            raise
        if det.duplicates == duplicates:
            self.events += 1
        if det.cascade is not None and det.cascade is not before:  # a cascade started
            self._activate(liq.symbol, det, ln)
        if not out and not ended:
            return NO_OUTPUT
        result = [*(ended or ()), *out]
        return self._stamp(result) if self.clock is not None else result

    def tick(self, now_ms: int, lane: int | None = None) -> list[Output]:
        """End the cascades whose quiet period has passed at event time ``now_ms``, in ``lane``
        (every lane when None)."""
        out, self.carried = list(self.carried), []
        for ln in [self.lane(lane)] if lane is not None else list(self.lanes.values()):
            if now_ms > ln.watermark:
                ln.watermark = now_ms
            out += self._end_due(ln, ln.watermark)
        return self._stamp(out) if self.clock is not None and out else out

    def flush(self) -> list[Output]:
        """End every active cascade now, at its lane's time (end of a replay file)."""
        ending = sorted(((symbol, ln) for ln in self.lanes.values() for symbol in ln.active),
                        key=lambda pair: pair[0])
        out: list[Output] = []
        for symbol, ln in ending:
            message = ln.active.pop(symbol).end(ln.watermark)
            if message is not None:
                out.append(message)
        return self._stamp(out) if self.clock is not None and out else out

    def _activate(self, symbol: str, det: SymbolDetector, ln: Lane) -> None:
        ln.active[symbol] = det
        ln.next_due_ms = min(ln.next_due_ms, det.due_ms())

    def _end_due(self, ln: Lane, now_ms: int) -> list[Output]:
        out: list[Output] = []
        for symbol in [s for s, det in ln.active.items() if det.due(now_ms)]:
            message = ln.active.pop(symbol).end(now_ms)
            if message is not None:
                out.append(message)
        ln.next_due_ms = min((det.due_ms() for det in ln.active.values()), default=math.inf)
        return out

    def _stamp(self, outputs: list[Output]) -> list[Output]:
        assert self.clock is not None
        now = self.clock.now_ms()
        return [msgspec.structs.replace(o, published_ms=now) if isinstance(o, CascadeEvent) else o
                for o in outputs]

    # -- warm restart -------------------------------------------------------------------------

    def adopt(self, symbol: str, saved: SavedStatus, lane: int = 0) -> bool:
        """Continue the cascade that a previous run published, if its status hash is active;
        returns whether it was."""
        if saved.active is None:
            return False
        det = self.detector(symbol)
        det.adopt(saved.active, saved.ended_through_ms)
        self._activate(symbol, det, self.lane(lane))
        return True

    def resume_ended(self, symbol: str, saved: SavedStatus) -> None:
        """Carry on after a cascade that a previous run ended (from its idle status hash)."""
        if saved.cascade_id or saved.ended_through_ms > NEVER:
            self.detector(symbol).resume_ended(saved)

    def fence(self, symbol: str) -> None:
        """Drop a rebuilt window and cascade without publishing anything."""
        det = self.symbols.get(symbol)
        if det is not None:
            det.fence()
        for ln in self.lanes.values():
            ln.active.pop(symbol, None)

    def status(self, symbol: str, updated_ms: int | None = None) -> dict[str, str]:
        when = updated_ms if updated_ms is not None else (
            self.clock.now_ms() if self.clock is not None else self.watermark)
        return self.detector(symbol).status(when)
