"""The six factors at their edges and at hand-computed values; score, bands and weight settings."""

from __future__ import annotations

import math

import pytest

from detector import scoring
from detector.config import DetectorSettings
from detector.ring import Ring
from detector.scoring import FACTOR_NAMES, ScoringParams, WindowStats
from shared.errors import ConfigError
from shared.models import FactorScores
from shared.settings import load
from tests.detector.helpers import ev

P = ScoringParams()


def window(*specs: tuple[float, float, str, int], capacity: int = 64) -> Ring:
    """A ring of (second, usd, side, venue) events at $50,000."""
    ring = Ring(capacity, 8, P.institutional_usd)
    for second, usd, side, venue in specs:
        ring.push(ev(second, usd, side=side, venue=f"v{venue}"), venue=venue, weight=1.0)  # type: ignore[arg-type]
    return ring


def test_empty_window_scores_zero_on_every_factor() -> None:
    f = scoring.factors(WindowStats(), P)
    assert f == FactorScores() and scoring.score(f, P) == 0.0
    assert scoring.factors(Ring(16, 2, 1.0).stats(), P) == FactorScores()


def test_volume_concentration_log_scale() -> None:
    assert scoring.volume_concentration(WindowStats(size=1, total_usd=10_000.0), P) == 0.0
    assert scoring.volume_concentration(WindowStats(size=1, total_usd=100_000.0), P) == pytest.approx(1 / 3)
    assert scoring.volume_concentration(WindowStats(size=1, total_usd=1_000_000.0), P) == pytest.approx(2 / 3)
    assert scoring.volume_concentration(WindowStats(size=1, total_usd=50_000_000.0), P) == 1.0


def test_time_compression_rate_and_floors() -> None:
    # 10 events over 30 s = 20/min, between 5/min (0) and 120/min (1) on a log scale
    assert scoring.time_compression(WindowStats(size=10, count=10.0, span_ms=30_000), P) == pytest.approx(
        math.log(4) / math.log(24))
    # same-millisecond fills: the span is floored at 10 s, so 5 events = 30/min
    assert scoring.time_compression(WindowStats(size=5, count=5.0, span_ms=0), P) == pytest.approx(
        math.log(6) / math.log(24))
    assert scoring.time_compression(WindowStats(size=1, count=1.0), P) == 0.0  # one event: no rate
    rule_rate = WindowStats(size=5, count=5.0, span_ms=60_000)  # the rule's own rate scores 0
    assert scoring.time_compression(rule_rate, P) == 0.0
    assert scoring.time_compression(WindowStats(size=50, count=50.0, span_ms=10_000), P) == 1.0


def test_price_clustering_from_a_ring() -> None:
    one_level = window((0, 50_000, "long", 0), (1, 50_000, "long", 0))
    assert scoring.price_clustering(one_level.stats(), P) == 1.0
    ring = Ring(16, 2, P.institutional_usd)  # equal notionals at 50,000 × (1 ± 12.5 bp): σ/mean = 12.5 bp
    ring.push(ev(0, 40_000.0, price=50_000.0 * (1 - 0.00125)), venue=0, weight=1.0)
    ring.push(ev(1, 40_000.0, price=50_000.0 * (1 + 0.00125)), venue=0, weight=1.0)
    assert scoring.price_clustering(ring.stats(), P) == pytest.approx(0.5, abs=1e-6)
    assert scoring.price_clustering(WindowStats(size=2, price_rel_std=0.01), P) == 0.0


def test_side_imbalance() -> None:
    assert scoring.side_imbalance(window((0, 30_000, "long", 0), (1, 70_000, "long", 0)).stats()) == 1.0
    assert scoring.side_imbalance(window((0, 30_000, "short", 0)).stats()) == 1.0
    assert scoring.side_imbalance(window((0, 75_000, "long", 0), (1, 25_000, "short", 0)).stats()) == 0.5
    assert scoring.side_imbalance(window((0, 50_000, "long", 0), (1, 50_000, "short", 0)).stats()) == 0.0
    # every notional unknown: by weighted count, 3 long of 4 → |6 - 4| / 4
    assert scoring.side_imbalance(WindowStats(size=4, count=4.0, long_count=3.0)) == 0.5


def test_institutional_ratio() -> None:
    ring = window((0, 150_000, "long", 0), (1, 50_000, "long", 0), (2, 99_999.99, "short", 0))
    assert scoring.institutional_ratio(ring.stats()) == pytest.approx(150_000 / 299_999.99)
    assert scoring.institutional_ratio(window((0, 100_000, "long", 0)).stats()) == 1.0  # at the threshold
    assert scoring.institutional_ratio(window((0, 99_000, "long", 0)).stats()) == 0.0


def test_cross_exchange_venues_and_closeness() -> None:
    assert scoring.cross_exchange(window((0, 1, "long", 0), (5, 1, "long", 0)).stats(), P) == 0.0  # one venue
    # two venues whose mean times are 20 s apart: (2-1)/(3-1) × e^-1
    two = window((0, 1, "long", 0), (10, 1, "long", 1), (30, 1, "long", 1))
    assert scoring.cross_exchange(two.stats(), P) == pytest.approx(0.5 * math.exp(-1))
    three = window((0, 1, "long", 0), (0, 1, "long", 1), (0, 1, "long", 2), (0, 1, "long", 3))
    assert scoring.cross_exchange(three.stats(), P) == 1.0  # capped at cross_full_venues


def test_factors_survive_ring_wraparound() -> None:
    # capacity 16, 20 pushes: the four oldest (venue 3, the shorts) are overwritten
    old = [(k, 200_000.0, "short", 3) for k in range(4)]
    ring = window(*old, *((k, 20_000.0, "long", 0) for k in range(4, 20)), capacity=16)
    f = scoring.factors(ring.stats(), P)
    assert (ring.overflowed, f.side_imbalance, f.institutional_ratio, f.cross_exchange) == (4, 1.0, 0.0, 0.0)
    assert f.volume_concentration == round(math.log(32) / math.log(1000), 4)  # 16 × $20K = $320K
    assert f.time_compression == round(math.log(16 * 60 / 15 / 5) / math.log(24), 4)
    assert f.price_clustering == 1.0


def test_score_is_weighted_sum_and_bands_at_edges() -> None:
    assert scoring.score(FactorScores(**dict.fromkeys(FACTOR_NAMES, 1.0)), P) == 2.15
    assert scoring.score(FactorScores(cross_exchange=1.0, side_imbalance=0.5), P) == 0.7
    assert [scoring.band(v) for v in (0.0, 0.6999, 0.7, 0.9999, 1.0, 1.4999, 1.5, 2.15)] == [
        "low", "low", "moderate", "moderate", "high", "high", "extreme", "extreme"]
    assert scoring.band(0.5, (0.2, 0.4, 0.6)) == "high"


def test_weights_and_band_edges_from_settings() -> None:
    env = {"LIQ_WEIGHTS": "cross_exchange=1.0,price_clustering=0", "LIQ_BAND_EDGES": "0.2,0.4,0.6"}
    s = load(DetectorSettings, env)
    p = s.scoring()
    assert p.weights == (0.40, 0.40, 0.0, 0.30, 0.35, 1.0) and p.band_edges == (0.2, 0.4, 0.6)
    assert scoring.score(FactorScores(cross_exchange=1.0, price_clustering=1.0), p) == 1.0


@pytest.mark.parametrize(("env", "variable"), [
    ({"LIQ_WEIGHTS": "volume=1"}, "LIQ_WEIGHTS"),  # unknown factor
    ({"LIQ_WEIGHTS": "cross_exchange=lots"}, "LIQ_WEIGHTS"),
    ({"LIQ_WEIGHTS": "cross_exchange"}, "LIQ_WEIGHTS"),
    ({"LIQ_WEIGHTS": "cross_exchange=-0.5"}, "LIQ_WEIGHTS"),
    ({"LIQ_BAND_EDGES": "1.0,0.7,1.5"}, "LIQ_BAND_EDGES"),
    ({"LIQ_BAND_EDGES": "0.7,1.0"}, "LIQ_BAND_EDGES"),
    ({"LIQ_DETECT_SHARDS": "4"}, "LIQ_DETECT_SHARDS"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(DetectorSettings, env)
    assert info.value.variable == variable and str(info.value).startswith(variable + ": expected")


def test_sampled_weight_rule() -> None:
    assert scoring.sampled_weight(True, 1000, 1500, 2.0) == 2.0
    assert scoring.sampled_weight(True, 1500, 1500, 2.0) == 2.0
    assert scoring.sampled_weight(True, 1501, 1500, 2.0) == 1.0
    assert scoring.sampled_weight(False, 0, 1500, 2.0) == 1.0


@pytest.mark.parametrize("env", [
    {"LIQ_CROSS_TAU_S": "0"}, {"LIQ_CROSS_TAU_S": "-20"}, {"LIQ_PRICE_BAND_BPS": "0"},
    {"LIQ_PRICE_BAND_BPS": "-25"}, {"LIQ_VOLUME_FLOOR_USD": "0"}, {"LIQ_VOLUME_CAP_USD": "10000"},
    {"LIQ_RATE_CAP_PER_MIN": "5"}, {"LIQ_INSTITUTIONAL_USD": "0"}, {"LIQ_TICK_S": "0"},
])
def test_scoring_settings_that_would_divide_by_zero_or_leave_0_to_1_are_refused(env: dict[str, str]) -> None:
    """Each of these crashed the engine on every event or pushed a factor above 1."""
    with pytest.raises(ConfigError) as err:
        load(DetectorSettings, env)
    assert err.value.variable == next(iter(env))
