"""Contract sizes kept fresh: a venue's public instruments endpoint → its table, cached on disk.

For a venue with a :class:`~collectors.venue.InstrumentSource`, a collector:

1. at start, before building its connections, overlays the disk cache
   ``<data_dir>/instruments/<venue>.json`` (written by the last good refresh) on the shipped
   fallback table (:func:`load_cached`), so a restart without network still knows what the last
   refresh learnt;
2. then every ``every_s`` (6 h by default, backing off after a failure) every request of the
   source is fetched, parsed, merged into the live table (in place: the sessions see it at
   once) and the cache is rewritten atomically (:func:`refresh_loop`, beside its connections).

A failed fetch or an unreadable body is logged once per failure and changes nothing: the table
keeps what it had. The REST host is the venue's own for a live collector; for a collector
pointed at another server (the simulator at ``ws://127.0.0.1:PORT``) it is that server, over
http, on the same host and port.

Every blocking REST call of a collector (this refresh, a venue's symbol listing) runs through
:func:`blocking_call`: in a daemon thread a stop abandons, so a REST server that never answers
holds neither the stop nor the process's exit (the thread pool asyncio joins at exit would).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from collectors.instruments import Instrument
from collectors.venue import InstrumentSource
from shared.backoff import Backoff
from shared.runtime import stopped_within

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_EVERY_S = 6 * 3600.0
TIMEOUT_S = 10.0

Fetch = Callable[[str, bytes | None], bytes]
OnRefresh = Callable[[int], Awaitable[None]]


async def blocking_call(fn: Callable[[], T]) -> T:
    """``fn()`` (blocking I/O) run in a daemon thread of its own, awaited. A cancel abandons it:
    its result is dropped, and neither the event loop's shutdown nor the interpreter's exit
    waits for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled: abandoned
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # None only beside an error

    def work() -> None:
        result, error = None, None
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"blocking-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return await future


def rest_base(source: InstrumentSource, ws_url: str) -> str:
    """The REST host to ask: the venue's own for ``wss://`` URLs, else the same host over http."""
    parts = urlsplit(ws_url)
    if parts.scheme == "wss":
        return source.live_rest_url.rstrip("/")
    return f"http://{parts.netloc}"


def http_fetch(url: str, body: bytes | None) -> bytes:
    """GET (or POST ``body`` as JSON) ``url``; raises OSError on any network or HTTP failure."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        data: bytes = response.read()
        return data


def fetch_all(source: InstrumentSource, base: str, fetch: Fetch = http_fetch) -> list[Instrument]:
    """Every instrument the source's requests list (blocking: run it in a thread)."""
    out: list[Instrument] = []
    for request in source.requests:
        out += source.parse(fetch(base + request.path, request.body), request)
    return out


async def refresh_once(venue: str, source: InstrumentSource, ws_url: str, cache_dir: Path | None,
                       fetch: Fetch = http_fetch) -> int:
    """One refresh; returns how many instruments the endpoint listed (raises on failure)."""
    listed = await blocking_call(functools.partial(fetch_all, source, rest_base(source, ws_url), fetch))
    if not listed:
        raise ValueError("the instruments endpoint listed nothing")
    source.table.update(listed)
    if cache_dir is not None:
        await asyncio.to_thread(source.table.save, cache_dir)
    logger.info("%s: %d instruments refreshed (%d known)", venue, len(listed), len(source.table))
    return len(listed)


def load_cached(venue: str, source: InstrumentSource, cache_dir: Path | None) -> None:
    """Overlay the disk cache the last good refresh wrote (refreshing or not: with refreshes
    off, what the last one learnt still applies)."""
    if cache_dir is not None and source.table.load_cache(cache_dir):
        logger.info("%s: instrument cache loaded (%d known)", venue, len(source.table))


async def refresh_loop(venue: str, source: InstrumentSource, ws_url: str, cache_dir: Path | None,
                       stop: asyncio.Event, every_s: float = DEFAULT_EVERY_S,
                       fetch: Fetch = http_fetch, on_refresh: OnRefresh | None = None) -> None:
    """Refresh every ``every_s`` until ``stop`` (never raises); the caller has loaded the disk
    cache already (:func:`load_cached`).

    ``on_refresh(listed)`` is awaited after each good refresh (the collector's health uses it).
    """
    backoff = Backoff(base_s=30.0, cap_s=every_s)
    while not stop.is_set():
        try:
            listed = await refresh_once(venue, source, ws_url, cache_dir, fetch)
            backoff.reset()
            if on_refresh is not None:
                await on_refresh(listed)
            delay = every_s
        except (OSError, ValueError) as exc:
            delay = backoff.next_delay()
            logger.warning("%s: instrument refresh failed (%s); keeping %d known, retry in %.0fs",
                           venue, exc, len(source.table), delay)
        except Exception:  # a response no parser foresaw (http.client.IncompleteRead, a KeyError)
            delay = backoff.next_delay()
            logger.exception("%s: instrument refresh failed; keeping %d known, retry in %.0fs",
                             venue, len(source.table), delay)
        await stopped_within(stop, delay)
