"""Writer throughput (``liq bench``'s writer section): rows/s next to a bare COPY of the same rows.

Both runs commit the same rows in transactions of ``batch`` rows on the same server:

- **bare**: binary COPY of the same rows into a copy of ``liquidations_significant`` (its
  columns and checks, daily range partitions, the same primary key and index), with no
  savepoint and no rollups: the floor cost of getting these rows into that layout;
- **writer**: :meth:`writer.sink.DatabaseSink.write` of the batches ``writer.rows.build_batch``
  makes, i.e. the direct COPY into ``liquidations_significant`` in a savepoint with the rollup
  trigger keeping ``liquidations_hourly`` and ``liquidation_heatmap`` in step (native mode), then
  a replay of the first batches, which goes through the ``ON CONFLICT`` path and must insert
  nothing (its time is reported apart).

Also measured: the same writer with the rollup trigger disabled (as in TimescaleDB mode, where
continuous aggregates do that work), which isolates the rollups' cost.

The rows are the market model's (what the simulator sends: cascades put many liquidations on
few price levels), and again a worst case where no two rows share a rollup cell. Called as
``run(dsn, rows)`` on a migrated database; the rows it inserts are removed afterwards.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg

from shared.bench import relabel
from shared.clock import SYSTEM_CLOCK
from shared.market_model import last_liquidations
from shared.models import Liquidation
from shared.significance import SignificanceRules
from writer import statements as sql
from writer.rows import EVENT_COLUMNS, EVENT_TYPES, Batch, build_batch
from writer.sink import DatabaseSink

BARE_TABLE = "liq_bench_bare"
ROLLUP_TRIGGER = "liq_rollup_inserted"
REPLAYED_BATCHES = 10


def workload(n: int, end_ms: int) -> list[Liquidation]:
    """The market model's liquidations (what the simulator sends), relabelled for cleanup."""
    return relabel(last_liquidations(n, seed=11, end_ms=end_ms))


def worst_case(n: int, end_ms: int) -> list[Liquidation]:
    """Rows that never share a heatmap cell (20 symbols x 97 price levels): every rollup upsert
    is a new row."""
    venues = ("binance_usdm", "bybit", "okx", "bitmex")
    return [
        Liquidation(exchange=venues[i % 4], symbol=f"BENCHS{i % 20}USDT", symbol_native=f"S{i % 20}USDT",
                    base=f"S{i % 20}", quote="USDT", market_type="linear_perpetual",
                    side="long" if i % 3 else "short", price=100.0 + i % 97, quantity=1000.0 + i % 13,
                    notional_usd=(100.0 + i % 97) * (1000.0 + i % 13), timestamp_ms=end_ms - n + i,
                    event_id=f"bench-{i}")
        for i in range(n)
    ]


async def _bare_table(conn: psycopg.AsyncConnection[tuple[Any, ...]], days: set[date]) -> None:
    """``liquidations_significant``'s columns, defaults and checks, partitioned by UTC day like it,
    with its key and index: the same table without the rollup trigger."""
    await conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}")
    await conn.execute(f"CREATE TABLE {BARE_TABLE} (LIKE liquidations_significant INCLUDING DEFAULTS "
                       "INCLUDING CONSTRAINTS) PARTITION BY RANGE (time)")
    await conn.execute(f"ALTER TABLE {BARE_TABLE} ADD PRIMARY KEY (time, exchange, event_id)")
    await conn.execute(f"CREATE INDEX ON {BARE_TABLE} (symbol, time DESC)")
    for day in sorted(days):
        await conn.execute(f"CREATE TABLE {BARE_TABLE}_{day:%Y%m%d} PARTITION OF {BARE_TABLE} "
                           f"FOR VALUES FROM ('{day} 00:00+00') TO ('{day + timedelta(days=1)} 00:00+00')")


async def _bare(dsn: str, batches: list[list[tuple[object, ...]]], days: set[date]) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await _bare_table(conn, days)
        copy_sql = f"COPY {BARE_TABLE} ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        started = time.perf_counter()
        for rows in batches:
            async with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types(list(EVENT_TYPES))
                for row in rows:
                    await copy.write_row(row)
        elapsed = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {BARE_TABLE}")
    return elapsed


@dataclass
class WriterRun:
    seconds: float
    inserted: int
    replay_seconds: float
    replayed_inserted: int


async def _writer(dsn: str, batches: list[Batch], rollups: bool = True) -> WriterRun:
    sink = DatabaseSink(dsn)
    conn = await sink.connect()
    try:
        if not rollups:
            await conn.execute(f"ALTER TABLE liquidations_significant DISABLE TRIGGER {ROLLUP_TRIGGER}")
        started = time.perf_counter()
        inserted = 0
        for b in batches:
            inserted += (await sink.write(b)).inserted
        elapsed = time.perf_counter() - started
        replayed = 0
        started = time.perf_counter()
        for b in batches[:REPLAYED_BATCHES]:
            replayed += (await sink.write(b)).inserted
        replay_s = time.perf_counter() - started
    finally:
        if not rollups:
            await conn.execute(f"ALTER TABLE liquidations_significant ENABLE TRIGGER {ROLLUP_TRIGGER}")
        await sink.aclose()
    return WriterRun(elapsed, inserted, replay_s, replayed)


async def _cleanup(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        mode = await (await conn.execute(sql.READ_MODE)).fetchone()
        await conn.execute("DELETE FROM liquidations_significant WHERE event_id LIKE 'bench-%'")
        await conn.execute("DELETE FROM cascade_events WHERE symbol LIKE 'BENCH%'")
        if mode and mode[0] == "native":  # TimescaleDB's caggs follow the raw rows by themselves
            for rollup in ("liquidations_hourly", "liquidation_heatmap", "liquidation_cascades"):
                await conn.execute(f"DELETE FROM {rollup} WHERE symbol LIKE 'BENCH%'")


def cleanup(dsn: str) -> None:
    """Remove every row the benchmark stored (``BENCH…`` symbols, ``bench-…`` ids)."""
    asyncio.run(_cleanup(dsn))


def measure(dsn: str, events: list[Liquidation], batch: int) -> dict[str, Any]:
    rules = SignificanceRules(default_usd=0.0)
    now = SYSTEM_CLOCK.now_ms()
    built = [build_batch(events[i:i + batch], rules, now, 90) for i in range(0, len(events), batch)]
    bare_s = asyncio.run(_bare(dsn, [b.events for b in built], set().union(*(b.days for b in built))))
    run = asyncio.run(_writer(dsn, built))
    asyncio.run(_cleanup(dsn))
    plain = asyncio.run(_writer(dsn, built, rollups=False))
    asyncio.run(_cleanup(dsn))
    replayed_rows = sum(len(b.events) for b in built[:REPLAYED_BATCHES])
    return {
        "bare_copy_rows_per_s": round(len(events) / bare_s),
        "writer_rows_per_s": round(len(events) / run.seconds),
        "writer_vs_bare": round(bare_s / run.seconds, 3),
        "without_rollups_vs_bare": round(bare_s / plain.seconds, 3),
        "replay_rows_per_s": round(replayed_rows / run.replay_seconds),
        "inserted": run.inserted,
        "replayed_inserted": run.replayed_inserted,
    }


def run(dsn: str, rows: int = 100_000, batch: int = 500) -> dict[str, Any]:
    end_ms = SYSTEM_CLOCK.now_ms() - 60_000
    report: dict[str, Any] = {"rows": rows, "batch": batch}
    report.update(measure(dsn, workload(rows, end_ms), batch))
    worst = measure(dsn, worst_case(rows, end_ms), batch)
    report["worst_case_writer_vs_bare"] = worst["writer_vs_bare"]
    return report
