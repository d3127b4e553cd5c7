"""The database sink against a real PostgreSQL: the direct COPY, its fallback on a replay, the
rollup trigger, and a database created by an older schema."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from shared.clock import SYSTEM_CLOCK
from shared.models import CascadeMember
from shared.significance import SignificanceRules
from shared.streams import SinkRetry
from tests.factories import liq
from tests.readme import OURS, inline_code
from tests.writer.test_writer_service import assert_rollups_match_raw, rows
from writer import statements as sql
from writer.migrate import MigrationError, migrate_dsn
from writer.rows import EVENT_COLUMNS, EVENT_TYPES, Batch, build_batch
from writer.sink import DatabaseSink, WriteResult

EVERYTHING = SignificanceRules(default_usd=0.0)


def batch_of(payloads: list[Any]) -> Batch:
    return build_batch(payloads, EVERYTHING, SYSTEM_CLOCK.now_ms(), 90)


def events(first: int, last: int, start_ms: int) -> list[Any]:
    return [liq(exchange="okx" if i % 2 else "bybit", price=67_000.0 + 40 * i, quantity=1.5 + i,
                timestamp_ms=start_ms + i * 1000, event_id=f"e{i}") for i in range(first, last)]


async def write_all(dsn: str, batches: list[Batch]) -> tuple[list[WriteResult], DatabaseSink]:
    sink = DatabaseSink(dsn)
    try:
        return [await sink.write(b) for b in batches], sink
    finally:
        await sink.aclose()


@pytest.fixture
def db(pg_dsn: str) -> str:
    assert migrate_dsn(pg_dsn, "native").mode == "native"
    return pg_dsn


def test_a_batch_that_overlaps_stored_rows_inserts_only_the_new_ones(db: str) -> None:
    start = SYSTEM_CLOCK.now_ms() - 3_600_000
    first, second = events(0, 4, start), events(2, 7, start)
    members = [CascadeMember(cascade_id="c1", risk_score=1.1, liquidation=e) for e in second[:2]]
    results, sink = asyncio.run(write_all(db, [batch_of(first), batch_of(second + members)]))

    # e2 and e3 are stored; their member copies are merged (upgraded), the rest COPied directly:
    # the batch is not a replay.
    assert [(r.inserted, r.upgraded, r.replayed) for r in results] == [(4, 0, False), (3, 2, False)]
    assert (sink.stats.batches, sink.stats.replayed_batches, sink.stats.inserted) == (2, 0, 7)
    assert rows(db, "SELECT event_id, is_cascade FROM liquidations_significant ORDER BY event_id") == [
        ("e0", False), ("e1", False), ("e2", True), ("e3", True), ("e4", False), ("e5", False),
        ("e6", False)]
    assert rows(db, "SELECT sum(event_count), sum(cascade_event_count) FROM liquidations_hourly") == [(7, 2)]
    assert_rollups_match_raw(db)

    again, _ = asyncio.run(write_all(db, [batch_of(second + members)]))
    assert [(r.inserted, r.upgraded, r.replayed) for r in again] == [(0, 0, True)]
    assert rows(db, "SELECT sum(event_count), sum(cascade_event_count) FROM liquidations_hourly") == [(7, 2)]
    assert_rollups_match_raw(db)


def test_a_batch_of_stored_and_new_rows_takes_the_replay_path_and_stores_the_new_ones(db: str) -> None:
    """A redelivery that reaches past what was committed: the direct COPY hits e2, so the whole
    batch goes through the staging table, and e4 to e6 are stored once, with their rollups."""
    start = SYSTEM_CLOCK.now_ms() - 3_600_000
    results, sink = asyncio.run(write_all(db, [batch_of(events(0, 4, start)), batch_of(events(2, 7, start))]))
    assert [(r.inserted, r.upgraded, r.replayed) for r in results] == [(4, 0, False), (3, 0, True)]
    assert (sink.stats.replayed_batches, sink.stats.inserted) == (1, 7)
    assert rows(db, "SELECT event_id FROM liquidations_significant ORDER BY event_id") == [
        (f"e{i}",) for i in range(7)]
    assert rows(db, "SELECT sum(event_count) FROM liquidations_hourly") == [(7,)]
    assert_rollups_match_raw(db)


def test_any_insert_feeds_the_rollups_once(db: str) -> None:
    """A backfill with plain SQL is counted like the writer's COPY; its conflicting rows are not."""
    start = SYSTEM_CLOCK.now_ms() - 3_600_000
    stored = batch_of(events(0, 3, start))
    asyncio.run(write_all(db, [stored]))
    backfill = batch_of(events(1, 5, start)).events  # e1, e2 are stored already
    columns = ", ".join(EVENT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(EVENT_COLUMNS))
    with psycopg.connect(db) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO liquidations_significant ({columns}) VALUES ({placeholders}) "
                        "ON CONFLICT DO NOTHING", backfill)
    assert rows(db, "SELECT sum(event_count) FROM liquidations_hourly") == [(5,)]
    assert rows(db, "SELECT sum(event_count) FROM liquidation_heatmap") == [(5,)]
    assert_rollups_match_raw(db)


BACKFILL = """
INSERT INTO liquidations_significant (time, exchange, symbol, symbol_native, base, market_type, side,
                                      price, quantity, value_usd, price_level, event_id)
VALUES ((%(day)s || ' 12:00:05+00')::timestamptz, 'bybit', 'BTCUSDT', 'BTCUSDT', 'BTC',
        'linear_perpetual', 'long', 67234.5, 2, 134469, 67200, 'backfill-1'),
       ((%(day)s || ' 12:40:00+00')::timestamptz, 'okx', 'BTCUSDT', 'BTC-USDT-SWAP', 'BTC',
        'linear_perpetual', 'short', 67289, 3, 201867, 67200, 'backfill-2')"""


def test_a_backfill_of_days_the_writer_never_saw_is_counted_once_the_readme_made_their_partitions(
        db: str) -> None:
    """README, plain PostgreSQL: "a backfill INSERT from psql is counted too". The writer makes
    the daily partitions of its own batches and of the days ahead only; an older day takes the
    partition call the README shows (without it PostgreSQL refuses the rows)."""
    make_partitions = inline_code(OURS, "SELECT liq_ensure_partitions(")
    day = re.findall(r"'(\d{4}-\d{2}-\d{2})'", make_partitions)[0]
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        conn.execute(BACKFILL, {"day": day})

    with psycopg.connect(db) as conn:
        conn.execute(make_partitions)
        conn.execute(BACKFILL, {"day": day})
    hour = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
    assert rows(db, "SELECT hour, exchange, side, event_count, total_value_usd, total_quantity "
                    "FROM liquidations_hourly ORDER BY exchange") == [
        (hour, "bybit", "long", 1, 134_469.0, 2.0), (hour, "okx", "short", 1, 201_867.0, 3.0)]
    assert rows(db, "SELECT price_level, event_count, total_value_usd FROM liquidation_heatmap "
                    "ORDER BY side") == [(67200.0, 1, 134_469.0), (67200.0, 1, 201_867.0)]
    assert_rollups_match_raw(db)


def test_a_partition_dropped_under_the_writer_is_made_again_and_the_batch_stored_on_retry(db: str) -> None:
    """Another writer's janitor (a clock a little ahead, at the retention edge) or a person drops
    a day this sink made: the next batch of that day fails as a retry, not as bad data to
    dead-letter, and the retry makes the partition again and stores it."""
    start_ms = SYSTEM_CLOCK.now_ms() - 3_600_000
    first, second = batch_of(events(0, 2, start_ms)), batch_of(events(2, 4, start_ms))

    async def body() -> tuple[str, WriteResult]:
        sink = DatabaseSink(db)
        try:
            await sink.write(first)
            with psycopg.connect(db, autocommit=True) as conn:
                named = conn.execute("SELECT liq_partition_name((%s AT TIME ZONE 'UTC')::date)",
                                     (first.events[0][0],)).fetchone()
                part = str(named[0]) if named else ""
                conn.execute(f'DROP TABLE "{part}"')
            with pytest.raises(SinkRetry, match="partition is gone"):
                await sink.write(second)
            return part, await sink.write(second)
        finally:
            await sink.aclose()

    part, result = asyncio.run(body())
    assert part.startswith("liquidations_significant_p")
    assert result.inserted == 2
    assert rows(db, "SELECT event_id FROM liquidations_significant ORDER BY event_id") == [("e2",), ("e3",)]
    # The rollups outlive a dropped day's rows (as after the janitor's drop): each row counted once.
    assert rows(db, "SELECT sum(event_count)::int FROM liquidations_hourly") == [(4,)]


def test_a_database_with_the_pre_release_numeric_schema_is_refused_with_the_fix(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE liquidations_significant ALTER value_usd TYPE numeric(20, 2)")
    with pytest.raises(MigrationError, match=r"value_usd is numeric\(20,2\).*remove \.liq/pg"):
        migrate_dsn(db, "native")
    with pytest.raises(SinkRetry, match="pre-release schema"):
        asyncio.run(write_all(db, [batch_of(events(0, 1, SYSTEM_CLOCK.now_ms() - 60_000))]))


def test_the_member_upgrade_probes_the_key_instead_of_scanning_the_table(db: str) -> None:
    """The planner knows nothing of the staging table and would hash-join it against every
    partition (a scan of the whole table per batch); the sink makes it probe the primary key."""
    start = SYSTEM_CLOCK.now_ms() - 3 * 86_400_000
    stored = [liq(exchange="bybit", price=67_000.0 + i, quantity=2.0, timestamp_ms=start + i * 60_000,
                  event_id=f"s{i}") for i in range(3 * 1440)]  # three days of one a minute
    asyncio.run(write_all(db, [batch_of(stored)]))
    members = batch_of([CascadeMember(cascade_id="c", risk_score=1.0, liquidation=x) for x in stored[-20:]])
    with psycopg.connect(db) as conn:
        conn.execute("ANALYZE liquidations_significant")
        conn.execute(sql.STAGE_EVENTS_DDL)
        with conn.cursor().copy(sql.COPY_EVENTS) as copy:
            copy.set_types(list(EVENT_TYPES))
            for row in members.merges:
                copy.write_row(row)
        conn.execute(sql.SET_JOINS, ("off", "off"))
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql.UPGRADE_MEMBERS_NATIVE).fetchall())
    assert "Nested Loop" in plan and "Index Scan using liquidations_significant_p" in plan
    assert "Seq Scan on liquidations_significant" not in plan and "Hash Join" not in plan


def test_the_rest_of_the_transaction_plans_with_the_connections_own_join_settings(db: str) -> None:
    start = SYSTEM_CLOCK.now_ms() - 3_600_000
    stored = events(0, 3, start)
    members = batch_of([CascadeMember(cascade_id="c1", risk_score=1.1, liquidation=e) for e in stored])

    async def run() -> tuple[WriteResult, Any]:
        sink = DatabaseSink(db)
        try:
            await sink.write(batch_of(stored))
            conn = await sink.connect()
            result = WriteResult()
            async with conn.transaction():
                await sink._merge_events(conn, members.merges, True, result)
                settings = await (await conn.execute(sql.JOIN_SETTINGS)).fetchone()
            return result, settings
        finally:
            await sink.aclose()

    result, settings = asyncio.run(run())
    assert (result.inserted, result.upgraded) == (0, 3)
    assert settings == ("on", "on")


def test_partition_ddl_gives_up_behind_a_long_reader_and_the_batch_is_retried(db: str) -> None:
    """A user's query reading ``liquidations_significant`` holds its lock until it ends: the
    partition a batch's new day needs (which locks the whole table) gives up after the
    lock-wait limit, a retry for the consumer loop, instead of holding the writer's connection
    (and queueing every later reader behind it); once the reader is done the batch is stored."""
    now = SYSTEM_CLOCK.now_ms()
    today, days_ago = batch_of(events(0, 2, now)), batch_of(events(2, 4, now - 3 * 86_400_000))

    async def run() -> list[int]:
        sink = DatabaseSink(db, ddl_lock_timeout_s=0.2)
        reader = await psycopg.AsyncConnection.connect(db)
        try:
            stored = [(await sink.write(today)).inserted]
            await reader.execute("SELECT count(*) FROM liquidations_significant")  # its lock stays
            with pytest.raises(SinkRetry, match="LockNotAvailable") as failed:
                await asyncio.wait_for(sink.write(days_ago), 30)
            assert isinstance(failed.value.__cause__, psycopg.errors.LockNotAvailable)
            await reader.rollback()
            stored.append((await asyncio.wait_for(sink.write(days_ago), 30)).inserted)
            return stored
        finally:
            await reader.close()
            await sink.aclose()

    assert asyncio.run(run()) == [2, 2]
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(4,)]


def test_a_plain_event_read_after_its_member_is_merged_not_copied_into_a_key_error(db: str) -> None:
    """The member copy of a liquidation often reaches the writer before its plain event: the
    plain event's COPY failed on the key (an ERROR with the statement in the server's log, a
    rolled-back COPY, the whole batch through the slow path). The sink remembers the member
    rows it committed and merges such an event; a restarted sink, which does not know them,
    still stores nothing twice through the fallback."""
    start = SYSTEM_CLOCK.now_ms() - 3_600_000
    plain, other = events(0, 2, start)
    member = CascadeMember(cascade_id="c1", risk_score=1.1, liquidation=plain)
    results, sink = asyncio.run(write_all(db, [batch_of([member]), batch_of([plain, other])]))
    assert [(r.inserted, r.upgraded, r.replayed) for r in results] == [(1, 0, False), (1, 0, False)]
    assert len(sink.stored_members) == 1
    restarted, _ = asyncio.run(write_all(db, [batch_of([plain])]))
    assert [(r.inserted, r.upgraded, r.replayed) for r in restarted] == [(0, 0, True)]
    stored = "SELECT event_id, is_cascade, cascade_id FROM liquidations_significant ORDER BY event_id"
    assert rows(db, stored) == [("e0", True, "c1"), ("e1", False, None)]
