"""Native-mode maintenance: what TimescaleDB's job scheduler does, run by the writer process.

Every ``janitor_interval_s`` (and once at start), on its own connection:

- create the UTC-day partitions from today to ``today + partitions_ahead_days``;
- retention: detach and drop every partition lying entirely before ``now - retention_days``
  (whole-partition semantics, like ``drop_chunks``), and delete the ``cascade_events`` rows
  that started on a day lying entirely before it;
- rollup retention: delete rollup rows older than ``now - rollup_retention_days``.

Compression has no plain-PostgreSQL equivalent; nothing is done for it (``liq status`` says so).
In TimescaleDB mode the janitor does nothing: the extension's policies do all of this.
The functions it calls are SQL (``sql/006_maintenance.native.sql``), safe to run from several
writers at once. :func:`plan_run` is the pure part (which days and cutoffs), tested on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from writer.config import WriterSettings

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True)
class JanitorRun:
    days_ahead: list[date]
    raw_cutoff: datetime
    rollup_cutoff: datetime
    cascade_cutoff: datetime
    """Midnight (UTC) of the raw cutoff's day: cascades are purged by whole start days, the rule
    by which the writer refuses a late cascade message (``writer.rows.expired``). Purging one the
    writer still accepts would let a late message for it rebuild its hour's rollup from a table
    that has lost that hour's other cascades."""


@dataclass
class JanitorReport:
    created: list[str]
    dropped: list[str]
    cascades_purged: int
    rollups_purged: int


def plan_run(now: datetime, settings: WriterSettings) -> JanitorRun:
    """Days to pre-create and the retention cutoffs for a run at ``now`` (UTC)."""
    today = now.astimezone(UTC).date()
    raw_cutoff = now - timedelta(days=settings.retention_days)
    # Raw rows go by whole UTC days: the oldest kept partition starts at raw_day. Rollups (of
    # that day's hours too) and cascades are kept at least as far back.
    raw_day = datetime.combine(raw_cutoff.astimezone(UTC).date(), datetime.min.time(), UTC)
    return JanitorRun(
        days_ahead=[today + timedelta(days=k) for k in range(settings.partitions_ahead_days + 1)],
        raw_cutoff=raw_cutoff,
        rollup_cutoff=min(now - timedelta(days=settings.rollup_retention_days), raw_day),
        cascade_cutoff=raw_day,
    )


async def run_once(conn: Conn, run: JanitorRun,
                   before_ddl: Callable[[Conn], Awaitable[None]] | None = None) -> JanitorReport:
    """Apply one :class:`JanitorRun` (``conn`` in autocommit; each step its own transaction).

    ``before_ddl`` runs first in the transactions that create or drop partitions (the writer's
    lock-wait limit): their lock on the whole table must not wait behind a long reader."""
    async with conn.transaction():
        if before_ddl is not None:
            await before_ddl(conn)
        created = await _names(conn, "SELECT liq_ensure_partitions(%s::date[])", (run.days_ahead,))
    async with conn.transaction():
        if before_ddl is not None:
            await before_ddl(conn)
        dropped = await _names(conn, "SELECT liq_drop_partitions_before(%s)", (run.raw_cutoff,))
    async with conn.transaction():
        cascades = await _scalar(conn, "SELECT liq_purge_cascades(%s)", (run.cascade_cutoff,))
    async with conn.transaction():
        rollups = await _scalar(conn, "SELECT liq_purge_rollups(%s)", (run.rollup_cutoff,))
    report = JanitorReport(created, dropped, cascades, rollups)
    if created or dropped or cascades or rollups:
        logger.info("janitor: created %s, dropped %s, purged %d cascades and %d rollup rows",
                    created or "no partitions", dropped or "no partitions", cascades, rollups)
    return report


async def _names(conn: Conn, query: str, params: tuple[Any, ...]) -> list[str]:
    rows = await (await conn.execute(query, params)).fetchall()
    return [str(r[0]) for r in rows if r[0]]


async def _scalar(conn: Conn, query: str, params: tuple[Any, ...]) -> int:
    row = await (await conn.execute(query, params)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
