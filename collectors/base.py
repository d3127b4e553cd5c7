"""The one connection loop every collector runs: connect, subscribe, heartbeat, parse, hand on.

For each :class:`~collectors.venue.ConnectionPlan` of a venue, a task keeps one WebSocket open:
it sends the session's subscribe frames, the venue's application ping every ``heartbeat_s``
(WebSocket pings otherwise), decompresses gzip frames (HTX), hands each frame to the session,
sends its replies, drops replayed liquidations (``collectors.dedupe``) and hands the rest to
the publisher (``collectors.publisher``).

- A malformed frame is counted (``liq_parse_errors``), logged with a truncated sample (at most
  once per 10 s per venue) and skipped. It never closes the connection.
- A dropped or failed connection is retried with exponential backoff and jitter
  (``shared.backoff``), reset once a connection has been healthy for a while. A connection
  the venue announces it will drop (``SessionOutput.reconnect``) is replaced the same way; one
  the venue ends at a fixed age (``VenueSpec.max_connection_s``) is replaced before then, the
  new connection opened before the old one is closed.
- One publisher task (``collectors.publisher``) drains the queue in pipelined batches of XADD
  (``MAXLEN ~``) into the event shard of each liquidation's symbol. While Redis is unreachable,
  liquidations wait in the disk spool (``collectors.spool``, ``<data_dir>/spool``) and are
  published first, in order, once it answers, even by the next start of a collector stopped
  meanwhile.
- Health is written to ``liq:venue:{VENUE}`` every second and logged once per state change.
- ``record`` appends every raw frame, as received, to a JSON-lines file for ``liq replay``
  (``collectors.recording``).
- For a venue with an instruments endpoint, contract sizes are refreshed beside the
  connections (``collectors.refresh``) and cached on disk.
- The connection plans are built by ``run()`` in a daemon thread (``collectors.refresh.blocking_call``):
  a venue may need the network for them (Bybit lists its instruments over HTTP), which must
  neither block the event loop nor hold a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, RedisError, ResponseError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from collectors.dedupe import RecentIds, number_repeats
from collectors.health import TwinWatch, VenueHealth
from collectors.publisher import Publisher
from collectors.recording import FrameRecorder
from collectors.refresh import DEFAULT_EVERY_S, blocking_call, load_cached, refresh_loop
from collectors.spool import Spool
from collectors.venue import ConnectionPlan, VenueSession, VenueSpec
from collectors.venues._common import inflate
from shared import codec, keys
from shared.backoff import Backoff, Outage
from shared.clock import SYSTEM_CLOCK, Clock
from shared.errors import ParseError
from shared.metrics import (
    DUPLICATES,
    EVENTS_IN,
    PARSE_ERRORS,
    RECONNECTS,
    VENUE_CONNECTED,
    VENUE_LAST_EVENT_MS,
)
from shared.models import Liquidation
from shared.redisconn import reply_text, wrong_type
from shared.runtime import done_before_stop, stopped_within
from shared.significance import SignificanceRules
from shared.venue_health import STOPPED_REASON

PUBLISHER_DIED_REASON = "collector failed: the publisher stopped unexpectedly"
"""The reason a venue is down once its collector stopped because its publisher died (a bug)."""

logger = logging.getLogger(__name__)

HEALTHY_AFTER_S = 30.0
CONFIRM_TIMEOUT_S = 30.0
"""A connection whose subscriptions the venue has not confirmed this long after it sent them is
``degraded`` ("subscription not confirmed after 30 s") until the venue does, or it reconnects."""
SILENT_PINGS = 3
"""A connection is reopened after this many ping intervals without any frame, where a frame is
due every interval: the venue answers each application ping (``answers_pings``) or pings by
itself (``server_heartbeat_s``), so silence means the connection is dead."""
REPLACE_AT = 0.75
"""A venue that ends connections at a fixed age (``VenueSpec.max_connection_s``) gets a new
connection at this fraction of it; the old one is closed once the new one is subscribed."""
REMEMBER_ENTRIES = 5000
"""The venue's own liquidations read back from the tail of each event stream at start, for
venues that replay on subscribe."""
REMEMBER_SCAN = 50_000
"""Entries of every venue looked at, at most, back from the end of each event stream to find
them: other venues' liquidations share the streams (Bitfinex replays a row up to about 12 h old)."""
RELIST_FIRST_S = 60.0
"""A venue that ``relists`` is asked for its listing again this soon after the start, then twice
as late each time up to the refresh period: a listing that failed at the start (the venue's few
default symbols subscribed instead) is not left so for a whole period (6 h)."""
PARSE_LOG_EVERY_S = 10.0
BODY_EXCERPT_CHARS = 200
"""Characters of a refused handshake's body kept in the venue's reason and the log."""
NO_CLOSE_FRAME = 1006
"""The close code of a connection that ended without a close frame from the venue (RFC 6455)."""


def silence_limit_s(spec: VenueSpec, app_pings: bool) -> float | None:
    """How long a connection may go without any frame before it counts as dead: a few intervals
    of whatever makes the venue send frames when no one is liquidated (its answers to our
    application pings, its own pings). None: the venue may be quiet for long, and a dead
    connection is left to WebSocket pings."""
    due = [s for s in (spec.heartbeat_s if app_pings and spec.answers_pings else None,
                       spec.server_heartbeat_s) if s]
    return SILENT_PINGS * min(due) if due else None


def closed_by_server(closed: ConnectionClosedOK) -> str:
    """``closed by server``, with the close code and reason the venue gave, if any."""
    frame = closed.rcvd
    if frame is None:
        return "closed by server"
    detail = f"{frame.code} {frame.reason}".strip()
    return f"closed by server ({detail})"[:300]


def failure_text(failure: BaseException | str) -> str:
    """How a connection failure reads in the venue's health reason and the log: a refused
    handshake with the start of the venue's answer, which may say why (Binance's geo-block 451:
    "Service unavailable from a restricted location")."""
    if isinstance(failure, str):
        return failure
    text = f"{type(failure).__name__}: {failure}"
    if isinstance(failure, InvalidStatus) and (body := one_line(failure.response.body)):
        text += f", body: {body}"
    return text


def one_line(raw: bytes | bytearray, limit: int = BODY_EXCERPT_CHARS) -> str:
    """``raw`` as one line of printable text (any run of blanks and control characters is one
    space), cut at ``limit`` characters, the last one then "…"."""
    text = "".join(c if c.isprintable() else " " for c in raw.decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def failure_kind(failure: BaseException | str) -> str:
    """What makes a connection failure news within one outage (:class:`Outage` logs each kind
    once): its class, with the HTTP status of a refused handshake (503, then a geo-block's 451
    or 403) or the venue's close code of a dropped connection (1006: none, then 1008)."""
    if isinstance(failure, str):
        return failure
    name = type(failure).__name__
    if isinstance(failure, InvalidStatus):
        return f"{name} {failure.response.status_code}"
    if isinstance(failure, ConnectionClosed):
        return f"{name} {failure.rcvd.code if failure.rcvd is not None else NO_CLOSE_FRAME}"
    return name


def _decoded(entry: Any) -> Liquidation | None:
    """The liquidation of an event stream entry (``(id, fields)``); None when it does not decode."""
    try:
        return codec.decode_liquidation(codec.entry_payload(entry[1]))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


@dataclass
class Relay:
    """What a connection near the venue's age limit and the connection replacing it share."""

    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the replacement is open and has sent its subscriptions: the old one may close."""
    old_open: bool = True
    """The old connection still runs: until the replacement is subscribed, it serves the plan,
    so a failed attempt of the replacement is no loss of the venue's connection."""

    def covered(self) -> bool:
        """The replacement is not subscribed yet and the old connection still serves the plan."""
        return self.old_open and not self.subscribed.is_set()


@dataclass
class Pending:
    """The confirmations (``SessionOutput.confirmed``) one connection still awaits."""

    left: int
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.left <= 0:
            self.done.set()

    def take(self, confirmed: int) -> bool:
        """Count ``confirmed`` more; True when that completes them."""
        if self.done.is_set() or confirmed <= 0:
            return False
        self.left -= confirmed
        if self.left <= 0:
            self.done.set()
        return self.done.is_set()

    async def within(self, timeout_s: float) -> bool:
        """Whether all confirmations arrive within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.done.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class Handover:
    """One connection's part in replacing a connection before the venue ends it at its age limit."""

    relay: Relay | None = None
    """Where this connection is the replacement."""
    successor: Relay | None = None
    """Where this connection is the one replaced, once its replacement is started."""

    def replaced(self) -> bool:
        """The replacement is subscribed: this connection ending is no outage."""
        return self.successor is not None and self.successor.subscribed.is_set()


class NothingLeftToSubscribe(Exception):
    """The venue refused every symbol of a connection: it is closed, and not reopened."""


class VenueAskedReconnect(Exception):
    """A frame in which the venue announces it will drop the connection, or asks for a new one."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the venue asked for a new connection: {why}")


@dataclass
class CollectorConfig:
    venue: VenueSpec
    redis: aioredis.Redis
    shards: int
    base_url: str
    symbols: Sequence[str] = ()
    record_path: Path | None = None
    clock: Clock = SYSTEM_CLOCK
    open_timeout_s: float = 10.0
    ws_ping_s: float = 20.0
    """WebSocket ping interval where the venue gets application pings (else its ``heartbeat_s``),
    and the shortest wait for a pong: a link that returns none is dead, and is reopened."""
    health_every_s: float = 1.0
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    """How long a connection may await the venue's confirmation of its subscriptions before it
    is ``degraded``."""
    instruments_dir: Path | None = None
    """Disk cache of the venue's instruments (``<data_dir>/instruments``); None: no cache."""
    instruments_every_s: float | None = DEFAULT_EVERY_S
    """Refresh period of contract sizes from the venue's instruments endpoint, and of the symbol
    listing of a venue that ``relists``; None: never."""
    spool_dir: Path | None = None
    """Where liquidations wait while Redis is unreachable (``<data_dir>/spool``); None: in memory."""
    stream_maxlen: int = keys.EVENT_STREAM_MAXLEN
    """Entries each event stream keeps (``LIQ_STREAM_MAXLEN``)."""
    significance: SignificanceRules = field(default_factory=SignificanceRules)
    """Which liquidations are also published to ``liq:significant`` (``LIQ_SIGNIFICANT_USD*``)."""


@dataclass
class Collector:
    """State of one venue's collector process (all its connections)."""

    config: CollectorConfig
    dedupe: RecentIds = field(default_factory=RecentIds)
    health: VenueHealth = field(init=False)
    publisher: Publisher = field(init=False)
    recorder: FrameRecorder = field(init=False)
    twins: TwinWatch = field(init=False)
    _last_parse_log: float = 0.0
    _logged_state: str = ""
    _malformed_logged: bool = False
    """A malformed value in the venue's health hash was logged (it is, once per process)."""
    _health_refused: str = ""
    """Why Redis refused the last health write (a key of another type): logged when it changes."""
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _plans: list[ConnectionPlan] | None = None
    _plans_lock: threading.Lock = field(default_factory=threading.Lock)
    _relist_now: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after an instruments refresh: the relisting looks at once (see ``_relist_loop``)."""
    _stop: asyncio.Event | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """The connection loops (and helpers) ``run()`` cancels on stop, replacements included."""

    def __post_init__(self) -> None:
        spec = self.config.venue
        self.health = VenueHealth(spec.name, spec.usual_gap_s, 0, started_ms=self.config.clock.now_ms(),
                                  endpoint=self.config.base_url,
                                  collector_id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
        self.twins = TwinWatch(self.health.collector_id)
        self.publisher = Publisher(spec.name, self.config.redis, self.config.shards, self._notify,
                                   self.config.spool_dir, self.config.stream_maxlen,
                                   self.config.significance)
        self.recorder = FrameRecorder(spec.name, self.config.record_path)

    @property
    def queue(self) -> asyncio.Queue[Liquidation]:
        """The publisher's in-memory queue."""
        return self.publisher.queue

    @property
    def spool(self) -> Spool | None:
        """The publisher's disk spool (None: liquidations Redis cannot take wait in memory)."""
        return self.publisher.spool

    @property
    def published(self) -> int:
        """Liquidations the publisher put in Redis since the start."""
        return self.publisher.published

    @property
    def plans(self) -> list[ConnectionPlan]:
        """The venue's connections, built once.

        ``run()`` builds them off the event loop; reading this before that happens builds them
        here, synchronously (instant for every venue except a live Bybit listing its symbols).
        """
        with self._plans_lock:
            plans = self._plans
        return plans if plans is not None else self._adopted(self._build_plans())

    def _build_plans(self) -> list[ConnectionPlan]:
        """The venue's connections for the configured symbols (blocking: may list them over REST)."""
        return self.config.venue.plans(self.config.base_url, self.config.symbols)

    def _adopted(self, plans: list[ConnectionPlan]) -> list[ConnectionPlan]:
        """``plans`` as the venue's connections, unless some were adopted already (those, then)."""
        with self._plans_lock:
            if self._plans is None:
                self._plans = plans
                self.health.connections_total = len(plans)
            return self._plans

    async def _first_plans(self, stop: asyncio.Event) -> list[ConnectionPlan] | None:
        """The venue's connections, built in a daemon thread a stop abandons (a live Bybit lists
        its symbols over REST, up to 10 s per request); None when ``stop`` came first."""
        build = asyncio.create_task(blocking_call(self._build_plans))
        if not await done_before_stop(build, stop):
            build.cancel()
            return None
        return self._adopted(build.result())

    async def run(self, stop: asyncio.Event) -> None:
        """Run every connection, the publisher and the health reporter until ``stop``."""
        source, every_s = self.config.venue.instruments, self.config.instruments_every_s
        if source is not None:  # first: a venue's plans may come from its table (Lighter's markets)
            await asyncio.to_thread(load_cached, self.config.venue.name, source, self.config.instruments_dir)
        plans: list[ConnectionPlan] | None = None
        try:
            plans = await self._first_plans(stop)
        finally:
            if plans is None:  # failed, or stopped before the venue listed its connections
                self.recorder.close()
        if plans is None:
            logger.info("%s: stopped before its connections were listed", self.config.venue.name)
            return
        if self.config.venue.replays_on_subscribe:
            await self._remember_published(stop)
        await self._notify()
        self._stop, tasks = stop, self._tasks
        tasks.extend(asyncio.create_task(self._connection_loop(plan, stop)) for plan in plans)
        if self.config.venue.relists and not self.config.symbols and every_s is not None:
            tasks.append(asyncio.create_task(self._relist_loop(stop, every_s)))
        if source is not None and every_s is not None:
            tasks.append(asyncio.create_task(refresh_loop(
                self.config.venue.name, source, self.config.base_url, self.config.instruments_dir,
                stop, every_s, on_refresh=self._instruments_refreshed)))
        publisher = asyncio.create_task(self.publisher.run(stop))
        reporter = asyncio.create_task(self._health_loop(stop))
        why = STOPPED_REASON
        try:
            await done_before_stop(publisher, stop)
            if not stop.is_set():  # the publisher died: stop, and exit with its error for a restart
                logger.critical("%s: the publisher stopped unexpectedly; stopping the collector",
                                self.config.venue.name)
                why = PUBLISHER_DIED_REASON  # not asked for: liq status --check reports it
                stop.set()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait([publisher])  # its error is raised below, after the health says so
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            self.health.stopped(why)
            with contextlib.suppress(RedisError, OSError):  # Redis may be what is down
                await self._write_health()
            self.recorder.close()
            logger.info("%s: %d liquidations published, %d parse errors, %d duplicates dropped",
                        self.config.venue.name, self.published, self.health.parse_errors,
                        self.health.duplicates)
            publisher.result()

    async def _remember_published(self, stop: asyncio.Event) -> None:
        """Seed the duplicate filter with this venue's liquidations at the tail of the event
        streams, and those its spool still holds (they go out first): the snapshot the venue
        replays on subscribe after a restart is not new.

        A Redis that is loading its data (just restarted) is waited for: it answers soon. One
        that does not answer at all is not: the collector must run, and spool, without it."""
        venue = self.config.venue.name
        spool = self.publisher.spool
        spooled = await asyncio.to_thread(spool.waiting) if spool is not None else []
        remembered = sum(not self.dedupe.seen_before(liq) for liq in spooled)
        backoff, loading = Backoff(base_s=0.1, cap_s=5.0), Outage(f"{venue}: redis (loading)", logger)
        while not stop.is_set():
            try:
                remembered += await self._remember_streams()
                break
            except BusyLoadingError as exc:
                delay = backoff.next_delay()
                loading.down(exc, delay)
                await stopped_within(stop, delay)
            except (RedisError, OSError) as exc:
                logger.warning("%s: cannot read what was published before (%s); a replayed snapshot "
                               "may be published again", venue, exc)
                return
        loading.up()
        if remembered:
            logger.info("%s: remembered %d liquidations published before", venue, remembered)

    async def _remember_streams(self) -> int:
        """Seed the duplicate filter from the tail of each event stream; returns how many were new."""
        remembered = 0
        for stream in keys.event_streams(self.config.shards):
            for liq in reversed(await self._published_to(stream)):  # oldest first
                remembered += not self.dedupe.seen_before(liq)
        return remembered

    async def _published_to(self, stream: str) -> list[Liquidation]:
        """This venue's newest liquidations in ``stream``, newest first: at most
        ``REMEMBER_ENTRIES``, among at most ``REMEMBER_SCAN`` entries back from its end."""
        mine: list[Liquidation] = []
        newest, scanned = "+", 0
        while len(mine) < REMEMBER_ENTRIES and scanned < REMEMBER_SCAN:
            entries: Any = await self.config.redis.xrevrange(stream, max=newest, count=REMEMBER_ENTRIES)
            scanned += len(entries)
            decoded = (_decoded(entry) for entry in entries)
            mine += [liq for liq in decoded if liq is not None and liq.exchange == self.config.venue.name]
            if len(entries) < REMEMBER_ENTRIES:
                break
            newest = f"({reply_text(entries[-1][0])}"
        return mine[:REMEMBER_ENTRIES]

    async def _relist_loop(self, stop: asyncio.Event, every_s: float) -> None:
        """Every ``every_s`` (sooner after the start, see ``RELIST_FIRST_S``), and after each
        instruments refresh (Lighter's markets come from its table), ask the venue's listing again
        and open connections (:meth:`_start`) for the symbols listed since: a new listing is
        covered without a restart.
        The running connections stay as they are (a delisted symbol's topic just stays quiet)."""
        generation = 0
        wait_s = min(RELIST_FIRST_S, every_s)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):  # a stop cancels this task
                await asyncio.wait_for(self._relist_now.wait(), timeout=wait_s)
            self._relist_now.clear()
            wait_s = min(2 * wait_s, every_s)
            extra = await self._newly_listed(generation + 1)
            if extra:
                generation += 1
                for plan in extra:
                    self._start(self._connection_loop(plan, stop))

    async def _newly_listed(self, generation: int) -> list[ConnectionPlan]:
        """Plans for the symbols the venue lists now and no running plan subscribes (none when the
        listing fails: what runs stays)."""
        venue = self.config.venue
        try:
            listed = await blocking_call(functools.partial(venue.plans, self.config.base_url, ()))
        except Exception as exc:  # noqa: BLE001 - a failed listing keeps what runs
            logger.warning("%s: symbol listing failed (%s); subscriptions unchanged", venue.name, exc)
            return []
        known = {s for plan in self.plans for s in plan.symbols}
        fresh = list(dict.fromkeys(s for plan in listed for s in plan.symbols if s not in known))
        if not fresh:
            return []
        extra = [dataclasses.replace(plan, label=f"{plan.label}+{generation}")
                 for plan in venue.plans(self.config.base_url, fresh)]
        with self._plans_lock:
            self._plans = [*(self._plans or []), *extra]
            self.health.connections_total = len(self._plans)
        logger.info("%s: %d symbol(s) listed since start (%s); %d more connection(s)", venue.name,
                    len(fresh), ", ".join(fresh[:5]) + (", …" if len(fresh) > 5 else ""), len(extra))
        return extra

    # -- connections -------------------------------------------------------------------------

    async def _connection_loop(self, plan: ConnectionPlan, stop: asyncio.Event,
                               relay: Relay | None = None) -> None:
        """Keep ``plan``'s connection open, reconnecting with backoff. With ``relay``, this loop
        replaces a connection the venue is about to end: its failed attempts change no health
        while that one still serves the plan. A loop that started its own replacement ends with
        its connection (a lost connection only if the replacement is not yet subscribed): the
        replacement carries on."""
        backoff = Backoff()
        outage = Outage(f"{self.config.venue.name}[{plan.label}]", logger)
        # A venue's announced disconnect is answered at once, but the next one after a connection
        # that lived HEALTHY_AFTER_S or less waits its backoff like any failure (a venue repeating it).
        asked_at_once = False
        while not stop.is_set():
            opened_at = time.monotonic()
            handover = Handover(relay)
            plan = self._current(plan)  # without the symbols the venue refused
            failure = await self._attempt(plan, outage, handover)
            if isinstance(failure, NothingLeftToSubscribe):
                return
            if handover.successor is not None:
                handover.successor.old_open = False
            if handover.replaced():
                return
            if relay is None or not relay.covered():
                await self._lost(plan.label, failure)
            if handover.successor is not None:
                return
            if time.monotonic() - opened_at > HEALTHY_AFTER_S:
                backoff.reset()
                asked_at_once = False
            if isinstance(failure, VenueAskedReconnect) and not asked_at_once:
                asked_at_once = True  # routine (an upgrade, a restart): said, not an outage
                logger.info("%s[%s]: %s; reconnecting now", self.config.venue.name, plan.label, failure)
                continue
            delay = backoff.next_delay()
            outage.down(failure_text(failure), delay, failure_kind(failure))  # once per kind, not per retry
            await stopped_within(stop, delay)

    async def _attempt(self, plan: ConnectionPlan, outage: Outage, handover: Handover) -> BaseException | str:
        """Run one connection (:meth:`_session`); why it ended."""
        try:
            return await self._session(plan, outage, handover)
        except (OSError, WebSocketException, InvalidHandshake, InvalidURI, TimeoutError,
                VenueAskedReconnect, NothingLeftToSubscribe) as exc:
            return exc
        except Exception as exc:  # a bug: logged whole, and the connection is opened again
            logger.exception("%s[%s]: connection failed", self.config.venue.name, plan.label)
            return exc

    async def _lost(self, label: str, failure: BaseException | str) -> None:
        """Connection ``label`` is down: its health, gauge and the reconnect count say so."""
        venue = self.config.venue.name
        self.health.disconnected(label, failure_text(failure)[:300])
        await self._notify()
        VENUE_CONNECTED.labels(venue, label).set(0)
        RECONNECTS.labels(venue).inc()

    async def _session(self, plan: ConnectionPlan, outage: Outage, handover: Handover) -> str:
        """Run one connection until the venue closes it cleanly (why, then), it fails (raises) or
        its replacement is subscribed (``handover.replaced()``)."""
        session = plan.new_session()
        spec = self.config.venue
        app_pings = session.heartbeat() is not None
        ws_ping = self.config.ws_ping_s if app_pings else spec.heartbeat_s
        async with connect(plan.url, open_timeout=self.config.open_timeout_s, max_size=2**24,
                           ping_interval=ws_ping, ping_timeout=max(ws_ping, self.config.ws_ping_s),
                           close_timeout=2, additional_headers=list(spec.headers) or None) as ws:
            for frame in session.on_open():
                await ws.send(frame)
            pending = self._subscribed(plan.label, session)
            await self._notify()
            VENUE_CONNECTED.labels(spec.name, plan.label).set(1)
            if outage.since is None:
                logger.info("%s[%s]: connected to %s", spec.name, plan.label, plan.url)
            outage.up()
            if handover.relay is not None:
                handover.relay.subscribed.set()
            heartbeat = asyncio.create_task(self._heartbeat(ws, session))
            replace = asyncio.create_task(self._replace_before_the_end(ws, plan, handover))
            confirm = asyncio.create_task(self._confirm_within(plan.label, pending))
            silence_s = silence_limit_s(spec, app_pings)
            try:
                while True:
                    try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                        async with asyncio.timeout(silence_s):
                            raw = await ws.recv()
                    except ConnectionClosedOK as closed:
                        return closed_by_server(closed)
                    except TimeoutError:
                        limit = silence_s or 0.0
                        raise TimeoutError(f"no frame for {limit:g}s although one is due every "
                                           f"{limit / SILENT_PINGS:g}s") from None
                    await self._on_frame(ws, session, plan.label, raw, pending)
            finally:
                for task in (heartbeat, replace, confirm):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _subscribed(self, label: str, session: VenueSession) -> Pending:
        """Connection ``label`` is open and sent its subscriptions: ``subscribing`` until the
        venue confirms them (``up`` at once where there is nothing to confirm)."""
        pending = Pending(session.confirmations())
        self.health.connected(label, self.config.clock.now_ms())
        if not pending.done.is_set():
            self.health.awaiting(label)
        return pending

    async def _confirm_within(self, label: str, pending: Pending) -> None:
        """Mark connection ``label`` unconfirmed (``degraded``) if the venue has not confirmed its
        subscriptions within ``confirm_timeout_s``; a later confirmation clears it."""
        timeout_s = self.config.confirm_timeout_s
        if not await pending.within(timeout_s):
            self.health.not_confirmed(label, timeout_s)
            await self._notify()

    def _start(self, loop: Coroutine[Any, Any, None]) -> None:
        """Run ``loop`` beside the other connections; it is cancelled with them."""
        self._tasks.append(asyncio.create_task(loop))

    async def _replace_before_the_end(self, ws: ClientConnection, plan: ConnectionPlan,
                                      handover: Handover) -> None:
        """Where the venue ends connections at a fixed age (Binance: 24 h, then a gap until the
        reconnect), open a replacement before then and close ``ws`` once it is subscribed; the
        liquidations both receive meanwhile are published once (``collectors.dedupe``)."""
        max_age_s = self.config.venue.max_connection_s
        if max_age_s is None or self._stop is None:
            return
        await asyncio.sleep(REPLACE_AT * max_age_s)
        handover.successor = Relay()
        self._start(self._connection_loop(plan, self._stop, handover.successor))
        await handover.successor.subscribed.wait()
        logger.info("%s[%s]: replaced before the venue's %gs limit", self.config.venue.name,
                    plan.label, max_age_s)
        await ws.close(1000, "replaced")

    async def _heartbeat(self, ws: ClientConnection, session: VenueSession) -> None:
        interval = self.config.venue.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            ping = session.heartbeat()
            if ping is None:
                return
            await ws.send(ping)

    async def _on_frame(self, ws: ClientConnection, session: VenueSession, label: str,
                        raw: str | bytes, pending: Pending) -> None:
        now_ms = self.config.clock.now_ms()
        venue = self.config.venue.name
        self.health.last_message_ms = now_ms
        EVENTS_IN.labels("collector", venue).inc()
        try:
            raw = inflate(raw, venue)
            self.recorder.frame(label, now_ms, raw)
            output = session.on_message(raw, now_ms)
        except ParseError as exc:
            self._parse_error(exc)
            await self._notify()
            return
        except Exception as exc:  # noqa: BLE001 - a frame a parser did not foresee: never the connection
            self._parse_error(ParseError(venue, f"unexpected {type(exc).__name__}: {exc}", raw))
            await self._notify()
            return
        for row_error in output.rejected:  # the frame's other rows are kept
            self._parse_error(row_error)
        if output.refused:
            self._drop_refused(label, output.refused)
        if output.error:
            self.health.refused(label, output.error)
        if pending.take(output.confirmed):
            self.health.confirmed(label)
        for reply in output.replies:
            await ws.send(reply)
        self._accept(number_repeats(output.liquidations), now_ms)
        await self._notify()
        if output.reconnect:
            raise VenueAskedReconnect(output.reconnect)

    def _current(self, plan: ConnectionPlan) -> ConnectionPlan:
        """The plan labelled as ``plan`` now (narrowed by :meth:`_drop_refused` since)."""
        with self._plans_lock:
            return next((p for p in self._plans or [] if p.label == plan.label), plan)

    def _drop_refused(self, label: str, refused: Sequence[str]) -> None:
        """Take the symbols the venue refused out of connection ``label``'s plan: its reconnects
        do not ask for them again, and a relisting that names them again brings them back. A
        connection left with nothing is closed for good (raises NothingLeftToSubscribe)."""
        with self._plans_lock:
            plans = self._plans or []
            index = next(i for i, p in enumerate(plans) if p.label == label)
            kept = tuple(s for s in plans[index].symbols if s not in refused)
            if kept:
                plans[index] = self._narrowed(plans[index], kept)
                return
            del plans[index]
            self.health.retire(label, len(plans))
        logger.info("%s[%s]: the venue refused every symbol of this connection; closed",
                    self.config.venue.name, label)
        VENUE_CONNECTED.labels(self.config.venue.name, label).set(0)
        raise NothingLeftToSubscribe(label)

    @staticmethod
    def _narrowed(plan: ConnectionPlan, kept: tuple[str, ...]) -> ConnectionPlan:
        """``plan`` subscribing only ``kept`` of its symbols."""
        if plan.session_for is None:
            raise TypeError(f"{plan.label}: a session reported refused symbols, its plan has no session_for")
        return dataclasses.replace(plan, symbols=kept, new_session=functools.partial(plan.session_for, kept))

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def wait_until(self, predicate: Callable[[Collector], bool]) -> None:
        """Await (woken by frames, connection changes and publishing) until ``predicate(self)``
        holds.

        Callers bound it with ``asyncio.timeout``.
        """
        async with self._progress:
            await self._progress.wait_for(lambda: predicate(self))

    def _accept(self, liquidations: list[Liquidation], now_ms: int) -> None:
        if not liquidations:
            return
        fresh, dropped = self.dedupe.fresh(liquidations)
        if dropped:
            self.health.duplicates += dropped
            DUPLICATES.labels(self.config.venue.name).inc(dropped)
        self.publisher.put(fresh)
        if fresh:
            self.health.events += len(fresh)
            self.health.last_event_ms = max(self.health.last_event_ms, *(liq.timestamp_ms for liq in fresh))
            self.health.last_liquidation_received_ms = now_ms
            VENUE_LAST_EVENT_MS.labels(self.config.venue.name).set(self.health.last_event_ms)

    def _parse_error(self, exc: ParseError) -> None:
        self.health.parse_errors += 1
        self.health.last_error_sample = exc.sample
        PARSE_ERRORS.labels(self.config.venue.name).inc()
        now = time.monotonic()
        if now - self._last_parse_log >= PARSE_LOG_EVERY_S:
            self._last_parse_log = now
            logger.warning("%s: skipped malformed frame or row (%d so far): %s",
                           self.config.venue.name, self.health.parse_errors, exc)

    # -- health -------------------------------------------------------------------------------

    async def _instruments_refreshed(self, listed: int) -> None:
        self.health.instruments_refreshed_ms = self.config.clock.now_ms()
        self.health.instruments_listed = listed
        self._relist_now.set()
        await self._notify()

    async def _health_loop(self, stop: asyncio.Event) -> None:
        """Write the venue's health every ``health_every_s``. Redis out of reach is the
        publisher's to report; Redis refusing the write (the key holds another type) is this
        loop's, one line when it starts and one when it ends."""
        while not stop.is_set():
            await self._health_step()
            await stopped_within(stop, self.config.health_every_s)

    async def _health_step(self) -> None:
        try:
            await self._write_health()
        except ResponseError as exc:  # Redis' own reply (see _write_health), the same at each write
            self._health_write_refused("it holds another type, not a hash" if wrong_type(exc)
                                       else f"{type(exc).__name__}: {exc}")
        except (RedisError, OSError):
            pass
        else:
            self._health_write_refused("")

    def _health_write_refused(self, why: str) -> None:
        if why == self._health_refused:
            return
        key = keys.venue_health(self.config.venue.name)
        if why:
            remedy = "; delete or rename that key" if why.startswith("it holds another type") else ""
            logger.error("%s: Redis refuses the health write to %s (%s): liq status cannot show this "
                         "venue%s", self.config.venue.name, key, why, remedy)
        else:
            logger.info("%s: health written to %s again", self.config.venue.name, key)
        self._health_refused = why

    async def _write_health(self) -> None:
        now_ms = self.config.clock.now_ms()
        state = self.health.compute_state(now_ms)
        self.health.state = state
        if state != self._logged_state:
            stopping = self.health.reason == STOPPED_REASON  # asked for: not a warning
            calm = state in ("up", "connecting", "subscribing") or stopping
            level = logging.INFO if calm else logging.WARNING
            logger.log(level, "%s: state %s%s", self.config.venue.name, state,
                       f" ({self.health.reason})" if self.health.reason and state != "up" else "")
            self._logged_state = state
        key = keys.venue_health(self.config.venue.name)
        pipe = self.config.redis.pipeline(transaction=False)
        pipe.hmget(key, ["collector", "updated_ms"])
        fields: dict[Any, Any] = dict(self.health.as_fields(now_ms))
        pipe.hset(key, mapping=fields)
        pipe.expire(key, keys.VENUE_HEALTH_TTL_SECONDS)
        # Redis' replies as they are: redis-py's wording of a failed pipeline quotes the command,
        # whose fields change at each write, and the refusal is logged when its text changes.
        replies = await pipe.execute(raise_on_error=False)
        if error := next((r for r in replies if isinstance(r, ResponseError)), None):
            raise error
        (writer, updated), *_ = replies
        self._note_twin(*self._last_write(writer, updated), now_ms)
        await self._notify()

    def _last_write(self, writer: Any, updated: Any) -> tuple[str, int]:
        """Who wrote the venue's health hash last, and when: ``updated_ms``, 0 when absent or not
        a number (another tool's value: logged once, and overwritten by this write)."""
        try:
            return reply_text(writer or b""), int(updated or 0)
        except ValueError:
            if not self._malformed_logged:
                self._malformed_logged = True
                logger.warning("%s: %s holds updated_ms %r, not a time in ms (another tool writing it?): "
                               "read as absent and overwritten; logged once", self.config.venue.name,
                               keys.venue_health(self.config.venue.name), reply_text(updated or b""))
            return reply_text(writer or b""), 0

    def _note_twin(self, writer_id: str, writer_updated_ms: int, now_ms: int) -> None:
        """One log line when another collector of this venue starts or stops publishing into
        this Redis (``TwinWatch``); ``liq status --check`` names both while it lasts."""
        if not self.twins.observe(self.health, writer_id, writer_updated_ms, now_ms):
            return
        venue = self.config.venue.name
        if self.health.twin:
            logger.warning("%s: another collector of this venue (%s) publishes into the same Redis as this "
                           "one (%s): the aggregator counts the liquidations both receive twice; stop one",
                           venue, self.health.twin, self.health.collector_id)
        else:
            logger.info("%s: no other collector of this venue publishes into this Redis any more", venue)
