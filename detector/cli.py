"""``liq detect`` (live over shard streams, or ``--replay`` a file offline) and ``liq evaluate``.

- ``liq detect [--shards 0,1]``: one :class:`~detector.service.Detector` over the chosen shard
  streams (default: ``LIQ_DETECT_SHARDS``, else all ``LIQ_SHARDS``), warm-started from its
  shards, until SIGINT/SIGTERM.
- ``liq detect --replay EVENTS.jsonl [--out FILE]``: normalized liquidations (``liq parse``
  output, ``-`` for stdin) → one JSON line per cascade (``detector.replay``); a summary and
  the first bad lines go to stderr.
- ``liq evaluate [--seeds N] [--quiet-hours H] [--busy] [--json]``: precision, recall, detection
  delay and quiet-hour false alarms on labelled market-model scenarios (``detector.evaluate``;
  ``--busy``: on the endless market's background); exits 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO

import click

from detector import config
from detector.config import DetectorSettings
from detector.replay import ReplayStats, replay
from shared import runtime
from shared.errors import ConfigError
from shared.settings import load


def parse_shards(text: str | None, total: int) -> list[int] | None:
    """``"0,1"`` → [0, 1] (None when not given); ConfigError naming ``--shards`` otherwise."""
    if text is None or not text.strip():
        return None
    try:
        shards = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise ConfigError("--shards", f"comma-separated shard numbers in 0..{total - 1}", text) from exc
    if not shards or any(not 0 <= k < total for k in shards):
        raise ConfigError("--shards", f"comma-separated shard numbers in 0..{total - 1}", text)
    return shards


@click.command()
@click.option("--shards", "shards_text", metavar="K,K",
              help="Shard streams to consume (default: LIQ_DETECT_SHARDS, else all).")
@click.option("--replay", "replay_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Detect offline over a JSON-lines file of normalized liquidations.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              default="-", show_default=True, help="Where --replay writes its cascades.")
def detect(shards_text: str | None, replay_path: str | None, out_path: str) -> None:
    """Run the cascade detector (or --replay a file offline)."""
    settings = load(DetectorSettings)
    if replay_path is not None:
        sys.exit(run_replay(replay_path, out_path, settings))
    shards = parse_shards(shards_text, settings.shards) or settings.shard_set()
    sys.exit(runtime.run_service("detect", lambda stop: _live(settings, shards, stop), settings.log_level))


async def _live(settings: DetectorSettings, shards: list[int], stop: asyncio.Event) -> None:
    from detector.service import Detector
    from shared.metrics import serve_consumer_metrics
    from shared.redisconn import make_async_redis

    serve_consumer_metrics(settings.metrics_host, settings.metrics_port, config.METRICS_PORT)
    redis = make_async_redis(settings.redis_url)
    try:
        await Detector(redis, settings, shards).run(stop)
    finally:
        await redis.aclose()


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    yield from handle


def run_replay(path: str, out_path: str, settings: DetectorSettings) -> int:
    """Replay ``path`` into ``out_path`` (``-``: stdout); 0 even with bad lines (reported)."""
    stats = ReplayStats()
    with ExitStack() as stack:
        src: IO[bytes] = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
        out: IO[str] = sys.stdout if out_path == "-" else stack.enter_context(
            open(out_path, "w", encoding="utf-8"))
        for row in replay(_lines(src), settings, stats):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    _report_replay(stats)
    return 0


def _report_replay(stats: ReplayStats) -> None:
    click.echo(f"replay: {stats.lines} lines, {stats.events} events, {stats.bad_lines} bad lines, "
               f"{stats.cascades} cascades", err=True)
    for line_no, reason in stats.bad_samples:
        click.echo(f"  bad line {line_no}: {reason}", err=True)


@click.command()
@click.option("--seeds", type=click.IntRange(min=1), default=40, show_default=True,
              help="Scenarios per cascade kind.")
@click.option("--quiet-hours", type=click.IntRange(min=0), default=24, show_default=True,
              help="Simulated hours of background only (false alarms).")
@click.option("--busy", is_flag=True,
              help="Use the endless market's background rates (6x the scenarios'): shows how often "
                   "the background alone meets the rule.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(seeds: int, quiet_hours: int, busy: bool, as_json: bool) -> None:
    """Score the detector on labelled scenarios: precision, recall, delay."""
    from detector import evaluate as ev

    settings = load(DetectorSettings)
    report = ev.evaluate(settings, seeds=seeds, quiet_hours=quiet_hours, busy=busy)
    click.echo(json.dumps(report, indent=2) if as_json else ev.render(report))
    sys.exit(0 if report["ok"] else 1)
