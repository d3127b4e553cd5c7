"""The detector process: shard streams → engine → ``liq:cascades``, members and status hashes.

Scale-out (``reference/storage.md`` §2.5): a process owns a set of shards and runs **one
consumer per shard stream** in group ``detector``, named ``detector-s<k>`` (stable, so a
restart re-reads its own pending entries). A symbol's events all land in one shard, so its
window lives in exactly one process. Processes with disjoint shard sets run side by side.

Publication: the messages one batch (or tick) caused, and the status hash of every symbol the
batch touched, go out in one Lua script (atomic like MULTI/EXEC, with one reply instead of one
per command); the entries are acked after it (``StreamConsumer``).
The status hash is rewritten whole (DEL + HSET, TTL 1 h), so ``redis-cli HGETALL
liq:cascade:status:BTCUSDT`` always shows the current state.

Warm restart: before consuming, each shard's window is rebuilt from its stream, without
publishing anything:

1. the range is the entries from ``window + quiet + 10 s`` before the group's last-delivered
   entry up to that entry (XRANGE by entry time, paged), minus the entries still pending
   that were never published, which the consumer re-reads and publishes as usual;
2. then every ``state=active`` status hash of the process's shards is *adopted*: the engine
   continues that cascade under its published id, totals and band, so neither the start nor
   an escalation already announced is published again, and its end will be (on a shard
   the rebuild fed nothing, its stream trimmed or deleted, timed by the clock less the lag);
3. a cascade the rebuild opened that no active status hash confirms was published and ended
   before (or never reached the rule live), so it is dropped with its window, silently;
4. a status hash names, as ``ended_through_ms``, the last event time of its symbol's last
   ended cascade: the rebuilt events up to it leave the window, as that end had cleared them
   (the rebuild's reach may start inside that cascade, too late to end it itself);
5. a status hash with a field the detector cannot read (another program or a hand edit wrote
   it) is logged once and left out: its symbol starts fresh, as if it had none.

Exactly-once publication across a crash: each status hash carries ``entry_id``, the newest
stream entry of that symbol whose outputs it was written with (same script). An entry
still pending after a restart but at or before its symbol's ``entry_id`` was published and
only its XACK was lost: the rebuild feeds it (silently) and the consumer acks it without
feeding or publishing it again, so neither a start nor a member is repeated and the
cascade's count is not inflated.

Live end-of-cascade: a ticker calls ``engine.tick`` every ``tick_s`` with exchange time
carried forward by the clock since the last event, capped at ``now - tick_lag_s``, so a
cascade that simply stops gets its end message while a backlog being drained does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from detector.config import DetectorSettings
from detector.engine import Engine
from detector.lifecycle import Output, SavedStatus, Unreadable, read_status
from shared import codec, keys
from shared.backoff import Backoff, Outage
from shared.clock import SYSTEM_CLOCK, Clock
from shared.metrics import ALERT_SECONDS, CASCADES, DETECT_SECONDS, DETECT_TIMED_EVERY, DROPPED, EVENTS_OUT
from shared.models import CascadeEvent, Liquidation
from shared.redisconn import entry_key, group_info, hash_text, reply_text
from shared.runtime import stopped_within
from shared.streams import Message, StreamConsumer, outage_of, outages_up, streams_check_lua

logger = logging.getLogger(__name__)

COMPONENT = "detector"
READ_COUNT = 2000
"""Entries a shard consumer reads at most at once. Each read costs a round trip, a publication
(script) and its symbols' status hashes, whatever its size: in a backlog, reads of 2,000 took
``liq bench``'s end to end from 33,000 to 41,000 events/s (the detector's CPU from 11.4 to 9.2
µs per event; its wait for Redis, behind the aggregator's scripts, counts too). Live, a read
holds what arrived since the last one, far fewer; 2,000 events are about 20 ms of detection."""

# One batch's publication, atomically: the outputs in order, then each touched status hash
# rewritten whole.
#   KEYS: the cascade stream, the member stream, this detector's publication counter, then the
#         status hashes
#   ARGV: maxlen, ttl, payload field, n outputs, sequence number, then per output: "c" | "m",
#         payload; then per status hash: n fields, its (field, value) pairs
# Redis does not undo a script's writes when a command in it fails: the only command here that
# can fail on the data, XADD to a key of another type, is checked for before the first write.
# A publication whose reply was lost (the connection dropped after Redis ran it) is sent again
# with the same sequence number, and the counter makes the second run write nothing.
PUBLISH_LUA = streams_check_lua("2") + """
local seq = tonumber(ARGV[5])
if seq <= tonumber(redis.call('GET', KEYS[3]) or '0') then
  return 0
end
local maxlen, ttl, field = ARGV[1], ARGV[2], ARGV[3]
local i = 6
for _ = 1, tonumber(ARGV[4]) do
  local stream = ARGV[i] == 'c' and KEYS[1] or KEYS[2]
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, ARGV[i + 1])
  i = i + 2
end
for k = 4, #KEYS do
  local n = tonumber(ARGV[i])
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(ARGV, i + 1, i + 2 * n))
  redis.call('EXPIRE', KEYS[k], ttl)
  i = i + 1 + 2 * n
end
redis.call('SET', KEYS[3], seq)
return 1
"""
REBUILD_SLACK_MS = 10_000
PAGE = 1000


@dataclass(frozen=True)
class Publication:
    """Outputs and the status hashes to rewrite, sent in one script run under ``seq``. The hashes
    are taken when the publication is made: sent again later, it still says what it said."""

    seq: int
    outputs: list[Output]
    statuses: dict[str, dict[str, str]]


def consumer_name(shard: int) -> str:
    return f"detector-s{shard}"



class Detector:
    """The shell around one :class:`Engine` for a set of shards."""

    def __init__(self, redis: aioredis.Redis, settings: DetectorSettings, shards: Sequence[int] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.redis = redis
        self.publish_script = redis.register_script(PUBLISH_LUA)
        self.settings = settings
        self.shards = sorted(set(shards)) if shards is not None else settings.shard_set()
        self.clock = clock
        self.engine = Engine(settings, clock)
        self.lock = asyncio.Lock()
        self.name = "detect-s" + ",".join(str(k) for k in self.shards)
        self.redis_outage = Outage(f"{self.name}: redis", logger)
        """Redis unreachable: one outage for the shards' consumers and the ticker, two lines."""
        self.consumers = [
            StreamConsumer(redis=redis, group=keys.DETECTOR_GROUP, consumer=consumer_name(k),
                           streams=[keys.event_stream(k)], decode=codec.decode_liquidation,
                           handler=self.handle, component=COMPONENT, redis_outage=self.redis_outage,
                           count=READ_COUNT)
            for k in self.shards
        ]
        self.warmed = False
        self.rebuilt = 0
        self.published: dict[str, int] = {"start": 0, "escalate": 0, "end": 0, "member": 0}
        self.lane_of = {keys.event_stream(k): k for k in self.shards}
        """Each shard stream is a lane of the engine: its own event time (``detector.engine``)."""
        self._anchors = {k: (0, clock.monotonic()) for k in self.shards}
        """Per shard, its lane's watermark when it was last fed, and the monotonic time then:
        where ``tick_time`` carries the shard's exchange time forward from."""
        self.entry_ids: dict[str, str] = {}
        """Per symbol, the newest stream entry fed (written to its status hash as ``entry_id``)."""
        self.committed: dict[str, tuple[int, int]] = {}
        """Per symbol, the ``entry_id`` its status hash had at warm start (already published)."""
        self.unreadable: dict[str, Unreadable] = {}
        """Per symbol whose status hash the warm start could not read, the field it could not."""
        self.skipped = 0
        self.outbox: list[Output] = []
        """Outputs produced and not yet sent."""
        self.outbox_symbols: set[str] = set()
        """Symbols whose status hash is still to be written with the outbox."""
        self.unconfirmed: Publication | None = None
        """A publication sent without a reply (a Redis error, or a reply lost after Redis ran
        it): sent again first, with its sequence number, so it is written once either way."""
        self.next_seq = 1
        """The next publication's sequence number (continued from Redis at warm start)."""
        self.alerts_received_ms: list[int] = []
        """Per cascade start in the outbox, when a collector received the liquidation that
        started it: observed as ``liq_cascade_alert_seconds`` once the start is published."""
        self.backoff = Backoff()
        """Pauses between warm start attempts while Redis does not answer."""
        self.fed_unpublished: set[tuple[str, str]] = set()
        """(stream, entry id) fed into the engine by a call that then failed (its outputs wait in
        the outbox): when the entry is delivered again it is acked without being fed twice."""

    # -- consuming ----------------------------------------------------------------------------

    async def handle(self, messages: list[Message[Liquidation]]) -> None:
        """Feed a batch and publish what it caused; a batch whose publication failed is not fed
        again when it is redelivered: its outputs wait in the outbox and go out first."""
        async with self.lock:
            fed: list[tuple[str, str]] = []
            fed_before: list[tuple[str, str]] = []
            try:
                published_before = self._feed(messages, fed, fed_before)
                await self._flush()
            except BaseException:
                self.fed_unpublished.update(fed)
                raise
            # Counted once the batch is through: a failed one is delivered, and skipped, again.
            DROPPED.labels(COMPONENT, "published_before").inc(published_before)
            # Published now, and acked once this returns. An entry fed before but not in this
            # batch (the rest of a failed batch, being split) stays marked until it comes back.
            self.fed_unpublished.difference_update(fed_before)

    def _feed(self, messages: list[Message[Liquidation]], fed: list[tuple[str, str]],
              fed_before: list[tuple[str, str]]) -> int:
        """Feed the entries not fed yet; their outputs join the outbox, their keys ``fed``. The
        keys of entries an earlier, failed call already fed go to ``fed_before``. Returns how
        many entries were skipped as published before a restart."""
        outputs, touched = self.outbox, self.outbox_symbols
        engine, unpublished, lane_of = self.engine, self.fed_unpublished, self.lane_of
        feed = engine.feed
        lanes: set[int] = set()
        from_future, published_before = self.engine.from_future, 0
        for m in messages:
            symbol = m.value.symbol
            if unpublished and (m.stream, m.id) in unpublished:
                fed_before.append((m.stream, m.id))
                self.skipped += 1
                continue
            if self._already_published(symbol, m.id):
                self.skipped += 1
                published_before += 1
                continue
            lane = lane_of.get(m.stream, 0)
            lanes.add(lane)
            if (engine.events + 1) % DETECT_TIMED_EVERY:
                out = feed(m.value, lane)
            else:  # timed
                started = time.perf_counter()
                out = feed(m.value, lane)
                DETECT_SECONDS.observe(time.perf_counter() - started)
            fed.append((m.stream, m.id))
            if out:
                outputs.extend(out)
                self._note_alerts(out, m.value)
                # An event can end another symbol's cascade (its lane's time passed the quiet
                # period): that symbol's status hash must say so too.
                touched.update(o.symbol for o in out if isinstance(o, CascadeEvent))
            touched.add(symbol)
            self.entry_ids[symbol] = m.id
        self._anchor(lanes)
        DROPPED.labels(COMPONENT, "from_future").inc(self.engine.from_future - from_future)  # fed once
        return published_before

    def _already_published(self, symbol: str, entry_id: str) -> bool:
        mark = self.committed.get(symbol)
        return mark is not None and entry_key(entry_id) <= mark

    def _anchor(self, shards: Iterable[int]) -> None:
        now = self.clock.monotonic()
        for shard in shards:
            self._anchors[shard] = (self.engine.lane(shard).watermark, now)

    def _anchor_to_clock(self, adopted: Iterable[str]) -> None:
        """A shard the rebuild fed nothing (its stream trimmed or deleted) has no event time to
        carry forward: where it holds an adopted cascade, its time is the clock's less the lag,
        where live ticks bring an idle shard's time, so the cascade ends on that schedule."""
        lag_ms = int(self.settings.tick_lag_s * 1000)
        for shard in {keys.shard_of(symbol, self.settings.shards) for symbol in adopted}:
            if self.engine.lane(shard).watermark == 0:
                self._anchors[shard] = (self.clock.now_ms() - lag_ms, self.clock.monotonic())

    def tick_time(self, shard: int) -> int:
        """A shard's exchange time now: its lane's watermark at its last feed, carried forward
        by the clock since then (not from the watermark earlier ticks moved: that would count
        the same idle time again on every tick), at most now - lag."""
        watermark, fed_at = self._anchors[shard]
        carried = watermark + int((self.clock.monotonic() - fed_at) * 1000)
        return min(carried, self.clock.now_ms() - int(self.settings.tick_lag_s * 1000))

    async def tick(self) -> int:
        """End the cascades that have gone quiet; returns how many end messages were published."""
        async with self.lock:
            out = [o for shard in self.shards for o in self.engine.tick(self.tick_time(shard), shard)]
            self.outbox.extend(out)
            self.outbox_symbols.update(o.symbol for o in out if isinstance(o, CascadeEvent))
            await self._flush()
            return len(out)

    async def _flush(self) -> None:
        """Send the unconfirmed publication, if any, then the outbox as the next one."""
        if self.unconfirmed is None and not self.outbox and not self.outbox_symbols:
            return
        if self.unconfirmed is not None:
            await self._publish(self.unconfirmed)
            self.unconfirmed = None
        if self.outbox or self.outbox_symbols:
            self.unconfirmed = Publication(self.next_seq, self.outbox, self._statuses_of(self.outbox_symbols))
            self.next_seq += 1
            self.outbox, self.outbox_symbols = [], set()
            await self._publish(self.unconfirmed)
            self.unconfirmed = None
        now_ms = self.clock.now_ms()
        for received_ms in self.alerts_received_ms:
            ALERT_SECONDS.observe(max(0, now_ms - received_ms) / 1000)
        self.alerts_received_ms = []

    def _note_alerts(self, outputs: Sequence[Output], trigger: Liquidation) -> None:
        if trigger.received_ms > 0:
            self.alerts_received_ms += [trigger.received_ms for o in outputs
                                        if isinstance(o, CascadeEvent) and o.phase == "start"]

    async def _publish(self, publication: Publication) -> None:
        outputs = publication.outputs
        script_keys = [keys.CASCADE_STREAM, keys.CASCADE_MEMBER_STREAM, keys.detector_publications(self.name)]
        args: list[Any] = [keys.CASCADE_STREAM_MAXLEN, keys.L2_TTL_SECONDS, codec.PAYLOAD_FIELD, len(outputs),
                           publication.seq]
        members = 0
        for o in outputs:
            is_cascade = isinstance(o, CascadeEvent)
            members += not is_cascade
            args += ["c" if is_cascade else "m", codec.encode(o)]
        for symbol, status in publication.statuses.items():
            script_keys.append(keys.cascade_status(symbol))
            args.append(len(status))
            for name, value in status.items():
                args += [name, value]
        if int(await self.publish_script(keys=script_keys, args=args)) == 0:
            logger.info("%s: publication %d had reached Redis already (its reply was lost)",
                        self.name, publication.seq)
        self._count(outputs, members)

    def _statuses_of(self, symbols: set[str]) -> dict[str, dict[str, str]]:
        now = self.clock.now_ms()
        statuses = {}
        for symbol in sorted(symbols):
            status = self.engine.status(symbol, now)
            if symbol in self.entry_ids:
                status["entry_id"] = self.entry_ids[symbol]
            statuses[symbol] = status
        return statuses

    def _count(self, outputs: list[Output], members: int) -> None:
        for o in outputs:
            if isinstance(o, CascadeEvent):
                self.published[o.phase] += 1
                CASCADES.labels(o.phase).inc()
                logger.info("cascade %s %s: %s, %d liquidations, $%.0f, score %.2f (%s), venues %s",
                            o.phase, o.cascade_id, o.symbol, o.count, o.total_notional_usd, o.risk_score,
                            o.band, ",".join(o.venues))
        if members:
            self.published["member"] += members
            EVENTS_OUT.labels(COMPONENT, keys.CASCADE_MEMBER_STREAM).inc(members)
        if len(outputs) > members:
            EVENTS_OUT.labels(COMPONENT, keys.CASCADE_STREAM).inc(len(outputs) - members)

    # -- warm restart -------------------------------------------------------------------------

    async def warm_start(self) -> None:
        """Rebuild the windows of this process's shards and adopt published cascades (once)."""
        if self.warmed:
            return
        published: Any = await self.redis.get(keys.detector_publications(self.name))
        self.next_seq = int(published or 0) + 1
        statuses = await self._saved_statuses()
        self.committed = {s: saved.entry for s, saved in statuses.items() if saved.entry is not None}
        # A status hash rewritten before its symbol is fed again (its cascade ended by another
        # symbol's event, or by a tick) keeps the mark it had.
        self.entry_ids.update({s: saved.entry_id for s, saved in statuses.items() if saved.entry_id})
        for shard in self.shards:
            self.rebuilt += await self._rebuild(keys.event_stream(shard))
        adopted = {symbol for symbol, saved in statuses.items()
                   if self.engine.adopt(symbol, saved, keys.shard_of(symbol, self.settings.shards))}
        for symbol in [s for s in self.engine.active if s not in adopted]:
            self.engine.fence(symbol)
        for symbol, saved in statuses.items():
            if symbol not in adopted:
                self.engine.resume_ended(symbol, saved)
        self._anchor(self.shards)
        self._anchor_to_clock(adopted)
        self.warmed = True
        if self.rebuilt or adopted:
            logger.info("%s: rebuilt windows from %d entries, continuing %d active cascade(s)",
                        self.name, self.rebuilt, len(adopted))

    async def _rebuild(self, stream: str) -> int:
        last_id = await self._last_delivered(stream)
        if last_id is None:
            return 0
        pending = await self._pending(stream)
        reach_ms = self.settings.window_ms + self.settings.quiet_ms + REBUILD_SLACK_MS
        since_ms = entry_key(last_id)[0] - reach_ms
        fed = 0
        async for entry_id, fields in self._range(stream, f"{max(0, since_ms)}-0", last_id):
            try:
                payload = codec.payload_for(fields, keys.DETECTOR_GROUP)
                if payload is None:
                    continue  # replayed for another group
                liq = codec.decode_liquidation(payload)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                continue
            if entry_id in pending and not self._already_published(liq.symbol, entry_id):
                continue  # never published: the consumer re-reads it and publishes it
            try:
                self.engine.feed(liq, self.lane_of.get(stream, 0))
            except Exception:  # the live loop dead-lettered it: skipped again, not a crash loop
                logger.exception("%s: rebuild skipped entry %s %s", self.name, stream, entry_id)
                continue
            self.entry_ids[liq.symbol] = entry_id
            fed += 1
        return fed

    async def _last_delivered(self, stream: str) -> str | None:
        try:
            groups: list[dict[Any, Any]] = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return None  # no such stream yet
        info = group_info(groups, keys.DETECTOR_GROUP)
        last = "0-0" if info is None else reply_text(info.get("last-delivered-id", "0-0"))
        return None if last == "0-0" else last

    async def _pending(self, stream: str) -> set[str]:
        ids: set[str] = set()
        start = "-"
        while True:
            rows: list[dict[str, Any]] = await self.redis.xpending_range(
                stream, keys.DETECTOR_GROUP, min=start, max="+", count=PAGE)
            ids.update(reply_text(r["message_id"]) for r in rows)
            if len(rows) < PAGE:
                return ids
            start = "(" + reply_text(rows[-1]["message_id"])

    async def _range(self, stream: str, start: str, end: str) -> AsyncIterator[tuple[str, dict[Any, Any]]]:
        while True:
            rows: Any = await self.redis.xrange(stream, min=start, max=end, count=PAGE)
            for entry_id, fields in rows:
                yield reply_text(entry_id), fields
            if len(rows) < PAGE:
                return
            start = "(" + reply_text(rows[-1][0])

    async def _saved_statuses(self) -> dict[str, SavedStatus]:
        """The status hashes of this process's shards, read (``lifecycle.read_status``). A hash
        with a field the detector cannot read (another program or a hand edit wrote it) is left
        out, as if absent: its symbol starts fresh, and the field is logged once."""
        statuses: dict[str, SavedStatus] = {}
        async for symbol, fields in self._statuses():
            saved = read_status(fields)
            if isinstance(saved, Unreadable):
                self._report_unreadable(symbol, saved)
            else:
                statuses[symbol] = saved
        return statuses

    def _report_unreadable(self, symbol: str, bad: Unreadable) -> None:
        if self.unreadable.get(symbol) == bad:
            return  # logged by an earlier try of the warm start
        self.unreadable[symbol] = bad
        logger.warning("%s: %s: cannot read %s=%r, so %s starts fresh, as if it had no status",
                       self.name, keys.cascade_status(symbol), bad.field, bad.value, symbol)

    async def _statuses(self) -> AsyncIterator[tuple[str, dict[str, str]]]:
        async for raw_key in self.redis.scan_iter(match=keys.cascade_status("*"), count=500):
            symbol = keys.status_symbol(reply_text(raw_key))
            if keys.shard_of(symbol, self.settings.shards) not in self.shards:
                continue
            raw: dict[Any, Any] = await self.redis.hgetall(raw_key)
            yield symbol, hash_text(raw)

    # -- running ------------------------------------------------------------------------------

    async def ensure_groups(self) -> None:
        for consumer in self.consumers:
            await consumer.ensure_groups()

    async def run_until_idle(self) -> int:
        """Warm start (first call), then drain every shard; returns the entries handled."""
        await self.warm_start()
        handled = 0
        for consumer in self.consumers:
            handled += await consumer.run_until_idle()
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        """Warm start, then one consumer per shard and the ticker, until ``stop`` is set."""
        outage = Outage(f"{self.name}: warm start", logger)
        while not self.warmed and not stop.is_set():
            try:
                await self.warm_start()
            except (RedisError, OSError) as exc:
                delay = self.backoff.next_delay()
                outage.down(exc, delay)
                await stopped_within(stop, delay)
        if not self.warmed:
            logger.info("%s: stopped before the warm start succeeded: nothing was consumed", self.name)
            return
        outage.up()
        await asyncio.gather(*(c.run(stop) for c in self.consumers), self._ticker(stop))
        logger.info("%s: %d events, published %s", self.name, self.engine.events, self.published)

    async def _ticker(self, stop: asyncio.Event) -> None:
        own = Outage(f"{self.name}: tick", logger)
        while not stop.is_set():
            await stopped_within(stop, self.settings.tick_s)
            try:
                await self.tick()
                await self._heartbeat()
            except (RedisError, OSError) as exc:  # the next tick retries: one line per outage
                outage_of(exc, own, self.redis_outage).down(exc, self.settings.tick_s)
                continue
            except Exception:  # a bug: logged, and the consumers keep running; next tick retries
                logger.exception("%s: tick failed", self.name)
                continue
            outages_up(own, self.redis_outage)

    async def _heartbeat(self) -> None:
        key = keys.process_heartbeat(self.name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"updated_ms": self.clock.now_ms(), "events": self.engine.events,
                                "active": len(self.engine.active), "shards": ",".join(map(str, self.shards)),
                                "from_future": self.engine.from_future})
        pipe.expire(key, keys.PROCESS_HEARTBEAT_TTL_SECONDS)
        await pipe.execute()


def bench_consumer(redis: aioredis.Redis, shards: int) -> Detector:
    """The detector over ``shards`` shard streams, for ``liq bench`` (drained with run_until_idle)."""
    return Detector(redis, DetectorSettings(shards=shards), list(range(shards)))
