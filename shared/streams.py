"""Redis Streams plumbing: publishing, and the one consumer-group loop every consumer uses.

Delivery semantics (at-least-once):

1. ``ensure_groups`` creates each group idempotently (``BUSYGROUP`` is success). A group
   found missing later (``NOGROUP``: Redis restarted without its data, or lost the group) is
   created again before the next read, after the last entry this consumer handled from the
   stream: a stream lost with its group is read from the entries the collectors publish after
   the restart (their ids are newer), and a stream kept without its group is not read again.
2. On start, a consumer first re-reads its own pending entries (ID ``0``), then new ones (``>``).
3. The handler's side effect must be committed when it returns; only then are the entries
   XACKed. If it raises, nothing is acked: the loop backs off and re-reads its pending entries,
   so a Redis or database outage loses nothing. Entries whose side effect was committed but
   whose XACK failed are remembered, and acked without being handled again when redelivered;
   once the consumer's pending list reads empty, none can be redelivered and all are forgotten.
4. Entries left pending by a dead consumer for ``claim_idle_ms`` are taken over with XAUTOCLAIM
   (following its cursor); a consumer idle for ``forget_idle_ms`` with nothing pending is
   deleted from the group.
5. An entry whose payload cannot be decoded is copied to ``<stream>:dlq`` and acked in one
   MULTI. A handler failing on a server (Redis, the database: :data:`TRANSIENT_ERRORS`) is
   retried with backoff without limit, so an outage loses nothing. A handler failing on the
   data (any other exception) is given halves of the batch until the entry it cannot process
   is alone; that entry is dead-lettered the same way and the others are handled once, so one
   bad entry never holds a consumer. Handlers must therefore commit a batch whole or not at
   all (a transaction, a Lua script), and remember what they fed in memory (the detector).
6. An entry replayed from a dead-letter stream (``liq dlq replay``) names the one group that
   handles it; every other group acks it unhandled, so a replay counts nowhere twice.
7. ``run_until_idle`` processes everything currently in the streams and returns: tests and
   one-shot backfills drain without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import backlog, codec, keys
from shared.backoff import Backoff, Outage
from shared.metrics import BATCH_SECONDS, DEAD_LETTERS, ERRORS, EVENTS_IN
from shared.redisconn import reply_text, stream_entries
from shared.runtime import stopped_within

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Message(msgspec.Struct, Generic[T], frozen=True):
    """One decoded stream entry (a Struct: built for every entry, it must be cheap)."""

    stream: str
    id: str
    value: T


Handler = Callable[[list[Message[T]]], Awaitable[None]]
Entry = tuple[str, str, Any]
"""A stream entry as read: (stream, entry id, fields as the raw ``[field, value, ...]`` list,
a dict, or None for an entry trimmed while it was pending)."""


class SinkRetry(Exception):
    """Raised by a handler when its side effect failed transiently (e.g. database down)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, SinkRetry)
"""Failures of a server, not of the data: the batch is retried with backoff, never dropped."""


RedisFailureKind = Literal["unreachable", "loading", "error"]


@dataclass(frozen=True)
class RedisFailure:
    """What a failure met talking to Redis means, as :func:`redis_failure` reads it."""

    kind: RedisFailureKind
    text: str
    """The error's message; with its type in front for an ``error``."""


def redis_failure(exc: BaseException) -> RedisFailure:
    """The one reading of a failure met talking to Redis (``liq status`` shows it, the loops log it
    where :func:`outage_of` says): ``loading``, Redis reads its data back after a restart and
    answers nothing else until done (redis-py's ``BusyLoadingError``, a ``ConnectionError``);
    ``unreachable``, no connection or no answer in time; ``error``, Redis answered with an error
    (credentials refused, also ``ConnectionError`` subclasses; a key of another type; out of
    memory), or the failure is not one of redis-py's (redis-py wraps its socket's own errors)."""
    if isinstance(exc, BusyLoadingError):
        return RedisFailure("loading", str(exc))
    answered = isinstance(exc, AuthenticationError | AuthorizationError)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError) and not answered:
        return RedisFailure("unreachable", str(exc))
    return RedisFailure("error", f"{type(exc).__name__}: {exc}")


def outage_of(exc: BaseException, own: Outage, redis_outage: Outage | None) -> Outage:
    """Where a loop logs the failure ``exc``: Redis out of service (:func:`redis_failure`:
    unreachable, or loading its data) in ``redis_outage``, the one its process's loops share, when
    it has one; anything else (a command's error, credentials refused, a lost group, the
    database) in the loop's ``own``."""
    out_of_service = redis_failure(exc).kind != "error"
    return redis_outage if out_of_service and redis_outage is not None else own


def outages_up(own: Outage, redis_outage: Outage | None) -> None:
    """A try worked: the loop's own outage is over, and so is the Redis outage its process's
    loops share (when it has one): Redis answered."""
    own.up()
    if redis_outage is not None:
        redis_outage.up()


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``liq_errors_total``: what failed, so a :class:`SinkRetry` is
    labelled with the error it wraps (``OperationalError``); this loop is the one place a
    consumer's failures are counted."""
    cause = exc.__cause__ if isinstance(exc, SinkRetry) else None
    return type(cause if cause is not None else exc).__name__


# One script run per batch: all of it or none of it. A MULTI would not do: Redis runs the rest of
# a transaction when one command fails (an event stream key of another type), and the retry
# would add the others again. The key types are checked before the first XADD.
def streams_check_lua(last_key: str) -> str:
    """Lua that fails a script, before its first write, when one of ``KEYS[1..last_key]`` holds
    another type than a stream: Redis does not undo the writes a script made before a command
    failed, so a retry would repeat them (``liq:…`` keys another program overwrote)."""
    return f"""
for k = 1, {last_key} do
  local kind = redis.call('TYPE', KEYS[k])['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. kind .. ', not a stream')
  end
end
"""


#   KEYS: the batch's streams, then the publisher's mark when ARGV[3] is '1';
#   ARGV: maxlen, payload field, has-mark, then per entry: key index, payload.
# The mark (a hash: ``first`` and ``last`` = SHA1 of the last batch's first and last payloads,
# ``n`` = its size) makes a batch sent again (its reply lost, or the collector killed before its
# spool knew) add only what it did not add before: a batch whose first payload and n-th payload
# match skips its first n entries. Two payloads, not all of them: the check costs the same for
# any batch size (a digest of all payloads doubled Redis's cost of a 500-entry publish).
PUBLISH_LUA = """
local marked = ARGV[3] == '1'
local streams = #KEYS
if marked then streams = streams - 1 end
""" + streams_check_lua("streams") + """
local count = (#ARGV - 3) / 2
local first = redis.sha1hex(ARGV[5])
local skip = 0
if marked then
  local mark = redis.call('HMGET', KEYS[#KEYS], 'first', 'last', 'n')
  local n = tonumber(mark[3])
  if n and n <= count and mark[1] == first and mark[2] == redis.sha1hex(ARGV[3 + 2 * n]) then
    skip = n
  end
end
local ids = {}
for i = 4 + 2 * skip, #ARGV, 2 do
  local stream = KEYS[tonumber(ARGV[i])]
  ids[#ids + 1] = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i + 1])
end
if marked then
  redis.call('HSET', KEYS[#KEYS], 'first', first, 'last', redis.sha1hex(ARGV[#ARGV]), 'n', count)
end
return ids
"""
_PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest()  # how Redis names a script


async def publish(
    redis: aioredis.Redis, items: Sequence[tuple[str, msgspec.Struct]], maxlen: int,
    mark: str | None = None,
) -> list[str]:
    """XADD every (stream, struct), trimming with MAXLEN ~, in one script run: all or nothing.
    Returns the ids of the entries added.

    A connection lost before Redis has the whole request adds none of the batch, and a stream
    key of another type fails it before anything is added. With a ``mark`` (the collector's,
    ``keys.publisher_mark``), a batch sent again after Redis ran it (its reply lost, or the
    collector killed before its spool recorded it) adds only the entries it did not add the
    first time, so no consumer counts them twice: the mark holds the last batch's size n and
    digests of its first and last payloads, and a batch whose first and n-th payloads match
    them skips its first n entries. The caller must therefore send again in the same order, as
    the spool and the in-memory retry do (a batch sent again may be longer). A payload holds its
    receive time and the venue's event id, so another batch of the venue does not match. Without
    a mark (tests, replays), such a batch is added again."""
    if not items:
        return []
    streams: dict[str, int] = {}
    args: list[Any] = [maxlen, codec.PAYLOAD_FIELD, "1" if mark is not None else "0"]
    for stream, obj in items:
        args += (streams.setdefault(stream, len(streams) + 1), codec.encode(obj))
    script_keys = [*streams, *(() if mark is None else (mark,))]
    try:
        ids = await redis.evalsha(_PUBLISH_SHA, len(script_keys), *script_keys, *args)
    except NoScriptError:
        await redis.script_load(PUBLISH_LUA)
        ids = await redis.evalsha(_PUBLISH_SHA, len(script_keys), *script_keys, *args)
    return [reply_text(i) for i in ids]


def lost_group(exc: BaseException) -> bool:
    """``exc`` says the consumer group (or its stream) no longer exists in Redis."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


@dataclass
class ConsumerStats:
    handled: int = 0
    batches: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    retries: int = 0


FORGET_LUA = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers.err then return redis.error_reply(consumers.err) end  -- NOGROUP as it is (Redis 6.2)
local forgot = {}
for _, info in ipairs(consumers) do
    local c = {}
    for i = 1, #info, 2 do c[info[i]] = info[i + 1] end
    if c['name'] ~= ARGV[2] and tonumber(c['pending']) == 0 and tonumber(c['idle']) >= tonumber(ARGV[3]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
        forgot[#forgot + 1] = c['name']
    end
end
return forgot
"""
"""Delete the consumers of group ARGV[1] on stream KEYS[1] but ARGV[2] idle ARGV[3] ms or more
with nothing pending; returns their names. Atomic: none can read between the check and the
delete (``XINFO CONSUMERS`` answers the same fields, as pairs, on Redis 6.2 and 7). Its error
is answered as it is: Redis 6.2 would prefix a script's, hiding a lost group's NOGROUP."""


@dataclass
class StreamConsumer(Generic[T]):
    """One consumer of a group over one or more streams.

    ``decode`` turns an entry's payload into ``T``; ``handler`` performs the side effect for a
    batch and returns only when it is committed.
    """

    redis: aioredis.Redis
    group: str
    consumer: str
    streams: list[str]
    decode: Callable[[bytes], T]
    handler: Handler[T]
    component: str
    count: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    claim_every_s: float = 15.0
    forget_idle_ms: int = 3_600_000
    """A consumer of the group idle this long with nothing pending is deleted (a dead process's)."""
    backlog_every_s: float = 5.0
    """How often the group's length, pending and lag go to the metrics (``shared.backlog``)."""
    handler_acks: bool = False
    """The handler XACKs its entries itself, atomically with its side effect (the aggregator's
    Lua script): the loop then sends no second XACK."""
    start_id: str = "0"
    redis_outage: Outage | None = None
    """Where Redis being unreachable (connection, timeout) is logged, when several loops of one
    process share Redis (the writer's readers and heartbeat): one outage, two lines. Other
    failures (a lost group, the handler's database) stay in this consumer's own log: they hold
    it while the others run."""
    backoff: Backoff = field(default_factory=Backoff)
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    _pending_first: bool = True
    _last_claim: float = 0.0
    _last_forget: float = 0.0
    _last_backlog: float = 0.0
    _done_unacked: set[tuple[str, str]] = field(default_factory=set)
    """Entries whose side effect is committed but whose XACK failed: acked, not handled, when
    they are delivered again."""
    _groups_lost: bool = False
    """A command answered NOGROUP: the groups are created again before the next read."""
    _last_handled: dict[str, str] = field(default_factory=dict)
    """Per stream, the newest entry handled: where a lost group is created again."""
    _outage: Outage = field(init=False)

    def __post_init__(self) -> None:
        more = f" +{len(self.streams) - 1}" if len(self.streams) > 1 else ""
        self._outage = Outage(f"{self.component} on {self.streams[0] if self.streams else '-'}{more}", logger)

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, self.group, mkstream=True,
                                               id=self._last_handled.get(stream, self.start_id))
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and acked first."""
        await self._with_retry(self.ensure_groups, stop)
        while not stop.is_set():
            await self._with_retry(lambda: self._step(block=True), stop)

    async def run_until_idle(self) -> int:
        """Handle everything in the streams now (pending, claimable, new); return the count."""
        await self.ensure_groups()
        before = self.stats.handled
        self._last_claim = 0.0
        self._pending_first = True
        while await self._step(block=False):
            pass
        return self.stats.handled - before

    async def _with_retry(self, op: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await op()
            except TRANSIENT_ERRORS as exc:
                await stopped_within(stop, self._failed(exc))  # a stop cuts the pause short
                continue
            outages_up(self._outage, self.redis_outage)
            self.backoff.reset()
            return

    def _failed(self, exc: BaseException) -> float:
        """Count and log (once per outage) a server failure; returns the pause before the retry,
        which re-reads the pending entries first."""
        self._groups_lost = self._groups_lost or lost_group(exc)
        delay = self.backoff.next_delay()
        self.stats.retries += 1
        ERRORS.labels(self.component, error_kind(exc)).inc()
        outage_of(exc, self._outage, self.redis_outage).down(exc, delay)
        self._pending_first = True
        return delay

    async def _step(self, block: bool) -> bool:
        """Read and handle one batch; returns False when there was nothing to do."""
        if self._groups_lost:
            await self._recreate_groups()
        if await self._claim_if_due():
            return True
        now = time.monotonic()
        if now - self._last_backlog >= self.backlog_every_s:
            self._last_backlog = now
            await backlog.report(self.redis, self.group, self.streams)
        start_ids = "0" if self._pending_first else ">"
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {s: start_ids for s in self.streams},
            count=self.count,
            block=self.block_ms if (block and not self._pending_first) else None,
        )
        entries: list[Entry] = stream_entries(reply)
        if self._pending_first and not entries:
            self._pending_first = False
            # Nothing is pending for this consumer: an entry still remembered as committed but
            # unacked was acked after all (a lost XACK reply) or taken by another consumer, and
            # can never be delivered here again.
            self._done_unacked.clear()
            return True
        if not entries:
            return False
        await self._handle(entries)
        if start_ids == ">":  # newer than any pending entry handled since
            self._last_handled.update((stream, entry_id) for stream, entry_id, _ in entries)
        return True

    async def _recreate_groups(self) -> None:
        await self.ensure_groups()
        self._groups_lost = False
        logger.warning("%s: group %s was missing on %s (Redis lost its data?); created again after "
                       "the last entry handled", self.component, self.group, ", ".join(self.streams))

    async def _claim_if_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_claim < self.claim_every_s:
            return False
        self._last_claim = now
        if now - self._last_forget >= self.claim_every_s:  # not again for each batch of a backlog
            self._last_forget = now
            await self._forget_dead_consumers()
        claimed: list[Entry] = []
        for stream in self.streams:
            claimed += await self._claim_from(stream, self.count - len(claimed))
            if len(claimed) >= self.count:
                self._last_claim = 0.0  # a full batch: more may wait, claimed on the next step
                break
        if not claimed:
            return False
        taken = sum(1 for entry in claimed if entry[2] is not None)
        self.stats.claimed += taken
        if taken:
            logger.info("%s: claimed %d entries idle on dead consumers", self.component, taken)
        await self._handle(claimed)
        return True

    async def _claim_from(self, stream: str, wanted: int) -> list[Entry]:
        """Up to ``wanted`` entries of ``stream`` idle on other consumers, following XAUTOCLAIM's
        cursor past the pending entries live consumers hold (one call scans at most ten times
        its COUNT)."""
        claimed: list[Entry] = []
        cursor = "0-0"
        while len(claimed) < wanted:
            reply: list[Any] = await self.redis.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=wanted - len(claimed)
            )
            # Redis 7 answers [cursor, entries, ids of pending entries that MAXLEN trimmed] (it
            # drops those from the pending list): they are dead-lettered as such. Redis 6.2 has no
            # third part: it claims a trimmed entry and answers nil for it, without its id; the
            # entry is now this consumer's, so the pending re-read gets it back with its id.
            pairs: list[tuple[Any, Any]] = reply[1] if len(reply) > 1 else []
            trimmed: list[Any] = reply[2] if len(reply) > 2 else []
            if any(entry_id is None for entry_id, _ in pairs):
                self._pending_first = True
            claimed += [(stream, reply_text(entry_id), fields) for entry_id, fields in pairs
                        if entry_id is not None]
            claimed += [(stream, reply_text(entry_id), None) for entry_id in trimmed]
            cursor = reply_text(reply[0])
            if cursor == "0-0":
                break
        return claimed

    async def _forget_dead_consumers(self) -> None:
        """Delete the group's consumers idle for ``forget_idle_ms`` with nothing pending.

        Consumers are named after their process, so every restart leaves one behind, and
        ``XINFO CONSUMERS`` (and the count ``liq status`` shows) would grow for ever. Nothing
        is lost: a consumer holding entries is kept until they are claimed, and a live one
        deleted while idle (before Redis 7.2 a blocked read that finds nothing leaves its idle
        time running, hence the debug level) is created again by its next read. The check and
        the delete are one script: a consumer that reads between them would lose what it read."""
        for stream in self.streams:
            forgot: list[Any] = await self.redis.eval(
                FORGET_LUA, 1, stream, self.group, self.consumer, self.forget_idle_ms)
            for name in forgot:
                logger.debug("%s: forgot consumer %s of %s on %s (idle, nothing pending)",
                             self.component, reply_text(name), self.group, stream)

    async def _handle(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        good: list[Message[T]] = []
        poison: list[tuple[str, str, Any, str]] = []
        done = self._done_unacked
        redelivered: list[Message[Any]] = []
        foreign: list[Message[Any]] = []
        for stream, entry_id, entry_fields in entries:
            if done and (stream, entry_id) in done:
                redelivered.append(Message(stream, entry_id, None))
                continue
            try:
                payload = codec.payload_for(entry_fields, self.group)
                if payload is None:
                    foreign.append(Message(stream, entry_id, None))
                    continue
                good.append(Message(stream, entry_id, self.decode(payload)))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                poison.append((stream, entry_id, entry_fields, str(exc)))
        if foreign:  # replayed for another group: not ours to handle, so acked as they are
            await self._ack(foreign)
        for stream in {m.stream for m in good}:
            EVENTS_IN.labels(self.component, stream).inc(sum(1 for m in good if m.stream == stream))
        handled = await self._run_handler(good, entries) if good else 0
        to_ack: list[Message[Any]] = [*good, *redelivered] if handled == len(good) else redelivered
        await self._ack_done(to_ack)  # before the dead letters: if those fail, nothing handled repeats
        if poison:
            await self._dead_letter(poison, "decode")
        done.difference_update((m.stream, m.id) for m in redelivered)
        self.backoff.reset()
        self.stats.handled += handled
        self.stats.batches += 1
        BATCH_SECONDS.labels(self.component).observe(time.perf_counter() - started)

    async def _run_handler(self, batch: list[Message[T]], entries: list[Entry]) -> int:
        """Run the handler on ``batch``; returns how many entries it committed.

        A failure of the data, not of a server (any exception but :data:`TRANSIENT_ERRORS`),
        means some entry can never be handled: the batch is split in halves until that entry
        is alone, and it is dead-lettered; every other entry is handled once. The halves that
        succeed are acked at once, so an outage during the search repeats none of them.
        """
        exc = await self._data_failure(batch)
        if exc is None:
            return len(batch)
        logger.error("%s: handler failed on a batch of %d (%s: %s); isolating the entries it "
                     "cannot process", self.component, len(batch), type(exc).__name__, exc,
                     exc_info=exc)
        ERRORS.labels(self.component, error_kind(exc)).inc()
        fields = {(stream, entry_id): f for stream, entry_id, f in entries}
        return await self._isolate(batch, exc, fields)

    async def _data_failure(self, batch: list[Message[T]]) -> Exception | None:
        """Run the handler on ``batch``: None when it committed, else the exception it raised
        on the data. A server failure (:data:`TRANSIENT_ERRORS`) propagates: it is retried."""
        try:
            await self.handler(batch)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - the caller isolates the entry that caused it
            return exc
        return None

    async def _isolate(self, batch: list[Message[T]], exc: Exception,
                       fields: dict[tuple[str, str], Any]) -> int:
        if len(batch) == 1:
            m = batch[0]
            reason = f"{type(exc).__name__}: {exc}"
            await self._dead_letter([(m.stream, m.id, fields[(m.stream, m.id)], reason)], "handle")
            return 0
        handled = 0
        for half in (batch[:len(batch) // 2], batch[len(batch) // 2:]):
            half_exc = await self._data_failure(half)
            if half_exc is not None:  # the search goes on in this half
                handled += await self._isolate(half, half_exc, fields)
                continue
            await self._ack_done(half)
            handled += len(half)
        return handled

    async def _ack_done(self, messages: list[Message[Any]]) -> None:
        """XACK entries whose side effect is committed; if that fails, remember them."""
        if self.handler_acks:
            return
        try:
            await self._ack(messages)
        except BaseException:
            self._done_unacked.update((m.stream, m.id) for m in messages)
            raise

    async def _ack(self, messages: Sequence[Message[Any]]) -> None:
        by_stream: dict[str, list[str]] = {}
        for m in messages:
            by_stream.setdefault(m.stream, []).append(m.id)
        if not by_stream:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        await pipe.execute()

    async def _dead_letter(self, poison: list[tuple[str, str, Any, str]], stage: str) -> None:
        """Copy entries to ``<stream>:dlq`` with why, where and for which group, and ack them.

        ``stage`` is ``decode`` (the payload is unusable) or ``handle`` (it decoded, but the
        handler can never process it).

        MULTI does not undo the XACK when the XADD fails (a dead-letter key of another type),
        so the types are checked first: such a key is a server-side problem, retried without
        acking anything until it is fixed."""
        dead_streams = sorted({keys.dead_letter_stream(stream) for stream, *_ in poison})
        check = self.redis.pipeline(transaction=False)
        for dlq in dead_streams:
            check.type(dlq)
        for dlq, kind in zip(dead_streams, await check.execute(), strict=True):
            if reply_text(kind) not in ("stream", "none"):
                raise RedisError(f"{dlq} holds a {reply_text(kind)}, not a stream: delete or rename it "
                                 "so that entries can be dead-lettered")
        pipe = self.redis.pipeline(transaction=True)
        for stream, entry_id, entry_fields, reason in poison:
            body = {**codec.entry_fields(entry_fields), b"reason": reason.encode()[:500],
                    b"source_id": entry_id.encode(),
                    b"group": self.group.encode(), b"stage": stage.encode()}
            pipe.xadd(keys.dead_letter_stream(stream), body, maxlen=keys.DEAD_LETTER_MAXLEN, approximate=True)
            pipe.xack(stream, self.group, entry_id)
        for dlq in dead_streams:
            pipe.xlen(dlq)
        replies = await pipe.execute()
        self.stats.dead_lettered += len(poison)
        DEAD_LETTERS.labels(self.component).inc(len(poison))
        what = "undecodable entries" if stage == "decode" else "entries the handler cannot process"
        logger.warning("%s: dead-lettered %d %s (first: %s %s)",
                       self.component, len(poison), what, poison[0][1], poison[0][3][:200])
        for dlq, length in zip(dead_streams, replies[-len(dead_streams):], strict=True):
            if int(length) >= keys.DEAD_LETTER_MAXLEN:
                logger.error("%s: %s holds %d entries, its cap: the oldest are being dropped; "
                             "see liq dlq list, then replay or drop them", self.component, dlq, int(length))
