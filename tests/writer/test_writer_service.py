"""The writer against real Redis and PostgreSQL (plain-PostgreSQL mode).

Every check compares exact counts and sums: the stored rows against what was published, and
every rollup against a direct aggregate over the raw rows, after replays, cascade upgrades,
an outage and partition drops.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec
import psycopg
import pytest
import redis

from shared import codec, keys, servers
from shared.backoff import Backoff
from shared.clock import FakeClock
from shared.models import CascadeEvent, CascadeMember, FactorScores, Liquidation
from shared.redisconn import make_async_redis
from shared.significance import SignificanceRules, publication
from shared.streams import Message, SinkRetry, publish
from tests.conftest import server_dir
from tests.factories import liq
from tests.outages import RETRYING, Counted, outage_lines, redis_down_and_back
from tests.redistypes import Entries
from writer import service as writer_service
from writer.config import WriterSettings
from writer.migrate import migrate_dsn
from writer.rows import EVENT_COLUMNS, Payload, ms_to_datetime
from writer.service import Writer

EVENT_ID = EVENT_COLUMNS.index("event_id")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
NOW_MS = 1_767_225_600_000 + 10 * HOUR_MS  # 2026-01-01 10:00 UTC
SHARDS = 2


def settings(dsn: str, **over: Any) -> WriterSettings:
    return WriterSettings(**{"pg_dsn": dsn, "shards": SHARDS, "batch_age_ms": 0, "batch_size": 7, **over})


def events() -> list[Liquidation]:
    """12 liquidations over three hours, two venues, two symbols; 8 are >= $100K."""
    out = []
    for i in range(12):
        symbol = "BTCUSDT" if i % 2 else "ETHUSDT"
        price = 67_250.0 + 37 * i if symbol == "BTCUSDT" else 3_455.0 + i
        usd = 60_000.0 if i % 3 == 0 else 150_000.0 + 1_000 * i
        out.append(liq(exchange="bybit" if i % 4 < 2 else "okx", symbol=symbol, price=price,
                       quantity=round(usd / price, 6), side="long" if i % 5 else "short",
                       timestamp_ms=NOW_MS - 3 * HOUR_MS + i * 900_000, event_id=f"e{i}"))
    return out


def cascade(phase: str, count: int, total: float, end_offset_ms: int, published: int) -> CascadeEvent:
    return CascadeEvent(
        cascade_id="BTCUSDT-1", symbol="BTCUSDT", phase=phase,  # type: ignore[arg-type]
        start_ms=NOW_MS - HOUR_MS, end_ms=NOW_MS - HOUR_MS + end_offset_ms,
        venues=["bybit", "okx"], count=count, total_notional_usd=total, long_notional_usd=total * 0.75,
        short_notional_usd=total * 0.25, risk_score=1.2, peak_risk_score=1.4, band="high",
        factors=FactorScores(volume_concentration=0.5, time_compression=0.4, price_clustering=0.9,
                             side_imbalance=0.5, institutional_ratio=0.6, cross_exchange=0.7),
        cross_exchange=True, published_ms=published)


async def publish_all(url: str, items: list[tuple[str, Any]]) -> None:
    client = make_async_redis(url)
    try:
        await publish(client, items, keys.EVENT_STREAM_MAXLEN)
    finally:
        await client.aclose()


def to_shard(events_: list[Liquidation]) -> list[tuple[str, Any]]:
    """What collectors publish for ``events_``: each to its shard, a significant one's copy to
    ``liq:significant`` (the default threshold)."""
    return publication(events_, SHARDS, SignificanceRules())


def to_writer(events_: list[Liquidation]) -> list[tuple[str, Any]]:
    """Every one of ``events_`` in ``liq:significant``, as collectors with a lower threshold than
    the writer's would publish them: the writer applies its own rules again."""
    return [(keys.SIGNIFICANT_STREAM, e) for e in events_]


def to_shard_only(events_: list[Liquidation]) -> list[tuple[str, Any]]:
    """What collectors before ``liq:significant`` published: each event to its shard alone."""
    return [(keys.event_stream(keys.shard_of(e.symbol, SHARDS)), e) for e in events_]


async def drain(url: str, dsn: str, **over: Any) -> Writer:
    client = make_async_redis(url)
    writer = Writer(client, settings(dsn, **over), dsn, clock=FakeClock(NOW_MS))
    try:
        await writer.run_until_idle()
    finally:
        await writer.aclose()
        await client.aclose()
    return writer


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


HOURLY_FROM_RAW = """
SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), exchange, symbol, side, count(*),
       sum(value_usd), max(value_usd), sum(quantity), count(*) FILTER (WHERE is_cascade),
       coalesce(sum(value_usd) FILTER (WHERE is_cascade), 0)
FROM liquidations_significant GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
HOURLY = """
SELECT hour, exchange, symbol, side, event_count, total_value_usd, max_value_usd, total_quantity,
       cascade_event_count, cascade_value_usd
FROM liquidations_hourly WHERE event_count > 0 ORDER BY 1, 2, 3, 4"""
HEATMAP_FROM_RAW = """
SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), symbol, price_level, side, count(*),
       sum(value_usd), max(value_usd)
FROM liquidations_significant GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
HEATMAP = """
SELECT hour, symbol, price_level, side, event_count, total_value_usd, max_value_usd
FROM liquidation_heatmap WHERE event_count > 0 ORDER BY 1, 2, 3, 4"""
CASCADES_FROM_RAW = """
SELECT date_bin('1 hour', start_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), symbol, count(*),
       sum(event_count), sum(total_value_usd), max(peak_risk_score), count(*) FILTER (WHERE cross_exchange)
FROM cascade_events GROUP BY 1, 2 ORDER BY 1, 2"""
CASCADES = """
SELECT hour, symbol, cascade_count, liquidation_count, total_value_usd, max_risk_score, cross_exchange_count
FROM liquidation_cascades ORDER BY 1, 2"""


def sums_of(table: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``table`` with each float as ``approx``: float sums depend on the order of addition."""
    return [tuple(pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in row) for row in table]


def assert_rollups_match_raw(dsn: str) -> None:
    assert rows(dsn, HOURLY) == sums_of(rows(dsn, HOURLY_FROM_RAW))
    assert rows(dsn, HEATMAP) == sums_of(rows(dsn, HEATMAP_FROM_RAW))
    assert rows(dsn, CASCADES) == sums_of(rows(dsn, CASCADES_FROM_RAW))


@pytest.fixture
def db(pg_dsn: str) -> Iterator[str]:
    assert migrate_dsn(pg_dsn, "native").mode == "native"
    yield pg_dsn


def test_significant_events_are_stored_once_and_rollups_match(redis_url: str, db: str) -> None:
    evs = events()
    asyncio.run(publish_all(redis_url, to_shard(evs)))
    writer = asyncio.run(drain(redis_url, db))
    significant = [e for e in evs if e.notional_usd >= 100_000]
    assert len(significant) == 8
    assert writer.skipped["insignificant"] == 0, "the collectors copied the significant ones only"
    stored = rows(db, "SELECT event_id, exchange, symbol, side, value_usd, is_cascade"
                      " FROM liquidations_significant ORDER BY time")
    assert [r[0] for r in stored] == [e.event_id for e in significant]
    assert [r[4] for r in stored] == [e.notional_usd for e in significant]  # the float, unrounded
    assert not any(r[5] for r in stored)
    assert_rollups_match_raw(db)
    # The same events published again (a collector replay) and redelivered: nothing doubles.
    asyncio.run(publish_all(redis_url, to_shard(evs)))
    asyncio.run(drain(redis_url, db))
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
    assert_rollups_match_raw(db)


def test_the_writer_reads_the_significant_copies_not_the_event_shards(redis_url: str, db: str) -> None:
    """Its rows go out in transactions of ``batch_size`` rows; the 4 insignificant events stay
    in the shards, never read by the writer (no writer group there)."""
    import redis

    asyncio.run(publish_all(redis_url, to_shard(events())))
    writer = asyncio.run(drain(redis_url, db, batch_size=3))
    assert (writer.sink.stats.batches, writer.sink.stats.inserted) == (3, 8), "8 rows: 3 + 3 + 2"
    assert writer.skipped["insignificant"] == 0
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
    client = redis.Redis.from_url(redis_url)
    try:
        assert sum(int(client.xlen(s)) for s in keys.event_streams(SHARDS)) == 12
        shards = [s for s in keys.event_streams(SHARDS) if client.exists(s)]
        assert [g for s in shards for g in client.xinfo_groups(s)] == []
    finally:
        client.close()


def test_a_writer_group_left_on_the_event_shards_is_drained_then_removed(redis_url: str, db: str) -> None:
    """An earlier writer read every event from the shards: what its group there still holds
    (published with no copy to liq:significant) is stored, then the group removed."""
    import redis

    evs = events()
    client = redis.Redis.from_url(redis_url)
    try:
        for stream in keys.event_streams(SHARDS):
            client.xgroup_create(stream, keys.WRITER_GROUP, id="0", mkstream=True)
        asyncio.run(publish_all(redis_url, to_shard_only(evs[:6])))  # before the upgrade
        asyncio.run(publish_all(redis_url, to_shard(evs[6:])))  # after: both ways, stored once
        writer = asyncio.run(drain(redis_url, db))
        assert writer.skipped["insignificant"] == sum(e.notional_usd < 100_000 for e in evs)
        assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
        assert [g for s in keys.event_streams(SHARDS) for g in client.xinfo_groups(s)] == []
        assert asyncio.run(drain(redis_url, db)).sink.stats.inserted == 0, "nothing left to read"
    finally:
        client.close()
    assert_rollups_match_raw(db)


def test_per_symbol_threshold(redis_url: str, db: str) -> None:
    asyncio.run(publish_all(redis_url, to_shard(events())))
    asyncio.run(drain(redis_url, db, significant_usd_by_symbol={"ETHUSDT": 1e9}))
    assert rows(db, "SELECT DISTINCT symbol FROM liquidations_significant") == [("BTCUSDT",)]
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(4,)]


def test_cascade_members_upgrade_rows_and_cascade_rollup(redis_url: str, db: str) -> None:
    evs = events()
    asyncio.run(publish_all(redis_url, to_shard(evs)))
    asyncio.run(drain(redis_url, db))
    btc = [e for e in evs if e.symbol == "BTCUSDT"]
    # Members: two already stored (>= $100K), one small one that only a cascade makes stored.
    members = [CascadeMember(cascade_id="BTCUSDT-1", risk_score=1.2, liquidation=e) for e in btc[:3]]
    start = cascade("start", 5, 500_000.0, 10_000, NOW_MS - HOUR_MS + 10_000)
    end = cascade("end", 9, 900_000.0, 60_000, NOW_MS - HOUR_MS + 90_000)
    items: list[tuple[str, Any]] = [(keys.CASCADE_MEMBER_STREAM, m) for m in members]
    items += [(keys.CASCADE_STREAM, end), (keys.CASCADE_STREAM, start)]  # out of order on purpose
    for _ in range(2):  # the second round is a full redelivery
        asyncio.run(publish_all(redis_url, items))
        asyncio.run(drain(redis_url, db))
        flagged = rows(db, "SELECT event_id, cascade_id, risk_score FROM liquidations_significant"
                           " WHERE is_cascade ORDER BY time")
        assert flagged == [(m.liquidation.event_id, "BTCUSDT-1", 1.2) for m in members]
        assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(9,)]
        stored = rows(db, "SELECT phase, status, event_count, total_value_usd, venues FROM cascade_events")
        assert stored == [("end", "ended", 9, 900_000.0, ["bybit", "okx"])]
        assert_rollups_match_raw(db)


def test_a_cascade_keeps_its_latest_message_of_a_phase_and_its_rollup_follows_a_moved_start(
        redis_url: str, db: str) -> None:
    """Two escalations stored newest first (a redelivery): the older one must not overwrite the
    newer. Then the detector moves the start back into the previous hour: the row moves, and the
    hourly cascade rollup leaves the old hour for the new one."""
    newer = cascade("escalate", 7, 700_000.0, 30_000, NOW_MS - HOUR_MS + 60_000)
    older = cascade("escalate", 5, 500_000.0, 20_000, NOW_MS - HOUR_MS + 30_000)
    for message in (newer, older):  # two batches: within one, writer.rows already keeps the newer
        asyncio.run(publish_all(redis_url, [(keys.CASCADE_STREAM, message)]))
        asyncio.run(drain(redis_url, db))
    stored = "SELECT phase, event_count, total_value_usd, start_time FROM cascade_events"
    assert rows(db, stored) == [("escalate", 7, 700_000.0, ms_to_datetime(NOW_MS - HOUR_MS))]
    moved_ms = NOW_MS - HOUR_MS - 5 * 60_000
    moved = msgspec.structs.replace(cascade("end", 9, 900_000.0, 40_000, NOW_MS - HOUR_MS + 90_000),
                                    start_ms=moved_ms)
    asyncio.run(publish_all(redis_url, [(keys.CASCADE_STREAM, moved)]))
    asyncio.run(drain(redis_url, db))
    assert rows(db, stored) == [("end", 9, 900_000.0, ms_to_datetime(moved_ms))]
    assert rows(db, "SELECT hour, cascade_count, liquidation_count FROM liquidation_cascades") == [
        (ms_to_datetime(NOW_MS - 2 * HOUR_MS), 1, 9)]
    assert_rollups_match_raw(db)


def test_retention_cutoff_and_janitor_drop_whole_partitions(redis_url: str, db: str) -> None:
    old = liq(symbol="BTCUSDT", price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS - 91 * 24 * HOUR_MS,
              event_id="too-old")
    edge = liq(symbol="BTCUSDT", price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS - 89 * 24 * HOUR_MS,
               event_id="kept")
    asyncio.run(publish_all(redis_url, to_shard([old, edge, *events()])))
    writer = asyncio.run(drain(redis_url, db))
    assert writer.skipped["expired"] == 1
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(9,)]

    async def maintain(days_later: int) -> Any:
        client = make_async_redis(redis_url)
        w = Writer(client, settings(db), db, clock=FakeClock(NOW_MS + days_later * 24 * HOUR_MS))
        try:
            return await w.maintain()
        finally:
            await w.aclose()
            await client.aclose()

    report = asyncio.run(maintain(0))
    assert report.dropped == []
    assert len(report.created) == 2  # today exists already (events), tomorrow and the day after
    report = asyncio.run(maintain(2))  # the partition of "kept" now lies entirely past 90 days
    assert report.dropped == ["liquidations_significant_p20251004"]
    assert rows(db, "SELECT count(*) FROM liquidations_significant WHERE event_id = 'kept'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
    # Rollups keep the dropped partition's hour (a year of rollups outlives 90 days of raw rows).
    assert rows(db, "SELECT sum(event_count) FROM liquidations_hourly") == [(9,)]


def test_the_janitors_partition_ddl_gives_up_behind_a_long_reader(redis_url: str, db: str) -> None:
    """The janitor runs on the writer's connection under its lock: behind a user's long query
    its partition DDL gives up after the lock-wait limit (an outage of the job, logged and run
    again later) instead of stalling every write; the next run creates the partitions."""
    asyncio.run(publish_all(redis_url, to_shard(events())))
    asyncio.run(drain(redis_url, db))

    async def run() -> Any:
        client = make_async_redis(redis_url)
        w = Writer(client, settings(db), db, clock=FakeClock(NOW_MS + 7 * 24 * HOUR_MS))
        w.sink.ddl_lock_timeout_s = 0.2
        reader = await psycopg.AsyncConnection.connect(db)
        try:
            await reader.execute("SELECT count(*) FROM liquidations_significant")  # its lock stays
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await asyncio.wait_for(w.maintain(), 30)
            await reader.rollback()
            return await asyncio.wait_for(w.maintain(), 30)
        finally:
            await reader.close()
            await w.aclose()
            await client.aclose()

    report = asyncio.run(run())
    assert report.created == [f"liquidations_significant_p202601{d:02d}" for d in (8, 9, 10)]


def test_the_janitor_purges_the_cascades_and_rollups_of_the_dropped_day(redis_url: str, db: str) -> None:
    """With rollups kept as long as raw rows, the day that leaves the raw table takes its
    cascade and its rollup rows along; the recent ones stay."""
    day_ms = 24 * HOUR_MS
    edge = liq(symbol="BTCUSDT", price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS - 89 * day_ms,
               event_id="kept-then-dropped")
    old = msgspec.structs.replace(cascade("end", 5, 500_000.0, 10_000, NOW_MS - 89 * day_ms + 20_000),
                                  cascade_id="BTCUSDT-old", start_ms=NOW_MS - 89 * day_ms)
    recent = cascade("end", 9, 900_000.0, 60_000, NOW_MS - HOUR_MS + 90_000)
    asyncio.run(publish_all(redis_url, [*to_shard([edge, *events()]), (keys.CASCADE_STREAM, old),
                                        (keys.CASCADE_STREAM, recent)]))
    asyncio.run(drain(redis_url, db, rollup_retention_days=90))
    old_rollups = """SELECT (SELECT count(*) FROM liquidations_hourly WHERE hour < %(t)s),
                            (SELECT count(*) FROM liquidation_heatmap WHERE hour < %(t)s),
                            (SELECT count(*) FROM liquidation_cascades WHERE hour < %(t)s)"""
    with psycopg.connect(db) as conn:
        old_hours = conn.execute(old_rollups, {"t": ms_to_datetime(NOW_MS - 80 * day_ms)}).fetchall()
    assert old_hours == [(1, 1, 1)], "the edge's hour in each rollup, before the run"

    async def maintain() -> Any:
        client = make_async_redis(redis_url)
        w = Writer(client, settings(db, rollup_retention_days=90), db, clock=FakeClock(NOW_MS + 2 * day_ms))
        try:
            return await w.maintain()
        finally:
            await w.aclose()
            await client.aclose()

    report = asyncio.run(maintain())
    assert (report.dropped, report.cascades_purged, report.rollups_purged) == (
        ["liquidations_significant_p20251004"], 1, 3)
    assert rows(db, "SELECT cascade_id FROM cascade_events") == [("BTCUSDT-1",)]
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
    assert_rollups_match_raw(db)


def test_database_outage_holds_entries_and_resumes_without_loss(redis_url: str) -> None:
    # Its own server, to stop and start again.
    base = server_dir("outage")
    server = servers.start_postgres(base)
    try:
        migrate_dsn(server.dsn, "native")
        evs = events()
        asyncio.run(publish_all(redis_url, to_shard(evs[:6])))
        asyncio.run(drain(redis_url, server.dsn))
        assert rows(server.dsn, "SELECT count(*) FROM liquidations_significant") == [(4,)]
        server.stop()
        asyncio.run(publish_all(redis_url, to_shard(evs[6:])))
        with pytest.raises(SinkRetry):
            asyncio.run(drain(redis_url, server.dsn))
        assert pending(redis_url) == 4, "entries must stay un-acked while the database is down"
        server = servers.start_postgres(base, port=server.port)
        asyncio.run(drain(redis_url, server.dsn))
        assert pending(redis_url) == 0
        assert rows(server.dsn, "SELECT count(*) FROM liquidations_significant") == [(8,)]
        assert_rollups_match_raw(server.dsn)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def pending(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(int(client.xpending(s, keys.WRITER_GROUP)["pending"])
                   for s in (keys.SIGNIFICANT_STREAM, keys.CASCADE_STREAM, keys.CASCADE_MEMBER_STREAM))
    finally:
        client.close()


def test_writer_refuses_an_unmigrated_database(redis_url: str, pg_dsn: str) -> None:
    asyncio.run(publish_all(redis_url, to_shard(events())))
    with pytest.raises(SinkRetry, match="liq migrate"):
        asyncio.run(drain(redis_url, pg_dsn))


def test_a_row_postgresql_refuses_is_dead_lettered_and_the_rest_stored_once(redis_url: str, db: str) -> None:
    """An event id too large for the primary key's index is a valid Liquidation, but PostgreSQL
    refuses it (program limit exceeded, not an outage): the writer must not retry it forever."""
    import random

    import redis

    evs = events()
    huge_id = random.Random(4).randbytes(5000).hex()  # 10,000 characters that barely compress
    poison = msgspec.structs.replace(evs[4], event_id=huge_id)
    asyncio.run(publish_all(redis_url, to_shard([*evs[:4], poison, *evs[5:]])))
    writer = asyncio.run(drain(redis_url, db))
    stored = rows(db, "SELECT event_id FROM liquidations_significant ORDER BY event_id")
    significant = {e.event_id for e in evs if e.notional_usd >= 100_000 and e.event_id != "e4"}
    assert [r[0] for r in stored] == sorted(significant)
    assert_rollups_match_raw(db)
    assert pending(redis_url) == 0
    assert sum(c.stats.dead_lettered for c in writer.consumers) == 1
    client = redis.Redis.from_url(redis_url)
    try:
        (_, fields), = cast(Entries, client.xrange(keys.dead_letter_stream(keys.SIGNIFICANT_STREAM)))
    finally:
        client.close()
    assert fields[b"stage"] == b"handle" and fields[b"group"] == keys.WRITER_GROUP.encode()
    assert fields[b"reason"].startswith(b"ProgramLimitExceeded: index row")
    assert codec.decode_liquidation(fields[b"d"]) == poison


def test_hours_are_utc_hours_in_any_session_time_zone(redis_url: str, db: str) -> None:
    """India is UTC+05:30: an origin read in the session's zone made every hour start at :30."""
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(db)
    kolkata = psycopg.conninfo.make_conninfo(**{**info, "options": "-c TimeZone=Asia/Kolkata"})
    asyncio.run(publish_all(redis_url, to_shard(events())))
    asyncio.run(drain(redis_url, kolkata))
    for table in ("liquidations_hourly", "liquidation_heatmap"):
        minutes = rows(db, f"SELECT DISTINCT extract(minute FROM hour AT TIME ZONE 'UTC') FROM {table}")
        assert minutes == [(0,)], table
    assert_rollups_match_raw(db)


def test_a_server_whose_date_style_is_not_iso_stores_cascades_instead_of_dead_lettering_them(
        redis_url: str, db: str) -> None:
    """psycopg reads timestamps back only in ISO DateStyle; the cascade path reads some back
    (a moved start's old row). A server or role set to ``SQL, DMY`` must change nothing."""
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(db)
    sql_style = psycopg.conninfo.make_conninfo(**{**info, "options": "-c DateStyle=SQL,DMY"})
    first = cascade("start", 5, 500_000.0, 10_000, NOW_MS - HOUR_MS + 10_000)
    moved_ms = NOW_MS - HOUR_MS - 5 * 60_000
    moved = msgspec.structs.replace(cascade("end", 9, 900_000.0, 40_000, NOW_MS - HOUR_MS + 90_000),
                                    start_ms=moved_ms)
    for message in (first, moved):
        asyncio.run(publish_all(redis_url, [(keys.CASCADE_STREAM, message)]))
        asyncio.run(drain(redis_url, sql_style))
    assert rows(db, "SELECT phase, event_count, start_time FROM cascade_events") == [
        ("end", 9, ms_to_datetime(moved_ms))]
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(keys.CASCADE_STREAM + keys.DEAD_LETTER_SUFFIX) == 0
    assert_rollups_match_raw(db)


def test_the_utc_migration_rebuilds_rollups_a_fractional_zone_wrote(db: str) -> None:
    from writer.migrate import split_statements

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        conn.execute("SELECT liq_ensure_partitions(ARRAY['2026-01-01']::date[])")
        conn.execute("""INSERT INTO liquidations_significant (time, exchange, symbol, symbol_native, base,
                            market_type, side, price, quantity, value_usd, notional_known, is_cascade,
                            event_id, sampled, price_level)
                        VALUES ('2026-01-01 02:10+00', 'okx', 'BTCUSDT', 'BTCUSDT', 'BTC', 'linear_perpetual',
                                'long', 67000, 2, 134000, true, false, 'x1', false, 67000)""")
        conn.execute("UPDATE liquidations_hourly SET hour = '2026-01-01 01:30+00'")  # as 004 bucketed it
        for statement in split_statements((REPO / "sql/009_utc_hours.native.sql").read_text()):
            conn.execute(statement)
    assert rows(db, "SELECT hour, event_count FROM liquidations_hourly") == [
        (datetime(2026, 1, 1, 2, 0, tzinfo=UTC), 1)]
    assert_rollups_match_raw(db)


class _TimescaleSink:
    """Stands for a TimescaleDB the writer has not connected to yet (only the mode matters)."""

    def __init__(self, refresh_window_days: float | None = None) -> None:
        self.mode: str | None = None
        self.refresh_window_days = refresh_window_days
        self.batches: list[Any] = []

    async def storage_mode(self) -> str:
        self.mode = "timescale"
        return self.mode

    async def write(self, batch: Any) -> None:
        self.batches.append(batch)


def test_the_first_read_after_a_start_uses_the_storage_modes_cutoff() -> None:
    """TimescaleDB keeps rows two days less than the retention (its rollups refresh no further
    back): the first read after a start, before any connection, must know that already."""
    writer = Writer(None, settings("postgresql://unused"), "postgresql://unused",  # type: ignore[arg-type]
                    clock=FakeClock(NOW_MS), name="t")
    sink = _TimescaleSink()
    writer.sink = sink  # type: ignore[assignment]
    late = liq(price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS - 89 * 24 * HOUR_MS, event_id="late")
    for _ in range(2):
        asyncio.run(writer.handle([Message(keys.event_stream(0), "1-0", late)], 10))
    assert writer.skipped["expired"] == 2
    assert [b for b in sink.batches if not b.empty] == []


def test_equal_retentions_keep_the_rollups_of_every_raw_row(redis_url: str, db: str) -> None:
    """Raw rows are dropped by whole UTC days, so the rollups of the oldest kept day's early
    hours must stay too when both retentions are 30 days (they were purged from now - 30 days)."""
    thirty_days_ago = NOW_MS - 30 * 24 * HOUR_MS  # 10:00 UTC
    kept = [liq(price=60_000.0, quantity=5.0, timestamp_ms=thirty_days_ago + h * HOUR_MS, event_id=f"r{h}")
            for h in (-8, -4, 2)]  # 02:00, 06:00 and 12:00 UTC of the oldest kept day
    over = {"retention_days": 30, "rollup_retention_days": 30}
    asyncio.run(publish_all(redis_url, to_shard(kept)))
    assert asyncio.run(drain(redis_url, db, **over)).skipped["expired"] == 0

    async def maintain() -> Any:
        client = make_async_redis(redis_url)
        w = Writer(client, settings(db, **over), db, clock=FakeClock(NOW_MS))
        try:
            return await w.maintain()
        finally:
            await w.aclose()
            await client.aclose()

    report = asyncio.run(maintain())
    assert report.dropped == [] and report.rollups_purged == 0
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(3,)]
    assert_rollups_match_raw(db)



def test_a_timescale_database_with_a_retention_below_three_days_holds_the_entries() -> None:
    """Refused loudly and retried (nothing acked) until LIQ_RETENTION_DAYS is fixed."""
    writer = Writer(None, settings("postgresql://unused", retention_days=2),  # type: ignore[arg-type]
                    "postgresql://unused", clock=FakeClock(NOW_MS), name="t")
    writer.sink = _TimescaleSink()  # type: ignore[assignment]
    event = liq(price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS, event_id="e")
    with pytest.raises(SinkRetry, match="LIQ_RETENTION_DAYS"):
        asyncio.run(writer.handle([Message(keys.event_stream(0), "1-0", event)], 10))


def test_in_timescale_mode_the_writer_stores_rows_only_inside_the_databases_refresh_window() -> None:
    """LIQ_RETENTION_DAYS=180, but the database's window stayed at 90 days less 2 hours (sql/011):
    a row 100 days old would never reach the rollups, so it is not stored."""
    writer = Writer(None, settings("postgresql://unused", retention_days=180),  # type: ignore[arg-type]
                    "postgresql://unused", clock=FakeClock(NOW_MS), name="t")
    sink = _TimescaleSink(refresh_window_days=90 - 2 / 24)
    writer.sink = sink  # type: ignore[assignment]
    rows_ = [liq(price=60_000.0, quantity=5.0, timestamp_ms=NOW_MS - days * 24 * HOUR_MS, event_id=f"d{days}")
             for days in (100, 87)]
    asyncio.run(writer.handle([Message(keys.event_stream(0), f"{i}-0", r) for i, r in enumerate(rows_)], 10))
    assert writer.skipped["expired"] == 1
    (stored,) = [b for b in sink.batches if not b.empty]
    assert [row[EVENT_ID] for row in stored.events] == ["d87"]



def test_a_redis_outage_under_a_running_writer_is_two_lines_not_one_per_reader_or_heartbeat(
        tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The three stream readers and the heartbeat all lose Redis: one outage, logged when it
    begins and when it ends, whichever loop sees it first."""
    monkeypatch.setattr(writer_service, "HEARTBEAT_S", 0.001)
    server = servers.start_redis(tmp_path)

    async def body() -> None:
        nonlocal server
        client = make_async_redis(server.url)
        writer = Writer(client, settings(db), db, clock=FakeClock(NOW_MS), name="w1")
        for consumer in writer.consumers:
            consumer.backoff = Backoff(base_s=0.001, cap_s=0.002)
        writer._heartbeat = heartbeat = Counted(writer._heartbeat)  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        server = await redis_down_and_back(server, tmp_path, heartbeat)
        stop.set()
        await asyncio.wait_for(task, 10)
        await writer.aclose()
        await client.aclose()

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(body())
    finally:
        server.stop()
    assert outage_lines(caplog, "writer.service") == [
        ("WARNING", f"writer: redis: unavailable {RETRYING}"),
        ("INFO", "writer: redis: available again after …s and … failed tries"),
        ("INFO", "writer: 0 batches, 0 rows inserted, 0 upgraded to cascade, 0 cascade upserts, "
                 "skipped {'insignificant': 0, 'expired': 0, 'invalid': 0}"),
    ]
    # The readers log no line of their own for it (a group lost with Redis's data is their own).
    assert [r.getMessage() for r in caplog.records
            if r.name == "shared.streams" and "ConnectionError" in r.getMessage()] == []


class FreezingProxy:
    """A TCP relay to PostgreSQL whose open connections can be frozen: bytes stop flowing both
    ways and nothing is closed, as when the server's host hangs or a network path dies without
    a reset. Connections opened after the freeze flow again (the path came back)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen: list[asyncio.Event] = []
        self.relays: list[asyncio.Task[Any]] = []
        self.streams: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def freeze_open_connections(self) -> None:
        for frozen in self.frozen:
            frozen.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        self.relays.append(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.streams += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # held forever, as by a dead path
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def aclose(self) -> None:
        self.server.close()
        for relay in self.relays:
            relay.cancel()
        await asyncio.gather(*self.relays, return_exceptions=True)
        for stream in self.streams:
            stream.close()
        await asyncio.gather(*(stream.wait_closed() for stream in self.streams), return_exceptions=True)


def test_a_database_that_stops_answering_without_closing_is_given_up_on_and_retried(
        redis_url: str, db: str) -> None:
    """Without a bound, the write would wait forever on a connection nobody answers (TCP has no
    timeout for a read), holding its entries and every later one."""
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(db)
    evs = events()

    async def run() -> None:
        proxy = FreezingProxy(int(info.get("port") or 5432))
        port = await proxy.start()
        relayed = psycopg.conninfo.make_conninfo(**{**info, "host": "127.0.0.1", "port": str(port)})
        client = make_async_redis(redis_url)
        writer = Writer(client, settings(relayed, db_timeout_s=0.5), relayed, clock=FakeClock(NOW_MS))
        await publish(client, to_shard(evs[:6]), keys.EVENT_STREAM_MAXLEN)
        await writer.run_until_idle()
        proxy.freeze_open_connections()
        await publish(client, to_shard(evs[6:]), keys.EVENT_STREAM_MAXLEN)
        with pytest.raises(SinkRetry, match="did not answer within 0.5s"):
            await asyncio.wait_for(writer.run_until_idle(), 30)
        assert pending(redis_url) == 4, "held, not acked: the significant of the 6"
        await asyncio.wait_for(writer.run_until_idle(), 30)  # a new connection
        await writer.aclose()
        await client.aclose()
        await proxy.aclose()

    asyncio.run(run())
    assert pending(redis_url) == 0
    assert rows(db, "SELECT count(*) FROM liquidations_significant") == [(8,)]
    assert_rollups_match_raw(db)


def test_a_janitor_run_on_a_database_that_stops_answering_is_given_up_on(redis_url: str, db: str) -> None:
    """The janitor holds the writer's lock: without a bound, a hung database would stall it, and
    every write behind it, for ever. Each step gets ``LIQ_DB_TIMEOUT_S``; the connection is then
    dropped, and the next run (a new connection) works."""
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(db)

    async def run() -> list[str]:
        proxy = FreezingProxy(int(info.get("port") or 5432))
        port = await proxy.start()
        relayed = psycopg.conninfo.make_conninfo(**{**info, "host": "127.0.0.1", "port": str(port)})
        client = make_async_redis(redis_url)
        writer = Writer(client, settings(relayed, db_timeout_s=0.5), relayed, clock=FakeClock(NOW_MS))
        try:
            first = await writer.maintain()
            assert first is not None and len(first.created) == 3  # today and two days ahead
            writer.clock = FakeClock(NOW_MS + 24 * HOUR_MS)  # a day later: one more to create
            proxy.freeze_open_connections()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(writer.maintain(), 30)
            assert writer.sink.conn is None, "the frozen connection is dropped"
            report = await asyncio.wait_for(writer.maintain(), 30)
            assert report is not None
            return report.created
        finally:
            await writer.aclose()
            await client.aclose()
            await proxy.aclose()

    assert asyncio.run(run()) == ["liquidations_significant_p20260104"]


def test_the_writers_endpoint_counts_rows_and_what_it_drops_exactly(redis_url: str, db: str,
                                                                    metrics_port: int) -> None:
    """Scraped over HTTP after a real drain: 15 entries in, 8 rows out, 4 below the threshold,
    2 older than the retention and 1 from the future dropped, each under its reason."""
    from tests.scrape import scrape, total, value

    old = [liq(symbol="BTCUSDT", price=67_000.0, quantity=3.0, timestamp_ms=NOW_MS - 100 * 24 * HOUR_MS - k,
               event_id=f"old{k}") for k in range(2)]
    future = [liq(symbol="ETHUSDT", price=3_400.0, quantity=100.0, timestamp_ms=NOW_MS + 30 * HOUR_MS,
                  event_id="future")]
    asyncio.run(publish_all(redis_url, to_writer(events() + old + future)))
    before = scrape(metrics_port)
    writer = asyncio.run(drain(redis_url, db))
    after = scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert total(after, "liq_events_in_total", component="writer") - total(
        before, "liq_events_in_total", component="writer") == 15
    assert delta("liq_events_out_total", component="writer", sink="liquidations_significant") == 8
    assert {reason: delta("liq_events_dropped_total", component="writer", reason=reason)
            for reason in ("insignificant", "expired", "invalid")} == {
        "insignificant": 4, "expired": 2, "invalid": 1}
    batches = sum(c.stats.batches for c in writer.consumers)
    assert delta("liq_batch_seconds_count", component="writer") == batches
    assert total(after, "liq_errors_total", component="writer") == total(
        before, "liq_errors_total", component="writer")


def test_a_database_outage_counts_each_failed_attempt_once_under_its_cause(
        redis_url: str, metrics_port: int) -> None:
    """liq_errors_total{component="writer"}: one per failed attempt, labelled with what failed
    (OperationalError), not once by the sink and again as SinkRetry by the consumer loop."""
    from shared.backoff import Backoff
    from tests.scrape import scrape, total, value

    asyncio.run(publish_all(redis_url, to_shard(events()[:3])))
    dsn = f"postgresql://liq@127.0.0.1:{servers.free_port()}/liq"  # nothing listens there

    async def body() -> None:
        client = make_async_redis(redis_url)
        writer = Writer(client, settings(dsn), dsn, clock=FakeClock(NOW_MS))
        consumer = writer.consumers[0]
        consumer.backoff = Backoff(base_s=0.0, cap_s=0.0)
        stop = asyncio.Event()
        failures = 0
        handle = consumer.handler

        async def counted(batch: list[Message[Payload]]) -> None:
            nonlocal failures
            try:
                await handle(batch)
            except SinkRetry:
                failures += 1
                if failures == 3:
                    stop.set()
                raise

        consumer.handler = counted
        await asyncio.wait_for(consumer.run(stop), timeout=30)
        await writer.aclose()
        await client.aclose()

    before = scrape(metrics_port)
    asyncio.run(body())
    after = scrape(metrics_port)
    assert total(after, "liq_errors_total", component="writer") - total(
        before, "liq_errors_total", component="writer") == 3
    assert value(after, "liq_errors_total", component="writer", kind="OperationalError") - value(
        before, "liq_errors_total", component="writer", kind="OperationalError") == 3


def test_entries_dropped_in_a_batch_the_database_refused_are_counted_once_when_it_commits(
        redis_url: str, db: str, metrics_port: int) -> None:
    """A batch retried through a database outage is built again at each attempt: the entry it
    drops (below the threshold) counts once, when the batch commits, not once per attempt."""
    from tests.scrape import scrape, value

    asyncio.run(publish_all(redis_url, to_writer(events()[:3])))  # e0 is below $100K
    dead = f"postgresql://liq@127.0.0.1:{servers.free_port()}/liq"  # nothing listens there

    async def refused_three_times() -> None:
        client = make_async_redis(redis_url)
        writer = Writer(client, settings(db), db, clock=FakeClock(NOW_MS))
        assert await writer.sink.storage_mode() == "native"  # known, then the database goes away
        await writer.sink.aclose()
        writer.sink.dsn = dead
        consumer = writer.consumers[0]
        consumer.backoff = Backoff(base_s=0.0, cap_s=0.0)
        stop, failures, handle = asyncio.Event(), [], consumer.handler

        async def counted(batch: list[Message[Payload]]) -> None:
            try:
                await handle(batch)
            except SinkRetry:
                failures.append(len(batch))
                if len(failures) == 3:
                    stop.set()
                raise

        consumer.handler = counted
        await asyncio.wait_for(consumer.run(stop), timeout=30)
        await writer.aclose()
        await client.aclose()
        assert failures == [3, 3, 3]

    def dropped(scraped: Any) -> float:
        return value(scraped, "liq_events_dropped_total", component="writer", reason="insignificant")

    before = scrape(metrics_port)
    asyncio.run(refused_three_times())
    assert dropped(scrape(metrics_port)) - dropped(before) == 0
    asyncio.run(drain(redis_url, db))
    assert dropped(scrape(metrics_port)) - dropped(before) == 1
    assert pending(redis_url) == 0
    assert rows(db, "SELECT event_id FROM liquidations_significant ORDER BY 1") == [("e1",), ("e2",)]
