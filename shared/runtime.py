"""Process lifecycle: SIGINT/SIGTERM become a stop event; services drain, then log a summary.

``run_service(name, main)`` is what every ``liq <process>`` command calls: it configures logs,
settles the garbage collector (``settle_gc``), runs ``main(stop)`` under asyncio, and returns
the exit code. ``main`` must return soon after
``stop`` is set, having finished (and acked) the batch in hand.

``die_with_parent`` is given to the processes ``liq up`` (and the test servers) start: if their
parent dies without stopping them (SIGKILL), Linux sends them SIGTERM, so nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from shared import logs

logger = logging.getLogger(__name__)

ServiceMain = Callable[[asyncio.Event], Awaitable[None]]
PR_SET_PDEATHSIG = 1
GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic collector's thresholds in a running process (CPython's defaults: 700, 10, 10)."""


def settle_gc() -> None:
    """Take everything built so far (modules, settings) out of the cyclic garbage collector's
    walks, and make its collections rarer.

    A consumer makes thousands of short-lived objects per read (entries, events, rows). With
    CPython's defaults, a collection every 700 of them walked the whole start-up heap (numpy,
    redis, psycopg and their modules) again and again: measured with ``liq bench``'s market
    events, each consumer alone, that was about half the writer's CPU (10.9 → 5.5 µs per
    event), a third of the aggregator's (11.4 → 7.6) and a sixth of the detector's (14.5 →
    10.1). Reference counting frees acyclic objects at once, as before; cycles are still
    collected, less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def settled_gc() -> Iterator[None]:
    """:func:`settle_gc` for a stretch of a process that goes on afterwards (``liq bench`` run
    in a test session): the collector is as it was before when the stretch ends."""
    before = gc.get_threshold()
    settle_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Pause ``seconds``, cut short by ``stop``; True when stopped (the pause every retry and
    periodic loop takes between tries)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def done_before_stop(task: asyncio.Task[Any], stop: asyncio.Event) -> bool:
    """Wait until ``task`` is done or ``stop`` is set; True when the task finished first (or
    both at once). The task is left as it is otherwise: the caller cancels or keeps it."""
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    return task.done()


def die_with_parent() -> None:
    """``preexec_fn`` of a child process: SIGTERM it when the process that started it dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing happens). Linux sends it when the
    starting *thread* ends, so start such children from the main thread (as everything here does)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _request_stop, stop, sig)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        logger.info("received %s, stopping after the current batch", sig.name)
    stop.set()


async def _main(main: ServiceMain) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await main(stop)


def run_service(name: str, main: ServiceMain, log_level: str = "INFO") -> int:
    """Run a long-lived process until SIGINT/SIGTERM; 0 on a clean stop."""
    logs.configure(log_level, name)
    logger.info("%s starting", name)
    settle_gc()
    try:
        asyncio.run(_main(main))
    except KeyboardInterrupt:
        pass
    logger.info("%s stopped", name)
    return 0
