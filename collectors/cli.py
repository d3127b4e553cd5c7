"""``liq collect``, ``liq venues``, ``liq parse`` and ``liq replay``: the collectors' commands."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import click
import msgspec
from redis.exceptions import RedisError
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from collectors import VENUES, load_venue
from collectors.base import Collector, CollectorConfig
from collectors.dedupe import RecentIds, number_repeats
from collectors.recording import FrameRecord
from collectors.venue import VenueSession
from collectors.venues._common import inflate
from shared import logs, runtime
from shared.clock import SYSTEM_CLOCK
from shared.discovery import Discovered, discover, require_redis
from shared.errors import ConfigError, ParseError
from shared.metrics import serve_collector_metrics
from shared.models import Liquidation
from shared.redisconn import make_async_redis, make_sync_redis
from shared.settings import CommonSettings, load
from shared.significance import SignificanceRules, publication
from shared.streams import publish
from shared.venue_health import venue_healths, venue_row

MIN_REFRESH_S = 60.0
"""The shortest refresh period of ``LIQ_INSTRUMENTS_REFRESH_S`` (less would hammer the venues)."""
METRICS_PORT_BASE = 9501
"""Collector k of ``collectors.VENUES`` serves on 9501 + k: 9501-9599, clear of the consumers (94x1)."""


class CollectorSettings(CommonSettings, frozen=True, kw_only=True):
    """``LIQ_VENUE_URLS=bybit=ws://127.0.0.1:9001,okx=…`` points venues at other servers."""

    venue_urls: dict[str, str] = {}
    record_dir: str | None = None
    instruments_refresh_s: float = 6 * 3600.0
    """Seconds between contract-size refreshes from the venue's instruments endpoint (0: never)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [f"{v}={u}" for v, u in self.venue_urls.items() if v not in VENUES or ws_url_problem(u)]
        if bad:
            raise ConfigError("LIQ_VENUE_URLS", "comma-separated VENUE=ws://HOST:PORT… or VENUE=wss://… "
                              "pairs, VENUE one of " + ", ".join(VENUES), ",".join(bad))
        if self.instruments_refresh_s != 0 and not self.instruments_refresh_s >= MIN_REFRESH_S:
            raise ConfigError("LIQ_INSTRUMENTS_REFRESH_S", f"0 (never) or seconds >= {MIN_REFRESH_S:g}"
                              " (the venues' REST endpoints are rate limited)",
                              f"{self.instruments_refresh_s:g}")


def ws_url_problem(url: str) -> str | None:
    """What makes ``url`` no WebSocket URL a collector can open (None: nothing). A space, say
    from pairs separated by spaces instead of commas, a port that is no number, a fragment or a
    user without a password (which websockets refuses, InvalidURI) would otherwise fail every
    connection attempt, retried forever; port 0 would be taken for the scheme's default."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("ws", "wss"):
        return "the scheme is not ws:// or wss://"
    if not parts.hostname:
        return "no host"
    if any(ch.isspace() for ch in url):
        return "a space in the URL"
    if not url.isprintable():
        return "a control character in the URL"
    if port == 0:
        return "port 0 (websockets would connect to the scheme's default port instead)"
    try:
        parse_uri(url)  # what the collector's connect() checks, at every attempt
    except InvalidURI as exc:
        return exc.msg
    except ValueError as exc:  # UnicodeError: a host that IDNA cannot encode
        return str(exc)
    return None


def _url_option(_ctx: click.Context, _param: click.Parameter, url: str | None) -> str | None:
    problem = None if url is None else ws_url_problem(url)
    if problem:
        raise click.BadParameter(f"{url!r} is not a WebSocket URL: {problem}")
    return url


def _venue_option(name: str) -> str:
    if name not in VENUES:
        raise click.BadParameter(f"unknown venue {name!r}; one of: {', '.join(VENUES)}")
    return name


@click.command()
@click.argument("venue", callback=lambda _c, _p, v: _venue_option(v))
@click.option("--url", callback=_url_option,
              help="Connect here, e.g. to the simulator (default: LIQ_VENUE_URLS, else the live endpoint).")
@click.option("--symbols", default="", help="Comma-separated native symbols (venues without a wildcard).")
@click.option("--record", "record_path", type=click.Path(path_type=Path),
              help="Append every raw frame to this JSON-lines file (for liq replay).")
def collect(venue: str, url: str | None, symbols: str, record_path: Path | None) -> None:
    """Run one venue's collector until Ctrl-C."""
    settings = load(CollectorSettings)
    spec = load_venue(venue)
    base_url = url or settings.venue_urls.get(venue) or spec.live_url
    record_path = _record_target(record_path, settings.record_dir, venue)
    symbol_list = [s for s in symbols.split(",") if s] or list(spec.default_symbols)
    default_port = METRICS_PORT_BASE + list(VENUES).index(venue)

    async def main(stop: asyncio.Event) -> None:
        serve_collector_metrics(settings.metrics_host, settings.metrics_port, default_port)
        redis = make_async_redis(settings.redis_url)
        config = CollectorConfig(venue=spec, redis=redis, shards=settings.shards, base_url=base_url,
                                 symbols=symbol_list, record_path=record_path,
                                 instruments_dir=Path(settings.data_dir) / "instruments",
                                 spool_dir=Path(settings.data_dir) / "spool",
                                 instruments_every_s=settings.instruments_refresh_s or None,
                                 stream_maxlen=settings.stream_maxlen,
                                 significance=SignificanceRules.from_settings(settings))
        try:
            await Collector(config).run(stop)
        finally:
            await redis.aclose()

    sys.exit(runtime.run_service(f"collect-{venue}", main, settings.log_level))


def _record_target(option: Path | None, record_dir: str | None, venue: str) -> Path | None:
    """Where ``--record`` (else ``LIQ_RECORD_DIR``) sends the raw frames, checked writable now:
    a failure later would stop the collector with a traceback."""
    path = option or (Path(record_dir) / f"{venue}.jsonl" if record_dir else None)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.open("a", encoding="utf-8").close()
    except OSError as exc:
        if option is None:
            raise ConfigError("LIQ_RECORD_DIR", "a folder liq collect can write", record_dir) from exc
        raise click.BadParameter(f"cannot write {path}: {exc.strerror}", param_hint="'--record'") from exc
    return path


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def venues(as_json: bool) -> None:
    """Every venue: endpoint, markets, feed semantics and current health (from Redis)."""
    found = discover(load(CommonSettings), dict(os.environ))
    health = _read_health(found)
    now_ms = SYSTEM_CLOCK.now_ms()
    rows = []
    for name in VENUES:
        spec, h = load_venue(name), health.get(name, {})
        rows.append({
            "venue": name, "endpoint": h.get("endpoint") or spec.live_url, "markets": spec.markets,
            "semantics": spec.semantics, "semantics_note": spec.semantics_note,
            **venue_row(h, now_ms),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        age = row["last_event_age_s"]
        click.echo(f"{row['venue']:<15} {row['state']:<11} {row['semantics']:<10} "
                   f"events={row['events']:<7} last={'-' if age is None else f'{age:.0f}s ago':<10} "
                   f"{row['endpoint']}")
        click.echo(f"{'':<15} {row['markets']}; {row['semantics_note']}"
                   + (f"; reason: {row['reason']}" if row["reason"] else ""))


def _read_health(found: Discovered) -> dict[str, dict[str, str]]:
    """Each venue's health hash in the running system's Redis (said on stderr when there is none)."""
    redis_url = found.redis_url
    if redis_url is None:
        click.echo(f"{found.not_found()}: health not shown", err=True)
        return {}
    try:
        client = make_sync_redis(redis_url)
        try:
            return venue_healths(client)
        finally:
            client.close()
    except (OSError, RedisError) as exc:
        click.echo(f"cannot reach Redis at {redis_url} ({exc}): health not shown", err=True)
        return {}


@click.command()
@click.argument("venue", callback=lambda _c, _p, v: _venue_option(v))
@click.option("--dedupe", is_flag=True, help="Drop liquidations already printed (replayed snapshots).")
@click.option("--received-ms", type=int, default=None,
              help="Receive time to assume (default: now); used only by venues that send no time.")
def parse(venue: str, dedupe: bool, received_ms: int | None) -> None:
    """Normalize raw frames read from stdin (one JSON frame per line) to JSON lines on stdout.

    A malformed frame is reported on stderr with its line number and skipped; the command then
    exits with status 1 (after every valid frame was printed), so scripts notice.
    """
    from collectors.venues._common import liquidation_to_row

    session = load_venue(venue).new_parser()
    seen = RecentIds() if dedupe else None
    errors = 0
    for line_no, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            liquidations, rejected = _parse_one(session, venue, line.rstrip("\n"), received_ms)
        except ParseError as exc:
            errors += 1
            click.echo(f"line {line_no}: {exc}", err=True)
            continue
        for row_error in rejected:
            errors += 1
            click.echo(f"line {line_no}: row skipped: {row_error}", err=True)
        if seen is not None:
            liquidations, _ = seen.fresh(liquidations)
        for liq in liquidations:
            click.echo(json.dumps(liquidation_to_row(liq), separators=(",", ":")))
    if errors:
        click.echo(f"{errors} malformed frame(s) or row(s) skipped", err=True)
        sys.exit(1)


def _parse_one(session: VenueSession, venue: str, frame: str | bytes,
               received_ms: int | None) -> tuple[list[Liquidation], list[ParseError]]:
    """The frame's liquidations, and the errors of its rows that were left out."""
    now = received_ms if received_ms is not None else time.time_ns() // 1_000_000
    output = session.on_message(inflate(frame, venue), now)
    return number_repeats(output.liquidations), output.rejected


_record_decoder = msgspec.json.Decoder(FrameRecord)


def read_records(stream: TextIO, bad: Callable[[int, str], None]) -> Iterator[FrameRecord]:
    """The recorded frames of ``stream``; a line that is not one (half a line left by a crash, or
    another file) is given to ``bad`` with its number and skipped."""
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield _record_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            bad(line_no, str(exc))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="1 = original pace, 10 = ten times faster, 0 = as fast as possible.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print liquidations instead of publishing.")
def replay(file: Path, speed: float, to_stdout: bool) -> None:
    """Feed a recorded frame file (liq collect --record) back through the parsers, into the running
    system's streams (LIQ_REDIS_URL, else liq up's) or, with --stdout, to the terminal."""
    settings = load(CommonSettings)
    logs.configure(settings.log_level, "replay")
    found = discover(settings, dict(os.environ))
    target = None if to_stdout else Target(require_redis(found), found.shards, settings.stream_maxlen,
                                           SignificanceRules.from_settings(settings))
    try:
        counts = asyncio.run(_replay(file, speed, target))
    except RedisError as exc:
        where = target.url if target else "?"
        raise click.ClickException(f"cannot publish to Redis at {where}: {exc}") from exc
    click.echo(json.dumps(counts), err=True)
    if counts["bad_lines"]:
        sys.exit(1)  # after every good frame was replayed, so scripts notice


@dataclass(frozen=True)
class Target:
    """Where ``liq replay`` publishes: a Redis and the shard count its consumers run with."""

    url: str
    shards: int
    maxlen: int
    """Entries each event stream keeps (``LIQ_STREAM_MAXLEN``)."""
    significance: SignificanceRules
    """Which liquidations are copied to ``liq:significant``, as the collectors do."""


async def _replay(file: Path, speed: float, target: Target | None) -> dict[str, Any]:
    from collectors.venues._common import liquidation_to_row

    sessions: dict[tuple[str, str], VenueSession] = {}
    seen = RecentIds()
    redis = None if target is None else make_async_redis(target.url)
    counts = {"frames": 0, "liquidations": 0, "duplicates": 0, "parse_errors": 0, "bad_lines": 0}

    def bad(line_no: int, reason: str) -> None:
        counts["bad_lines"] += 1
        click.echo(f"{file}: line {line_no} is not a recorded frame ({reason}); skipped", err=True)

    first_ms: int | None = None
    started = time.monotonic()
    try:
        with file.open(encoding="utf-8") as handle:
            for rec in read_records(handle, bad):
                first_ms = rec.received_ms if first_ms is None else first_ms
                await _pace(rec.received_ms - first_ms, started, speed)
                key = (rec.venue, rec.conn)
                if key not in sessions:
                    sessions[key] = load_venue(rec.venue).new_parser()
                frame: str | bytes = bytes.fromhex(rec.frame) if rec.binary else rec.frame
                counts["frames"] += 1
                try:
                    liqs, rejected = _parse_one(sessions[key], rec.venue, frame, rec.received_ms)
                except ParseError:
                    counts["parse_errors"] += 1
                    continue
                counts["parse_errors"] += len(rejected)
                fresh, dropped = seen.fresh(liqs)
                counts["duplicates"] += dropped
                counts["liquidations"] += len(fresh)
                if redis is None:
                    for liq in fresh:
                        click.echo(json.dumps(liquidation_to_row(liq), separators=(",", ":")))
                else:
                    assert target is not None
                    items = publication(fresh, target.shards, target.significance)
                    await publish(redis, items, target.maxlen)
    finally:
        if redis is not None:
            await redis.aclose()
    return counts


async def _pace(offset_ms: int, started: float, speed: float) -> None:
    if speed <= 0:
        return
    due = started + offset_ms / 1000 / speed
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
