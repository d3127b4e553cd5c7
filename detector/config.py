"""Detector settings (``LIQ_*``), read once in the CLI and passed down; validated on load."""

from __future__ import annotations

import msgspec

from detector.scoring import DEFAULT_BAND_EDGES, DEFAULT_WEIGHTS, FACTOR_NAMES, ScoringParams
from shared.errors import ConfigError
from shared.settings import CommonSettings, at_least

_SCORING = ScoringParams()
"""The scoring defaults: the settings below that feed :class:`ScoringParams` take them from here."""

METRICS_PORT = 9411
"""The detector's Prometheus port (README: detector 9411, aggregator 9421, writer 9431, collectors 9501+)."""


class DetectorSettings(CommonSettings, frozen=True, kw_only=True):
    """The cascade rule, the lifecycle, the score (see ``detector.scoring``) and the live shell.

    - ``window_s`` / ``min_count`` / ``min_usd``: the original rule, ≥ 5 liquidations and
      ≥ $100K within 60 s (exchange time) on one canonical symbol.
    - ``quiet_s``: a cascade ends when the rule has not held for this long (event time in
      replay, event time carried forward by the clock in live mode).
    - ``ring_capacity``: events kept per symbol; beyond it the oldest are overwritten.
    - ``sampled_weight`` / ``sampled_gap_ms``: how sampled feeds count (``detector.scoring``).
    - ``weights``: per-factor overrides, e.g. ``LIQ_WEIGHTS=cross_exchange=0.6``.
    - ``band_edges``: three ascending edges between low/moderate/high/extreme.
    - ``detect_shards``: the shard streams this process consumes (empty: all of
      ``range(LIQ_SHARDS)``); ``liq detect --shards`` overrides it.
    - ``tick_s`` / ``tick_lag_s``: live mode checks for ended cascades every ``tick_s`` and lets
      exchange time lag the wall clock by ``tick_lag_s``.
    """

    window_s: float = _SCORING.window_s
    min_count: int = _SCORING.min_count
    min_usd: float = 100_000.0
    institutional_usd: float = _SCORING.institutional_usd
    quiet_s: float = 30.0
    ring_capacity: int = 4096
    sampled_weight: float = 2.0
    sampled_gap_ms: int = 1500
    weights: dict[str, float] = {}
    band_edges: list[float] = msgspec.field(default_factory=lambda: list(DEFAULT_BAND_EDGES))
    volume_floor_usd: float = _SCORING.volume_floor_usd
    volume_cap_usd: float = _SCORING.volume_cap_usd
    rate_cap_per_min: float = _SCORING.rate_cap_per_min
    price_band_bps: float = _SCORING.price_band_bps
    cross_full_venues: int = _SCORING.cross_full_venues
    cross_tau_s: float = _SCORING.cross_tau_s
    detect_shards: list[int] = []
    tick_s: float = 1.0
    tick_lag_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.weights) - set(FACTOR_NAMES))
        if unknown:
            raise ConfigError("LIQ_WEIGHTS", "FACTOR=WEIGHT pairs for " + ", ".join(FACTOR_NAMES),
                              ",".join(unknown))
        negative = sorted(k for k, v in self.weights.items() if not 0.0 <= v < float("inf"))
        if negative:
            raise ConfigError("LIQ_WEIGHTS", "non-negative finite weights", ",".join(negative))
        edges = self.band_edges
        if len(edges) != 3 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ConfigError("LIQ_BAND_EDGES", "three ascending numbers, e.g. 0.7,1.0,1.5", str(edges))
        self._check_ranges()
        bad = [k for k in self.detect_shards if not 0 <= k < self.shards]
        if bad:
            raise ConfigError("LIQ_DETECT_SHARDS", f"shard numbers in 0..{self.shards - 1}", str(bad))

    def _check_ranges(self) -> None:
        """The bound of each number, in this order; the scoring divides by several of these
        (``detector.scoring``): each must keep factors in [0, 1]."""
        at_least(self, "window_s", 0, above=True)
        at_least(self, "min_count", 1)
        at_least(self, "quiet_s", 0, above=True)
        at_least(self, "ring_capacity", 16)
        at_least(self, "sampled_weight", 1.0)
        at_least(self, "cross_full_venues", 2)
        at_least(self, "volume_floor_usd", 0, above=True)
        at_least(self, "volume_cap_usd", self.volume_floor_usd, above=True, bound="LIQ_VOLUME_FLOOR_USD")
        at_least(self, "rate_cap_per_min", self.min_count * 60.0 / self.window_s, above=True,
                 bound="LIQ_MIN_COUNT per LIQ_WINDOW_S in a minute")
        at_least(self, "price_band_bps", 0, above=True)
        at_least(self, "cross_tau_s", 0, above=True)
        at_least(self, "institutional_usd", 0, above=True)
        at_least(self, "min_usd", 0)
        at_least(self, "sampled_gap_ms", 0)
        at_least(self, "tick_s", 0, above=True)
        at_least(self, "tick_lag_s", 0)

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    @property
    def quiet_ms(self) -> int:
        return int(self.quiet_s * 1000)

    def scoring(self) -> ScoringParams:
        weights = {**DEFAULT_WEIGHTS, **self.weights}
        return ScoringParams(
            weights=tuple(weights[n] for n in FACTOR_NAMES), band_edges=tuple(self.band_edges),
            window_s=self.window_s, min_count=self.min_count, institutional_usd=self.institutional_usd,
            volume_floor_usd=self.volume_floor_usd, volume_cap_usd=self.volume_cap_usd,
            rate_cap_per_min=self.rate_cap_per_min, price_band_bps=self.price_band_bps,
            cross_full_venues=self.cross_full_venues, cross_tau_s=self.cross_tau_s,
        )

    def shard_set(self) -> list[int]:
        return sorted(set(self.detect_shards)) or list(range(self.shards))
