"""Labelled scenarios of the simulated market: what the detector evaluation (``liq evaluate``) scores.

Each scenario is a short stretch of the market model (``shared/market_model.py``) around one
situation, with the ground truth of what happened in it: the scenario kinds, their calmer
background (:data:`SCENARIO_PARAMS`), the builders that stage each situation on a
:class:`~shared.market_model.Market`, and the cascade labels (:class:`CascadeLabel`). Pure and
deterministic like the model: the same kind and ``seed`` give the same scenario, byte for byte.

Ground truth. A *cascade* is what the original system calls one: at least 5 liquidations
worth at least $100,000 in total within 60 s, here counted on the liquidations the cascade
process itself generated (before sampling and drop-outs: what really happened), per canonical
symbol, because that is where a detector can see them together. A market cascade that spills
onto a symbol with fewer events than that is not labelled there, and its events there carry no
``cascade_id``. Each labelled group is a :class:`CascadeLabel` whose id is
``"<market cascade>/<symbol>"``, the ``cascade_id`` its published events carry.

Scenario kinds (:func:`scenario`), each 10 minutes of quiet background plus one situation, the
quiet kind one hour of background only:

==========================  ==================================================================  =========
kind                        what happens                                                        labelled
==========================  ==================================================================  =========
``quiet``                   background only                                                     0
``single_venue_burst``      6-14 liquidations within 8-40 s on one venue (any), >= $100K        1
``cross_venue_cascade``     a market cascade as above, >= 2 venues on one canonical symbol      >= 1
``slow_grind``              one-sided liquidations every 16-28 s for 4-8 min on 1-2 venues:     0
                            never 5 within 60 s (the grind is the symbol's only activity)
``whale_alone``             one $1.5-8M liquidation, no other one on its symbol within 60 s     0
``feed_dropout``            a cross-venue cascade on >= 3 venues; its busiest venue goes dark   >= 1
                            30-60 % into it for 2 minutes (labels count the lost events too)
==========================  ==================================================================  =========

:func:`labelled_stream` labels a stretch of the endless market the same way (kind ``stream``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from shared.market import MarketEvent
from shared.market_model import (
    BASES,
    DEFAULT_PARAMS,
    RULE_WINDOW_MS,
    SAMPLED_VENUES,
    VENUE_SHARE,
    VENUES,
    Market,
    MarketModel,
    ModelParams,
    Raw,
    Truth,
    canonical_symbol_for,
    quote_of,
    rule_holds,
)
from shared.models import Side

ScenarioKind = Literal[
    "quiet", "single_venue_burst", "cross_venue_cascade", "slow_grind", "whale_alone", "feed_dropout"
]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = (
    "quiet", "single_venue_burst", "cross_venue_cascade", "slow_grind", "whale_alone", "feed_dropout"
)

SCENARIO_PARAMS = replace(
    DEFAULT_PARAMS, quiet_per_min=tuple((base, rate / 6) for base, rate in DEFAULT_PARAMS.quiet_per_min),
)
"""The scenarios' calmer background (a sixth of the endless market's rates), so that a scenario
scores its one situation. At the endless market's rates the background alone meets the rule now
and then: cascades by the original definition, but no label's (labels count only a simulated
cascade's liquidations), so they count as false alarms there (``liq evaluate --busy``: 1.75 an
hour of background, precision 0.54; see BENCHMARKS.md)."""


@dataclass(frozen=True)
class CascadeLabel:
    """One labelled cascade on one canonical symbol.

    ``start_ms``/``end_ms``/``count``/``notional_usd`` describe the liquidations that really
    happened (before sampling and drop-outs); ``first_ms`` and ``fifth_ms`` are the times of the
    first and fifth *published* ones (the fifth is the last published one when fewer than five
    were), the reference points of detection delay.
    """

    cascade_id: str
    symbol: str
    venues: tuple[str, ...]
    start_ms: int
    end_ms: int
    first_ms: int
    fifth_ms: int
    count: int
    published: int
    notional_usd: float


@dataclass(frozen=True)
class Scenario:
    """A labelled scenario: its published events (time order) and the cascades among them."""

    kind: str
    seed: int
    start_ms: int
    duration_ms: int
    events: list[MarketEvent]
    cascades: list[CascadeLabel]
    true_count: int = 0
    """How many liquidations happened, published or not (sampling, drop-outs)."""

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


def _labels(truths: list[Truth], events: list[MarketEvent]) -> list[CascadeLabel]:
    published: dict[str, list[MarketEvent]] = {}
    for e in events:
        if e.cascade_id:
            published.setdefault(e.cascade_id, []).append(e)
    labels: list[CascadeLabel] = []
    for truth in truths:
        for symbol, group in truth.events.items():
            label_id = f"{truth.cascade_id}/{symbol}"
            seen = published.get(label_id, [])
            first = seen[0].timestamp_ms if seen else group[0].ts
            fifth = seen[min(4, len(seen) - 1)].timestamp_ms if seen else group[-1].ts
            labels.append(CascadeLabel(
                cascade_id=label_id, symbol=symbol,
                venues=tuple(sorted({r.venue for r in group})),
                start_ms=group[0].ts, end_ms=group[-1].ts, first_ms=first, fifth_ms=fifth,
                count=len(group), published=len(seen),
                notional_usd=round(sum(r.notional for r in group), 2),
            ))
    return sorted(labels, key=lambda lab: (lab.start_ms, lab.symbol))


def labelled_stream(model: MarketModel, until_ms: int) -> Scenario:
    """The endless market's events up to ``until_ms`` with their cascade labels, as a Scenario of
    kind ``stream``."""
    market = model.market()
    events = [e for chunk in market.chunks(until_ms) for e in chunk]
    truths = [t for t in market.truths if min(r.ts for g in t.events.values() for r in g) < until_ms]
    return Scenario("stream", model.seed, model.start_ms, until_ms - model.start_ms, events,
                    _labels(truths, events), market.true_count)


SCENARIO_MINUTES: dict[str, int] = {**dict.fromkeys(SCENARIO_KINDS, 10), "quiet": 60}


def scenario(kind: str, seed: int, start_ms: int = 1_700_000_000_000, venues: Sequence[str] = VENUES,
             bases: Sequence[str] = BASES, params: ModelParams = SCENARIO_PARAMS) -> Scenario:
    """One labelled scenario of ``kind`` (see the table in the module docstring)."""
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; choose one of {', '.join(SCENARIO_KINDS)}")
    market = Market(seed, venues, bases, start_ms, params, scheduled_cascades=False, tag=kind)
    duration_ms = SCENARIO_MINUTES[kind] * 60_000
    at = start_ms + int(market.rng.uniform(120_000, 300_000))
    if kind != "quiet":
        _SITUATIONS[kind](market, at)
    events = [e for chunk in market.chunks(start_ms + duration_ms) for e in chunk]
    return Scenario(kind, seed, start_ms, duration_ms, events, _labels(market.truths, events),
                    market.true_count)


def _base(market: Market) -> str:
    return market.cascade_base()


def _single_venue_burst(market: Market, at: int) -> None:
    p = market.params
    for _ in range(100):
        base = _base(market)
        listing = market.listing(base)
        venue = listing[int(market.rng.integers(0, len(listing)))]
        n = int(market.rng.integers(p.burst_events[0], p.burst_events[1] + 1))
        duration_ms = int(market.rng.uniform(*p.burst_duration_s) * 1000)
        offsets = np.sort(market.rng.integers(0, duration_ms + 1, n))
        sizes = market.sizes(n, p.burst_median_usd, 0.8, p.cascade_max_usd, 1_000.0)
        side: Side = "long" if market.rng.random() < 0.6 else "short"
        cid = market.new_cascade_id()
        raws = [market.raw(at + int(o), venue, base, side, float(s), cid) for o, s in zip(offsets, sizes,
                                                                                         strict=True)]
        if rule_holds([r.ts for r in raws], [r.notional for r in raws]):
            market.move_price(base, at, duration_ms, -0.004 if side == "long" else 0.004)
            market.add(market.label(cid, raws))
            return
    raise RuntimeError("could not draw a single-venue burst that meets the rule")


def _cross_venue(market: Market, at: int, min_venues: int) -> Truth:
    p = market.params
    for _ in range(100):
        base = _base(market)
        k = int(market.rng.integers(max(p.cascade_venues[0], min_venues), p.cascade_venues[1] + 1))
        venues = market.pick_cascade_venues(k, market.main_family(base), base)
        n = int(market.rng.integers(p.cascade_events[0], p.cascade_events[1] + 1))
        duration = float(market.rng.uniform(*p.cascade_duration_s))
        cid = market.new_cascade_id()
        mark = market.mark()
        raws = market.label(cid, market.cascade(at, base, venues, n, duration, cid))
        truth = market.truths[-1] if len(market.truths) > mark.truths else None
        if truth and any(len({r.venue for r in g}) >= min_venues for g in truth.events.values()):
            market.add(raws)
            return truth
        market.rollback(mark)
    raise RuntimeError("could not draw a cross-venue cascade with enough venues")


def _cross_venue_cascade(market: Market, at: int) -> None:
    _cross_venue(market, at, min(2, len(market.venues)))


def _feed_dropout(market: Market, at: int) -> None:
    truth = _cross_venue(market, at, min(3, len(market.venues)))
    group = max(truth.events.values(), key=len)
    by_venue: dict[str, int] = {}
    for r in group:
        by_venue[r.venue] = by_venue.get(r.venue, 0) + 1
    venue = max(sorted(by_venue), key=lambda v: (v not in SAMPLED_VENUES, by_venue[v]))
    span = group[-1].ts - group[0].ts
    dark_from = group[0].ts + int(span * market.rng.uniform(0.3, 0.6))
    market.go_dark(venue, dark_from, dark_from + 120_000)


def _slow_grind(market: Market, at: int) -> None:
    p = market.params
    base = _base(market)
    listing = market.listing(base)
    family = market.main_family(base) or quote_of(listing[0], base)
    pool = [v for v in listing if quote_of(v, base) == family]  # one quote: the grind is one symbol
    k = min(len(pool), int(market.rng.integers(1, 3)))
    venues = [pool[int(i)] for i in market.rng.choice(len(pool), size=k, replace=False)]
    side: Side = "long" if market.rng.random() < 0.5 else "short"
    end = at + int(market.rng.uniform(*p.grind_duration_s) * 1000)
    raws: list[Raw] = []
    ts = at
    while ts < end:
        venue = venues[int(market.rng.integers(0, len(venues)))]
        usd = float(market.sizes(1, p.grind_median_usd, 0.7, 1_000_000.0, 1_000.0)[0])
        raws.append(market.raw(ts, venue, base, side, usd))
        ts += int(market.rng.uniform(*p.grind_gap_s) * 1000)
    symbol = canonical_symbol_for(venues[0], base)
    market.suppress(symbol, raws[0].ts - RULE_WINDOW_MS, raws[-1].ts + RULE_WINDOW_MS, keep=raws)
    market.move_price(base, at, end - at, -0.006 if side == "long" else 0.006)
    market.add(raws)


def _whale_alone(market: Market, at: int) -> None:
    p = market.params
    base = _base(market)
    listing = market.listing(base)
    share = np.array([VENUE_SHARE[v] for v in listing])
    venue = listing[int(market.rng.choice(len(listing), p=share / share.sum()))]
    usd = float(market.rng.uniform(*p.whale_usd))
    side: Side = "long" if market.rng.random() < 0.5 else "short"
    whale = market.raw(at, venue, base, side, usd)
    symbol = canonical_symbol_for(venue, base)
    market.suppress(symbol, at - RULE_WINDOW_MS, at + RULE_WINDOW_MS, keep=[whale])
    market.add([whale])


_SITUATIONS = {
    "single_venue_burst": _single_venue_burst,
    "cross_venue_cascade": _cross_venue_cascade,
    "slow_grind": _slow_grind,
    "whale_alone": _whale_alone,
    "feed_dropout": _feed_dropout,
}
