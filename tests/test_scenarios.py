"""The labelled scenarios: deterministic, and labels that mean what they say."""

from __future__ import annotations

from collections import defaultdict

import pytest

from shared.market import MarketEvent
from shared.market_model import canonical_symbol_for, rule_holds
from shared.scenarios import SCENARIO_KINDS, scenario

START = 1_700_000_000_000


@pytest.mark.parametrize("kind", SCENARIO_KINDS)
def test_scenarios_are_deterministic(kind: str) -> None:
    assert scenario(kind, 3, START) == scenario(kind, 3, START)
    assert scenario(kind, 3, START).events != scenario(kind, 4, START).events


def _by_symbol(events: list[MarketEvent]) -> dict[str, list[MarketEvent]]:
    out: dict[str, list[MarketEvent]] = defaultdict(list)
    for e in events:
        out[canonical_symbol_for(e.venue, e.base)].append(e)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_scenario_labels_are_consistent(seed: int) -> None:
    expected = {"quiet": 0, "slow_grind": 0, "whale_alone": 0}
    for kind in SCENARIO_KINDS:
        sc = scenario(kind, seed, START)
        times = [e.timestamp_ms for e in sc.events]
        assert times == sorted(times)
        assert all(sc.start_ms <= t < sc.end_ms for t in times)
        assert all(e.scenario == kind for e in sc.events)
        if kind in expected:
            assert sc.cascades == [], kind
            assert not any(e.cascade_id for e in sc.events)
        else:
            assert sc.cascades, kind
        ids = {e.cascade_id for e in sc.events if e.cascade_id}
        assert ids == {c.cascade_id for c in sc.cascades if c.published}
        for label in sc.cascades:
            mine = [e for e in sc.events if e.cascade_id == label.cascade_id]
            assert {canonical_symbol_for(e.venue, e.base) for e in mine} == {label.symbol}
            assert {e.venue for e in mine} <= set(label.venues)
            assert label.start_ms <= label.first_ms <= label.fifth_ms <= label.end_ms
            assert label.count >= label.published == len(mine)
            assert label.count >= 5 and label.notional_usd >= 100_000
        if kind == "cross_venue_cascade":
            assert any(len(c.venues) >= 2 for c in sc.cascades)
        if kind == "feed_dropout":
            assert sc.true_count > len(sc.events)
            assert any(len(c.venues) >= 3 for c in sc.cascades)
        if kind == "single_venue_burst":
            assert len(sc.cascades) == 1 and len(sc.cascades[0].venues) == 1


@pytest.mark.parametrize("seed", range(8))
def test_grind_and_whale_never_meet_the_rule_on_their_symbol(seed: int) -> None:
    for kind in ("slow_grind", "whale_alone"):
        sc = scenario(kind, seed, START)
        for symbol, events in _by_symbol(sc.events).items():
            assert not rule_holds([e.timestamp_ms for e in events], [e.notional_usd for e in events]), (
                kind, symbol)
    whale = scenario("whale_alone", seed, START)
    assert max(e.notional_usd for e in whale.events) >= 1_500_000


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario kind"):
        scenario("nope", 1, START)
