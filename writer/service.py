"""The writer process: significant liquidations, cascades and cascade members → PostgreSQL/TimescaleDB.

Three consumers in group ``writer`` (one per payload type: ``liq:significant``, where the
collectors copy each significant liquidation (``shared.significance``), ``liq:cascades`` and
``liq:cascade:members``) share one :class:`~writer.sink.DatabaseSink` behind a lock. Each read
is turned into rows (``writer.rows.build_batch``: significance, retention cutoff, validity),
committed in transactions of at most ``batch_size`` rows before the handler returns; the
consumer acks only then. After a read that was not full, the handler waits out the rest of
``batch_age_ms`` (:class:`~writer.batcher.Batcher`) so that quiet periods commit at most once
per batch age.

The writer does not read the event shards. A writer group left on them by an earlier version
(which read every event to pick the significant ones) is drained first, its significant
entries stored, and then removed (:meth:`Writer.retire_event_group`): what collectors of that
version published is stored, and ``liq status`` shows no group there that nobody reads.
Collectors of the earlier version must not run beside this writer: they publish no copy to
``liq:significant``.

Any number of writers can share the group: the natural keys make every insert idempotent and an
advisory lock serializes cascade writes. In native mode the writer also runs the janitor
(``writer.janitor``) and creates partitions on demand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import codec, keys
from shared.backoff import Backoff, Outage
from shared.clock import SYSTEM_CLOCK, Clock
from shared.levels import level_sizes
from shared.metrics import DROPPED
from shared.redisconn import reply_text
from shared.runtime import stopped_within
from shared.significance import SignificanceRules
from shared.streams import TRANSIENT_ERRORS, Message, SinkRetry, StreamConsumer, outage_of, outages_up
from writer import janitor
from writer.batcher import Batcher
from writer.config import WriterSettings
from writer.rows import Batch, Payload, build_batch, stored_days, timescale_retention_error
from writer.sink import COMPONENT, DatabaseSink

logger = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
EVENT_GROUP_READ_COUNT = 5000
"""Entries read at once from the event shards while the group an earlier writer left there is
drained: most are not significant, so a read of ``batch_size`` would commit few rows."""


def consumer_name() -> str:
    return f"writer-{socket.gethostname()}-{os.getpid()}"


class Writer:
    """The shell: consumers → rows → sink, plus the janitor and the heartbeat."""

    def __init__(self, redis: aioredis.Redis, settings: WriterSettings, dsn: str,
                 clock: Clock = SYSTEM_CLOCK, name: str | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.sink = DatabaseSink(dsn, settings.db_timeout_s)
        self.rules = SignificanceRules.from_settings(settings)
        self.level_sizes = level_sizes(settings.level_sizes)
        self.batcher = Batcher(settings.batch_age_ms, clock)
        self.lock = asyncio.Lock()
        self.name = name or consumer_name()
        self.skipped = {"insignificant": 0, "expired": 0, "invalid": 0}
        self.redis_outage = Outage("writer: redis", logger)
        """A Redis outage, logged once for the three readers and the heartbeat."""
        self.consumers = [
            self._consumer([keys.SIGNIFICANT_STREAM], codec.decode_liquidation, settings.batch_size),
            self._consumer([keys.CASCADE_STREAM], codec.decode_cascade, settings.batch_size),
            self._consumer([keys.CASCADE_MEMBER_STREAM], codec.decode_member, settings.batch_size),
        ]

    def _consumer(self, streams: list[str], decode: Callable[[bytes], Payload],
                  read_count: int) -> StreamConsumer[Payload]:
        async def handle(messages: list[Message[Payload]]) -> None:
            await self.handle(messages, read_count)

        return StreamConsumer(redis=self.redis, group=keys.WRITER_GROUP, consumer=self.name,
                              streams=streams, decode=decode, handler=handle, component=COMPONENT,
                              count=read_count, redis_outage=self.redis_outage)

    async def handle(self, messages: list[Message[Payload]], read_count: int) -> None:
        """Commit the rows of one read in transactions of at most ``batch_size`` rows; then,
        after a read of fewer than ``read_count`` entries, wait out the batch age."""
        async with self.lock:
            self.batcher.read_started()
            # The mode decides how far back rows are kept: known before the first batch is built.
            mode = await self.sink.storage_mode()
            if mode == "timescale" and (error := timescale_retention_error(self.settings.retention_days)):
                raise SinkRetry(str(error))  # held and retried, loudly, until the setting is fixed
            days = stored_days(self.settings.retention_days, mode, self.sink.refresh_window_days)
            batch = build_batch([m.value for m in messages], self.rules, self.clock.now_ms(), days,
                                self.level_sizes)
            for part in batch.split(self.settings.batch_size):
                await self.sink.write(part)
            self._count_skipped(batch)  # once committed: a batch retried is built again
            pause = self.batcher.pause_after(len(messages), read_count)
        if pause > 0:
            await asyncio.sleep(pause)

    def _count_skipped(self, batch: Batch) -> None:
        for reason, n in (("insignificant", batch.insignificant), ("expired", batch.expired),
                          ("invalid", batch.invalid)):
            self.skipped[reason] += n
            DROPPED.labels(COMPONENT, reason).inc(n)

    async def ensure_groups(self) -> None:
        for consumer in self.consumers:
            await consumer.ensure_groups()

    async def retire_event_group(self) -> int:
        """Drain the writer group an earlier version left on the event shards, then remove it;
        returns the entries read there (0 when there is no such group)."""
        streams = [s for s in keys.event_streams(self.settings.shards) if await self._has_group(s)]
        if not streams:
            return 0
        logger.info("writer: reading what its group on %d event streams holds from before "
                    "liq:significant; the group is removed after", len(streams))
        consumer = self._consumer(streams, self.rules.decode_event, EVENT_GROUP_READ_COUNT)
        handled = await consumer.run_until_idle()
        for stream in streams:
            await self.redis.xgroup_destroy(stream, keys.WRITER_GROUP)
        logger.info("writer: %d entries read from the event streams; its group there is removed", handled)
        return handled

    async def _has_group(self, stream: str) -> bool:
        if not await self.redis.exists(stream):
            return False
        groups: list[dict[Any, Any]] = await self.redis.xinfo_groups(stream)
        return any(reply_text(g["name"]) == keys.WRITER_GROUP for g in groups)

    async def _retire_event_group_until_done(self, stop: asyncio.Event) -> None:
        """:meth:`retire_event_group`, retried with backoff through a Redis or database outage
        (logged when it begins and ends)."""
        backoff, own = Backoff(), Outage("writer: the event streams' old group", logger)
        while not stop.is_set():
            try:
                await self.retire_event_group()
            except TRANSIENT_ERRORS as exc:
                delay = backoff.next_delay()
                outage_of(exc, own, self.redis_outage).down(exc, delay)
                await stopped_within(stop, delay)
            else:
                outages_up(own, self.redis_outage)
                return

    async def run_until_idle(self) -> int:
        """Drain every stream the writer reads (tests, backfills); returns the entries handled."""
        total = await self.retire_event_group()
        while True:
            handled = 0
            for consumer in self.consumers:
                handled += await consumer.run_until_idle()
            total += handled
            if handled == 0:
                return total

    async def maintain(self) -> janitor.JanitorReport | None:
        """One janitor run (native mode only); None in TimescaleDB mode."""
        async with self.lock:
            try:
                async with asyncio.timeout(self.sink.timeout_s):
                    conn = await self.sink.connect()
                if self.sink.mode != "native":
                    return None
                now = datetime.fromtimestamp(self.clock.now_ms() / 1000, tz=UTC)
                run = janitor.plan_run(now, self.settings)
                report = await janitor.run_once(conn, run, self.sink.limit_lock_wait, self.sink.timeout_s)
            except TimeoutError:  # a hung database: the connection may be mid-statement
                await self.sink.aclose()
                raise
            self.sink.forget_days_before(run.raw_cutoff.date())
            return report

    async def run(self, stop: asyncio.Event) -> None:
        """Consume every stream until ``stop``; the janitor and heartbeat run alongside. A group an
        earlier writer left on the event shards is drained and removed first."""
        await self._retire_event_group_until_done(stop)
        await asyncio.gather(*(c.run(stop) for c in self.consumers),
                             self._every(stop, self.settings.janitor_interval_s, self.maintain),
                             self._every(stop, HEARTBEAT_S, self._heartbeat, on_redis=True))
        logger.info("writer: %d batches, %d rows inserted, %d upgraded to cascade, %d cascade upserts, "
                    "skipped %s", self.sink.stats.batches, self.sink.stats.inserted,
                    self.sink.stats.upgraded, self.sink.stats.cascades, self.skipped)

    async def _every(self, stop: asyncio.Event, seconds: float, job: Callable[[], Awaitable[Any]],
                     on_redis: bool = False) -> None:
        """Run ``job`` every ``seconds``; a server outage is logged when it begins and ends: for a
        job ``on_redis``, Redis unreachable in the writer's one Redis outage, else in the job's own."""
        own = Outage(f"writer: {job.__name__.lstrip('_')}", logger)
        shared = self.redis_outage if on_redis else None
        while not stop.is_set():
            try:
                await job()
            except (psycopg.Error, RedisError, OSError) as exc:
                outage_of(exc, own, shared).down(exc, seconds)
            else:
                outages_up(own, shared)
            await stopped_within(stop, seconds)

    async def _heartbeat(self) -> None:
        key = keys.process_heartbeat(f"write-{self.name}")
        stats = self.sink.stats
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"updated_ms": self.clock.now_ms(), "mode": self.sink.mode or "unknown",
                                "inserted": stats.inserted, "cascades": stats.cascades,
                                "failures": stats.failures, "partitions_created": stats.partitions_created,
                                "replayed_batches": stats.replayed_batches})
        pipe.expire(key, keys.PROCESS_HEARTBEAT_TTL_SECONDS)
        await pipe.execute()

    async def aclose(self) -> None:
        await self.sink.aclose()


def bench_consumer(redis: aioredis.Redis, shards: int, dsn: str, live: bool = False) -> Writer:
    """The writer, for ``liq bench`` (default significance rules: the bench publishes each
    significant liquidation's copy as collectors do).

    ``live``: as deployed, a read that was not full waits out the batch age before the next
    (a commit per batch age, not per read, while events trickle in); otherwise (a stage drained
    alone) the reads follow each other."""
    settings = WriterSettings(shards=shards, pg_dsn=dsn) if live else WriterSettings(
        shards=shards, pg_dsn=dsn, batch_age_ms=0)
    return Writer(redis, settings, dsn, name="bench")
