"""``liq simulate``: the local exchange simulator as a process (servers + market model + run files).

Venues named with ``--venues`` that have no simulator module yet are skipped with a warning;
unknown names are an error. ``ports.json`` appears once every server listens (``liq up
--simulate`` waits for it) and is removed on a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import click

from collectors.sim.driver import DriveStats, TruthLog, drive, remove_ports, write_ports
from collectors.sim.server import ExchangeSimulator, available_venues
from shared.clock import SYSTEM_CLOCK
from shared.market import MarketEvent
from shared.market_model import DEFAULT_PARAMS, MarketModel
from shared.runtime import run_service
from shared.settings import CommonSettings, load, writable_folder
from shared.venues import chosen_venues

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulateOptions:
    venues: list[str]
    seed: int
    speed: float
    duration_s: float | None
    max_events: int | None
    ports_file: Path
    truth_file: Path | None
    base_port: int
    wait_clients: bool
    exit_when_done: bool
    first_cascade_s: float | None = None


def choose_venues(requested: str) -> list[str]:
    """The venues to simulate: the requested ones that have a simulator module (default: all)."""
    try:
        names = chosen_venues(requested)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--venues") from exc
    have = set(available_venues())
    missing = [v for v in names if v not in have]
    if missing:
        click.echo(f"no simulator module yet for {', '.join(missing)}; skipped", err=True)
    return [v for v in names if v in have]


def market_events(seed: int, venues: list[str], start_ms: int, until_ms: int | None,
                  first_cascade_s: float | None = None) -> Iterable[MarketEvent]:
    """The market model's time-ordered events from ``start_ms`` (forever when ``until_ms`` is None)."""
    params = replace(DEFAULT_PARAMS, first_cascade_s=first_cascade_s)
    return MarketModel(seed, venues=venues, start_ms=start_ms, params=params).events(until_ms)


async def serve_market(options: SimulateOptions, stop: asyncio.Event) -> None:
    ports = {v: options.base_port + i for i, v in enumerate(options.venues)} if options.base_port else {}
    truth = TruthLog(options.truth_file) if options.truth_file else None
    try:
        async with ExchangeSimulator(options.venues, ports=ports, keep_sent=False) as sim:
            write_ports(options.ports_file, sim.urls)
            for venue, url in sim.urls.items():
                logger.info("%s simulated on %s", venue, url)
            await _play(sim, options, truth, stop)
    finally:
        remove_ports(options.ports_file)
        if truth is not None:
            truth.close()


async def _play(sim: ExchangeSimulator, options: SimulateOptions, truth: TruthLog | None,
                stop: asyncio.Event) -> None:
    if options.wait_clients:
        await _wait_clients(sim, stop)
    start_ms = SYSTEM_CLOCK.now_ms()
    until_ms = start_ms + int(options.duration_s * 1000) if options.duration_s is not None else None
    events = market_events(options.seed, options.venues, start_ms, until_ms, options.first_cascade_s)
    stats = await drive(sim, events, stop, speed=options.speed, max_events=options.max_events,
                        until_ms=until_ms, start_ms=start_ms, truth=truth)
    _log_summary(sim, stats)
    if not options.exit_when_done:
        await stop.wait()


async def _wait_clients(sim: ExchangeSimulator, stop: asyncio.Event) -> None:
    logger.info("waiting for a subscribed client on every venue")
    clients = asyncio.ensure_future(_all_subscribed(sim))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([clients, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        clients.cancel()
        stopper.cancel()


async def _all_subscribed(sim: ExchangeSimulator) -> None:
    await asyncio.gather(*(sim.wait_subscribed(v, timeout=None) for v in sim.venues))


def _log_summary(sim: ExchangeSimulator, stats: DriveStats) -> None:
    logger.info("market done: %d events, %d cascades, %d liquidations sent",
                stats.events, len(stats.cascades), stats.sent)
    for venue in sim.venues:
        server = sim.venue(venue)
        logger.info("%s: %d sent, %d unsent", venue, server.sent_count, server.unsent_count)


@click.command()
@click.option("--venues", default="", help="Comma-separated venues (default: every simulated venue).")
@click.option("--seed", type=int, default=7, show_default=True, help="Market model seed.")
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Market time per wall second (0 = as fast as possible).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds of market time to play (default: no end).")
@click.option("--max-events", type=click.IntRange(min=1), default=None,
              help="Stop the market after N events.")
@click.option("--ports-file", type=click.Path(path_type=Path), default=None,
              help="Where to write {venue: url} (default: <data_dir>/sim/ports.json).")
@click.option("--truth-file", type=click.Path(path_type=Path), default=None,
              help="JSON lines of every sent liquidation (default: <data_dir>/sim/truth.jsonl).")
@click.option("--no-truth", is_flag=True, help="Do not write the truth file.")
@click.option("--base-port", type=int, default=0,
              help="First port; venues get consecutive ports (default 0: free ports).")
@click.option("--wait-clients", is_flag=True, help="Start the market once every venue has a subscriber.")
@click.option("--exit-when-done", is_flag=True, help="Exit when the market ends instead of serving on.")
@click.option("--first-cascade", "first_cascade_s", type=float, default=15.0, show_default=True,
              help="Market seconds until the first cascade (negative: at random, like the later ones).")
def simulate(venues: str, seed: int, speed: float, duration: float | None, max_events: int | None,
             ports_file: Path | None, truth_file: Path | None, no_truth: bool, base_port: int,
             wait_clients: bool, exit_when_done: bool, first_cascade_s: float) -> None:
    """Run the local exchange simulator (WebSocket servers on 127.0.0.1) until Ctrl-C."""
    settings = load(CommonSettings)
    sim_dir = Path(settings.data_dir) / "sim"
    if ports_file is None or (truth_file is None and not no_truth):  # they go under LIQ_DATA_DIR
        writable_folder(settings.data_dir)
    options = SimulateOptions(
        venues=choose_venues(venues), seed=seed, speed=speed, duration_s=duration, max_events=max_events,
        ports_file=ports_file or sim_dir / "ports.json",
        truth_file=None if no_truth else truth_file or sim_dir / "truth.jsonl",
        base_port=base_port, wait_clients=wait_clients, exit_when_done=exit_when_done,
        first_cascade_s=first_cascade_s if first_cascade_s >= 0 else None,
    )
    if not options.venues:
        raise click.ClickException("no venue has a simulator module (collectors/sim/<venue>.py)")
    code = run_service("simulate", partial(serve_market, options), settings.log_level)
    if code:
        raise SystemExit(code)
