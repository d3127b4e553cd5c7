"""The TimescaleDB migration plan applied for real: structure, idempotence, objects and policies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.timescale.harness import Harness, PGliteError
from tests.timescale.replay import CAGGS, RAW_TABLES, PlanRun, apply_plan, execute_statements
from writer.migrate import COLUMNSTORE_FROM, Migration, parse_version, plan

pytestmark = pytest.mark.timescale

SNAPSHOT = {
    "hypertables": "SELECT hypertable_schema, hypertable_name, compression_enabled "
                   "FROM timescaledb_information.hypertables ORDER BY 1, 2",
    "dimensions": "SELECT hypertable_name, column_name, time_interval "
                  "FROM timescaledb_information.dimensions WHERE hypertable_schema = 'public' ORDER BY 1",
    "caggs": "SELECT view_name, hypertable_name, materialized_only, view_definition "
             "FROM timescaledb_information.continuous_aggregates ORDER BY 1",
    "jobs": "SELECT job_id, proc_name, hypertable_name, schedule_interval, config::text "
            "FROM timescaledb_information.jobs ORDER BY 1",
    "columnstore": "SELECT hypertable::text, segmentby, orderby "
                   "FROM timescaledb_information.hypertable_compression_settings ORDER BY 1",
    "relations": "SELECT relname, relkind FROM pg_class "
                 "WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
    "functions": "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc "
                 "WHERE pronamespace = 'public'::regnamespace AND proname LIKE ANY "
                 "(ARRAY['liq\\_%', 'get\\_price\\_level\\_clusters']) ORDER BY 1",
}


def snapshot(h: Harness) -> dict[str, list[tuple[str | None, ...]]]:
    """Every catalog fact a migration sets up."""
    return {name: h.query(query) for name, query in SNAPSHOT.items()}


def timescale_plan(h: Harness) -> list[Migration]:
    return plan("timescale", h.extversion)


def test_full_plan_applied_once_per_migration_transaction(ts: Harness, migrated: PlanRun) -> None:
    migrations = timescale_plan(ts)
    assert migrated.applied == [m.version for m in migrations] and migrated.already == []
    recorded = ts.query("SELECT version, filename, checksum FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.filename, m.checksum) for m in migrations]
    assert ts.query("SELECT key, value FROM schema_meta ORDER BY key") == [
        ("extversion", ts.extversion), ("mode", "timescale")]
    variant = "ts-columnstore" if parse_version(ts.extversion)[:2] >= COLUMNSTORE_FROM else "ts-compress"
    assert f"007_compression.{variant}.sql" in [m.filename for m in migrations]
    assert ts.license == "timescale"


def test_cagg_ddl_and_policies_work_inside_a_transaction_but_refresh_does_not(ts: Harness) -> None:
    with ts.transaction():
        ts.execute("CREATE MATERIALIZED VIEW probe_cagg WITH (timescaledb.continuous) AS "
                   "SELECT time_bucket('1 day', time) AS day, count(*) FROM liquidations_significant "
                   "GROUP BY 1 WITH NO DATA")
        ts.execute("SELECT add_continuous_aggregate_policy('probe_cagg', INTERVAL '3 days', "
                   "INTERVAL '1 hour', INTERVAL '1 hour')")
        ts.execute("SELECT add_retention_policy('probe_cagg', INTERVAL '365 days')")
    ts.execute("DROP MATERIALIZED VIEW probe_cagg")

    for statement in ("CREATE MATERIALIZED VIEW probe_cagg WITH (timescaledb.continuous) AS SELECT "
                      "time_bucket('1 day', time) AS day, count(*) FROM liquidations_significant GROUP BY 1",
                      "CALL refresh_continuous_aggregate('liquidations_hourly', NULL, NULL)"):
        ts.execute("BEGIN")
        try:
            with pytest.raises(PGliteError, match="cannot run inside a transaction block"):
                ts.execute(statement)  # hence WITH NO DATA in 004, and no refresh in any migration
        finally:
            ts.execute("ROLLBACK")

def test_second_application_is_a_no_op(ts: Harness) -> None:
    before = snapshot(ts)
    migrations = timescale_plan(ts)

    again = apply_plan(ts, migrations, ts.extversion)
    assert again.applied == [] and again.already == [m.version for m in migrations]

    for migration in migrations:  # forced: every statement again (IF NOT EXISTS everywhere)
        with ts.transaction():
            execute_statements(ts, migration.statements)
    assert snapshot(ts) == before


def test_hypertables_real_time_caggs_and_columnstore(ts: Harness) -> None:
    hypertables = dict((r[1], r[2]) for r in ts.query(SNAPSHOT["hypertables"]) if r[0] == "public")
    assert hypertables == {"liquidations_significant": "t", "cascade_events": "f"}
    assert ts.query(SNAPSHOT["dimensions"]) == [("cascade_events", "start_time", "7 days"),
                                                ("liquidations_significant", "time", "1 day")]
    caggs = {r[0]: (r[1], r[2]) for r in ts.query(SNAPSHOT["caggs"])}
    assert caggs == {"liquidations_hourly": ("liquidations_significant", "f"),
                     "liquidation_heatmap": ("liquidations_significant", "f"),
                     "liquidation_cascades": ("cascade_events", "f")}
    settings = ts.query("SELECT segmentby, orderby "
                        "FROM timescaledb_information.hypertable_columnstore_settings "
                        "WHERE hypertable = 'liquidations_significant'::regclass")
    assert settings == [("exchange,symbol", '"time" DESC')]


def jobs(h: Harness) -> dict[tuple[str, str], dict[str, str | None]]:
    """``(proc, hypertable) → config`` (each value as text) of the public schema's policies."""
    rows = h.query("SELECT proc_name, hypertable_name, key, value FROM timescaledb_information.jobs, "
                   "jsonb_each_text(config) WHERE hypertable_schema = 'public'")
    out: dict[tuple[str, str], dict[str, str | None]] = {}
    for proc, table, key, value in rows:
        out.setdefault((str(proc), str(table)), {})[str(key)] = value
    return out


def test_policies_retention_compression_and_refresh_windows(ts: Harness) -> None:
    policies = jobs(ts)
    for table in RAW_TABLES:
        assert policies[("policy_retention", table)]["drop_after"] == "90 days"
    for cagg in CAGGS:
        assert policies[("policy_retention", cagg)]["drop_after"] == "365 days"
        refresh = policies[("policy_refresh_continuous_aggregate", cagg)]
        assert (refresh["start_offset"], refresh["end_offset"]) == ("89 days 22:00:00", "01:00:00")
    assert policies[("policy_compression", "liquidations_significant")]["compress_after"] == "7 days"
    assert len(policies) == 2 + 3 + 3 + 1
    inside = ts.scalar(
        "SELECT bool_and((r.config ->> 'start_offset')::interval < (d.config ->> 'drop_after')::interval) "
        "FROM timescaledb_information.jobs AS r, timescaledb_information.jobs AS d "
        "WHERE r.proc_name = 'policy_refresh_continuous_aggregate' AND d.proc_name = 'policy_retention' "
        "AND d.hypertable_name IN ('liquidations_significant', 'cascade_events')")
    assert inside == "t", "a cagg refresh window reaches past the raw retention"
    status = {r[0]: r[1] for r in ts.query("SELECT key, value FROM liq_storage_status()")}
    assert status["mode"] == "timescale" and status["compression"] == "after 7 days"


@pytest.fixture
def scratch_schema(ts: Harness) -> Iterator[Harness]:
    """A schema first on the search_path (dropped afterwards), for a second copy of the schema."""
    ts.execute("CREATE SCHEMA ts_compress_probe")
    ts.execute("SET search_path TO ts_compress_probe, public")
    try:
        yield ts
    finally:
        ts.execute("SET search_path TO public")
        ts.execute("DROP SCHEMA ts_compress_probe CASCADE")


def test_pre_2_18_compression_variant_applies_and_compresses(scratch_schema: Harness) -> None:
    h = scratch_schema
    migrations = plan("timescale", "2.17.1")
    assert "007_compression.ts-compress.sql" in [m.filename for m in migrations]
    for migration in migrations:
        with h.transaction():
            execute_statements(h, migration.statements)

    compressed = h.query("SELECT compression_enabled FROM timescaledb_information.hypertables "
                         "WHERE hypertable_schema = 'ts_compress_probe' "
                         "AND hypertable_name = 'liquidations_significant'")
    assert compressed == [("t",)]
    h.execute("INSERT INTO liquidations_significant (time, exchange, symbol, symbol_native, base, "
              "market_type, side, price, quantity, value_usd, price_level, event_id) VALUES "
              "(now() - INTERVAL '10 days', 'binance', 'BTCUSDT', 'BTCUSDT', 'BTC', 'linear_perpetual', "
              "'long', 60000, 2, 120000, 60000, 'probe-1')")
    job = h.scalar("SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_schema = "
                   "'ts_compress_probe' AND proc_name = 'policy_compression' "
                   "AND config ->> 'compress_after' = '7 days'")
    h.execute(f"CALL run_job({job})")
    assert h.query("SELECT is_compressed FROM timescaledb_information.chunks "
                   "WHERE hypertable_schema = 'ts_compress_probe' "
                   "AND hypertable_name = 'liquidations_significant'") == [("t",)]



def test_policies_follow_the_retention_settings_at_every_migrate(ts: Harness) -> None:
    """``liq migrate`` calls liq_apply_policies with the current settings: a later
    LIQ_RETENTION_DAYS=180 must reach the policies, not only the writer's cutoff. The refresh
    window widens only as far back as raw data is held (an empty database: not at all)."""
    def apply(retention: str, rollups: str, compress: str) -> list[str]:
        rows = ts.query("SELECT liq_apply_policies($1::interval, $2::interval, $3::interval)",
                        [retention, rollups, compress])
        return [str(r[0]) for r in rows]

    assert apply("90 days", "365 days", "7 days") == [], "the first migrate's settings: nothing to do"
    try:
        lines = apply("180 days", "730 days", "14 days")
        changed = [line for line in lines if "window kept" not in line]
        assert len(changed) == len(RAW_TABLES) + len(CAGGS) + 1, lines
        assert sum("window kept at 89 days 22:00:00" in line for line in lines) == len(CAGGS)
        policies = jobs(ts)
        for table in RAW_TABLES:
            assert policies[("policy_retention", table)]["drop_after"] == "180 days"
        for cagg in CAGGS:
            assert policies[("policy_retention", cagg)]["drop_after"] == "730 days"
            refresh = policies[("policy_refresh_continuous_aggregate", cagg)]
            assert refresh["start_offset"] == "89 days 22:00:00", "no raw data held further back"
        assert policies[("policy_compression", "liquidations_significant")]["compress_after"] == "14 days"
        assert [line for line in apply("180 days", "730 days", "14 days") if "window kept" not in line] == []
    finally:
        apply("90 days", "365 days", "7 days")
    assert jobs(ts)[("policy_retention", "liquidations_significant")]["drop_after"] == "90 days"
    from writer.migrate import APPLY_POLICIES  # the statement liq migrate runs, with whole days
    statement = APPLY_POLICIES % ("$1", "$2", "$3")
    assert ts.query(statement, [90, 365, 7]) == []
    assert len(ts.query(statement, [120, 365, 7])) == len(RAW_TABLES) + len(CAGGS), "retention, window kept"
    assert jobs(ts)[("policy_retention", "liquidations_significant")]["drop_after"] == "120 days"
    apply("90 days", "365 days", "7 days")
    try:
        assert len(ts.query(statement, [30, 365, 7])) == len(RAW_TABLES) + len(CAGGS), "narrowing is applied"
        refresh = jobs(ts)[("policy_refresh_continuous_aggregate", CAGGS[0])]
        assert refresh["start_offset"] == "29 days 22:00:00"
    finally:  # the empty database cannot widen it back by itself: the session's window, restored
        apply("90 days", "365 days", "7 days")
        ts.query("SELECT alter_job(job_id, config => jsonb_set(config, '{start_offset}', "
                 "to_jsonb('89 days 22:00:00'::text))) FROM timescaledb_information.jobs "
                 "WHERE proc_name = 'policy_refresh_continuous_aggregate'")
    assert {jobs(ts)[("policy_refresh_continuous_aggregate", c)]["start_offset"] for c in CAGGS} == {
        "89 days 22:00:00"}


def test_the_writer_reads_the_refresh_window_the_database_has(ts: Harness) -> None:
    from writer import statements as sql

    assert float(ts.scalar(sql.REFRESH_WINDOW_DAYS) or 0) == pytest.approx(90 - 2 / 24)

