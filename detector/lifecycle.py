"""One symbol's cascade rule and lifecycle (idle → start → escalate* → end), and its status
hash, written (``status``) and read back for a warm restart (``read_status``); pure.

- **Start**: an event makes the window hold the rule (weighted count ≥ ``min_count`` and
  notional ≥ ``min_usd``). The cascade's id is ``SYMBOL-<time of the window's oldest event>``;
  the start message is followed by every event of the window as a member.
- **Member**: every later event of the symbol while the cascade is active.
- **Escalate**: the score's band rises above the highest band published so far for this
  cascade (once per band: a band that falls and rises again is not re-announced).
- **End**: the rule has not held for ``quiet_ms`` (the last time it held is
  ``last_hold_ms``), checked against event time (replay) or a clock tick (live). The end
  message carries the last score as ``risk_score`` and the band of the peak score as ``band``.
  The window is then cleared, so the ended cascade's events can never start another one.

Events older than the window (relative to the newest one of the symbol) and repeated
``event_id`` values are ignored (``late``/``duplicates`` count them): an id is remembered
while it is in the window, and after the window is cleared (end, fence) for as long as it
could still be inside one, so a redelivered event of an ended cascade cannot start another.
An event whose scoring raises is taken back out of the window, so its redelivery fails again
and the consumer dead-letters it (``shared.streams``) instead of acking it as a duplicate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from detector import scoring
from detector.ring import Ring
from detector.scoring import BAND_RANK, BANDS, ScoringParams
from shared.models import CascadeEvent, CascadeMember, CascadePhase, FactorScores, Liquidation
from shared.redisconn import entry_key

Output = CascadeEvent | CascadeMember


def ended_cascades(outputs: Iterable[Output], starts: dict[str, CascadeEvent]
                   ) -> Iterator[tuple[CascadeEvent, CascadeEvent | None]]:
    """Each end message among ``outputs`` with the start message of its cascade (None if it was
    never seen). ``starts`` keeps the starts across calls: a cascade starts and ends in
    different feeds."""
    for o in outputs:
        if not isinstance(o, CascadeEvent):
            continue
        if o.phase == "start":
            starts[o.cascade_id] = o
        elif o.phase == "end":
            yield o, starts.pop(o.cascade_id, None)
NO_OUTPUT: tuple[Output, ...] = ()
NEVER = -(2**62)
"""``ended_through_ms`` of a symbol none of whose cascades has ended."""


@dataclass(frozen=True)
class Rules:
    """The rule and lifecycle settings, from :class:`~detector.config.DetectorSettings` (whose
    defaults are the only ones: ``detector.engine.rules_of``)."""

    window_ms: int
    min_count: int
    min_usd: float
    quiet_ms: int
    sampled_weight: float
    sampled_gap_ms: int
    capacity: int


@dataclass(slots=True)
class Cascade:
    """What the detector knows about one active cascade."""

    cascade_id: str
    symbol: str
    start_ms: int
    detected_ms: int
    last_event_ms: int
    last_hold_ms: int
    count: int = 0
    total_usd: float = 0.0
    long_usd: float = 0.0
    short_usd: float = 0.0
    venues: set[str] = field(default_factory=set)
    score: float = 0.0
    peak: float = 0.0
    factors: FactorScores = field(default_factory=FactorScores)
    band_rank: int = 0

    def add(self, liq: Liquidation) -> None:
        usd = liq.notional_usd if liq.notional_known else 0.0
        self.count += 1
        self.total_usd += usd
        if liq.side == "long":
            self.long_usd += usd
        else:
            self.short_usd += usd
        self.venues.add(liq.exchange)
        if liq.timestamp_ms > self.last_event_ms:
            self.last_event_ms = liq.timestamp_ms
        elif liq.timestamp_ms < self.start_ms:  # a slower venue's member, still in the window
            self.start_ms = liq.timestamp_ms

    def rescore(self, factors: FactorScores, value: float) -> None:
        self.factors = factors
        self.score = value
        if value > self.peak:
            self.peak = value

    def message(self, phase: CascadePhase, published_ms: int, edges: tuple[float, ...]) -> CascadeEvent:
        shown = self.peak if phase == "end" else self.score
        return CascadeEvent(
            cascade_id=self.cascade_id, symbol=self.symbol, phase=phase, start_ms=self.start_ms,
            end_ms=self.last_event_ms, venues=sorted(self.venues), count=self.count,
            total_notional_usd=round(self.total_usd, 2), long_notional_usd=round(self.long_usd, 2),
            short_notional_usd=round(self.short_usd, 2), risk_score=self.score,
            peak_risk_score=self.peak, band=scoring.band(shown, edges), factors=self.factors,
            cross_exchange=len(self.venues) >= 2, published_ms=published_ms,
        )


class SymbolDetector:
    """The window and the cascade state of one canonical symbol."""

    __slots__ = ("cascade", "cleared_ids", "duplicates", "ended_through_ms", "last_cascade_id", "late",
                 "params", "ring", "rules", "symbol")

    def __init__(self, symbol: str, rules: Rules, params: ScoringParams, n_venues: int) -> None:
        self.symbol = symbol
        self.rules = rules
        self.params = params
        self.ring = Ring(rules.capacity, n_venues, params.institutional_usd)
        self.cascade: Cascade | None = None
        self.last_cascade_id = ""
        self.late = 0
        self.duplicates = 0
        self.cleared_ids: dict[str, int] = {}
        """Ids of events dropped by ``end``/``fence`` → their time, while they could be redelivered."""
        self.ended_through_ms = NEVER
        """The last event time of the cascade that ended last: an event at or before it arrives
        after its cascade, and must not start another (another venue's late copy of the same
        burst would otherwise start a second cascade with the same id)."""

    # -- the window ---------------------------------------------------------------------------

    def holds(self) -> bool:
        ring = self.ring
        return ring.count >= self.rules.min_count - 1e-9 and ring.total_usd >= self.rules.min_usd - 1e-6

    def score_window(self) -> tuple[FactorScores, float]:
        f = scoring.factors(self.ring.stats(), self.params)
        return f, scoring.score(f, self.params)

    def _admit(self, liq: Liquidation, venue: int, sampled_cap: int) -> bool:
        """Put the event in the window; False when it is a duplicate or too late. A sampled event
        is weighed by the gap since the last one of its cap, ``sampled_cap`` (-1: not sampled)."""
        ring = self.ring
        if liq.event_id in ring or liq.event_id in self.cleared_ids:
            self.duplicates += 1
            return False
        ts = liq.timestamp_ms
        newest = max(ring.newest_ms, ts)
        if ts <= newest - self.rules.window_ms or ts <= self.ended_through_ms:
            self.late += 1
            return False
        ring.evict(newest - self.rules.window_ms)
        weight = 1.0
        if sampled_cap >= 0:
            gap = abs(ts - ring.last_sampled[sampled_cap])
            weight = scoring.sampled_weight(True, gap, self.rules.sampled_gap_ms, self.rules.sampled_weight)
            if ts > ring.last_sampled[sampled_cap]:
                ring.last_sampled[sampled_cap] = ts
        ring.push(liq, venue, weight)
        return True

    # -- the lifecycle ------------------------------------------------------------------------

    def on_event(self, liq: Liquidation, venue: int) -> tuple[Output, ...] | list[Output]:
        cap = scoring.sampled_cap(venue, liq.exchange, liq.side) if liq.sampled else -1
        sampled_ms = self.ring.last_sampled[cap] if cap >= 0 else 0
        if not self._admit(liq, venue, cap):
            return NO_OUTPUT
        try:  # the cascade changes only once the score is known: a failure leaves it as it was
            c = self.cascade
            holds = self.holds()
            if c is None:
                return self._start() if holds else NO_OUTPUT
            f, value = self.score_window()
            rank = BAND_RANK[scoring.band(value, self.params.band_edges)]
        except Exception:
            self._withdraw(liq, cap, sampled_ms)
            raise
        c.add(liq)
        if holds and self.ring.newest_ms > c.last_hold_ms:  # the window's time, even for a late event
            c.last_hold_ms = self.ring.newest_ms
        c.rescore(f, value)
        out: list[Output] = [CascadeMember(cascade_id=c.cascade_id, risk_score=value, liquidation=liq)]
        if rank > c.band_rank:
            c.band_rank = rank
            out.append(c.message("escalate", liq.timestamp_ms, self.params.band_edges))
        return out

    def _start(self) -> list[Output]:
        items = self.ring.live_items()
        start_ms = min(item.timestamp_ms for item in items)  # the window's oldest event
        ts = self.ring.newest_ms  # the window's time: a late trigger does not date the start back
        c = Cascade(cascade_id=f"{self.symbol}-{start_ms}", symbol=self.symbol, start_ms=start_ms,
                    detected_ms=ts, last_event_ms=ts, last_hold_ms=ts)
        for item in items:
            c.add(item)
        f, value = self.score_window()
        c.rescore(f, value)
        c.band_rank = BAND_RANK[scoring.band(value, self.params.band_edges)]
        out: list[Output] = [c.message("start", ts, self.params.band_edges)]
        out += [CascadeMember(cascade_id=c.cascade_id, risk_score=value, liquidation=item) for item in items]
        self.cascade = c
        return out

    def _withdraw(self, liq: Liquidation, sampled_cap: int, sampled_ms: int) -> None:
        """Take back an event whose handling failed after it entered the window, so that its
        redelivery is handled (and fails) again, to be dead-lettered, instead of being refused
        as a duplicate; its cap's last sampled time is put back to ``sampled_ms``. Its time stays
        seen, as by its lane: what it evicted stays out."""
        self.ring.withdraw(liq.event_id)
        if sampled_cap >= 0:
            self.ring.last_sampled[sampled_cap] = sampled_ms

    def due(self, now_ms: int) -> bool:
        c = self.cascade
        return c is not None and now_ms - c.last_hold_ms >= self.rules.quiet_ms

    def due_ms(self) -> float:
        """Event time from which the cascade is due to end (it only moves later), inf if none."""
        c = self.cascade
        return math.inf if c is None else c.last_hold_ms + self.rules.quiet_ms

    def end(self, now_ms: int) -> CascadeEvent | None:
        c = self.cascade
        if c is None:
            return None
        message = c.message("end", now_ms, self.params.band_edges)
        self.last_cascade_id = c.cascade_id
        self.ended_through_ms = max(self.ended_through_ms, c.last_event_ms)
        self.cascade = None
        self._clear_window()
        return message

    def _clear_window(self) -> None:
        """Empty the window, remembering its ids while they are not yet too late to arrive."""
        cutoff = self.ring.newest_ms - self.rules.window_ms
        kept = {k: t for k, t in self.cleared_ids.items() if t > cutoff}
        for item in self.ring.live_items():
            kept[item.event_id] = item.timestamp_ms
        self.cleared_ids = kept
        self.ring.clear()

    def fence(self) -> None:
        """Forget the window and any cascade without a message (used after a warm restart). A
        fenced cascade has ended: late copies of its events are refused as after its end."""
        if self.cascade is not None:  # its id may never have been published: the status hash's stays
            self.ended_through_ms = max(self.ended_through_ms, self.cascade.last_event_ms)
        self.cascade = None
        self._clear_window()

    # -- the status hash ----------------------------------------------------------------------

    def status(self, updated_ms: int) -> dict[str, str]:
        """The ``liq:cascade:status:{SYMBOL}`` fields (cascade totals while active, else window's),
        with ``ended_through_ms`` once a cascade has ended (a warm restart carries it on)."""
        c = self.cascade
        fields = self._idle_status(updated_ms) if c is None else self._active_status(c, updated_ms)
        if self.ended_through_ms > NEVER:
            fields["ended_through_ms"] = str(self.ended_through_ms)
        return fields

    def _active_status(self, c: Cascade, updated_ms: int) -> dict[str, str]:
        return {
            "state": "active", "cascade_id": c.cascade_id, "risk_score": f"{c.score:.4f}",
            "peak_risk_score": f"{c.peak:.4f}", "band": scoring.band(c.score, self.params.band_edges),
            "published_band": BANDS[c.band_rank], "count": str(c.count),
            "total_usd": f"{c.total_usd:.2f}", "long_usd": f"{c.long_usd:.2f}",
            "short_usd": f"{c.short_usd:.2f}", "venues": ",".join(sorted(c.venues)),
            "start_ms": str(c.start_ms), "detected_ms": str(c.detected_ms),
            "last_event_ms": str(c.last_event_ms), "updated_ms": str(updated_ms),
        }

    def _idle_status(self, updated_ms: int) -> dict[str, str]:
        _, value = self.score_window()
        names = sorted({item.exchange for item in self.ring.live_items()})
        return {
            "state": "idle", "cascade_id": self.last_cascade_id, "risk_score": f"{value:.4f}",
            "band": scoring.band(value, self.params.band_edges), "count": str(len(self.ring)),
            "total_usd": f"{self.ring.total_usd:.2f}", "venues": ",".join(names),
            "updated_ms": str(updated_ms),
        }

    def resume_ended(self, saved: SavedStatus) -> None:
        """Carry on after the cascade an idle status hash names (ended before a warm restart):
        the hash keeps naming it (the rebuild may not reach back far enough to end it, or may
        open and fence a piece of it under another id), and its end is restored."""
        self.last_cascade_id = saved.cascade_id or self.last_cascade_id
        self._restore_end(saved.ended_through_ms)

    def _restore_end(self, through: int) -> None:
        """As after the end a status hash's ``ended_through_ms`` records: the ended cascade's
        events the rebuild put back in the window leave it, and later copies are refused."""
        self.ended_through_ms = max(self.ended_through_ms, through)
        self.ring.evict(self.ended_through_ms)

    def adopt(self, active: SavedCascade, ended_through_ms: int) -> None:
        """Continue the active cascade a status hash describes (published before a restart)."""
        last = active.last_event_ms
        c = Cascade(
            cascade_id=active.cascade_id, symbol=self.symbol, start_ms=active.start_ms,
            detected_ms=active.detected_ms, last_event_ms=last,
            last_hold_ms=max(last, self.cascade.last_hold_ms if self.cascade else last),
            count=active.count, total_usd=active.total_usd, long_usd=active.long_usd,
            short_usd=active.short_usd, venues=set(active.venues), score=active.score,
            peak=active.peak, band_rank=active.band_rank,
        )
        if self.cascade is not None:
            c.factors = self.cascade.factors
        self.cascade = c
        self._restore_end(ended_through_ms)  # the window held the cascade's own events only


# -- reading a status hash back (warm restart) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class SavedCascade:
    """The active cascade a ``state=active`` status hash describes, as :meth:`SymbolDetector.adopt`
    continues it (a missing time is the last event's, or the hash's ``updated_ms``)."""

    cascade_id: str
    start_ms: int
    detected_ms: int
    last_event_ms: int
    count: int
    total_usd: float
    long_usd: float
    short_usd: float
    venues: frozenset[str]
    score: float
    peak: float
    band_rank: int


@dataclass(frozen=True, slots=True)
class SavedStatus:
    """What a warm restart reads from a ``liq:cascade:status:{SYMBOL}`` hash."""

    cascade_id: str
    ended_through_ms: int
    entry_id: str
    """The newest stream entry published with the hash ("" when it has none)."""
    entry: tuple[int, int] | None
    """``entry_id`` as it sorts (``shared.redisconn.entry_key``)."""
    active: SavedCascade | None
    """Set for a ``state=active`` hash that names its cascade."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A status hash field whose value is not what the detector writes there (another program
    or a hand edit wrote it)."""

    field: str
    value: str


class _Unreadable(ValueError):
    def __init__(self, name: str, value: str) -> None:
        super().__init__(name, value)
        self.unreadable = Unreadable(name, value)


N = TypeVar("N")


def _read(fields: dict[str, str], name: str, parse: Callable[[str], N], default: N) -> N:
    raw = fields.get(name)
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise _Unreadable(name, raw) from None


def read_status(fields: dict[str, str]) -> SavedStatus | Unreadable:
    """A status hash's fields as the warm restart uses them, or the first one it cannot read."""
    try:
        return _read_status(fields)
    except _Unreadable as bad:
        return bad.unreadable


def _read_status(fields: dict[str, str]) -> SavedStatus:
    cascade_id = fields.get("cascade_id") or ""
    entry_id = fields.get("entry_id") or ""
    return SavedStatus(
        cascade_id=cascade_id, ended_through_ms=_read(fields, "ended_through_ms", int, NEVER),
        entry_id=entry_id, entry=_read(fields, "entry_id", entry_key, (0, 0)) if entry_id else None,
        active=_read_cascade(cascade_id, fields) if fields.get("state") == "active" and cascade_id else None,
    )


def _read_cascade(cascade_id: str, fields: dict[str, str]) -> SavedCascade:
    last = _read(fields, "last_event_ms" if fields.get("last_event_ms") else "updated_ms", int, 0)
    return SavedCascade(
        cascade_id=cascade_id, start_ms=_read(fields, "start_ms", int, last),
        detected_ms=_read(fields, "detected_ms", int, last), last_event_ms=last,
        count=_read(fields, "count", int, 0), total_usd=_read(fields, "total_usd", float, 0.0),
        long_usd=_read(fields, "long_usd", float, 0.0), short_usd=_read(fields, "short_usd", float, 0.0),
        venues=frozenset(v for v in (fields.get("venues") or "").split(",") if v),
        score=_read(fields, "risk_score", float, 0.0), peak=_read(fields, "peak_risk_score", float, 0.0),
        band_rank=BAND_RANK.get(fields.get("published_band") or fields.get("band") or "low", 0),
    )
