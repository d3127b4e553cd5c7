"""Migrations on a real PostgreSQL (plain mode): idempotent, recorded, and the README's queries.

The four queries of the original system's README run here exactly as written and return the
rows a user expects for data written through the writer's own statements.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from shared.clock import SYSTEM_CLOCK
from shared.models import CascadeEvent, CascadeMember, FactorScores
from tests.factories import liq
from writer.migrate import MigrationError, migrate_dsn
from writer.rows import build_batch
from writer.significance import SignificanceRules
from writer.sink import DatabaseSink

pytestmark = pytest.mark.integration

README_QUERIES = {
    "recent": """SELECT time, exchange, symbol, side, value_usd, is_cascade, risk_score
FROM liquidations_significant
WHERE time >= NOW() - INTERVAL '1 hour'
ORDER BY value_usd DESC
LIMIT 10;""",
    "clusters": "SELECT * FROM get_price_level_clusters('BTCUSDT', 4);",
    "hourly": """SELECT * FROM liquidations_hourly
WHERE hour >= NOW() - INTERVAL '24 hours'
ORDER BY hour DESC;""",
    "cascades": """SELECT * FROM liquidation_cascades
WHERE hour >= NOW() - INTERVAL '24 hours'
ORDER BY total_value_usd DESC;""",
}


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


def test_readme_queries_return_what_was_written(pg_dsn: str) -> None:
    migrate_dsn(pg_dsn, "native")
    now = SYSTEM_CLOCK.now_ms()
    t0 = now - 60_000
    big = [liq(exchange=ex, price=price, quantity=qty, side=side, timestamp_ms=t0 + i * 1000,
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
    assert [(r["exchange"], r["side"], r["value_usd"], r["is_cascade"], r["risk_score"]) for r in recent] == [
        (e.exchange, e.side, e.notional_usd, True, 1.3) for e in by_value]

    clusters = query(pg_dsn, README_QUERIES["clusters"])  # $100 levels for BTC, last 4 hours
    assert [(r["price_level"], r["event_count"], r["exchanges"]) for r in clusters] == [
        (67200.0, 2, ["bybit", "okx"]), (67300.0, 1, ["binance_usdm"]),
        (67100.0, 1, ["bybit"])]  # by liquidated value: $336,310, $269,240, $100,725

    hourly = query(pg_dsn, README_QUERIES["hourly"])  # the 30-hour-old row is outside 24 h
    assert sum(r["event_count"] for r in hourly) == 4
    want_total = sum(e.notional_usd for e in big)
    assert sum(r["total_value_usd"] for r in hourly) == pytest.approx(want_total, rel=1e-12)
    assert sum(r["cascade_event_count"] for r in hourly) == 4

    cascades = query(pg_dsn, README_QUERIES["cascades"])
    assert [(r["symbol"], r["cascade_count"], r["liquidation_count"], r["total_value_usd"],
             r["cross_exchange_count"]) for r in cascades] == [("BTCUSDT", 1, 4, 724_110.0, 1)]
    assert query(pg_dsn, "SELECT count(*) AS n FROM liquidations_significant")[0]["n"] == 5
    assert timedelta(0) <= datetime.now(UTC) - recent[0]["time"] < timedelta(hours=1)
