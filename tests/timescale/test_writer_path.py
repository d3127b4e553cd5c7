"""The writer's TimescaleDB path executed for real: its statements, the caggs and every policy.

Batches of :mod:`tests.timescale.scenario` go through ``writer.statements`` exactly as the sink
runs them; policies are run with ``CALL run_job`` (PGlite has no background workers).
"""

from __future__ import annotations

import pytest

from tests.timescale.harness import Harness
from tests.timescale.replay import (
    CAGGS,
    refresh_all,
    run_job,
    run_refresh_policies,
    write_batch,
)
from tests.timescale.scenario import MIN, Scenario, build, expected_hourly, usd
from writer.rows import EVENT_COLUMNS, ms_to_datetime
from writer.sink import WriteResult

pytestmark = pytest.mark.timescale

# The same aggregates as the caggs, computed directly over the raw rows.
DIRECT = {
    "liquidations_hourly": """
        SELECT time_bucket('1 hour', time) AS hour, exchange, symbol, side, count(*),
               sum(value_usd), round(avg(value_usd)::numeric, 2), max(value_usd), sum(quantity),
               count(*) FILTER (WHERE is_cascade), coalesce(sum(value_usd) FILTER (WHERE is_cascade), 0)
        FROM liquidations_significant GROUP BY 1, 2, 3, 4""",
    "liquidation_heatmap": """
        SELECT time_bucket('1 hour', time), symbol, price_level, side, count(*), sum(value_usd),
               max(value_usd)
        FROM liquidations_significant GROUP BY 1, 2, 3, 4""",
    "liquidation_cascades": """
        SELECT time_bucket('1 hour', start_time), symbol, count(*), sum(event_count),
               sum(total_value_usd), sum(long_value_usd), sum(short_value_usd), max(peak_risk_score),
               avg(risk_score), count(*) FILTER (WHERE cross_exchange), max(cardinality(venues))
        FROM cascade_events GROUP BY 1, 2""",
}
EXCHANGE_COMPARISON_DIRECT = """
    SELECT time_bucket('1 hour', time), exchange, count(*),
           count(*) FILTER (WHERE side = 'long'), count(*) FILTER (WHERE side = 'short'),
           sum(value_usd), coalesce(sum(value_usd) FILTER (WHERE side = 'long'), 0),
           coalesce(sum(value_usd) FILTER (WHERE side = 'short'), 0), max(value_usd),
           count(DISTINCT symbol),
           round((100 * sum(value_usd)
                  / sum(sum(value_usd)) OVER (PARTITION BY time_bucket('1 hour', time)))::numeric, 2)
    FROM liquidations_significant GROUP BY 1, 2"""


def now_ms(h: Harness) -> int:
    return int(h.scalar("SELECT (extract(epoch FROM now()) * 1000)::bigint") or 0)


def write_all(h: Harness, s: Scenario) -> list[WriteResult]:
    return [write_batch(h, batch) for batch in s.batches]


def count(h: Harness, sql: str) -> int:
    return int(h.scalar(f"SELECT count(*) FROM ({sql}) AS q") or 0)


def symmetric_difference(h: Harness, left: str, right: str) -> int:
    """Rows in one query's result and not the other's (0 when they are equal as sets)."""
    return count(h, f"(({left}) EXCEPT ({right})) UNION ALL (({right}) EXCEPT ({left}))")


def caggs_match_raw(h: Harness) -> bool:
    """Every cagg (and the exchange comparison view) equals its direct aggregate, row for row."""
    queries = [(f"TABLE {cagg}", direct) for cagg, direct in DIRECT.items()]
    queries.append(("TABLE exchange_comparison", EXCHANGE_COMPARISON_DIRECT))
    return all(count(h, direct) > 0 and symmetric_difference(h, view, direct) == 0
               for view, direct in queries)


def assert_caggs_match_raw(h: Harness) -> None:
    for cagg, direct in DIRECT.items():
        assert count(h, direct) > 0, cagg
        assert symmetric_difference(h, f"TABLE {cagg}", direct) == 0, cagg
    assert symmetric_difference(h, "TABLE exchange_comparison", EXCHANGE_COMPARISON_DIRECT) == 0


@pytest.fixture
def scenario(ts: Harness) -> Scenario:
    return build(now_ms(ts))


def test_batches_store_significant_rows_once_and_upgrade_members(ts: Harness, scenario: Scenario) -> None:
    counts = write_all(ts, scenario)

    assert [c.inserted for c in counts] == [1, 2, 7, 2, 0]
    assert counts[3].upgraded == 1
    assert int(ts.scalar("SELECT count(*) FROM liquidations_significant") or 0) == len(scenario.stored)
    cascade_rows = ts.query(
        "SELECT event_id FROM liquidations_significant WHERE is_cascade AND cascade_id = 'c-btc'")
    assert {r[0] for r in cascade_rows} == scenario.cascade_member_ids

    before = ts.query("TABLE liquidations_significant ORDER BY time, exchange, event_id")
    replay = write_all(ts, scenario)
    assert [(c.inserted, c.upgraded) for c in replay] == [(0, 0)] * 5
    assert ts.query("TABLE liquidations_significant ORDER BY time, exchange, event_id") == before


def test_cascades_keep_the_furthest_phase_and_follow_a_moved_start(ts: Harness, scenario: Scenario) -> None:
    write_all(ts, scenario)
    write_all(ts, scenario)

    rows = ts.query("SELECT cascade_id, phase, status, event_count, total_value_usd, start_time "
                    "FROM cascade_events ORDER BY cascade_id")
    assert [(r[0], r[1], r[2], int(r[3] or 0)) for r in rows] == [
        ("c-btc", "end", "ended", 3), ("c-eth", "escalate", "active", 1), ("c-old", "end", "ended", 1)]
    c_btc = scenario.cascades["c-btc"]
    assert float(rows[0][4] or 0) == c_btc.total_notional_usd
    moved_start = ts.scalar("SELECT (extract(epoch FROM start_time) * 1000)::bigint FROM cascade_events "
                            "WHERE cascade_id = 'c-eth'")
    assert int(moved_start or 0) == scenario.cascades["c-eth"].start_ms


def test_caggs_and_exchange_comparison_equal_direct_aggregates(ts: Harness, scenario: Scenario) -> None:
    write_all(ts, scenario)
    refresh_all(ts)
    run_refresh_policies(ts)

    assert_caggs_match_raw(ts)
    want = expected_hourly(scenario)
    got = ts.query("SELECT sum(event_count), sum(total_value_usd), sum(cascade_event_count), "
                   "sum(cascade_value_usd), count(*) FROM liquidations_hourly")[0]
    assert int(got[0] or 0) == sum(r.event_count for r in want.values()) == len(scenario.stored)
    assert float(got[1] or 0) == pytest.approx(sum(r.total_value_usd for r in want.values()), rel=1e-12)
    assert int(got[2] or 0) == 3
    assert float(got[3] or 0) == pytest.approx(
        sum(usd(e) for e in scenario.stored if e.event_id in scenario.cascade_member_ids), rel=1e-12)
    assert int(got[4] or 0) == len(want)


def test_real_time_caggs_and_refresh_policies_follow_new_rows(ts: Harness, scenario: Scenario) -> None:
    write_batch(ts, scenario.recent)  # the last 30 hours: inside the refresh policies' window
    run_refresh_policies(ts)  # materializes up to the hour before now() - 1 hour
    assert_caggs_match_raw(ts)  # older hours materialized, the last ones real-time

    fresh = build(scenario.now_ms + 60_000).recent  # the last half hour's events 1 min later, new keys
    at, cutoff = EVENT_COLUMNS.index("event_id"), ms_to_datetime(scenario.now_ms - 40 * MIN)
    fresh.events = [(*row[:at], f"fresh-{i}", *row[at + 1:]) for i, row in enumerate(fresh.events)
                    if row[0] > cutoff]  # type: ignore[operator]
    # Its c-eth message is left out: rebuilt a minute later, it moves c-eth's start (3 h ago) by a
    # minute, which at HH:59 crosses into another hour below the watermark: an invalidation, for
    # the refresh below to handle, not for real time.
    fresh.cascades = []
    assert write_batch(ts, fresh).inserted == len(fresh.events) == 4
    assert_caggs_match_raw(ts)  # real-time (materialized_only = false): no refresh needed

    write_batch(ts, scenario.members)  # rows 2 h old, below the watermark: invalidations
    assert not caggs_match_raw(ts)
    run_refresh_policies(ts)
    assert_caggs_match_raw(ts)


def test_late_rows_inside_the_raw_retention_reach_the_rollups(ts: Harness, scenario: Scenario) -> None:
    write_batch(ts, scenario.recent)
    run_refresh_policies(ts)  # steady state: the watermark is about now() - 1 hour

    assert write_batch(ts, scenario.old10).inserted == 2  # 10 days late: the writer still stores them
    run_refresh_policies(ts)
    assert_caggs_match_raw(ts)  # the refresh window reaches back to them


def chunks(h: Harness) -> list[tuple[bool, bool]]:
    """``(older than 7 days, compressed)`` per chunk of the raw table, oldest first."""
    rows = h.query(
        "SELECT range_end <= now() - INTERVAL '7 days', is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'liquidations_significant' ORDER BY range_start")
    return [(old == "t", compressed == "t") for old, compressed in rows]


def test_compression_policy_compresses_old_chunks_and_replay_still_dedupes(
        ts: Harness, scenario: Scenario) -> None:
    write_all(ts, scenario)
    run_job(ts, "policy_compression", "liquidations_significant")

    state = chunks(ts)
    old_chunks = sum(old for old, _ in state)
    assert old_chunks >= 2 and len(state) > old_chunks  # -100 d, -10 d; and recent ones
    assert all(old == compressed for old, compressed in state), state
    stats = ts.scalar("SELECT count(*) FILTER (WHERE compression_status = 'Compressed') "
                      "FROM chunk_compression_stats('liquidations_significant')")
    assert int(stats or 0) == old_chunks

    total = ts.scalar("SELECT count(*) FROM liquidations_significant")
    replay = write_batch(ts, scenario.old10)  # the binary COPY into compressed chunks hits the key
    assert (replay.inserted, replay.replayed) == (0, True)
    assert ts.scalar("SELECT count(*) FROM liquidations_significant") == total
    backfill = build(scenario.now_ms).old10
    at = EVENT_COLUMNS.index("event_id")
    backfill.events = [(*row[:at], f"backfill-{i}", *row[at + 1:]) for i, row in enumerate(backfill.events)]
    assert write_batch(ts, backfill).inserted == 2
    assert write_batch(ts, backfill).inserted == 0
    dupes = ts.scalar("SELECT count(*) FROM (SELECT 1 FROM liquidations_significant "
                      "GROUP BY time, exchange, event_id HAVING count(*) > 1) AS d")
    assert dupes == "0"


def test_retention_drops_old_chunks_and_rollups_keep_their_hours(ts: Harness, scenario: Scenario) -> None:
    write_all(ts, scenario)
    refresh_all(ts)
    old_hour = "SELECT count(*) FROM liquidations_hourly WHERE hour < now() - INTERVAL '90 days'"
    assert ts.scalar(old_hour) == "1"

    run_job(ts, "policy_retention", "liquidations_significant")
    run_job(ts, "policy_retention", "cascade_events")

    oldest = ts.scalar("SELECT min(time) > now() - INTERVAL '90 days' FROM liquidations_significant")
    assert oldest == "t"
    assert int(ts.scalar("SELECT count(*) FROM liquidations_significant") or 0) == len(scenario.stored) - 1
    assert ts.scalar("SELECT count(*) FROM cascade_events WHERE cascade_id = 'c-old'") == "0"
    kept = ts.scalar("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = "
                     "'liquidations_significant' AND range_end <= now() - INTERVAL '90 days'")
    assert kept == "0"

    run_refresh_policies(ts)
    for cagg in CAGGS:
        run_job(ts, "policy_retention", cagg)
    assert ts.scalar(old_hour) == "1", "the refresh window reached past the raw retention"
    cascades_hour = "SELECT count(*) FROM liquidation_cascades WHERE hour < now() - INTERVAL '90 days'"
    assert ts.scalar(cascades_hour) == "1"


CHUNK_STATUS = ("SELECT c.chunk_name, k.status FROM timescaledb_information.chunks c JOIN "
                "_timescaledb_catalog.chunk k ON k.table_name = c.chunk_name "
                "WHERE c.hypertable_name = 'liquidations_significant' AND c.is_compressed "
                "ORDER BY c.range_start")


def test_upgrading_a_recent_member_leaves_the_compressed_chunks_compressed(ts: Harness) -> None:
    """The upgrade bounds its time with constants: TimescaleDB decompressed every compressed
    chunk for each batch of members when the only conditions were the join's."""
    from shared.models import CascadeMember
    from shared.significance import SignificanceRules
    from tests.factories import liq
    from writer.rows import build_batch

    rules, day, t = SignificanceRules(), 86_400_000, now_ms(ts)
    olds = [liq(exchange=ex, price=60_000.0 + i, quantity=3.0, timestamp_ms=t - d * day,
                event_id=f"{ex}-{d}-{i}")
            for d in (10, 20, 30) for ex in ("binance_usdm", "okx") for i in range(5)]
    recent = liq(exchange="binance_usdm", price=61_000.0, quantity=3.0, timestamp_ms=t - 10 * MIN,
                 event_id="now")
    write_batch(ts, build_batch([*olds, recent], rules, t, 88))
    run_job(ts, "policy_compression", "liquidations_significant")
    before = ts.query(CHUNK_STATUS)
    assert len(before) == 3 and all(status == "1" for _, status in before), before
    member = CascadeMember(cascade_id="c-now", risk_score=0.9, liquidation=recent)
    assert write_batch(ts, build_batch([member], rules, t, 88)).upgraded == 1
    assert ts.query(CHUNK_STATUS) == before
    assert ts.scalar("SELECT cascade_id FROM liquidations_significant WHERE event_id = 'now'") == "c-now"


def test_raising_the_retention_keeps_the_rollup_hours_of_dropped_chunks(ts: Harness,
                                                                       scenario: Scenario) -> None:
    """Retention marks a dropped chunk's range as changed for the caggs: a refresh window widened
    over it (LIQ_RETENTION_DAYS 90 -> 180) recomputed those hours from nothing and erased them."""
    write_all(ts, scenario)
    refresh_all(ts)
    run_refresh_policies(ts)
    old_hour = "SELECT count(*) FROM liquidations_hourly WHERE hour < now() - INTERVAL '90 days'"
    old_cascades = "SELECT count(*) FROM liquidation_cascades WHERE hour < now() - INTERVAL '90 days'"
    run_job(ts, "policy_retention", "liquidations_significant")
    run_job(ts, "policy_retention", "cascade_events")
    run_refresh_policies(ts)
    assert (ts.scalar(old_hour), ts.scalar(old_cascades)) == ("1", "1")
    restore = ("SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', "
               "to_jsonb('89 days 22:00:00'::text))) FROM timescaledb_information.jobs "
               "WHERE proc_name = 'policy_refresh_continuous_aggregate'")
    try:
        lines = ts.query("SELECT liq_apply_policies('180 days', '365 days', '7 days')")
        assert any("window kept" in str(line[0]) for line in lines)
        run_refresh_policies(ts)
        run_refresh_policies(ts)
        assert (ts.scalar(old_hour), ts.scalar(old_cascades)) == ("1", "1")
        held = ts.scalar("SELECT min((config->>'start_offset')::interval) < INTERVAL '90 days' "
                         "FROM timescaledb_information.jobs "
                         "WHERE proc_name = 'policy_refresh_continuous_aggregate'")
        assert held == "t", "the window reaches no further back than the raw data held"
    finally:
        ts.query("SELECT liq_apply_policies('90 days', '365 days', '7 days')")
        ts.query(restore)
