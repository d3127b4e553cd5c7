"""The database side of the writer: one connection, one transaction per :class:`~writer.rows.Batch`.

:meth:`DatabaseSink.write` runs the statements of ``writer.statements`` for the storage mode
recorded by ``liq migrate`` and returns only after COMMIT, so the stream consumer acks the
batch's entries only once its rows are durable:

1. native mode: the UTC-day partitions the batch needs are created first, in their own short
   transaction (``liq_ensure_partitions``), and remembered;
2. one transaction: the events by binary COPY straight into ``liquidations_significant`` in a
   savepoint; the rows that may be stored already (``Batch.merges``: the member copies of
   significant liquidations, and plain events whose member row this sink committed before),
   and all of them if the COPY hit a stored row (a replayed or redelivered batch, back to the
   savepoint), through the staging table with ``INSERT … ON
   CONFLICT DO NOTHING`` and the cascade-member upgrade; then the cascades under an advisory
   lock (native: the touched ``liquidation_cascades`` rows recomputed). Native rollups follow
   the inserts by trigger.

A lost connection or any other database error rolls the transaction back and raises
:class:`~shared.streams.SinkRetry`: the consumer backs off and re-reads its pending entries, and
the next :meth:`write` reconnects. Replaying a batch is harmless (the natural keys dedupe it).
An error caused by the rows themselves (:func:`refuses_the_data`) is raised as it is, so the
consumer isolates and dead-letters the row instead of retrying it forever.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import psycopg

from shared.metrics import EVENTS_OUT
from shared.recent import RecentKeys
from shared.streams import SinkRetry
from writer import statements as sql
from writer.migrate import Mode, old_schema_problem
from writer.rows import CASCADE_TYPES, EVENT_COLUMNS, EVENT_TYPES, Batch

logger = logging.getLogger(__name__)

TIME = EVENT_COLUMNS.index("time")
STORED_MEMBERS_KEPT = 20_000
"""How many committed member keys the sink remembers: enough for the seconds between a member
and its plain event reaching the writer, at cascade rates."""

COMPONENT = "writer"
Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass
class WriteResult:
    inserted: int = 0
    upgraded: int = 0
    cascades: int = 0
    replayed: bool = False
    """Some row of the batch was already stored: it went through the ``ON CONFLICT`` path."""


@dataclass
class SinkStats:
    batches: int = 0
    replayed_batches: int = 0
    inserted: int = 0
    upgraded: int = 0
    cascades: int = 0
    failures: int = 0
    partitions_created: int = 0


class NotMigrated(psycopg.Error):
    """The database has no recorded storage mode: ``liq migrate`` was never run on it."""


class DatabaseSink:
    """Owns the writer's connection; reconnects lazily after a failure."""

    def __init__(self, dsn: str, timeout_s: float = 60.0,
                 ddl_lock_timeout_s: float = sql.DDL_LOCK_TIMEOUT_S) -> None:
        self.dsn = dsn
        self.timeout_s = timeout_s
        """Longest wait for a batch's write: past it the connection is given up and closed."""
        self.ddl_lock_timeout_s = ddl_lock_timeout_s
        """Longest wait for the lock of partition DDL (``statements.DDL_LOCK_TIMEOUT_S``)."""
        self.stored_members: RecentKeys[tuple[object, ...]] = RecentKeys(STORED_MEMBERS_KEPT)
        """Natural keys of the member rows this sink committed last: a plain event read after
        its member is merged, not COPied into a key error (``Batch.merge_stored``)."""
        self.conn: Conn | None = None
        self.mode: Mode | None = None
        self.refresh_window_days: float | None = None
        """TimescaleDB mode: how far back the rollups refresh (read at each connect)."""
        self.known_days: set[date] = set()
        self.stats = SinkStats()
        self.join_settings = ("on", "on")
        """The connection's enable_hashjoin / enable_mergejoin, restored after the upgrade."""

    async def connect(self) -> Conn:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        conn: Conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10)
        # psycopg reads timestamps back only in ISO style; a server or role set otherwise
        # (SQL, DMY) would make every cascade batch fail as if its data were bad.
        await conn.execute("SET DateStyle TO ISO")
        try:
            row = await (await conn.execute(sql.READ_MODE)).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None:
            await conn.close()
            raise NotMigrated("the database has no schema_meta mode: run `liq migrate` first")
        self.mode = "timescale" if row[0] == "timescale" else "native"
        if self.mode == "timescale":
            window = await (await conn.execute(sql.REFRESH_WINDOW_DAYS)).fetchone()
            self.refresh_window_days = float(window[0]) if window and window[0] is not None else None
        problem = old_schema_problem(await (await conn.execute(sql.VALUE_COLUMN_TYPE)).fetchone())
        if problem is not None:
            await conn.close()
            raise NotMigrated(problem)
        await conn.execute(sql.STAGE_EVENTS_DDL)
        await conn.execute(sql.STAGE_CASCADES_DDL)
        joins = await (await conn.execute(sql.JOIN_SETTINGS)).fetchone()
        self.join_settings = (str(joins[0]), str(joins[1])) if joins else ("on", "on")
        self.conn = conn
        logger.info("connected to PostgreSQL (%s mode)", self.mode)
        return conn

    async def storage_mode(self) -> Mode:
        """The database's storage mode, connecting first when it is not known yet; raises
        :class:`SinkRetry` when the database cannot be reached now."""
        if self.mode is None:
            try:
                await self.connect()
            except psycopg.Error as exc:
                await self._fail(exc)
                raise SinkRetry(f"database connect failed: {type(exc).__name__}: {exc}") from exc
        assert self.mode is not None
        return self.mode

    async def aclose(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def write(self, batch: Batch) -> WriteResult:
        """Commit ``batch``; raises :class:`SinkRetry` when the database could not take it now,
        and the database's own error when it never will (:func:`refuses_the_data`), so that the
        consumer loop isolates that row."""
        if batch.empty:
            return WriteResult()
        batch.merge_stored(self.stored_members)
        try:
            async with asyncio.timeout(self.timeout_s):
                conn = await self.connect()
                if self.mode == "native":
                    await self._ensure_partitions(conn, batch.days)
                async with conn.transaction():
                    result = await self._write_in_transaction(conn, batch)
        except TimeoutError as exc:
            await self._fail(exc)
            raise SinkRetry(f"database did not answer within {self.timeout_s:g}s; connecting again") from exc
        except psycopg.Error as exc:
            await self._fail(exc)
            if lost_partition(exc):  # made again before the retry, which builds the batch again
                self.known_days.clear()
                raise SinkRetry(f"a day's partition is gone (dropped by another writer's janitor "
                                f"or by hand); making it again: {exc}") from exc
            if refuses_the_data(exc):
                raise  # the data, not the server: the consumer isolates and dead-letters the row
            raise SinkRetry(f"database write failed: {type(exc).__name__}: {exc}") from exc
        self.stored_members.update(batch.member_keys())
        self._count(result)
        return result

    async def _write_in_transaction(self, conn: Conn, batch: Batch) -> WriteResult:
        result = WriteResult()
        merged = batch.merges
        if batch.events:
            try:
                async with conn.transaction():  # a savepoint: a duplicate key undoes only the COPY
                    await _copy(conn, sql.COPY_EVENTS_DIRECT, EVENT_TYPES, batch.events)
                result.inserted = len(batch.events)
            except psycopg.errors.UniqueViolation:
                result.replayed = True
                merged = [*batch.events, *batch.merges]
        if merged:
            await self._merge_events(conn, merged, batch.members > 0, result)
        if batch.cascades:
            result.cascades = await self._write_cascades(conn, batch.cascades)
        return result

    async def _merge_events(self, conn: Conn, rows: list[tuple[object, ...]], members: bool,
                            result: WriteResult) -> None:
        """The rows not stored yet, and, when the batch has ``members``, cascade membership for
        stored rows that lack it.

        The upgrade joins the staged rows to the table by its key, one index probe per staged
        row (with run-time partition pruning). The planner, knowing nothing of the temporary
        table, would rather hash-join it against every partition: a scan of the whole table per
        batch."""
        await _copy(conn, sql.COPY_EVENTS, EVENT_TYPES, rows)
        result.inserted += await _count_or_rowcount(conn, sql.INSERT_EVENTS, False)
        if members:
            await conn.execute(sql.SET_JOINS, ("off", "off"))
            if self.mode == "native":
                result.upgraded = await _count_or_rowcount(conn, sql.UPGRADE_MEMBERS_NATIVE, True)
            else:
                times = [cast(datetime, row[TIME]) for row in rows]
                result.upgraded = await _count_or_rowcount(conn, sql.UPGRADE_MEMBERS_TIMESCALE, False,
                                                           {"lo": min(times), "hi": max(times)})
            await conn.execute(sql.SET_JOINS, self.join_settings)

    async def _write_cascades(self, conn: Conn, rows: list[tuple[object, ...]]) -> int:
        await conn.execute(sql.LOCK_CASCADES)
        await _copy(conn, sql.COPY_CASCADES, CASCADE_TYPES, rows)
        moved = await (await conn.execute(sql.DELETE_MOVED_CASCADES)).fetchall()
        upserted = (await conn.execute(sql.UPSERT_CASCADES)).rowcount
        if self.mode == "native":
            staged = await (await conn.execute(sql.STAGED_CASCADE_KEYS)).fetchall()
            touched = sorted({(r[0], r[1]) for r in [*moved, *staged]})
            params = {"hours": [h for h, _ in touched], "symbols": [s for _, s in touched]}
            await conn.execute(sql.DELETE_CASCADE_ROLLUP, params)
            await conn.execute(sql.INSERT_CASCADE_ROLLUP, params)
        return max(upserted, 0)

    async def _ensure_partitions(self, conn: Conn, days: set[date]) -> None:
        missing = sorted(days - self.known_days)
        if not missing:
            return
        async with conn.transaction():
            await self.limit_lock_wait(conn)
            created = await (await conn.execute(sql.ENSURE_PARTITIONS, (missing,))).fetchall()
        for (name,) in created:
            if name:
                logger.info("created partition %s", name)
                self.stats.partitions_created += 1
        self.known_days.update(missing)

    async def limit_lock_wait(self, conn: Conn) -> None:
        """In the current transaction, a lock not granted within ``ddl_lock_timeout_s`` fails
        the statement (``LockNotAvailable``: retried later) instead of waiting for it."""
        await conn.execute(sql.LOCK_TIMEOUT, (f"{round(self.ddl_lock_timeout_s * 1000)}ms",))

    def forget_days_before(self, cutoff: date) -> None:
        """Drop cached partition days that retention removed (the janitor calls this)."""
        self.known_days = {d for d in self.known_days if d >= cutoff}

    async def _fail(self, exc: psycopg.Error | TimeoutError) -> None:
        self.stats.failures += 1  # liq_errors_total is counted by the consumer loop (shared.streams)
        if isinstance(exc, psycopg.OperationalError | NotMigrated | TimeoutError) or (
                self.conn is not None and self.conn.broken):
            await self.aclose()
            self.known_days.clear()

    def _count(self, result: WriteResult) -> None:
        self.stats.batches += 1
        self.stats.replayed_batches += result.replayed
        self.stats.inserted += result.inserted
        self.stats.upgraded += result.upgraded
        self.stats.cascades += result.cascades
        EVENTS_OUT.labels(COMPONENT, "liquidations_significant").inc(result.inserted)
        EVENTS_OUT.labels(COMPONENT, "cascade_events").inc(result.cascades)


DATA_ERROR_CLASSES = frozenset({"21", "22", "23", "54"})
"""SQLSTATE classes that depend on the rows, not on the server: cardinality violation (one
statement touching a row twice), data exception, integrity constraint violation, program limit
exceeded (e.g. a key too large for its index)."""


def lost_partition(exc: psycopg.Error) -> bool:
    """PostgreSQL found no partition for a row: the sink makes each batch's days first, so one
    was dropped after this sink made or saw it (a janitor at the retention edge, a person)."""
    return exc.sqlstate == "23514" and "no partition of relation" in str(exc)


def refuses_the_data(exc: psycopg.Error) -> bool:
    """True when writing the same rows again can never succeed."""
    return (exc.sqlstate or "")[:2] in DATA_ERROR_CLASSES


async def _copy(conn: Conn, statement: str, types: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            await copy.write_row(row)


async def _count_or_rowcount(conn: Conn, statement: str, returns_count: bool,
                             params: dict[str, Any] | None = None) -> int:
    """Rows affected: the native CTE statements end in ``SELECT count(*)``, the others don't. A
    statement with ``params`` runs unprepared, so that they stay constants for the planner."""
    cur = await conn.execute(statement, params, prepare=False if params is not None else None)
    if returns_count:
        row = await cur.fetchone()
        return int(row[0]) if row else 0
    return max(cur.rowcount, 0)
