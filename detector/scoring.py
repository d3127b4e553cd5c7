"""The cascade risk score: six factors, their weights, the bands, and the sampled-feed weighting.

This is the one module that decides how risky a window of liquidations is. Every constant
below is a default of :class:`detector.config.DetectorSettings` and can be changed with a
``LIQ_*`` variable (``LIQ_WEIGHTS=cross_exchange=0.6``, ``LIQ_BAND_EDGES=0.7,1.0,1.5``, …).

Factors (each in [0, 1], reported separately in ``CascadeEvent.factors``; an empty window
scores 0 on every factor):

1. **volume_concentration**: how much is being liquidated, on a log scale between
   ``volume_floor_usd`` ($10K → 0) and ``volume_cap_usd`` ($10M → 1): the rule's $100K is
   1/3, $1M is 2/3. Log, because liquidation sizes span four orders of magnitude.
2. **time_compression**: events per minute, ``count * 60 / max(span, 10 s)`` where span is the
   newest time minus that of the first-arrived live event, on a log scale from the rule's own
   rate (``min_count`` per window, 5/min → 0) to ``rate_cap_per_min`` (120/min → 1). Fewer than 2 events → 0.
   The 10 s floor keeps a handful of same-millisecond fills from looking infinitely fast.
3. **price_clustering**: ``1 - σ / price_band_bps`` floored at 0, where σ is the
   notional-weighted standard deviation of price relative to its mean (unknown notionals
   weigh $1): all fills on one level (σ = 0) → 1, σ of 12.5 bp → 0.5, 25 bp or more → 0.
   Liquidations stacked on one level are the sweep of a leverage cluster; a single event is
   fully clustered.
4. **side_imbalance**: ``|long - short| / (long + short)`` by notional (by weighted count when
   every notional is unknown): 1 when only one side is being liquidated.
5. **institutional_ratio**: the share of notional from liquidations of at least
   ``institutional_usd`` ($100K, the original system's institutional threshold).
6. **cross_exchange**: how many venues take part and how close in time. ``venue_term`` is
   ``(venues - 1) / (cross_full_venues - 1)`` capped at 1 (one venue → 0, three → 1);
   ``closeness`` is ``exp(-spread / cross_tau_s)`` where spread is the gap between the
   earliest and latest per-venue mean time (20 s → 0.37). Factor = venue_term × closeness.

Every factor comes from running sums the ring keeps (``detector.ring``), so scoring a window
costs the same whatever its size: the hot path stays well under 100 µs.

Score = Σ weight × factor, so it ranges from 0 to Σ weights (2.15 with the defaults, the
original system's "0.0 to 2.0+"). Weights, by how much each factor says about systemic risk:

- cross_exchange 0.55: the same market liquidating on several venues at once is the
  original system's definition of systemic risk;
- volume_concentration 0.40 and time_compression 0.40: the two halves of the cascade rule
  (size and speed);
- institutional_ratio 0.35: large positions move the book and trigger more liquidations;
- side_imbalance 0.30: a one-sided flush is a cascade; a mixed window is churn;
- price_clustering 0.15: informative but noisy (one venue's basis alone spreads prices).

Bands (the original system's): ``[0, 0.7)`` low, ``[0.7, 1.0)`` moderate, ``[1.0, 1.5)`` high,
``≥ 1.5`` extreme. A typical two-venue $1M one-sided cascade over 20 s scores about 1.3
(high); five small mixed liquidations on one venue over a minute about 0.3 (low).

Sampled feeds (``Liquidation.sampled``, e.g. Binance: at most one liquidation per symbol per
second) report a lower bound of the true count. A sampled event counts 1 when the previous
sampled event of the same cap (venue and symbol, and side for a venue in
:data:`SAMPLED_PER_SIDE`) is more than ``sampled_gap_ms`` (1.5 s) older, and
``sampled_weight`` (2.0) when it follows within that gap: then the cap was binding and at
least one more liquidation was most likely hidden. The weighted count feeds both the
"≥ 5 liquidations" rule and time_compression; notional sums are never scaled (they are
what was reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.models import FactorScores, RiskBand

FACTOR_NAMES: tuple[str, ...] = (
    "volume_concentration", "time_compression", "price_clustering",
    "side_imbalance", "institutional_ratio", "cross_exchange",
)
DEFAULT_WEIGHTS: dict[str, float] = {
    "volume_concentration": 0.40, "time_compression": 0.40, "price_clustering": 0.15,
    "side_imbalance": 0.30, "institutional_ratio": 0.35, "cross_exchange": 0.55,
}
DEFAULT_BAND_EDGES: tuple[float, float, float] = (0.7, 1.0, 1.5)
BANDS: tuple[RiskBand, ...] = ("low", "moderate", "high", "extreme")
BAND_RANK: dict[str, int] = {band: rank for rank, band in enumerate(BANDS)}
MIN_SPAN_S = 10.0


@dataclass(frozen=True)
class ScoringParams:
    weights: tuple[float, ...] = tuple(DEFAULT_WEIGHTS[n] for n in FACTOR_NAMES)
    band_edges: tuple[float, ...] = DEFAULT_BAND_EDGES
    window_s: float = 60.0
    min_count: int = 5
    institutional_usd: float = 100_000.0
    volume_floor_usd: float = 10_000.0
    volume_cap_usd: float = 10_000_000.0
    rate_cap_per_min: float = 120.0
    price_band_bps: float = 25.0
    cross_full_venues: int = 3
    cross_tau_s: float = 20.0


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What the score needs to know about a window (the ring's running sums).

    ``count``/``long_count`` are weighted counts; ``venue_times`` holds each live venue's mean
    event time (ms); ``price_rel_std`` is σ/mean of the notional-weighted price.
    """

    size: int = 0
    count: float = 0.0
    long_count: float = 0.0
    total_usd: float = 0.0
    long_usd: float = 0.0
    short_usd: float = 0.0
    inst_usd: float = 0.0
    span_ms: int = 0
    price_rel_std: float = 0.0
    venue_times: list[float] = field(default_factory=list)


def _log_scale(value: float, floor: float, cap: float) -> float:
    if value <= floor:
        return 0.0
    if value >= cap:
        return 1.0
    return math.log(value / floor) / math.log(cap / floor)


def volume_concentration(w: WindowStats, p: ScoringParams) -> float:
    return _log_scale(w.total_usd, p.volume_floor_usd, p.volume_cap_usd)


def time_compression(w: WindowStats, p: ScoringParams) -> float:
    if w.size < 2:
        return 0.0
    per_min = w.count * 60.0 / max(w.span_ms / 1000.0, MIN_SPAN_S)
    return _log_scale(per_min, p.min_count * 60.0 / p.window_s, p.rate_cap_per_min)


def price_clustering(w: WindowStats, p: ScoringParams) -> float:
    if w.size == 0:
        return 0.0
    return max(0.0, 1.0 - w.price_rel_std * 10_000.0 / p.price_band_bps)


def side_imbalance(w: WindowStats) -> float:
    total = w.long_usd + w.short_usd
    if total > 0:
        return min(1.0, abs(w.long_usd - w.short_usd) / total)
    if w.count <= 0:
        return 0.0
    return min(1.0, abs(2.0 * w.long_count - w.count) / w.count)


def institutional_ratio(w: WindowStats) -> float:
    return min(1.0, max(0.0, w.inst_usd / w.total_usd)) if w.total_usd > 0 else 0.0


def cross_exchange(w: WindowStats, p: ScoringParams) -> float:
    n = len(w.venue_times)
    if n < 2:
        return 0.0
    venue_term = min(1.0, (n - 1) / max(1, p.cross_full_venues - 1))
    spread_s = (max(w.venue_times) - min(w.venue_times)) / 1000.0
    return venue_term * math.exp(-spread_s / p.cross_tau_s)


def factors(w: WindowStats, p: ScoringParams) -> FactorScores:
    """The six factors of a window, each in [0, 1] (all 0 for an empty window)."""
    if w.size == 0:
        return FactorScores()
    return FactorScores(
        volume_concentration=round(volume_concentration(w, p), 4),
        time_compression=round(time_compression(w, p), 4),
        price_clustering=round(price_clustering(w, p), 4),
        side_imbalance=round(side_imbalance(w), 4),
        institutional_ratio=round(institutional_ratio(w), 4),
        cross_exchange=round(cross_exchange(w, p), 4),
    )


def score(f: FactorScores, p: ScoringParams) -> float:
    """Σ weight × factor, rounded to 4 decimals."""
    values = (f.volume_concentration, f.time_compression, f.price_clustering,
              f.side_imbalance, f.institutional_ratio, f.cross_exchange)
    return round(sum(w * v for w, v in zip(p.weights, values, strict=True)), 4)


def band(value: float, edges: tuple[float, ...] = DEFAULT_BAND_EDGES) -> RiskBand:
    rank = 0
    for edge in edges:
        if value >= edge:
            rank += 1
    return BANDS[rank]


SAMPLED_PER_SIDE = frozenset({"bitget"})
"""Sampled venues whose cap is per symbol *and side*: Bitget sends at most one long and one short
record per symbol per second (``reference/exchanges.md`` §1.11), so a long and a short a few ms
apart say nothing about hidden events. Binance's cap is per symbol whatever the side (§1.1)."""


def sampled_cap(venue: int, exchange: str, side: str) -> int:
    """The index of the cap a sampled event falls under, among ``2 × venues``: ``venue * 2``, plus
    1 for a long of a venue whose cap is per side (:data:`SAMPLED_PER_SIDE`)."""
    return 2 * venue + (side == "long" and exchange in SAMPLED_PER_SIDE)


def sampled_weight(sampled: bool, gap_ms: int, max_gap_ms: int, weight: float) -> float:
    """The count weight of one event (see the module docstring)."""
    return weight if sampled and gap_ms <= max_gap_ms else 1.0
