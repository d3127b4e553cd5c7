"""The migrator's and the writer's SQL, replayed in the PGlite harness with the same structure.

- :func:`apply_plan` mirrors ``writer.migrate.migrate``: the bootstrap tables, the recorded mode,
  then each migration not yet in ``schema_migrations`` in its own transaction (its statements
  one by one, then its ``schema_migrations`` row).
- :func:`write_batch` mirrors ``writer.sink.DatabaseSink`` in TimescaleDB mode: the temp staging
  tables once per session, then per batch one transaction running the exact statement texts of
  ``writer.statements``: the rows straight into ``liquidations_significant`` in a savepoint and,
  on a duplicate key, back to it and through staging. The rows go in by the same binary COPY
  statements and bytes (``harness.copy_rows``), read from PGlite's ``'/dev/blob'`` where the
  sink sends them on STDIN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.timescale.harness import Harness, PGliteError, copy_rows
from writer import statements as sql
from writer.migrate import BOOTSTRAP, Migration
from writer.rows import CASCADE_TYPES, EVENT_COLUMNS, EVENT_TYPES, Batch
from writer.sink import WriteResult

RAW_TABLES = ("liquidations_significant", "cascade_events")
CAGGS = ("liquidations_hourly", "liquidation_heatmap", "liquidation_cascades")
# The migrations that create the caggs, the reader objects built on them, and their policies.
CAGG_MIGRATIONS = ("rollups", "readers", "policies")
RECORD_META = (
    "INSERT INTO schema_meta (key, value) VALUES ($1, $2) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now() "
    "WHERE schema_meta.value IS DISTINCT FROM EXCLUDED.value"
)
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, filename, checksum) VALUES ($1, $2, $3, $4)"
)


@dataclass
class PlanRun:
    """What one :func:`apply_plan` did."""

    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    statements: int = 0


def apply_plan(h: Harness, migrations: Sequence[Migration], extversion: str) -> PlanRun:
    """Apply ``migrations`` like ``migrate`` does (already-applied versions are skipped)."""
    for statement in BOOTSTRAP:
        h.execute(statement)
    with h.transaction():
        h.execute(RECORD_META, ["mode", "timescale"])
        h.execute(RECORD_META, ["extversion", extversion])
    done = {row[0] for row in h.query("SELECT version FROM schema_migrations")}
    run = PlanRun()
    for migration in migrations:
        if migration.version in done:
            run.already.append(migration.version)
            continue
        with h.transaction():
            run.statements += execute_statements(h, migration.statements)
            h.execute(RECORD_MIGRATION,
                      [migration.version, migration.name, migration.filename, migration.checksum])
        run.applied.append(migration.version)
    return run


def execute_statements(h: Harness, statements: Sequence[str]) -> int:
    """Run each statement on its own (as psycopg's ``conn.execute`` would); how many ran."""
    for statement in statements:
        h.execute(statement)
    return len(statements)


def prepare_session(h: Harness) -> None:
    """What the sink runs once per connection: the temp staging tables."""
    h.execute(sql.STAGE_EVENTS_DDL)
    h.execute(sql.STAGE_CASCADES_DDL)


def write_batch(h: Harness, batch: Batch) -> WriteResult:
    """Commit ``batch`` with the writer's TimescaleDB-mode statements, in one transaction."""
    counts = WriteResult()
    if batch.empty:
        return counts
    with h.transaction():
        if batch.events or batch.merges:
            _write_events(h, batch, counts)
        if batch.cascades:
            h.execute(sql.LOCK_CASCADES)
            copy_rows(h, sql.COPY_CASCADES, CASCADE_TYPES, batch.cascades)
            h.execute(sql.DELETE_MOVED_CASCADES)
            counts.cascades = _affected(h, sql.UPSERT_CASCADES)
    return counts


UNIQUE_VIOLATION = "23505"


def _write_events(h: Harness, batch: Batch, counts: WriteResult) -> None:
    """The sink's order: a direct insert of ``events`` in a savepoint; ``merges`` (and all rows,
    when that insert hit a stored row) through the staging table, insert-if-absent + upgrade."""
    merged = batch.merges
    if batch.events:
        h.execute("SAVEPOINT liq_direct")
        try:
            counts.inserted = copy_rows(h, sql.COPY_EVENTS_DIRECT, EVENT_TYPES, batch.events)
            h.execute("RELEASE SAVEPOINT liq_direct")
        except PGliteError as exc:
            if exc.code != UNIQUE_VIOLATION:
                raise
            h.execute("ROLLBACK TO SAVEPOINT liq_direct")
            counts.replayed = True
            merged = [*batch.events, *batch.merges]
    if not merged:
        return
    copy_rows(h, sql.COPY_EVENTS, EVENT_TYPES, merged)
    counts.inserted += _affected(h, sql.INSERT_EVENTS)
    if batch.members:
        h.execute(sql.SET_JOINS.replace("%s", "$1", 1).replace("%s", "$2", 1), ["off", "off"])
        times = [row[EVENT_COLUMNS.index("time")] for row in merged]
        upgrade = sql.UPGRADE_MEMBERS_TIMESCALE.replace("%(lo)s", "$1").replace("%(hi)s", "$2")
        counts.upgraded = h.execute(upgrade, [min(times), max(times)])[-1].affected  # type: ignore[type-var]
        h.execute(sql.SET_JOINS.replace("%s", "$1", 1).replace("%s", "$2", 1), ["on", "on"])


def _affected(h: Harness, statement: str) -> int:
    return h.execute(statement)[-1].affected


# --- maintenance: what TimescaleDB's scheduler would do (it never runs in PGlite) ---------

def refresh_all(h: Harness) -> None:
    """Materialize every cagg over all time (outside a transaction, as TimescaleDB requires)."""
    for cagg in CAGGS:
        h.execute(f"CALL refresh_continuous_aggregate('{cagg}', NULL, NULL)")


def reset(h: Harness, migrations: Sequence[Migration]) -> None:
    """Empty the raw tables and rebuild the caggs (and what hangs on them) from their migrations.

    TRUNCATE alone would leave each cagg's watermark where the last test put it, hiding the next
    test's older rows from the real-time part until a refresh; fresh caggs start with none.
    """
    h.execute("ROLLBACK")  # a failed test may have left its transaction open (a no-op otherwise)
    h.execute("SET search_path TO public")
    h.execute(f"TRUNCATE {', '.join(RAW_TABLES)}")
    h.execute(f"DROP MATERIALIZED VIEW IF EXISTS {', '.join(CAGGS)} CASCADE")
    for migration in migrations:
        if migration.name in CAGG_MIGRATIONS:
            with h.transaction():
                execute_statements(h, migration.statements)


def job_ids(h: Harness) -> dict[tuple[str, str], str]:
    """``(proc_name, hypertable_name) → job_id`` of the public schema's policies."""
    rows = h.query(
        "SELECT proc_name, hypertable_name, job_id FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = 'public'")
    return {(str(proc), str(table)): str(job) for proc, table, job in rows}


def run_job(h: Harness, proc: str, table: str) -> None:
    """``CALL run_job`` for the policy ``proc`` of ``table`` (policies never run by themselves here)."""
    h.execute(f"CALL run_job({job_ids(h)[(proc, table)]})")


def run_refresh_policies(h: Harness) -> None:
    """One run of every cagg's refresh policy (as the scheduler would every 5 minutes)."""
    for cagg in CAGGS:
        run_job(h, "policy_refresh_continuous_aggregate", cagg)
