"""The simulated market: a seeded model of quiet periods and cross-venue liquidation cascades.

Pure and deterministic: the same ``seed``, venues, bases and ``start_ms`` give the same events,
byte for byte. No I/O, no wall clock; randomness comes only from ``numpy.random.Generator``
seeded with ``seed``. Used by the exchange simulator (``liq simulate`` renders each event in its
venue's wire format) and, through the labelled scenarios staged on :class:`Market`
(``shared/scenarios.py``), by the detector evaluation (``liq evaluate``).

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
  fewer): about 41 published a minute with all 14 venues (the scenarios use a sixth of these
  rates). Sizes are log-normal, median $2,000, sigma 1.1, capped at $250,000. Sides are 50/50.
- **Cascades.** In the endless stream, cascades start as a Poisson process (3 per hour, the
  first one optionally at a fixed ``first_cascade_s``, so a demo shows one at once; base
  BTC 40 %, ETH 25 %, SOL 13 %, XRP 7 %, DOGE 6 %, SUI 5 %, ADA 4 %). A cascade hits 2-6 venues
  (at least two quoting the same canonical symbol whenever possible): 12-60 liquidations over
  15-90 s, front-loaded in time (Beta(1.3, 2.6)), each venue joining with a lag of up to 3 s,
  sizes log-normal (median $25,000, sigma 1.0), 85-100 % on one side. Price moves against that
  side by 0.3-2.5 % over the cascade and retraces half of it over the following ten minutes.
  Its liquidations on each canonical symbol where they meet the original cascade rule
  (:func:`rule_holds`) carry the ``cascade_id`` ``"<market cascade>/<symbol>"`` and are recorded
  as a :class:`Truth` (the ground truth of the scenarios' labels).
- **Sampling.** ``binance_usdm`` and ``binance_coinm`` publish at most one liquidation per
  symbol per second (the latest one of each second, as Binance's ``forceOrder`` stream does);
  the model drops the others. Every other venue publishes every liquidation.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

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
QUOTE_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("htx", "SOL"): "USD",  # HTX's SOL is the coin-margined SOL-USD swap
    **{("deribit", base): "USDC" for base in BASES if base not in ("BTC", "ETH")},  # <BASE>_USDC-PERPETUAL
}
"""(venue, base) pairs whose simulated contract is quoted otherwise than the venue's main one."""
INVERSE_CONTRACTS = frozenset({
    *(("binance_coinm", base) for base in BASES), ("bitmex", "BTC"), ("deribit", "BTC"), ("deribit", "ETH"),
    ("htx", "SOL"),
})
"""(venue, base) pairs whose simulated contract is inverse (Kraken's ``PF_`` and BitMEX's quanto
contracts are not)."""

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

RULE_MIN_COUNT = 5
RULE_MIN_USD = 100_000.0
RULE_WINDOW_MS = 60_000
CHUNK_MS = 60_000
_SECONDS_PER_YEAR = 365.0 * 86_400.0


def quote_of(venue: str, base: str) -> str:
    """The quote of the contract on ``base`` that a venue's simulator renders.

    Linear USDT venues (binance_usdm, bybit, okx, gate, bitget, bitfinex, htx) → ``USDT``;
    USD-margined or USD-quoted ones (binance_coinm, bitmex, deribit, kraken_futures, dydx) →
    ``USD``; USDC venues (hyperliquid, lighter) → ``USDC``; except :data:`QUOTE_EXCEPTIONS`
    (Deribit's USDC perpetuals, HTX's SOL-USD).
    """
    return QUOTE_EXCEPTIONS.get((venue, base), QUOTE_OF_VENUE.get(venue, "USDT"))


def canonical_symbol_for(venue: str, base: str) -> str:
    """The canonical symbol that venue's contract on ``base`` normalizes to (``BTCUSDT``, …)."""
    return base + quote_of(venue, base)


def market_type_for(venue: str, base: str) -> MarketType:
    return "inverse_perpetual" if (venue, base) in INVERSE_CONTRACTS else "linear_perpetual"


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
    quote = quote_of(event.venue, event.base)
    symbol = event.base + quote
    return Liquidation(
        exchange=event.venue,
        symbol=symbol,
        symbol_native=symbol,
        base=event.base,
        quote=quote,
        market_type=market_type_for(event.venue, event.base),
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
@dataclass(order=True)
class Raw:
    """A liquidation before pricing and sampling; ordered by (time, generation order).

    ``cascade`` is the ``cascade_id`` it will be published with (empty outside labelled cascades).
    """

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
class Truth:
    """True (pre-sampling) facts of one market cascade: its liquidations on each canonical symbol
    where they meet the rule (time order)."""

    cascade_id: str
    events: dict[str, list[Raw]] = field(default_factory=dict)


class Mark(NamedTuple):
    """How many price impacts and truths a :class:`Market` had recorded (see :meth:`Market.mark`)."""

    impacts: int
    truths: int


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


class Market:
    """The generator behind both the endless stream (:class:`MarketModel`) and the scenarios.

    :meth:`chunks` publishes what has been added to it, minute by minute, with background and (when
    ``scheduled_cascades``) the endless stream's cascades drawn as it goes; every published event
    carries ``tag`` as its ``scenario``. A scenario (``shared/scenarios.py``) stages its situation
    before the first chunk through the public interface: ``rng``, ``params``, ``venues``, the
    truths recorded so far (``truths``, labelled cascades), ``true_count`` (liquidations that
    happened by the last chunk, published or not) and the methods without a leading underscore.
    The other attributes are the generator's own state.
    """

    def __init__(self, seed: int, venues: Sequence[str], bases: Sequence[str], start_ms: int,
                 params: ModelParams, *, scheduled_cascades: bool, tag: str = "") -> None:
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
        self.tag = tag
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
        self._impacts: list[_Impact] = []
        self.pending: list[Raw] = []
        self.truths: list[Truth] = []
        self._suppressed: list[tuple[str, int, int]] = []  # (symbol, lo, hi): no background there
        self._exempt: set[int] = set()  # seqs of the situation's own events (never suppressed)
        self._dark: list[tuple[str, int, int]] = []  # (venue, lo, hi)
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

    def raw(self, ts: int, venue: str, base: str, side: Side, notional: float, cascade: str = "") -> Raw:
        """A new liquidation (notional rounded to the cent), next in generation order; not yet added."""
        self.seq += 1
        return Raw(int(ts), self.seq, venue, base, side, round(float(notional), 2), cascade)

    def sizes(self, n: int, median: float, sigma: float, cap: float, floor: float = 50.0) -> np.ndarray:
        """``n`` log-normal notionals around ``median``, clipped to [``floor``, ``cap``]."""
        return np.clip(self.rng.lognormal(math.log(median), sigma, n), floor, cap)

    def add(self, raws: list[Raw]) -> None:
        """Schedule ``raws`` for publication (each in the chunk of its time)."""
        for r in raws:
            heapq.heappush(self.pending, r)

    def new_cascade_id(self) -> str:
        self.n_cascades += 1
        return f"c{self.seed}-{self.n_cascades}"

    def move_price(self, base: str, start_ms: int, duration_ms: int, size: float) -> None:
        """Move ``base``'s price by ``size`` (relative, signed) over ``duration_ms`` from ``start_ms``;
        half of it retraces over the following ten minutes."""
        self._impacts.append(_Impact(base, start_ms, duration_ms, size))

    def suppress(self, symbol: str, lo_ms: int, hi_ms: int, keep: Iterable[Raw]) -> None:
        """Rule out the background on ``symbol`` within [``lo_ms``, ``hi_ms``]: only ``keep`` (the
        situation's own liquidations, and whatever else is exempt) happens there."""
        self._suppressed.append((symbol, lo_ms, hi_ms))
        self._exempt.update(r.seq for r in keep)

    def go_dark(self, venue: str, lo_ms: int, hi_ms: int) -> None:
        """Drop what ``venue`` publishes within [``lo_ms``, ``hi_ms``]: it happens, unheard."""
        self._dark.append((venue, lo_ms, hi_ms))

    def mark(self) -> Mark:
        """The price impacts and truths recorded so far, for :meth:`rollback`."""
        return Mark(len(self._impacts), len(self.truths))

    def rollback(self, mark: Mark) -> None:
        """Forget the price impacts and truths recorded since ``mark`` (a cascade drawn, not kept)."""
        del self._impacts[mark.impacts:]
        del self.truths[mark.truths:]

    # -- cascades -----------------------------------------------------------------------------

    def pick_cascade_venues(self, k: int, family: str | None, base: str) -> list[str]:
        """``k`` distinct venues listing ``base`` by flow share (fewer when fewer list it); at least
        two of ``family``'s quote when it has two."""
        listing = self.listing(base)
        in_family = [v for v in listing if family is None or quote_of(v, base) == family]
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
                cid: str) -> list[Raw]:
        """The raw liquidations of one market cascade (unlabelled until :meth:`label`)."""
        p = self.params
        share = np.array([VENUE_SHARE[v] for v in venues])
        counts = self.rng.multinomial(n, share / share.sum())
        side: Side = "long" if self.rng.random() < 0.6 else "short"
        other: Side = "short" if side == "long" else "long"
        purity = float(self.rng.uniform(*p.cascade_purity))
        duration_ms = int(duration_s * 1000)
        raws: list[Raw] = []
        for venue, c in zip(venues, counts, strict=True):
            lag = int(self.rng.integers(0, p.venue_lag_ms + 1))
            offsets = np.sort(self.rng.beta(1.3, 2.6, int(c))) * duration_ms
            sizes = self.sizes(int(c), p.cascade_median_usd, p.cascade_sigma, p.cascade_max_usd, 200.0)
            flips = self.rng.random(int(c)) > purity
            for off, usd, flip in zip(offsets, sizes, flips, strict=True):
                raws.append(self.raw(start_ms + lag + int(off), venue, base, other if flip else side,
                                      float(usd), cid))
        impact = float(self.rng.uniform(*p.cascade_impact)) * (-1.0 if side == "long" else 1.0)
        self.move_price(base, start_ms, duration_ms + p.venue_lag_ms, impact)
        return sorted(raws)

    def label(self, cid: str, raws: list[Raw]) -> list[Raw]:
        """Tag the groups (per canonical symbol) that meet the rule; record them as truth."""
        groups: dict[str, list[Raw]] = {}
        for r in sorted(raws):
            groups.setdefault(canonical_symbol_for(r.venue, r.base), []).append(r)
        truth = Truth(cid)
        out: list[Raw] = []
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

    def scheduled_cascade(self, start_ms: int) -> list[Raw]:
        p = self.params
        base = self.cascade_base()
        k = int(self.rng.integers(p.cascade_venues[0], p.cascade_venues[1] + 1))
        venues = self.pick_cascade_venues(k, self.main_family(base), base)
        n = int(self.rng.integers(p.cascade_events[0], p.cascade_events[1] + 1))
        duration = float(self.rng.uniform(*p.cascade_duration_s))
        cid = self.new_cascade_id()
        return self.label(cid, self.cascade(start_ms, base, venues, n, duration, cid))

    def main_family(self, base: str) -> str | None:
        """The quote with the most flow among at least two venues listing ``base`` (USDT when
        present); None when no quote has two."""
        best: tuple[float, str] | None = None
        for quote in ("USDT", "USD", "USDC"):
            members = [v for v in self.listing(base) if quote_of(v, base) == quote]
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
        for imp in self._impacts:
            if now_ms - imp.start_ms > 3_600_000:
                if imp.base in self.logp:
                    self.logp[imp.base] += math.log(imp.factor(now_ms))
            else:
                keep.append(imp)
        self._impacts = keep

    def _background(self, lo: int, hi: int) -> list[Raw]:
        p = self.params
        rates = dict(p.quiet_per_min)
        raws: list[Raw] = []
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
            sizes = self.sizes(n, p.quiet_median_usd, p.quiet_sigma, p.quiet_max_usd)
            sides = self.rng.random(n) < 0.5
            for ts, vi, usd, is_long in zip(times, venues, sizes, sides, strict=True):
                raws.append(self.raw(int(ts), listing[int(vi)], base, "long" if is_long else "short",
                                      float(usd)))
        return raws

    def _price(self, grids: dict[str, np.ndarray], chunk_lo: int, raw: Raw) -> float:
        grid = grids[raw.base]
        i = min(len(grid) - 1, max(0, (raw.ts - chunk_lo) // 1000))
        price = math.exp(float(grid[i]))
        for imp in self._impacts:
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

    def _happened(self, r: Raw) -> bool:
        """False for background ruled out by :meth:`suppress` (around a grind or a lone whale)."""
        if r.seq in self._exempt:
            return True
        symbol = canonical_symbol_for(r.venue, r.base)
        return not any(sym == symbol and lo <= r.ts <= hi for sym, lo, hi in self._suppressed)

    def _received(self, r: Raw) -> bool:
        """False while the event's venue is dark (it happened, but nobody heard of it)."""
        return not any(v == r.venue and lo <= r.ts <= hi for v, lo, hi in self._dark)

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
            due: list[Raw] = []
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

    def _event(self, r: Raw, grids: dict[str, np.ndarray], chunk_lo: int) -> MarketEvent:
        return MarketEvent(venue=r.venue, base=r.base, side=r.side, price=self._price(grids, chunk_lo, r),
                           notional_usd=r.notional, timestamp_ms=r.ts, cascade_id=r.cascade,
                           scenario=self.tag)


def _sample(raws: list[Raw]) -> list[Raw]:
    """Binance's rule: of each (venue, base, second), only the latest liquidation is published."""
    last: dict[tuple[str, str, int], Raw] = {}
    for r in raws:
        if r.venue in SAMPLED_VENUES:
            last[(r.venue, r.base, r.ts // 1000)] = r
    return [r for r in raws if r.venue not in SAMPLED_VENUES or last[(r.venue, r.base, r.ts // 1000)] is r]


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
        self.market()  # an unknown venue, or venues listing none of the bases: refused now

    def market(self) -> Market:
        """A fresh generator of this market (it starts at ``start_ms``)."""
        return Market(self.seed, self.venues, self.bases, self.start_ms, self.params, scheduled_cascades=True)

    def events(self, until_ms: int | None = None) -> Iterator[MarketEvent]:
        for chunk in self.market().chunks(until_ms):
            yield from chunk

    def stream(self) -> Iterator[MarketEvent]:
        """Published events forever (``events(None)``)."""
        return self.events(None)


def last_liquidations(n: int, seed: int, end_ms: int) -> list[Liquidation]:
    """The first ``n`` published liquidations of the endless market (all 14 venues), shifted in
    time so that the last one happens at ``end_ms``: a realistic load for benchmarks (about 38
    hours of the seven-base market for 100,000 events; 11 days on the three-base one)."""
    events = list(itertools.islice(MarketModel(seed, start_ms=0).stream(), n))
    shift = end_ms - (events[-1].timestamp_ms if events else 0)
    return [to_liquidation(msgspec.structs.replace(e, timestamp_ms=e.timestamp_ms + shift)) for e in events]
