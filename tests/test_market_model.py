"""The market model: determinism, order, realistic prices, listings, sampling and the cascade rule."""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal

import pytest

from shared.market import MarketEvent
from shared.market_model import (
    BASES,
    DEFAULT_PARAMS,
    LISTED,
    PRICE_RANGE,
    SAMPLED_VENUES,
    TICK,
    VENUES,
    MarketModel,
    canonical_symbol_for,
    rule_holds,
    to_liquidation,
)
from shared.scenarios import SCENARIO_KINDS, labelled_stream, scenario

START = 1_700_000_000_000
HOUR = 3_600_000


def _model(seed: int = 7, venues: tuple[str, ...] = VENUES) -> MarketModel:
    return MarketModel(seed=seed, venues=venues, start_ms=START)


def test_same_seed_same_events_and_other_seed_differs() -> None:
    a = list(_model(7).events(START + HOUR))
    b = list(_model(7).events(START + HOUR))
    c = list(_model(8).events(START + HOUR))
    assert a == b
    assert a != c
    assert len(a) > 100


def test_endless_stream_is_lazy_and_matches_bounded_events() -> None:
    bounded = list(_model().events(START + 600_000))
    head = list(itertools.islice(_model().stream(), len(bounded)))
    assert head == bounded


def test_events_are_time_ordered_within_bounds_and_use_known_venues() -> None:
    events = list(_model(venues=("bybit", "okx", "binance_usdm")).events(START + 2 * HOUR))
    times = [e.timestamp_ms for e in events]
    assert times == sorted(times)
    assert START <= times[0] and times[-1] < START + 2 * HOUR
    assert {e.venue for e in events} <= {"bybit", "okx", "binance_usdm"}
    assert {e.base for e in events} == set(BASES)


def _decimals(value: float) -> int:
    """Decimals of a float's shortest repr (0.1 → 1, 1e-05 → 5)."""
    return max(0, -int(Decimal(repr(value)).as_tuple().exponent))


def test_prices_stay_realistic_and_on_the_tick() -> None:
    for e in _model(3).events(START + 3 * HOUR):
        lo, hi = PRICE_RANGE[e.base]
        assert lo * 0.9 <= e.price <= hi * 1.1
        ticks = e.price / TICK[e.base]
        assert abs(ticks - round(ticks)) < 1e-6, e
        assert float(repr(e.price)) == e.price and _decimals(e.price) <= _decimals(TICK[e.base])
        assert round(e.notional_usd, 2) == e.notional_usd > 0


def test_binance_publishes_at_most_one_liquidation_per_symbol_per_second() -> None:
    events = list(_model(11).events(START + 6 * HOUR))
    seen: set[tuple[str, str, int]] = set()
    sampled = [e for e in events if e.venue in SAMPLED_VENUES]
    assert sampled
    for e in sampled:
        key = (e.venue, e.base, e.timestamp_ms // 1000)
        assert key not in seen
        seen.add(key)


def test_stream_cascades_hit_several_venues_within_seconds() -> None:
    sc = labelled_stream(_model(5), START + 6 * HOUR)
    assert len(sc.cascades) >= 5
    multi = [c for c in sc.cascades if len(c.venues) >= 2]
    assert len(multi) >= len(sc.cascades) // 2
    for c in multi:
        firsts = [min(e.timestamp_ms for e in sc.events if e.cascade_id == c.cascade_id and e.venue == v)
                  for v in c.venues if any(e.cascade_id == c.cascade_id and e.venue == v for e in sc.events)]
        assert max(firsts) - min(firsts) < 60_000


def test_rule_holds_edges() -> None:
    assert rule_holds([0, 1, 2, 3, 4], [20_000.0] * 5)
    assert not rule_holds([0, 1, 2, 3], [50_000.0] * 4)
    assert not rule_holds([0, 1, 2, 3, 4], [20_000.0, 20_000.0, 20_000.0, 20_000.0, 19_999.0])
    assert not rule_holds([0, 15_000, 30_000, 45_000, 60_000], [50_000.0] * 5)
    assert rule_holds([1, 15_000, 30_000, 45_000, 60_000], [50_000.0] * 5)


def test_canonical_symbols_and_liquidations() -> None:
    assert canonical_symbol_for("bybit", "BTC") == "BTCUSDT"
    assert canonical_symbol_for("binance_coinm", "ETH") == "ETHUSD"
    assert canonical_symbol_for("dydx", "SOL") == "SOLUSD"
    assert canonical_symbol_for("hyperliquid", "BTC") == "BTCUSDC"
    event = MarketEvent(venue="binance_usdm", base="BTC", side="long", price=80_000.1,
                        notional_usd=40_000.05, timestamp_ms=START)
    liq = to_liquidation(event)
    assert (liq.exchange, liq.symbol, liq.side, liq.sampled) == ("binance_usdm", "BTCUSDT", "long", True)
    assert liq.notional_usd == 40_000.05 and abs(liq.quantity * liq.price - 40_000.05) < 0.01
    assert liq.event_id == to_liquidation(event).event_id
    assert to_liquidation(MarketEvent(venue="bitmex", base="BTC", side="short", price=1.0, notional_usd=1.0,
                                      timestamp_ms=START)).market_type == "inverse_perpetual"


def test_unknown_venue_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown venue"):
        list(MarketModel(seed=1, venues=("nope",), start_ms=START).events(START + 1000))


def test_first_cascade_can_be_scheduled_at_a_fixed_time() -> None:
    start = 1_700_000_000_000
    params = dataclasses.replace(DEFAULT_PARAMS, first_cascade_s=30.0)
    scenario_ = labelled_stream(MarketModel(3, start_ms=start, params=params), start + 180_000)
    assert scenario_.cascades, "the first cascade must happen within the first minutes"
    assert min(label.start_ms for label in scenario_.cascades) >= start + 30_000
    assert min(label.start_ms for label in scenario_.cascades) < start + 60_000


def test_liquidations_happen_only_on_venues_listing_their_base_and_on_every_such_pair() -> None:
    """Background, cascades and every scenario situation keep to :data:`LISTED`; three hours of
    the endless market reach every listed (venue, base) pair."""
    events = list(_model(3).events(START + 3 * HOUR))
    events += [e for k, kind in enumerate(SCENARIO_KINDS) for i in range(6)
               for e in scenario(kind, 100 * k + i).events]
    assert {(e.venue, e.base) for e in events} == {(v, b) for v in VENUES for b in LISTED[v]}


def test_a_market_whose_venues_list_none_of_its_bases_is_refused() -> None:
    with pytest.raises(ValueError, match="lists any of"):
        MarketModel(seed=1, venues=("gate",), bases=("SUI",))
