"""Native-mode maintenance: what TimescaleDB's job scheduler does, run by the writer process.

Every ``janitor_interval_s`` (and once at start), on the writer's connection and under its lock
(each step at most ``LIQ_DB_TIMEOUT_S``, partition DDL waiting at most
``statements.DDL_LOCK_TIMEOUT_S`` for its lock, so that a hung database or a long reader never
holds the writes for longer):

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

import asyncio
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
                   before_ddl: Callable[[Conn], Awaitable[None]] | None = None,
                   step_timeout_s: float | None = None) -> JanitorReport:
    """Apply one :class:`JanitorRun` (``conn`` in autocommit; each step its own transaction).

    ``before_ddl`` runs first in the transactions that create or drop partitions (the writer's
    lock-wait limit): their lock on the whole table must not wait behind a long reader. A step
    that takes longer than ``step_timeout_s`` raises TimeoutError (a hung database); the caller
    must then drop ``conn``, which may be in the middle of a statement."""
    async def step(ddl: bool, query: str, value: object) -> list[Any]:
        async with asyncio.timeout(step_timeout_s), conn.transaction():
            if ddl and before_ddl is not None:
                await before_ddl(conn)
            return await (await conn.execute(query, (value,))).fetchall()

    created = _names(await step(True, "SELECT liq_ensure_partitions(%s::date[])", run.days_ahead))
    dropped = _names(await step(True, "SELECT liq_drop_partitions_before(%s)", run.raw_cutoff))
    cascades = _scalar(await step(False, "SELECT liq_purge_cascades(%s)", run.cascade_cutoff))
    rollups = _scalar(await step(False, "SELECT liq_purge_rollups(%s)", run.rollup_cutoff))
    report = JanitorReport(created, dropped, cascades, rollups)
    if created or dropped or cascades or rollups:
        logger.info("janitor: created %s, dropped %s, purged %d cascades and %d rollup rows",
                    created or "no partitions", dropped or "no partitions", cascades, rollups)
    return report


def _names(rows: list[Any]) -> list[str]:
    return [str(r[0]) for r in rows if r[0]]


def _scalar(rows: list[Any]) -> int:
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0
