"""The simulated market: a seeded model of quiet periods and cross-venue liquidation cascades.

Pure and deterministic: the same ``seed``, venues, bases and ``start_ms`` give the same events,
byte for byte. No I/O, no wall clock; randomness comes only from ``numpy.random.Generator``
seeded with ``seed``. Used by the exchange simulator (``liq simulate`` renders each event in its
venue's wire format) and by the detector evaluation (``liq evaluate``).

The model (all rates and sizes live in :class:`ModelParams`):

- **Bases.** BTC, ETH, SOL, XRP, DOGE, ADA and SUI (:data:`BASES`), each traded only on the
  venues that list it in the simulator (:data:`LISTED`: BitMEX, HTX and Gate list fewer,
  Deribit and Bitfinex no SUI; a test holds the simulators to it). Seven bases in three
  quotes spread the canonical symbols over every event shard (with three, two of the four
  default shards stayed empty for minutes).
- **Prices.** One log-price per base follows an Ornstein-Uhlenbeck walk on a 1 s grid
  (:data:`ANNUAL_VOL`: 55 % BTC, 70 % ETH, 85-100 % the others; mean reversion over about two
  days), starting inside :data:`PRICE_RANGE` (BTC 60-100k, ETH 2-5k, SOL 100-250, …). Each venue
  adds a fixed basis of at most 2 bp and each fill up to 1 bp of noise. Prices are rounded to the
  tick (:data:`TICK`: BTC 0.1, ETH 0.01, SOL 0.001, DOGE 0.00001, the others 0.0001) and
  notionals to the cent, so every venue format round-trips them exactly.
- **Quiet market.** Small liquidations arrive as a Poisson process: 12 / 9 / 6 / 5 / 5 / 4 / 4
  per minute for BTC / ETH / SOL / XRP / DOGE / ADA / SUI if all 14 venues listed them, split by
  each listing venue's share of the flow (:data:`VENUE_SHARE`; fewer venues see proportionally
  fewer): about 41 published a minute with all 14 venues. Scenarios use a sixth of these rates
  (:data:`SCENARIO_PARAMS`). Sizes are log-normal, median $2,000, sigma 1.1, capped at
  $250,000. Sides are 50/50.
- **Cascades.** In the endless stream, cascades start as a Poisson process (3 per hour, the
  first one optionally at a fixed ``first_cascade_s``, so a demo shows one at once; base
  BTC 40 %, ETH 25 %, SOL 13 %, XRP 7 %, DOGE 6 %, SUI 5 %, ADA 4 %). A cascade hits 2-6 venues
  (at least two quoting the same canonical symbol whenever possible): 12-60 liquidations over
  15-90 s, front-loaded in time (Beta(1.3, 2.6)), each venue joining with a lag of up to 3 s,
  sizes log-normal (median $25,000, sigma 1.0), 85-100 % on one side. Price moves against that
  side by 0.3-2.5 % over the cascade and retraces half of it over the following ten minutes.
- **Sampling.** ``binance_usdm`` and ``binance_coinm`` publish at most one liquidation per
  symbol per second (the latest one of each second, as Binance's ``forceOrder`` stream does);
  the model drops the others. Every other venue publishes every liquidation.

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
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import msgspec
import numpy as np

from shared.market import MarketEvent
from shared.models import Liquidation, MarketType, Side

VENUES: tuple[str, ...] = (
    "binance_usdm", "binance_coinm", "bybit", "okx", "bitmex", "deribit", "bitfinex",
    "htx", "gate", "bitget", "kraken_futures", "dydx", "hyperliquid", "lighter",
)
BASES: tuple[str, ...] = ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "SUI")

_ALL = frozenset(BASES)
LISTED: dict[str, frozenset[str]] = {
    **dict.fromkeys(("binance_usdm", "binance_coinm", "bybit", "okx", "bitget", "kraken_futures", "dydx",
                     "hyperliquid", "lighter"), _ALL),
    "deribit": _ALL - {"SUI"}, "bitfinex": _ALL - {"SUI"},
    "bitmex": frozenset({"BTC", "ETH", "SOL"}), "htx": frozenset({"BTC", "ETH", "SOL"}),
    "gate": frozenset({"BTC", "ETH"}),
}
"""The bases each venue's simulator lists (a test holds every ``collectors/sim`` module to it):
liquidations of a base happen only on the venues that list it. BitMEX's other contracts are
quanto and HTX's and Gate's contract sizes for them are not in our sources; no SUI perpetual on
Deribit or Bitfinex could be confirmed."""

VENUE_SHARE: dict[str, float] = {
    "binance_usdm": 0.24, "bybit": 0.17, "okx": 0.11, "bitget": 0.07, "hyperliquid": 0.08,
    "gate": 0.05, "htx": 0.04, "binance_coinm": 0.05, "bitmex": 0.04, "deribit": 0.03,
    "dydx": 0.03, "bitfinex": 0.02, "kraken_futures": 0.02, "lighter": 0.02,
}
"""Rough share of the liquidation flow per venue (used for background rates and cascades)."""

SAMPLED_VENUES = frozenset({"binance_usdm", "binance_coinm"})
"""Venues that publish at most one liquidation per symbol per second."""

QUOTE_OF_VENUE: dict[str, str] = {
    **dict.fromkeys(("binance_usdm", "bybit", "okx", "gate", "bitget", "bitfinex", "htx"), "USDT"),
    **dict.fromkeys(("binance_coinm", "bitmex", "deribit", "kraken_futures", "dydx"), "USD"),
    **dict.fromkeys(("hyperliquid", "lighter"), "USDC"),
}
INVERSE_VENUES = frozenset({"binance_coinm", "bitmex", "deribit", "kraken_futures"})

TICK: dict[str, float] = {
    "BTC": 0.1, "ETH": 0.01, "SOL": 0.001, "XRP": 0.0001, "DOGE": 0.00001, "ADA": 0.0001,
    "SUI": 0.0001,
}
PRICE_RANGE: dict[str, tuple[float, float]] = {
    "BTC": (60_000.0, 100_000.0), "ETH": (2_000.0, 5_000.0), "SOL": (100.0, 250.0),
    "XRP": (0.5, 3.5), "DOGE": (0.08, 0.45), "ADA": (0.3, 1.2), "SUI": (0.8, 5.0),
}
ANNUAL_VOL: dict[str, float] = {
    "BTC": 0.55, "ETH": 0.70, "SOL": 0.90, "XRP": 0.85, "DOGE": 1.0, "ADA": 0.9,
    "SUI": 1.0,
}

ScenarioKind = Literal[
    "quiet", "single_venue_burst", "cross_venue_cascade", "slow_grind", "whale_alone", "feed_dropout"
]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = (
    "quiet", "single_venue_burst", "cross_venue_cascade", "slow_grind", "whale_alone", "feed_dropout"
)

RULE_MIN_COUNT = 5
RULE_MIN_USD = 100_000.0
RULE_WINDOW_MS = 60_000
CHUNK_MS = 60_000
_SECONDS_PER_YEAR = 365.0 * 86_400.0


def canonical_symbol_for(venue: str, base: str) -> str:
    """The canonical symbol a venue's main perpetual on ``base`` normalizes to.

    Linear USDT venues (binance_usdm, bybit, okx, gate, bitget, bitfinex, htx) → ``BTCUSDT``;
    USD-margined or USD-quoted ones (binance_coinm, bitmex, deribit, kraken_futures, dydx) →
    ``BTCUSD``; USDC venues (hyperliquid, lighter) → ``BTCUSDC``.
    """
    return base + QUOTE_OF_VENUE.get(venue, "USDT")


def market_type_for(venue: str) -> MarketType:
    return "inverse_perpetual" if venue in INVERSE_VENUES else "linear_perpetual"


def event_id_of(event: MarketEvent) -> str:
    """A stable digest of the event's fields (the model has no exchange ids)."""
    text = "|".join((event.venue, event.base, event.side, repr(event.price), repr(event.notional_usd),
                     str(event.timestamp_ms)))
    return "sim-" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def to_liquidation(event: MarketEvent) -> Liquidation:
    """A plausible normalized Liquidation for ``event`` (what a correct collector would produce).

    Quantity is in base units (``notional / price``); Binance events carry ``sampled=True``.
    The simulator does its own venue-exact conversion; this one serves the detector evaluation.
    """
    quote = QUOTE_OF_VENUE.get(event.venue, "USDT")
    symbol = event.base + quote
    return Liquidation(
        exchange=event.venue,
        symbol=symbol,
        symbol_native=symbol,
        base=event.base,
        quote=quote,
        market_type=market_type_for(event.venue),
        side=event.side,
        price=event.price,
        quantity=round(event.notional_usd / event.price, 8),
        notional_usd=event.notional_usd,
        timestamp_ms=event.timestamp_ms,
        event_id=event_id_of(event),
        sampled=event.venue in SAMPLED_VENUES,
    )


@dataclass(frozen=True)
class ModelParams:
    """Every rate and size of the model (see the module docstring for what they mean)."""

    quiet_per_min: tuple[tuple[str, float], ...] = (
        ("BTC", 12.0), ("ETH", 9.0), ("SOL", 6.0), ("XRP", 5.0), ("DOGE", 5.0), ("ADA", 4.0),
        ("SUI", 4.0),
    )
    quiet_median_usd: float = 2_000.0
    quiet_sigma: float = 1.1
    quiet_max_usd: float = 250_000.0
    cascades_per_hour: float = 3.0
    first_cascade_s: float | None = None
    cascade_base_weight: tuple[tuple[str, float], ...] = (
        ("BTC", 0.4), ("ETH", 0.25), ("SOL", 0.13), ("XRP", 0.07), ("DOGE", 0.06), ("ADA", 0.04),
        ("SUI", 0.05),
    )
    cascade_events: tuple[int, int] = (12, 60)
    cascade_duration_s: tuple[float, float] = (15.0, 90.0)
    cascade_venues: tuple[int, int] = (2, 6)
    cascade_median_usd: float = 25_000.0
    cascade_sigma: float = 1.0
    cascade_max_usd: float = 5_000_000.0
    cascade_purity: tuple[float, float] = (0.85, 1.0)
    cascade_impact: tuple[float, float] = (0.003, 0.025)
    venue_lag_ms: int = 3_000
    whale_usd: tuple[float, float] = (1_500_000.0, 8_000_000.0)
    burst_events: tuple[int, int] = (6, 14)
    burst_duration_s: tuple[float, float] = (8.0, 40.0)
    burst_median_usd: float = 30_000.0
    grind_gap_s: tuple[float, float] = (16.0, 28.0)
    grind_duration_s: tuple[float, float] = (240.0, 480.0)
    grind_median_usd: float = 40_000.0


DEFAULT_PARAMS = ModelParams()
SCENARIO_PARAMS = replace(
    DEFAULT_PARAMS, quiet_per_min=tuple((base, rate / 6) for base, rate in DEFAULT_PARAMS.quiet_per_min),
)
"""The scenarios' calmer background (a sixth of the endless market's rates), so that a scenario
scores its one situation. At the endless market's rates the background alone meets the rule now
and then (the detector flags about 1.2 such windows an hour, most on ``BTCUSDT``): cascades by
the original definition, but no label's (labels count only a simulated cascade's liquidations),
so they would count as false alarms (precision 0.54 on that background; see BENCHMARKS.md)."""


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


@dataclass(order=True)
class _Raw:
    """A liquidation before pricing and sampling; ordered by (time, generation order)."""

    ts: int
    seq: int
    venue: str = field(compare=False)
    base: str = field(compare=False)
    side: Side = field(compare=False)
    notional: float = field(compare=False)
    cascade: str = field(compare=False, default="")


@dataclass
class _Impact:
    base: str
    start_ms: int
    duration_ms: int
    size: float
    """Signed relative move at the end of the cascade (negative: price falls)."""

    def factor(self, ts: int) -> float:
        if ts <= self.start_ms:
            return 1.0
        elapsed = ts - self.start_ms
        if elapsed <= self.duration_ms:
            return 1.0 + self.size * elapsed / self.duration_ms
        retrace = 0.5 * (1.0 - math.exp(-(elapsed - self.duration_ms) / 600_000.0))
        return 1.0 + self.size * (1.0 - retrace)


@dataclass
class _Truth:
    """True (pre-sampling) facts of one market cascade, per canonical symbol."""

    cascade_id: str
    events: dict[str, list[_Raw]] = field(default_factory=dict)


def rule_holds(times: Sequence[int], notionals: Sequence[float]) -> bool:
    """The original rule on time-ordered events: >= 5 and >= $100K within some 60 s window."""
    lo = 0
    total = 0.0
    for hi, ts in enumerate(times):
        total += notionals[hi]
        while times[lo] <= ts - RULE_WINDOW_MS:
            total -= notionals[lo]
            lo += 1
        if hi - lo + 1 >= RULE_MIN_COUNT and total >= RULE_MIN_USD - 1e-6:
            return True
    return False


class _Market:
    """The generator behind both the endless stream and the scenarios."""

    def __init__(self, seed: int, venues: Sequence[str], bases: Sequence[str], start_ms: int,
                 params: ModelParams, *, scheduled_cascades: bool) -> None:
        unknown = [v for v in venues if v not in VENUE_SHARE]
        if unknown:
            raise ValueError(f"unknown venue(s) {unknown}; choose from {', '.join(VENUES)}")
        if not venues or not bases:
            raise ValueError("at least one venue and one base are needed")
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.venues = tuple(venues)
        self.bases = tuple(bases)
        self.params = params
        self.start_ms = start_ms
        self.scheduled = scheduled_cascades
        self.tag = ""
        self.traded = tuple(b for b in self.bases if self.listing(b))
        if not self.traded:
            raise ValueError(f"none of the venues {list(venues)} lists any of {list(bases)}")
        self.basis = {v: float(self.rng.uniform(-2e-4, 2e-4)) for v in self.venues}
        self.logp: dict[str, float] = {}
        self.mu: dict[str, float] = {}
        for b in self.bases:
            lo, hi = PRICE_RANGE.get(b, (10.0, 20.0))
            p0 = float(self.rng.uniform(lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo)))
            self.logp[b] = self.mu[b] = math.log(p0)
        self.impacts: list[_Impact] = []
        self.pending: list[_Raw] = []
        self.truths: list[_Truth] = []
        self.suppressed: list[tuple[str, int, int]] = []  # (symbol, lo, hi): no background there
        self.exempt: set[int] = set()  # seqs of the situation's own events (never suppressed)
        self.dark: list[tuple[str, int, int]] = []  # (venue, lo, hi)
        self.seq = 0
        self.n_cascades = 0
        self.true_count = 0
        rate_h = params.cascades_per_hour
        self.next_cascade_ms: int | None = None
        if scheduled_cascades and rate_h > 0:
            first = params.first_cascade_s
            delay_ms = int(first * 1000) if first is not None else self._exp_ms(rate_h)
            self.next_cascade_ms = start_ms + delay_ms

    # -- helpers ------------------------------------------------------------------------------

    def _exp_ms(self, per_hour: float) -> int:
        return int(self.rng.exponential(3_600_000.0 / per_hour))

    def listing(self, base: str) -> list[str]:
        """The simulated venues that list ``base`` (see :data:`LISTED`)."""
        return [v for v in self.venues if base in LISTED.get(v, ())]

    def cascade_base(self) -> str:
        """A base for a cascade or a situation, by ``cascade_base_weight``, among those listed."""
        weights = dict(self.params.cascade_base_weight)
        w = np.array([weights.get(b, 0.1) for b in self.traded])
        return self.traded[int(self.rng.choice(len(self.traded), p=w / w.sum()))]

    def _raw(self, ts: int, venue: str, base: str, side: Side, notional: float, cascade: str = "") -> _Raw:
        self.seq += 1
        return _Raw(int(ts), self.seq, venue, base, side, round(float(notional), 2), cascade)

    def _sizes(self, n: int, median: float, sigma: float, cap: float, floor: float = 50.0) -> np.ndarray:
        return np.clip(self.rng.lognormal(math.log(median), sigma, n), floor, cap)

    def add(self, raws: list[_Raw]) -> None:
        for r in raws:
            heapq.heappush(self.pending, r)

    def new_cascade_id(self) -> str:
        self.n_cascades += 1
        return f"c{self.seed}-{self.n_cascades}"

    # -- cascades -----------------------------------------------------------------------------

    def pick_cascade_venues(self, k: int, family: str | None, base: str) -> list[str]:
        """``k`` distinct venues listing ``base`` by flow share (fewer when fewer list it); at least
        two of ``family``'s quote when it has two."""
        listing = self.listing(base)
        in_family = [v for v in listing if family is None or QUOTE_OF_VENUE[v] == family]
        chosen: list[str] = []
        if family is not None and len(in_family) >= 2:
            p = np.array([VENUE_SHARE[v] for v in in_family])
            n_family = min(len(in_family), max(2, k - int(self.rng.integers(0, 2))))
            idx = self.rng.choice(len(in_family), size=n_family, replace=False, p=p / p.sum())
            chosen = [in_family[int(i)] for i in idx]
        rest = [v for v in listing if v not in chosen]
        extra = min(len(rest), max(0, k - len(chosen)))
        if extra:
            p = np.array([VENUE_SHARE[v] for v in rest])
            idx = self.rng.choice(len(rest), size=extra, replace=False, p=p / p.sum())
            chosen += [rest[int(i)] for i in idx]
        return chosen

    def cascade(self, start_ms: int, base: str, venues: list[str], n: int, duration_s: float,
                cid: str) -> list[_Raw]:
        """The raw liquidations of one market cascade (unlabelled until :meth:`label`)."""
        p = self.params
        share = np.array([VENUE_SHARE[v] for v in venues])
        counts = self.rng.multinomial(n, share / share.sum())
        side: Side = "long" if self.rng.random() < 0.6 else "short"
        other: Side = "short" if side == "long" else "long"
        purity = float(self.rng.uniform(*p.cascade_purity))
        duration_ms = int(duration_s * 1000)
        raws: list[_Raw] = []
        for venue, c in zip(venues, counts, strict=True):
            lag = int(self.rng.integers(0, p.venue_lag_ms + 1))
            offsets = np.sort(self.rng.beta(1.3, 2.6, int(c))) * duration_ms
            sizes = self._sizes(int(c), p.cascade_median_usd, p.cascade_sigma, p.cascade_max_usd, 200.0)
            flips = self.rng.random(int(c)) > purity
            for off, usd, flip in zip(offsets, sizes, flips, strict=True):
                raws.append(self._raw(start_ms + lag + int(off), venue, base, other if flip else side,
                                      float(usd), cid))
        impact = float(self.rng.uniform(*p.cascade_impact)) * (-1.0 if side == "long" else 1.0)
        self.impacts.append(_Impact(base, start_ms, duration_ms + p.venue_lag_ms, impact))
        return sorted(raws)

    def label(self, cid: str, raws: list[_Raw]) -> list[_Raw]:
        """Tag the groups (per canonical symbol) that meet the rule; record them as truth."""
        groups: dict[str, list[_Raw]] = {}
        for r in sorted(raws):
            groups.setdefault(canonical_symbol_for(r.venue, r.base), []).append(r)
        truth = _Truth(cid)
        out: list[_Raw] = []
        for symbol, group in groups.items():
            if rule_holds([r.ts for r in group], [r.notional for r in group]):
                label_id = f"{cid}/{symbol}"
                group = [replace(r, cascade=label_id) for r in group]
                truth.events[symbol] = group
            else:
                group = [replace(r, cascade="") for r in group]
            out += group
        if truth.events:
            self.truths.append(truth)
        return out

    def scheduled_cascade(self, start_ms: int) -> list[_Raw]:
        p = self.params
        base = self.cascade_base()
        k = int(self.rng.integers(p.cascade_venues[0], p.cascade_venues[1] + 1))
        venues = self.pick_cascade_venues(k, self.main_family(), base)
        n = int(self.rng.integers(p.cascade_events[0], p.cascade_events[1] + 1))
        duration = float(self.rng.uniform(*p.cascade_duration_s))
        cid = self.new_cascade_id()
        return self.label(cid, self.cascade(start_ms, base, venues, n, duration, cid))

    def main_family(self) -> str | None:
        """The quote family with the most flow among at least two venues (USDT when present)."""
        best: tuple[float, str] | None = None
        for quote in ("USDT", "USD", "USDC"):
            members = [v for v in self.venues if QUOTE_OF_VENUE[v] == quote]
            if len(members) >= 2:
                flow = sum(VENUE_SHARE[v] for v in members)
                if best is None or flow > best[0]:
                    best = (flow, quote)
        return best[1] if best else None

    # -- time ---------------------------------------------------------------------------------

    def _price_grid(self, base: str, n: int) -> np.ndarray:
        """Log prices at 1 s steps for the next ``n`` seconds (OU walk), advancing the state."""
        kappa = 1.0 / (2 * 86_400.0)
        sigma = ANNUAL_VOL.get(base, 0.8) / math.sqrt(_SECONDS_PER_YEAR)
        shocks = self.rng.normal(0.0, sigma, n)
        grid = np.empty(n + 1)
        x = self.logp[base]
        mu = self.mu[base]
        grid[0] = x
        for i in range(n):
            x = x + kappa * (mu - x) + shocks[i]
            grid[i + 1] = x
        self.logp[base] = x
        return grid

    def _fold_impacts(self, now_ms: int) -> None:
        """Move impacts older than an hour into the price state (their retrace is over)."""
        keep: list[_Impact] = []
        for imp in self.impacts:
            if now_ms - imp.start_ms > 3_600_000:
                if imp.base in self.logp:
                    self.logp[imp.base] += math.log(imp.factor(now_ms))
            else:
                keep.append(imp)
        self.impacts = keep

    def _background(self, lo: int, hi: int) -> list[_Raw]:
        p = self.params
        rates = dict(p.quiet_per_min)
        raws: list[_Raw] = []
        for base in self.bases:
            listing = self.listing(base)
            if not listing:
                continue
            share = np.array([VENUE_SHARE[v] for v in listing])
            flow = float(share.sum()) / sum(VENUE_SHARE.values())
            lam = rates.get(base, 0.5) / 60_000.0 * flow * (hi - lo)
            n = int(self.rng.poisson(lam))
            if n == 0:
                continue
            times = np.sort(self.rng.integers(lo, hi, n))
            venues = self.rng.choice(len(listing), size=n, p=share / share.sum())
            sizes = self._sizes(n, p.quiet_median_usd, p.quiet_sigma, p.quiet_max_usd)
            sides = self.rng.random(n) < 0.5
            for ts, vi, usd, is_long in zip(times, venues, sizes, sides, strict=True):
                raws.append(self._raw(int(ts), listing[int(vi)], base, "long" if is_long else "short",
                                      float(usd)))
        return raws

    def _price(self, grids: dict[str, np.ndarray], chunk_lo: int, raw: _Raw) -> float:
        grid = grids[raw.base]
        i = min(len(grid) - 1, max(0, (raw.ts - chunk_lo) // 1000))
        price = math.exp(float(grid[i]))
        for imp in self.impacts:
            if imp.base == raw.base:
                price *= imp.factor(raw.ts)
        lo, hi = PRICE_RANGE.get(raw.base, (0.0, math.inf))
        price = min(max(price, lo * 0.9), hi * 1.1)
        noise = float(self.rng.uniform(-1e-4, 1e-4))
        slip = -5e-5 if raw.side == "long" else 5e-5
        price *= 1.0 + self.basis[raw.venue] + noise + slip
        tick = TICK.get(raw.base, 0.0001)
        decimals = max(0, -int(math.floor(math.log10(tick) + 1e-9)))
        return round(round(price / tick) * tick, decimals)

    def _happened(self, r: _Raw) -> bool:
        """False for background the scenario rules out (around a grind or a lone whale)."""
        if r.seq in self.exempt:
            return True
        symbol = canonical_symbol_for(r.venue, r.base)
        return not any(sym == symbol and lo <= r.ts <= hi for sym, lo, hi in self.suppressed)

    def _received(self, r: _Raw) -> bool:
        """False while the event's venue is dark (it happened, but nobody heard of it)."""
        return not any(v == r.venue and lo <= r.ts <= hi for v, lo, hi in self.dark)

    def chunks(self, until_ms: int | None) -> Iterator[list[MarketEvent]]:
        """Published events, one list per minute of market time, forever or until ``until_ms``."""
        lo = self.start_ms
        hi = (self.start_ms // 1000) * 1000 + CHUNK_MS  # chunk edges on whole seconds
        while until_ms is None or lo < until_ms:
            while self.next_cascade_ms is not None and self.next_cascade_ms < hi:
                self.add(self.scheduled_cascade(self.next_cascade_ms))
                self.next_cascade_ms += self._exp_ms(self.params.cascades_per_hour)
            self.add(self._background(lo, hi))
            grids = {b: self._price_grid(b, (hi - lo) // 1000 + 1) for b in self.bases}
            due: list[_Raw] = []
            while self.pending and self.pending[0].ts < hi:
                due.append(heapq.heappop(self.pending))
            due = [r for r in due if self._happened(r)]
            self.true_count += len(due)
            due = [r for r in due if self._received(r)]
            events = [self._event(r, grids, lo) for r in _sample(due)]
            if until_ms is not None:
                events = [e for e in events if e.timestamp_ms < until_ms]
            yield events
            self._fold_impacts(hi)
            lo, hi = hi, hi + CHUNK_MS

    def _event(self, r: _Raw, grids: dict[str, np.ndarray], chunk_lo: int) -> MarketEvent:
        return MarketEvent(venue=r.venue, base=r.base, side=r.side, price=self._price(grids, chunk_lo, r),
                           notional_usd=r.notional, timestamp_ms=r.ts, cascade_id=r.cascade,
                           scenario=self.tag)


def _sample(raws: list[_Raw]) -> list[_Raw]:
    """Binance's rule: of each (venue, base, second), only the latest liquidation is published."""
    last: dict[tuple[str, str, int], _Raw] = {}
    for r in raws:
        if r.venue in SAMPLED_VENUES:
            last[(r.venue, r.base, r.ts // 1000)] = r
    return [r for r in raws if r.venue not in SAMPLED_VENUES or last[(r.venue, r.base, r.ts // 1000)] is r]


def _labels(truths: list[_Truth], events: list[MarketEvent]) -> list[CascadeLabel]:
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


class MarketModel:
    """The endless market: quiet background with scheduled cross-venue cascades.

    ``events(until_ms)`` yields published MarketEvents in time order from ``start_ms`` (forever
    when ``until_ms`` is None); each call starts afresh, so two calls give the same events.
    """

    def __init__(self, seed: int, venues: Sequence[str] = VENUES, bases: Sequence[str] = BASES,
                 start_ms: int = 1_700_000_000_000, params: ModelParams = DEFAULT_PARAMS) -> None:
        self.seed = seed
        self.venues = tuple(venues)
        self.bases = tuple(bases)
        self.start_ms = start_ms
        self.params = params
        self._market()  # an unknown venue, or venues listing none of the bases: refused now

    def _market(self) -> _Market:
        return _Market(self.seed, self.venues, self.bases, self.start_ms, self.params,
                       scheduled_cascades=True)

    def events(self, until_ms: int | None = None) -> Iterator[MarketEvent]:
        for chunk in self._market().chunks(until_ms):
            yield from chunk

    def stream(self) -> Iterator[MarketEvent]:
        """Published events forever (``events(None)``)."""
        return self.events(None)

    def labelled(self, until_ms: int) -> Scenario:
        """Events up to ``until_ms`` with their cascade labels, as a Scenario of kind ``stream``."""
        market = self._market()
        events = [e for chunk in market.chunks(until_ms) for e in chunk]
        truths = [t for t in market.truths if min(r.ts for g in t.events.values() for r in g) < until_ms]
        return Scenario("stream", self.seed, self.start_ms, until_ms - self.start_ms, events,
                        _labels(truths, events), market.true_count)


SCENARIO_MINUTES: dict[str, int] = {**dict.fromkeys(SCENARIO_KINDS, 10), "quiet": 60}


def scenario(kind: str, seed: int, start_ms: int = 1_700_000_000_000, venues: Sequence[str] = VENUES,
             bases: Sequence[str] = BASES, params: ModelParams = SCENARIO_PARAMS) -> Scenario:
    """One labelled scenario of ``kind`` (see the table in the module docstring)."""
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; choose one of {', '.join(SCENARIO_KINDS)}")
    market = _Market(seed, venues, bases, start_ms, params, scheduled_cascades=False)
    market.tag = kind
    duration_ms = SCENARIO_MINUTES[kind] * 60_000
    at = start_ms + int(market.rng.uniform(120_000, 300_000))
    if kind != "quiet":
        _SITUATIONS[kind](market, at)
    events = [e for chunk in market.chunks(start_ms + duration_ms) for e in chunk]
    return Scenario(kind, seed, start_ms, duration_ms, events, _labels(market.truths, events),
                    market.true_count)


def _base(market: _Market) -> str:
    return market.cascade_base()


def _single_venue_burst(market: _Market, at: int) -> None:
    p = market.params
    for _ in range(100):
        base = _base(market)
        listing = market.listing(base)
        venue = listing[int(market.rng.integers(0, len(listing)))]
        n = int(market.rng.integers(p.burst_events[0], p.burst_events[1] + 1))
        duration_ms = int(market.rng.uniform(*p.burst_duration_s) * 1000)
        offsets = np.sort(market.rng.integers(0, duration_ms + 1, n))
        sizes = market._sizes(n, p.burst_median_usd, 0.8, p.cascade_max_usd, 1_000.0)
        side: Side = "long" if market.rng.random() < 0.6 else "short"
        cid = market.new_cascade_id()
        raws = [market._raw(at + int(o), venue, base, side, float(s), cid) for o, s in zip(offsets, sizes,
                                                                                          strict=True)]
        if rule_holds([r.ts for r in raws], [r.notional for r in raws]):
            market.impacts.append(_Impact(base, at, duration_ms, -0.004 if side == "long" else 0.004))
            market.add(market.label(cid, raws))
            return
    raise RuntimeError("could not draw a single-venue burst that meets the rule")


def _cross_venue(market: _Market, at: int, min_venues: int) -> _Truth:
    p = market.params
    family = market.main_family()
    for _ in range(100):
        base = _base(market)
        k = int(market.rng.integers(max(p.cascade_venues[0], min_venues), p.cascade_venues[1] + 1))
        venues = market.pick_cascade_venues(k, family, base)
        n = int(market.rng.integers(p.cascade_events[0], p.cascade_events[1] + 1))
        duration = float(market.rng.uniform(*p.cascade_duration_s))
        cid = market.new_cascade_id()
        impacts = len(market.impacts)
        truths = len(market.truths)
        raws = market.label(cid, market.cascade(at, base, venues, n, duration, cid))
        truth = market.truths[-1] if len(market.truths) > truths else None
        if truth and any(len({r.venue for r in g}) >= min_venues for g in truth.events.values()):
            market.add(raws)
            return truth
        del market.impacts[impacts:]
        del market.truths[truths:]
    raise RuntimeError("could not draw a cross-venue cascade with enough venues")


def _cross_venue_cascade(market: _Market, at: int) -> None:
    _cross_venue(market, at, min(2, len(market.venues)))


def _feed_dropout(market: _Market, at: int) -> None:
    truth = _cross_venue(market, at, min(3, len(market.venues)))
    group = max(truth.events.values(), key=len)
    by_venue: dict[str, int] = {}
    for r in group:
        by_venue[r.venue] = by_venue.get(r.venue, 0) + 1
    venue = max(sorted(by_venue), key=lambda v: (v not in SAMPLED_VENUES, by_venue[v]))
    span = group[-1].ts - group[0].ts
    dark_from = group[0].ts + int(span * market.rng.uniform(0.3, 0.6))
    market.dark.append((venue, dark_from, dark_from + 120_000))


def _slow_grind(market: _Market, at: int) -> None:
    p = market.params
    family = market.main_family()
    base = _base(market)
    listing = market.listing(base)
    pool = [v for v in listing if family is None or QUOTE_OF_VENUE[v] == family] or listing
    k = min(len(pool), int(market.rng.integers(1, 3)))
    venues = [pool[int(i)] for i in market.rng.choice(len(pool), size=k, replace=False)]
    side: Side = "long" if market.rng.random() < 0.5 else "short"
    end = at + int(market.rng.uniform(*p.grind_duration_s) * 1000)
    raws: list[_Raw] = []
    ts = at
    while ts < end:
        venue = venues[int(market.rng.integers(0, len(venues)))]
        usd = float(market._sizes(1, p.grind_median_usd, 0.7, 1_000_000.0, 1_000.0)[0])
        raws.append(market._raw(ts, venue, base, side, usd))
        ts += int(market.rng.uniform(*p.grind_gap_s) * 1000)
    symbol = canonical_symbol_for(venues[0], base)
    market.suppressed.append((symbol, raws[0].ts - RULE_WINDOW_MS, raws[-1].ts + RULE_WINDOW_MS))
    market.exempt.update(r.seq for r in raws)
    market.impacts.append(_Impact(base, at, end - at, -0.006 if side == "long" else 0.006))
    market.add(raws)


def _whale_alone(market: _Market, at: int) -> None:
    p = market.params
    base = _base(market)
    listing = market.listing(base)
    share = np.array([VENUE_SHARE[v] for v in listing])
    venue = listing[int(market.rng.choice(len(listing), p=share / share.sum()))]
    usd = float(market.rng.uniform(*p.whale_usd))
    side: Side = "long" if market.rng.random() < 0.5 else "short"
    whale = market._raw(at, venue, base, side, usd)
    symbol = canonical_symbol_for(venue, base)
    market.suppressed.append((symbol, at - RULE_WINDOW_MS, at + RULE_WINDOW_MS))
    market.exempt.add(whale.seq)
    market.add([whale])


_SITUATIONS = {
    "single_venue_burst": _single_venue_burst,
    "cross_venue_cascade": _cross_venue_cascade,
    "slow_grind": _slow_grind,
    "whale_alone": _whale_alone,
    "feed_dropout": _feed_dropout,
}


def last_liquidations(n: int, seed: int, end_ms: int) -> list[Liquidation]:
    """The first ``n`` published liquidations of the endless market (all 14 venues), shifted in
    time so that the last one happens at ``end_ms``: a realistic load for benchmarks (about 38
    hours of the seven-base market for 100,000 events; 11 days on the three-base one)."""
    events = list(itertools.islice(MarketModel(seed, start_ms=0).stream(), n))
    shift = end_ms - (events[-1].timestamp_ms if events else 0)
    return [to_liquidation(msgspec.structs.replace(e, timestamp_ms=e.timestamp_ms + shift)) for e in events]
