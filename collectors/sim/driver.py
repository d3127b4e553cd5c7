"""Plays time-ordered MarketEvents into an ExchangeSimulator on the wall clock, and the run's files.

``drive()`` emits each event when it is due: event time ``t`` is played at
``wall_start + (t - t_first) / speed`` seconds (``speed <= 0``: as fast as possible). Events
already due are emitted together in one ``emit`` call, so venues batch them as they do live.
With ``speed > 0`` each event is stamped with the time it is played, ``t_first + (t - t_first)
/ speed``: a faster market is a busier one, and its times never run ahead of the wall clock
(the writer would refuse rows more than a day ahead). ``speed <= 0`` keeps the market's times,
for deterministic runs.

Files under ``<data_dir>/sim/`` (paths are chosen by the caller):

- ``ports.json``: ``{venue: "ws://127.0.0.1:PORT"}``, written atomically once the servers
  listen (``liq up --simulate`` waits for it) and removed on a clean stop;
- ``truth.jsonl``: one JSON line per expected Liquidation the simulator sent (truncated at the
  start of a run).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

import msgspec

from shared.clock import SYSTEM_CLOCK, Clock
from shared.files import write_whole
from shared.market import MarketEvent
from shared.models import Liquidation

logger = logging.getLogger(__name__)

MAX_BATCH = 500
"""Most events per ``emit`` when many are due at once (fast-forward)."""


class Emitter(Protocol):
    """What the driver needs of a simulator (``ExchangeSimulator`` satisfies it)."""

    async def emit(self, events: Sequence[MarketEvent]) -> list[Liquidation]: ...


@dataclass
class DriveStats:
    events: int = 0
    sent: int = 0
    cascades: list[str] = field(default_factory=list)
    last_ms: int | None = None


class TruthLog:
    """Appends sent liquidations to a JSON-lines file (truncated when opened)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self._encoder = msgspec.json.Encoder()

    def write(self, liquidations: Sequence[Liquidation]) -> None:
        if liquidations:
            self._file.write(b"".join(self._encoder.encode(liq) + b"\n" for liq in liquidations))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_truth(path: Path) -> list[Liquidation]:
    """The liquidations of a truth file, in order."""
    decoder = msgspec.json.Decoder(Liquidation)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_ports(path: Path, urls: dict[str, str]) -> None:
    """Write ``{venue: url}`` atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, json.dumps(urls, indent=2, sort_keys=True) + "\n")


def remove_ports(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def limited(
    events: Iterable[MarketEvent], max_events: int | None, until_ms: int | None
) -> Iterator[MarketEvent]:
    """At most ``max_events`` events, and only those before ``until_ms``."""
    selected: Iterator[MarketEvent] = iter(events)
    if until_ms is not None:
        selected = itertools.takewhile(lambda e: e.timestamp_ms < until_ms, selected)
    return itertools.islice(selected, max_events)


class Pacer:
    """Maps event time to wall time: seconds until an event is due (never negative).

    Event time ``start_ms`` (default: the first event's) is played when the pacer is created.
    """

    def __init__(self, speed: float, clock: Clock, start_ms: int | None = None) -> None:
        self.speed = speed
        self.clock = clock
        self._origin = None if start_ms is None else (start_ms, clock.monotonic())

    def delay(self, timestamp_ms: int) -> float:
        if self.speed <= 0:
            return 0.0
        first_ms, wall_start = self._origin_for(timestamp_ms)
        due = wall_start + (timestamp_ms - first_ms) / 1000 / self.speed
        return max(0.0, due - self.clock.monotonic())

    def played_ms(self, timestamp_ms: int) -> int:
        """The event time at which ``timestamp_ms`` is played (itself when ``speed`` is 1 or <= 0)."""
        if self.speed <= 0 or self.speed == 1:
            return timestamp_ms
        first_ms, _ = self._origin_for(timestamp_ms)
        return first_ms + round((timestamp_ms - first_ms) / self.speed)

    def _origin_for(self, timestamp_ms: int) -> tuple[int, float]:
        if self._origin is None:
            self._origin = (timestamp_ms, self.clock.monotonic())
        return self._origin


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class Driver:
    """Plays events into a simulator; see :func:`drive`."""

    def __init__(self, sim: Emitter, truth: TruthLog | None = None) -> None:
        self.sim = sim
        self.truth = truth
        self.stats = DriveStats()
        self._cascades: set[str] = set()

    async def run(self, events: Iterable[MarketEvent], stop: asyncio.Event, pacer: Pacer) -> DriveStats:
        batch: list[MarketEvent] = []
        for market_event in events:
            event = _stamped(market_event, pacer.played_ms(market_event.timestamp_ms))
            delay = pacer.delay(market_event.timestamp_ms)
            if batch and (delay > 0 or len(batch) >= MAX_BATCH):
                await self.flush(batch)
                batch = []
            if stop.is_set() or (delay > 0 and await _stopped_within(stop, delay)):
                break
            batch.append(event)
        await self.flush(batch)
        return self.stats

    async def flush(self, batch: Sequence[MarketEvent]) -> None:
        if not batch:
            return
        for event in batch:
            self._note_cascade(event)
        sent = await self.sim.emit(batch)
        if self.truth is not None:
            self.truth.write(sent)
        self.stats.events += len(batch)
        self.stats.sent += len(sent)
        self.stats.last_ms = batch[-1].timestamp_ms

    def _note_cascade(self, event: MarketEvent) -> None:
        if not event.cascade_id or event.cascade_id in self._cascades:
            return
        self._cascades.add(event.cascade_id)
        self.stats.cascades.append(event.cascade_id)
        logger.info(
            "cascade %s%s starts: %s %s liquidations, first on %s at %s",
            event.cascade_id, f" ({event.scenario})" if event.scenario else "", event.base, event.side,
            event.venue, _utc(event.timestamp_ms),
        )


def _stamped(event: MarketEvent, timestamp_ms: int) -> MarketEvent:
    if timestamp_ms == event.timestamp_ms:
        return event
    return msgspec.structs.replace(event, timestamp_ms=timestamp_ms)


def _utc(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


async def drive(
    sim: Emitter,
    events: Iterable[MarketEvent],
    stop: asyncio.Event,
    *,
    speed: float = 1.0,
    max_events: int | None = None,
    until_ms: int | None = None,
    start_ms: int | None = None,
    truth: TruthLog | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> DriveStats:
    """Emit time-ordered ``events`` into ``sim`` when due; returns when they run out or ``stop`` is set.

    Event time ``start_ms`` (default: the first event's) is now. ``max_events`` and ``until_ms``
    (event time) bound the run, for deterministic runs; each sent liquidation is appended to
    ``truth``; the first event of each cascade is logged.
    """
    driver = Driver(sim, truth)
    pacer = Pacer(speed, clock, start_ms)
    return await driver.run(limited(events, max_events, until_ms), stop, pacer)
