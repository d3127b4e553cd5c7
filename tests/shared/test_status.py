"""``liq status``'s database part against a real PostgreSQL: every table counted once, exactly."""

from __future__ import annotations

import asyncio

import pytest

from shared.clock import SYSTEM_CLOCK
from shared.status import TABLES, database_status, render
from tests.factories import liq
from writer.migrate import migrate_dsn
from writer.rows import build_batch
from writer.significance import SignificanceRules
from writer.sink import DatabaseSink

pytestmark = pytest.mark.integration


def test_row_counts_are_exact_and_shown_once(pg_dsn: str) -> None:
    migrate_dsn(pg_dsn, "native")
    start = SYSTEM_CLOCK.now_ms() - 3 * 3_600_000
    events = [liq(exchange="okx" if i % 2 else "bybit", price=67_000.0 + 500 * i, quantity=2.0,
                  timestamp_ms=start + i * 1_800_000, event_id=f"e{i}") for i in range(5)]

    async def write() -> None:
        sink = DatabaseSink(pg_dsn)
        try:
            everything = SignificanceRules(default_usd=0.0)
            await sink.write(build_batch(events, everything, SYSTEM_CLOCK.now_ms(), 90))
        finally:
            await sink.aclose()

    asyncio.run(write())
    report = database_status(pg_dsn)
    venue_hours = len({(e.exchange, e.timestamp_ms // 3_600_000) for e in events})
    assert list(report["rows"]) == list(TABLES)
    assert report["rows"] == {
        "liquidations_significant": 5, "cascade_events": 0, "liquidations_hourly": venue_hours,
        "liquidation_heatmap": 5, "exchange_comparison": venue_hours, "liquidation_cascades": 0}
    assert report["storage"]["mode"] == "native"
    assert not any(key.startswith("rows.") for key in report["storage"])
    text = render({"database": report})
    assert text.count("liquidations_significant") == 1
