"""A collector's publisher: it owns the in-memory queue, the disk spool and publishing to Redis.

The connections hand it each venue's new liquidations (:meth:`Publisher.put`); one task
(:meth:`Publisher.run`) drains the queue in pipelined batches of XADD (``MAXLEN ~``) into the
event shard of each liquidation's symbol, and a significant one's copy into ``liq:significant``
(``shared.significance.publication``), retrying with backoff while Redis is unreachable (the
outage logged once when it begins and once when it ends, ``shared.backoff``).

- While Redis is unreachable, the failed batch and the queue go to the disk spool
  (``collectors.spool``, ``<data_dir>/spool``) and new liquidations follow them there; the
  spool is fsynced at each retry and published first, in order, once Redis answers, even by
  the next start of a collector stopped meanwhile. On stop, what waits goes to the spool;
  without a writable spool, what Redis could not take by then is logged as not published.
- Without a spool (none configured, another collector of the venue holds it, or the disk
  refused it), they wait in memory. A spool the disk refused a write is tried again after
  ``SPOOL_RETRY_S``; meanwhile new liquidations wait in memory, behind what the spool holds.
- A batch is sent again in the same order, so the venue's mark in Redis
  (``keys.publisher_mark``) keeps one that Redis ran before (its reply lost, or the collector
  killed before its spool recorded it) from being added twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collectors.spool import Spool, SpoolBusy
from shared import keys
from shared.backoff import Backoff, Outage
from shared.metrics import ERRORS, EVENTS_OUT, PUBLISH_SECONDS, SPOOLED
from shared.models import Liquidation
from shared.runtime import done_before_stop, stopped_within
from shared.significance import SignificanceRules, publication
from shared.streams import publish

logger = logging.getLogger(__name__)

SPOOL_RETRY_S = 60.0
"""After the disk refused a spool write, liquidations wait in memory this long before the spool
is tried again."""
PUBLISH_BATCH = 500


@dataclass
class Publisher:
    """One venue's liquidations on their way to Redis: the queue, the spool, the publishing task."""

    venue: str
    redis: aioredis.Redis
    shards: int
    on_progress: Callable[[], Awaitable[None]]
    """Awaited after each publish attempt, failed or not: it wakes the collector's ``wait_until``."""
    spool_dir: Path | None = None
    """Where liquidations wait while Redis is unreachable; None: in memory."""
    maxlen: int = keys.EVENT_STREAM_MAXLEN
    """Entries each event stream keeps (``XADD MAXLEN ~``)."""
    significance: SignificanceRules = field(default_factory=SignificanceRules)
    """Which liquidations are copied to ``liq:significant`` (``LIQ_SIGNIFICANT_USD*``)."""
    queue: asyncio.Queue[Liquidation] = field(default_factory=asyncio.Queue)
    published: int = 0
    spool: Spool | None = field(init=False)
    _spool_writable: bool = True
    """False after the disk refused a write: new liquidations wait in memory (behind what the
    spool holds, which is still published first) until ``_spool_again_at``."""
    _spool_again_at: float = 0.0
    """After a disk error, from this time (monotonic) the spool is written again."""

    def __post_init__(self) -> None:
        self.spool = self._open_spool()
        left = self._waiting_spool()
        if left is not None:
            logger.warning("%s: %d liquidations in %s from an earlier run; they are published first",
                           self.venue, left.pending, left.path)
            SPOOLED.labels(self.venue).set(left.pending)

    def _open_spool(self) -> Spool | None:
        if self.spool_dir is None:
            return None
        try:
            return Spool(self.spool_dir, self.venue)
        except SpoolBusy as exc:
            logger.warning("%s: another collector of this venue uses the spool (%s); this one keeps "
                           "what Redis cannot take in memory", self.venue, exc)
        except OSError as exc:  # a full or read-only disk must not stop the collector
            logger.error("%s: no spool in %s (%s); what Redis cannot take waits in memory",
                         self.venue, self.spool_dir, exc)
        return None

    def put(self, liquidations: list[Liquidation]) -> None:
        """Queue new liquidations: to the spool instead, behind what waits there, if it can be written."""
        to_disk = self._waiting_spool() is not None  # then after what waits there
        if not (to_disk and self._spool_with_queue([], liquidations)):
            for liq in liquidations:
                self.queue.put_nowait(liq)

    async def run(self, stop: asyncio.Event) -> None:
        """Move liquidations to Redis in batches: the disk spool first, then the queue.

        While Redis is unreachable, the failed batch and the queue go to the spool (when the
        collector has one) and new liquidations follow them there; on stop, what waits stays
        on disk for the next start. Without a spool they wait in memory."""
        backoff = Backoff()
        outage = Outage(f"{self.venue}: redis", logger)
        batch: list[Liquidation] = []
        while True:
            spool = self._waiting_spool()
            if spool is not None and stop.is_set() and self._spool_with_queue([]):
                await self._sync_spool()
                logger.warning("%s: stopping with %d liquidations in %s; the next start publishes them",
                               self.venue, spool.pending, spool.path)
                return
            try:
                if spool is not None:
                    batch = spool.peek(PUBLISH_BATCH)  # empty when it met only unreadable lines
                elif not batch:
                    batch = await self._next_batch(stop)
                    if not batch:
                        return
                if batch:
                    await self._publish(batch)
            except (RedisError, OSError) as exc:  # Redis, or the disk under the spool
                batch = self._unpublished(batch, spool is not None, exc)
                await self.on_progress()
                if stop.is_set() and (self.spool is None or not self._spool_writable):
                    logger.error("%s: redis unavailable at shutdown (%s); %d liquidations not published",
                                 self.venue, exc, len(batch) + self.queue.qsize())
                    return
                await self._sync_spool()
                delay = backoff.next_delay()
                outage.down(exc, delay)
                logger.debug("%s: %d liquidations waiting for redis", self.venue, self._waiting(batch))
                await stopped_within(stop, delay)
                continue
            backoff.reset()
            outage.up()
            batch = []
            if spool is not None:
                self._spool_published(spool)
            await self.on_progress()

    def _unpublished(self, batch: list[Liquidation], from_spool: bool,
                     exc: BaseException) -> list[Liquidation]:
        """What to retry from memory after a failed publish (nothing when it waits on disk)."""
        ERRORS.labels("collector", type(exc).__name__).inc()
        if from_spool:
            return []  # still on disk: peeked again next time
        return [] if self._spool_with_queue(batch) else batch

    def _spool_back_on(self) -> None:
        """Write the spool again, a while after the disk refused it (it may have room now)."""
        if self.spool is None or self._spool_writable or time.monotonic() < self._spool_again_at:
            return
        self._spool_writable = True
        logger.warning("%s: spooling to %s again", self.venue, self.spool.path)

    def _spool_published(self, spool: Spool) -> None:
        spool.commit()
        SPOOLED.labels(self.venue).set(spool.pending)
        if not spool.pending:
            logger.info("%s: spool published; back to the in-memory queue", self.venue)

    def _waiting_spool(self) -> Spool | None:
        """The spool, when liquidations wait in it (they go out before anything newer)."""
        return self.spool if self.spool is not None and self.spool.pending else None

    def _spool_with_queue(self, batch: list[Liquidation], newer: list[Liquidation] | None = None) -> bool:
        """Move ``batch``, the queue and ``newer``, in that order, to the spool; False (the queue
        left as it was) when the spool cannot be written. The queue holds liquidations only while
        the spool could not be written: they go before anything newer."""
        queued = self._drain_queue()
        if self._spool([*batch, *queued, *(newer or ())]):
            return True
        for liq in queued:
            self.queue.put_nowait(liq)
        return False

    def _spool(self, liquidations: list[Liquidation]) -> bool:
        """Append to the spool; False (nothing written) when there is none, when the disk
        refused an earlier write and the retry time has not come, or on a disk error, which
        is logged. What the spool holds stays in it and is still published first."""
        self._spool_back_on()
        if self.spool is None or not self._spool_writable:
            return False
        if liquidations and not self.spool.pending:
            logger.warning("%s: redis unavailable; liquidations wait in %s", self.venue, self.spool.path)
        try:
            self.spool.append(liquidations)
        except OSError as exc:
            logger.error("%s: cannot write %s (%s); liquidations wait in memory, the spool is tried "
                         "again in %.0fs", self.venue, self.spool.path, exc, SPOOL_RETRY_S)
            self._spool_writable = False
            self._spool_again_at = time.monotonic() + SPOOL_RETRY_S
            return False
        SPOOLED.labels(self.venue).set(self.spool.pending)
        return True

    async def _sync_spool(self) -> None:
        """fsync the spool in a worker thread: a slow disk must not stall the WebSocket loop."""
        if self.spool is None:
            return
        try:
            await asyncio.to_thread(self.spool.sync)
        except OSError as exc:
            logger.error("%s: cannot flush %s to disk (%s)", self.venue, self.spool.path, exc)

    def _drain_queue(self) -> list[Liquidation]:
        out: list[Liquidation] = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def _waiting(self, batch: list[Liquidation]) -> int:
        return len(batch) + self.queue.qsize() + (self.spool.pending if self.spool is not None else 0)

    async def _next_batch(self, stop: asyncio.Event) -> list[Liquidation]:
        while self.queue.empty():
            if stop.is_set():
                return []
            getter = asyncio.create_task(self.queue.get())
            if await done_before_stop(getter, stop):
                batch = [getter.result()]
                break
            getter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await getter
        else:
            batch = []
        while len(batch) < PUBLISH_BATCH and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _publish(self, batch: list[Liquidation]) -> None:
        items = publication(batch, self.shards, self.significance)
        started = time.perf_counter()
        mark = keys.publisher_mark(self.venue)
        added = len(await publish(self.redis, items, self.maxlen, mark))
        PUBLISH_SECONDS.labels(self.venue).observe(time.perf_counter() - started)
        if added < len(items):  # the skipped prefix: count its events, not their copies
            again = sum(stream != keys.SIGNIFICANT_STREAM for stream, _ in items[:len(items) - added])
            logger.info("%s: %d liquidations sent again were in redis already (its reply was lost, or "
                        "the collector stopped before its spool knew); added once", self.venue, again)
        self.published += len(batch)  # all of it is in Redis now, once
        EVENTS_OUT.labels("collector", self.venue).inc(len(batch))
