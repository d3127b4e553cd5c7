"""Migrations on a real PostgreSQL (plain mode): idempotent, recorded, and the README's queries.

The four queries of the original system's README run here exactly as written and return the
rows a user expects for data written through the writer's own statements.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
import pytest

from shared.clock import SYSTEM_CLOCK
from shared.models import CascadeEvent, CascadeMember, FactorScores, Liquidation, Side
from shared.significance import SignificanceRules
from tests.factories import liq
from tests.readme import original_queries, our_queries
from writer.migrate import MigrationError, migrate_dsn
from writer.rows import build_batch, ms_to_datetime
from writer.sink import DatabaseSink

pytestmark = pytest.mark.integration

README_QUERIES = dict(zip(("recent", "clusters", "hourly", "cascades"), original_queries(), strict=True))
"""The original README's "Direct Database Queries", read from it (our README shows the same)."""


def query(dsn: str, sql: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_migrations_are_idempotent_and_record_the_mode(pg_dsn: str) -> None:
    first = migrate_dsn(pg_dsn, "auto")
    assert (first.mode, first.extversion) == ("native", None)
    assert first.applied == ["001", "002", "004", "005", "006", "008", "009"]
    again = migrate_dsn(pg_dsn, "auto")
    assert again.applied == [] and again.already == first.applied
    status = {r["key"]: r["value"] for r in query(pg_dsn, "SELECT * FROM liq_storage_status()")}
    assert status["mode"] == "native"
    assert status["compression"] == "n/a in native mode"
    assert status["schema_version"] == "009"
    with pytest.raises(MigrationError, match="LIQ_STORAGE_MODE=timescale"):
        migrate_dsn(pg_dsn, "timescale")


def test_a_role_that_only_owns_its_database_migrates_it(pg_dsn: str) -> None:
    """Not every user is a superuser: a role that owns the database (what a hosted PostgreSQL
    or a DBA gives) may not read shared_preload_libraries, and reading it stopped the first
    migrate ("must be superuser or have privileges of pg_read_all_settings")."""
    import uuid

    role = f"liq_owner_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
        conn.execute(f'ALTER DATABASE "{info["dbname"]}" OWNER TO "{role}"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # what the role cannot do
            conn.execute(f'SET ROLE "{role}"; SELECT current_setting(\'shared_preload_libraries\')')
    owner_dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=role)
    try:
        report = migrate_dsn(owner_dsn, "auto")
        assert (report.mode, report.applied[-1]) == ("native", "009")
        assert query(owner_dsn, "SELECT count(*) AS n FROM liquidations_significant") == [{"n": 0}]
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


class _TimescaleInstalled:
    """A connection to a server where the timescaledb package is installed (listed in
    pg_available_extensions), preloaded or not. A database owner may CREATE EXTENSION
    timescaledb (the extension is trusted); where it is not in shared_preload_libraries that
    ends the session: TimescaleDB's loader raises FATAL 'extension "timescaledb" must be
    preloaded'."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], preloaded: bool) -> None:
        self._conn = conn
        self.preloaded = preloaded
        self.create_extension_tried = False

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query.decode() if isinstance(query, bytes) else str(query)
        if "pg_available_extensions" in text:
            return self._conn.execute("SELECT 1")
        if "CREATE EXTENSION" in text and "timescaledb" in text:
            self.create_extension_tried = True
            if self.preloaded:  # created (for this test: nothing else happens)
                return self._conn.execute("SELECT 1")
            return self._conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return self._conn.execute(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("preloaded", [False, True])
def test_an_owner_that_may_not_read_the_preload_setting_creates_timescaledb_only_if_preloaded(
        pg_dsn: str, preloaded: bool) -> None:
    """Where TimescaleDB is installed but not preloaded, CREATE EXTENSION ends the connection
    (FATAL, not an error a warning can report), so a role that may not read
    shared_preload_libraries must learn it another way: the loader's own setting
    (timescaledb.disable_load) exists only where the library was preloaded (here a placeholder
    set on the database stands for it)."""
    import uuid

    from writer.migrate import migrate

    role = f"liq_owner_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
        conn.execute(f'ALTER DATABASE "{info["dbname"]}" OWNER TO "{role}"')
        if preloaded:
            conn.execute(f'ALTER DATABASE "{info["dbname"]}" SET timescaledb.disable_load = off')
    owner_dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=role)
    try:
        with psycopg.connect(owner_dsn, autocommit=True) as conn:
            server = _TimescaleInstalled(conn, preloaded)
            report = migrate(cast(psycopg.Connection[tuple[object, ...]], server), "auto")
            assert server.create_extension_tried == preloaded, "not preloaded: it ends the connection"
            assert not conn.closed
        assert (report.mode, report.applied[-1]) == ("native", "009")
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{info["dbname"]}" RESET timescaledb.disable_load')
            conn.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_readme_queries_return_what_was_written(pg_dsn: str) -> None:
    migrate_dsn(pg_dsn, "native")
    now = SYSTEM_CLOCK.now_ms()
    t0 = now - 60_000
    big = [liq(exchange=ex, price=price, quantity=qty, side=cast(Side, side), timestamp_ms=t0 + i * 1000,
               event_id=f"b{i}")
           for i, (ex, price, qty, side) in enumerate([
               ("bybit", 67_250.0, 3.0, "long"), ("okx", 67_280.0, 2.0, "long"),
               ("binance_usdm", 67_310.0, 4.0, "short"), ("bybit", 67_150.0, 1.5, "long")])]
    old = liq(price=60_000.0, quantity=2.0, timestamp_ms=now - 30 * 3_600_000, event_id="old")
    cascade = CascadeEvent(
        cascade_id="BTCUSDT-x", symbol="BTCUSDT", phase="end", start_ms=t0, end_ms=t0 + 3_000,
        venues=["binance_usdm", "bybit", "okx"], count=4, total_notional_usd=724_110.0,
        long_notional_usd=454_870.0, short_notional_usd=269_240.0, risk_score=1.1, peak_risk_score=1.3,
        band="high", factors=FactorScores(), cross_exchange=True, published_ms=t0 + 40_000)
    members = [CascadeMember(cascade_id="BTCUSDT-x", risk_score=1.3, liquidation=e) for e in big]
    batch = build_batch([*big, old, cascade, *members], SignificanceRules(), now, 90)

    async def write() -> None:
        sink = DatabaseSink(pg_dsn)
        await sink.write(batch)
        await sink.aclose()

    asyncio.run(write())

    recent = query(pg_dsn, README_QUERIES["recent"])
    by_value = sorted(big, key=lambda e: -e.notional_usd)
    assert [tuple(r.values()) for r in recent] == [
        (ms_to_datetime(e.timestamp_ms), e.exchange, e.symbol, e.side, e.notional_usd, True, 1.3)
        for e in by_value]

    clusters = query(pg_dsn, README_QUERIES["clusters"])  # $100 levels for BTC, last 4 hours
    b0, b1, b2, b3 = big  # by liquidated value: $336,310 on 67200, $269,240 on 67300, $100,725 on 67100
    assert [tuple(r.values()) for r in clusters] == [
        (67200.0, 2, 336_310.0, 2, 0, 336_310.0, 0.0, 201_750.0, ["bybit", "okx"], *times(b0, b1)),
        (67300.0, 1, 269_240.0, 0, 1, 0.0, 269_240.0, 269_240.0, ["binance_usdm"], *times(b2, b2)),
        (67100.0, 1, 100_725.0, 1, 0, 100_725.0, 0.0, 100_725.0, ["bybit"], *times(b3, b3))]

    hourly = query(pg_dsn, README_QUERIES["hourly"])  # the 30-hour-old row is outside 24 h
    assert [r["hour"] for r in hourly] == sorted((r["hour"] for r in hourly), reverse=True)
    assert {tuple(r.values())[:4]: tuple(r.values())[4:] for r in hourly} == expected_hourly(big)

    cascades = query(pg_dsn, README_QUERIES["cascades"])
    assert [tuple(r.values()) for r in cascades] == [
        (hour_of(t0), "BTCUSDT", 1, 4, 724_110.0, 454_870.0, 269_240.0, 1.3, 1.1, 1, 3)]
    assert query(pg_dsn, "SELECT count(*) AS n FROM liquidations_significant")[0]["n"] == 5
    for ours, original in zip(our_queries(), README_QUERIES.values(), strict=True):
        assert query(pg_dsn, ours) == query(pg_dsn, original)


def test_our_readme_shows_the_original_queries_as_written() -> None:
    """"The queries of the original system work as written": ours are the same statements."""
    assert our_queries() == original_queries()


def hour_of(ms: int) -> datetime:
    return ms_to_datetime(ms - ms % 3_600_000)


def times(first: Liquidation, last: Liquidation) -> tuple[datetime, datetime]:
    return ms_to_datetime(first.timestamp_ms), ms_to_datetime(last.timestamp_ms)


def expected_hourly(events: list[Liquidation]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """``liquidations_hourly`` of cascade members, each key's values: count, USD total, average,
    max, quantity, cascade count and cascade USD."""
    cells: dict[tuple[Any, ...], list[Liquidation]] = {}
    for e in events:
        cells.setdefault((hour_of(e.timestamp_ms), e.exchange, e.symbol, e.side), []).append(e)
    out = {}
    for key, cell in cells.items():
        total = sum(e.notional_usd for e in cell)
        out[key] = (len(cell), total, Decimal(f"{total / len(cell):.2f}"), max(e.notional_usd for e in cell),
                    sum(e.quantity for e in cell), len(cell), total)
    return out
