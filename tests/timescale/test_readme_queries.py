"""The four "Direct Database Queries" of the original README, read from it and run on TimescaleDB.

The scenario's batches are written through the writer's statements and the refresh policies are
run (as the scheduler would); each query's rows are then compared with what Python computes
from the scenario's known liquidations and cascades.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import pytest

from tests.readme import original_queries
from tests.timescale.harness import Harness, Row
from tests.timescale.replay import run_refresh_policies, write_batch
from tests.timescale.scenario import HOUR, Scenario, build, expected_hourly, hour_of, usd
from writer.rows import ms_to_datetime

pytestmark = pytest.mark.timescale

# Read from ../shared/original-system/README.md ("Option 3: Direct Database Queries"); our README
# shows the same statements (tests/writer/test_migrate_native.py checks that).
RECENT_SIGNIFICANT, PRICE_LEVEL_CLUSTERS, HOURLY_ROLLUPS, CASCADE_EVENTS = original_queries()


@pytest.fixture
def scenario(ts: Harness) -> Scenario:
    """The scenario written (replayed once, too) and the refresh policies run."""
    s = build(int(ts.scalar("SELECT (extract(epoch FROM now()) * 1000)::bigint") or 0))
    for batch in [*s.batches, *s.batches]:
        write_batch(ts, batch)
    run_refresh_policies(ts)
    return s


def ts_of(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


def num(text: str | None) -> float:
    return float(text or "0")


def near(value: float) -> Any:
    """A sum of floats, whose last bits depend on the order of addition."""
    return pytest.approx(value, rel=1e-12)


def test_recent_significant_liquidations_by_value(ts: Harness, scenario: Scenario) -> None:
    rows = ts.query(RECENT_SIGNIFICANT)

    since = scenario.now_ms - HOUR
    want = sorted((e for e in scenario.stored if e.timestamp_ms >= since), key=usd, reverse=True)
    assert len(want) == 4
    got = [(ts_of(r[0]), r[1], r[2], r[3], num(r[4]), r[5], r[6]) for r in rows]
    assert got == [(ms_to_datetime(e.timestamp_ms), e.exchange, e.symbol, e.side, usd(e), "f", None)
                   for e in want]


def cluster_key(row: Row) -> tuple[object, ...]:
    return (num(row[0]), int(row[1] or 0), num(row[2]), int(row[3] or 0), int(row[4] or 0), num(row[5]),
            num(row[6]), num(row[7]), row[8], ts_of(row[9]), ts_of(row[10]))


def test_price_level_clusters(ts: Harness, scenario: Scenario) -> None:
    rows = ts.query(PRICE_LEVEL_CLUSTERS)

    levels = defaultdict(list)
    for e in scenario.stored:
        if e.symbol == "BTCUSDT" and e.timestamp_ms >= scenario.now_ms - 4 * HOUR:
            levels[float(int(e.price // 100) * 100)].append(e)
    want = []
    for level, events in levels.items():
        longs = [e for e in events if e.side == "long"]
        shorts = [e for e in events if e.side == "short"]
        want.append((level, len(events), near(sum(map(usd, events))), len(longs), len(shorts),
                     near(sum(map(usd, longs))), near(sum(map(usd, shorts))),
                     max(map(usd, events)), "{" + ",".join(sorted({e.exchange for e in events})) + "}",
                     ms_to_datetime(min(e.timestamp_ms for e in events)),
                     ms_to_datetime(max(e.timestamp_ms for e in events))))
    want.sort(key=lambda w: (-w[2].expected, w[0]))
    assert [w[0] for w in want] == [67200, 66900, 67100, 66800]
    assert [cluster_key(r) for r in rows] == want


def test_hourly_rollups_last_24_hours(ts: Harness, scenario: Scenario) -> None:
    rows = ts.query(HOURLY_ROLLUPS)

    hours = [ts_of(r[0]) for r in rows]
    assert hours == sorted(hours, reverse=True)
    got = {(ts_of(r[0]), r[1], r[2], r[3]): (int(r[4] or 0), num(r[5]), int(r[9] or 0), num(r[10]))
           for r in rows}
    want = expected_hourly(scenario, since_ms=scenario.now_ms - 24 * HOUR)
    assert got == {k: (v.event_count, near(v.total_value_usd), v.cascade_event_count,
                       near(v.cascade_value_usd)) for k, v in want.items()}
    assert len(rows) == len(got) and sum(v.event_count for v in want.values()) == 8
    assert any(v.cascade_event_count for v in want.values())


def test_cascades_last_24_hours_by_value(ts: Harness, scenario: Scenario) -> None:
    rows = ts.query(CASCADE_EVENTS)

    # hour, symbol, cascade_count, liquidation_count, total_value_usd, cross_exchange_count, max_venues
    got = [(ts_of(r[0]), r[1], int(r[2] or 0), int(r[3] or 0), num(r[4]), int(r[9] or 0), int(r[10] or 0))
           for r in rows]
    recent = [c for c in scenario.cascades.values() if c.start_ms >= scenario.now_ms - 20 * HOUR]
    recent.sort(key=lambda c: c.total_notional_usd, reverse=True)
    want = [(hour_of(c.start_ms), c.symbol, 1, c.count, c.total_notional_usd,
             int(c.cross_exchange), len(c.venues)) for c in recent]
    assert [c.cascade_id for c in recent] == ["c-btc", "c-eth"]
    assert got == want
