"""The detector's pure core: ``feed(liquidation) -> outputs``, ``tick(now) -> outputs``; no I/O.

One :class:`~detector.lifecycle.SymbolDetector` per canonical symbol, so the same market on
different venues meets in one window. Time is exchange time: the engine's clock is the
*watermark*, the newest ``timestamp_ms`` it has seen across all symbols. Every ``feed`` ends
the cascades whose quiet period has passed by the watermark (replay needs nothing else);
live mode also calls ``tick(now)`` with event time carried forward by the wall clock, so a
cascade that simply stops still gets its end message.

Outputs are :class:`~shared.models.CascadeEvent` (start/escalate/end) and
:class:`~shared.models.CascadeMember` messages, in the order they must be published.
``published_ms`` is the event time of the decision, or the injected clock's time when a
clock is given (live mode).
"""

from __future__ import annotations

import math

import msgspec

from detector.config import DetectorSettings
from detector.lifecycle import NO_OUTPUT, Output, Rules, SymbolDetector
from shared.clock import Clock
from shared.models import CascadeEvent, Liquidation

FUTURE_TOLERANCE_MS = 300_000
"""An event stamped more than this after its receipt (``received_ms``) comes from a clock that is
wrong: it is dropped. Event time is shared by all symbols, so one such event would otherwise end
every active cascade and make the good venues' events of its symbol look late. (Five minutes:
far above network delay, and safe for a local clock that drifts.)"""

MAX_VENUES = 64
"""Venue indexes per window (the 14 known venues and room for more; the rest share the last)."""


def rules_of(settings: DetectorSettings) -> Rules:
    return Rules(window_ms=settings.window_ms, min_count=settings.min_count, min_usd=settings.min_usd,
                 quiet_ms=settings.quiet_ms, sampled_weight=settings.sampled_weight,
                 sampled_gap_ms=settings.sampled_gap_ms, capacity=settings.ring_capacity)


class Engine:
    """All symbols' windows and cascades."""

    def __init__(self, settings: DetectorSettings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.rules = rules_of(self.settings)
        self.params = self.settings.scoring()
        self.clock = clock
        self.symbols: dict[str, SymbolDetector] = {}
        self.active: dict[str, SymbolDetector] = {}
        self.venues: dict[str, int] = {}
        self.watermark = 0
        self.events = 0
        self.next_due_ms: float = math.inf
        """No active cascade is due to end before this event time (a lower bound, so a feed
        scans the active cascades only when one may really be due)."""
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

    def feed(self, liq: Liquidation) -> list[Output] | tuple[Output, ...]:
        """Process one liquidation; returns the messages it caused (usually none)."""
        self.events += 1
        ts = liq.timestamp_ms
        if liq.received_ms and ts > liq.received_ms + FUTURE_TOLERANCE_MS:
            self.from_future += 1
            return NO_OUTPUT
        ended: list[Output] | None = None
        if ts > self.watermark:
            self.watermark = ts
            if ts >= self.next_due_ms:
                ended = self._end_due(ts)
        if self.carried:
            ended, self.carried = [*self.carried, *(ended or ())], []
        det = self.symbols.get(liq.symbol) or self.detector(liq.symbol)
        before = det.cascade
        try:
            out = det.on_event(liq, self.venues.get(liq.exchange) or self.venue_index(liq.exchange))
        except Exception:
            self.carried = ended or []
            raise
        if det.cascade is not None and det.cascade is not before:  # a cascade started
            self._activate(liq.symbol, det)
        if not out and not ended:
            return NO_OUTPUT
        result = [*(ended or ()), *out]
        return self._stamp(result) if self.clock is not None else result

    def tick(self, now_ms: int) -> list[Output]:
        """End every cascade whose quiet period has passed at event time ``now_ms``."""
        if now_ms > self.watermark:
            self.watermark = now_ms
        out, self.carried = [*self.carried, *self._end_due(self.watermark)], []
        return self._stamp(out) if self.clock is not None and out else out

    def flush(self) -> list[Output]:
        """End every active cascade now (end of a replay file)."""
        out: list[Output] = []
        for symbol in sorted(self.active):
            message = self.active[symbol].end(self.watermark)
            if message is not None:
                out.append(message)
        self.active.clear()
        return self._stamp(out) if self.clock is not None and out else out

    def _activate(self, symbol: str, det: SymbolDetector) -> None:
        self.active[symbol] = det
        self.next_due_ms = min(self.next_due_ms, det.due_ms())

    def _end_due(self, now_ms: int) -> list[Output]:
        out: list[Output] = []
        for symbol in [s for s, det in self.active.items() if det.due(now_ms)]:
            message = self.active.pop(symbol).end(now_ms)
            if message is not None:
                out.append(message)
        self.next_due_ms = min((det.due_ms() for det in self.active.values()), default=math.inf)
        return out

    def _stamp(self, outputs: list[Output]) -> list[Output]:
        assert self.clock is not None
        now = self.clock.now_ms()
        return [msgspec.structs.replace(o, published_ms=now) if isinstance(o, CascadeEvent) else o
                for o in outputs]

    # -- warm restart -------------------------------------------------------------------------

    def adopt(self, symbol: str, fields: dict[str, str]) -> None:
        """Continue a cascade that a previous run published (from its status hash)."""
        det = self.detector(symbol)
        det.adopt(fields)
        self._activate(symbol, det)

    def fence(self, symbol: str) -> None:
        """Drop a rebuilt window and cascade without publishing anything."""
        det = self.symbols.get(symbol)
        if det is not None:
            det.fence()
        self.active.pop(symbol, None)

    def status(self, symbol: str, updated_ms: int | None = None) -> dict[str, str]:
        when = updated_ms if updated_ms is not None else (
            self.clock.now_ms() if self.clock is not None else self.watermark)
        return self.detector(symbol).status(when)
