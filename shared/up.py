"""``liq up``: the whole system on one machine with one command.

1. Redis and PostgreSQL: ``LIQ_REDIS_URL`` / ``LIQ_PG_DSN`` when set, otherwise embedded
   servers started here with their data in ``.liq/`` (``shared.servers``).
2. ``liq migrate`` against the database.
3. With ``--simulate``: ``liq simulate`` (local exchange servers) and collectors pointed at it;
   otherwise collectors connect to the live exchanges.
4. One OS process per job (``liq collect <venue>`` for each venue, ``liq detect``,
   ``liq aggregate``, ``liq write``), each restarted with backoff if it dies. Their output is
   printed with a name prefix, as honcho does.
5. An embedded server that dies (the OOM killer, a crash) is started again, with backoff, on
   the same port and data: the processes, which wait out outages, carry on by themselves.
6. Ctrl-C (or ``--for SECONDS``) stops every child with SIGTERM (SIGKILL after a grace
   period), then the servers. The URLs in use are written to ``.liq/up.json`` so that
   ``liq status`` finds a running system.

Before any of it, the settings of every process it will start are loaded as each process loads
them (:func:`check_settings`): a bad one stops ``liq up`` with that process's one line, exit code
78 (EX_CONFIG), before a server starts.

``--servers-only`` stops after step 3 (no pipeline process) and writes the variables those
processes need to ``.liq/servers.env``, for honcho or supervisord to run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import click
import msgspec

from shared import logs
from shared.backoff import Backoff, Outage
from shared.discovery import UP_FILE
from shared.errors import EX_CONFIG
from shared.files import write_whole
from shared.runtime import die_with_parent, done_before_stop, stopped_within
from shared.servers import PostgresServer, RedisServer, free_port_range, start_postgres, start_redis
from shared.settings import CommonSettings, check_dsn, load, writable_folder
from shared.venues import chosen_venues

logger = logging.getLogger("up")

STOP_GRACE_S = 15.0
LOCK_FILE = "up.lock"
PUMP_LIMIT = 1 << 20
"""Longest output line read whole from a child (longer ones are copied in pieces)."""


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    refused: bool = False
    """It exited refusing its settings (:data:`EX_CONFIG`): not restarted, ``liq up`` stops."""
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, cap_s=30.0))


class Server(Protocol):
    def alive(self) -> bool: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


@dataclass
class Watched(Generic[S]):
    """An embedded server ``liq up`` started, started again by ``start`` when it dies."""

    name: str
    server: S
    start: Callable[[], S]
    every_s: float = 2.0
    """How often it is checked."""
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=1.0, cap_s=30.0))
    restarted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each restart (tests await it)."""

    async def keep(self, stop: asyncio.Event) -> None:
        """Until ``stop``: check the server every ``every_s``, start it again when it is dead."""
        while not await stopped_within(stop, self.every_s):
            if not await asyncio.to_thread(self.server.alive):
                await self._start_again(stop)

    async def _start_again(self, stop: asyncio.Event) -> None:
        self.restarts += 1
        logger.warning("%s stopped unexpectedly; starting it again (restart %d)", self.name, self.restarts)
        outage = Outage(f"starting {self.name}", logger)
        while not stop.is_set():
            try:
                self.server = await asyncio.to_thread(self.start)
            except Exception as exc:  # noqa: BLE001 - ServerError, a tool timing out, a fork refused: all retried
                delay = self.backoff.next_delay()
                outage.down(exc, delay)
                await stopped_within(stop, delay)
                continue
            self.backoff.reset()
            logger.info("%s is back", self.name)
            self.restarted.set()
            return


def liq_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shared", *args]


@click.command()
@click.option("--simulate", is_flag=True, help="Connect collectors to the local exchange simulator.")
@click.option("--venues", default="", help="Comma-separated venues (default: all).")
@click.option("--for", "duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Stop by itself after SECONDS.")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator market seed.")
@click.option("--speed", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Simulator speed factor (0 = as fast as possible).")
@click.option("--servers-only", is_flag=True,
              help="Start the servers (and the simulator with --simulate) and migrate, but no pipeline "
                   "process: run those with honcho or supervisord, with the variables written to "
                   ".liq/servers.env.")
def up(simulate: bool, venues: str, duration: float | None, seed: int, speed: float,
       servers_only: bool) -> None:
    """Start servers (embedded unless LIQ_REDIS_URL/LIQ_PG_DSN), migrate, and run every process."""
    settings = load(CommonSettings)
    check_dsn(settings.pg_dsn)
    logs.configure(settings.log_level, "up")
    try:
        chosen = chosen_venues(venues)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--venues") from exc
    data_dir = writable_folder(settings.data_dir).resolve()
    options = UpOptions(chosen, simulate, duration, seed, speed, servers_only)
    check_settings(options, os.environ)
    with only_one_up(data_dir):
        code = asyncio.run(_up(data_dir, options, settings))
    sys.exit(code)


@dataclass(frozen=True)
class UpOptions:
    """What ``liq up`` was asked for on its command line."""

    venues: list[str]
    simulate: bool
    duration: float | None
    seed: int
    speed: float
    servers_only: bool = False


CONSUMERS = ("detect", "aggregate", "write")
"""The pipeline's consumer commands, in the order ``liq up`` starts them (after the collectors)."""

PROCESS_SETTINGS = {
    "migrate": ("writer.config", "WriterSettings"),
    "collect": ("collectors.cli", "CollectorSettings"),
    "detect": ("detector.config", "DetectorSettings"),
    "aggregate": ("aggregator.cli", "AggregatorSettings"),
    "write": ("writer.config", "WriterSettings"),
}
"""The settings class each process ``liq up`` starts loads first (the simulator's are
``liq up``'s own, CommonSettings)."""


def check_settings(options: UpOptions, environ: Mapping[str, str]) -> None:
    """Load the settings of every process ``liq up`` will start, from the environment it gets:
    the first bad one raises the :class:`~shared.errors.ConfigError` that process would stop
    with, before a server starts. ``liq up`` replaces LIQ_REDIS_URL and LIQ_PG_DSN only with
    values of its own when they are unset, and LIQ_VENUE_URLS with the simulator's."""
    env = {k: v for k, v in environ.items() if not (options.simulate and k == "LIQ_VENUE_URLS")}
    for command in _started(options):
        module, name = PROCESS_SETTINGS[command]
        settings_class: type[msgspec.Struct] = getattr(importlib.import_module(module), name)
        load(settings_class, env)


def _started(options: UpOptions) -> list[str]:
    """The commands ``liq up`` runs, in the order it starts them, each once."""
    if options.servers_only:
        return ["migrate"]
    return ["migrate", *(["collect"] if options.venues else []), *CONSUMERS]


@contextlib.contextmanager
def only_one_up(data_dir: Path) -> Iterator[None]:
    """Hold ``<data_dir>/up.lock`` while ``liq up`` runs: a second one on the same folder would
    start a second Redis on the same append-only file and remove the first one's ``up.json``.
    The lock goes with the process, however it ends (even SIGKILL)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise click.ClickException(
                f"liq up is already running on {data_dir} ({holder}): use that one (liq status), stop it, "
                "or give this one another folder with LIQ_DATA_DIR") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield


async def _up(data_dir: Path, options: UpOptions, settings: CommonSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    embedded: list[Watched[Any]] = []
    keepers: list[asyncio.Task[None]] = []
    children: list[Child] = []
    try:
        redis_url, redis_server = _redis(data_dir, settings)
        embedded += [redis_server] if redis_server is not None else []
        pg_dsn, pg_server = _postgres(data_dir, settings)
        embedded += [pg_server] if pg_server is not None else []
        keepers = [asyncio.create_task(server.keep(stop)) for server in embedded]
        env = {**os.environ, "LIQ_REDIS_URL": redis_url, "LIQ_PG_DSN": pg_dsn,
               "LIQ_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        migrated = await _run_once("migrate", liq_command("migrate"), env, stop)
        if migrated is None:  # stopped meanwhile
            return 0
        if migrated == EX_CONFIG:
            logger.error("migrate: its settings are wrong (the line above says which); "
                         "not starting the pipeline")
            return 1
        if migrated != 0:
            logger.error("migrations failed; not starting the pipeline")
            return 1
        if options.simulate:
            sim = await _start_simulator(data_dir, options.venues, options.seed, options.speed, env, stop)
            if sim is None:
                return 0 if stop.is_set() else 1
            children.append(sim[0])
            env["LIQ_VENUE_URLS"] = ",".join(f"{v}={u}" for v, u in sim[1].items())
        if options.servers_only:
            _write_servers_env(data_dir, env, settings.shards)
        else:
            children += _pipeline_children(options.venues, env, settings.metrics_port)
        _write_up_file(data_dir, redis_url, pg_dsn, options, settings.shards)
        _print_banner(redis_url, pg_dsn, options, data_dir)
        tasks = [asyncio.create_task(_supervise(c, stop)) for c in children if c.process is None]
        if options.duration is not None:
            loop.call_later(options.duration, stop.set)
        await stop.wait()
        logger.info("stopping %d processes", len(children))
        await _stop_children(children)
        await asyncio.gather(*tasks, return_exceptions=True)
        return 1 if any(c.refused for c in children) else 0
    finally:
        await _stop_children(children)
        stop.set()  # the keepers end (a restart in progress first), then their servers stop
        await asyncio.gather(*keepers, return_exceptions=True)
        for server in reversed(embedded):
            server.server.stop()
        for written in (UP_FILE, SERVERS_ENV_FILE):
            with contextlib.suppress(FileNotFoundError):
                (data_dir / written).unlink()
        logger.info("all stopped")


def _redis(data_dir: Path, settings: CommonSettings) -> tuple[str, Watched[RedisServer] | None]:
    if "LIQ_REDIS_URL" in os.environ:  # validated by load(): an empty or malformed one stopped liq up
        return settings.redis_url, None
    port = settings.embedded_redis_port
    server = start_redis(data_dir / "redis", port=port, persistent=True)
    return server.url, Watched("redis", server, lambda: start_redis(data_dir / "redis", port=server.port,
                                                                    persistent=True))


def _postgres(data_dir: Path, settings: CommonSettings) -> tuple[str, Watched[PostgresServer] | None]:
    if settings.pg_dsn:
        return settings.pg_dsn, None
    server = start_postgres(data_dir / "pg", port=settings.embedded_pg_port, durable=True)
    return server.dsn, Watched("postgresql", server, lambda: start_postgres(data_dir / "pg", port=server.port,
                                                                            durable=True))


MAX_PORT = 65_535


def _pipeline_children(venues: list[str], env: dict[str, str],
                       metrics_port: int | None = None) -> list[Child]:
    """One child per pipeline process. With ``LIQ_METRICS_PORT`` set (not 0: any free port), each
    gets its own port from it on, in this order (the same port for all would let only the first
    bind it)."""
    names_args = [(f"collect-{v}", liq_command("collect", v)) for v in venues]
    names_args += [(command, liq_command(command)) for command in CONSUMERS]
    if metrics_port is not None and metrics_port + len(names_args) - 1 > MAX_PORT:
        logger.error("LIQ_METRICS_PORT=%d leaves no room for %d consecutive ports (the last must be at "
                     "most %d); each process uses its default port", metrics_port, len(names_args), MAX_PORT)
        metrics_port = None  # and not the inherited LIQ_METRICS_PORT, which only one could bind
        env = {name: value for name, value in env.items() if name != "LIQ_METRICS_PORT"}
    if not metrics_port:
        return [Child(name, args, env) for name, args in names_args]
    children = [Child(name, args, {**env, "LIQ_METRICS_PORT": str(metrics_port + k)})
                for k, (name, args) in enumerate(names_args)]
    logger.info("metrics ports: %s", ", ".join(f"{c.name} {c.env['LIQ_METRICS_PORT']}" for c in children))
    return children


async def _start_simulator(data_dir: Path, venues: list[str], seed: int, speed: float,
                           env: dict[str, str], stop: asyncio.Event
                           ) -> tuple[Child, dict[str, str]] | None:
    ports_file = data_dir / "sim" / "ports.json"
    with contextlib.suppress(FileNotFoundError):
        ports_file.unlink()
    # Fixed ports: a simulator restarted after a crash must come back where the collectors
    # connect (their LIQ_VENUE_URLS were set once).
    args = liq_command("simulate", "--venues", ",".join(venues), "--seed", str(seed),
                       "--speed", str(speed), "--ports-file", str(ports_file),
                       "--base-port", str(free_port_range(len(venues))))
    child = Child("simulate", args, env)
    await _spawn(child)
    if not await _wait_for_file(ports_file, child, stop):
        await _stop_children([child])  # stopped or failed while starting: leave nothing behind
        return None
    urls: dict[str, str] = json.loads(ports_file.read_text())
    asyncio.get_running_loop().create_task(_supervise(child, stop))
    return child, urls


async def _wait_for_file(path: Path, child: Child, stop: asyncio.Event, timeout_s: float = 30.0) -> bool:
    """True once ``path`` exists; False when ``child`` died, ``stop`` was set or time ran out."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(path.exists):
        if child.process is None or child.process.returncode is not None or time.monotonic() > deadline:
            logger.error("the simulator did not start (see its output above)")
            return False
        if await stopped_within(stop, 0.05):
            return False
    return True


async def _run_once(name: str, args: list[str], env: dict[str, str], stop: asyncio.Event) -> int | None:
    """Run a child to its end; its exit code, or None when ``stop`` came first (it is stopped)."""
    child = Child(name, args, env)
    await _spawn(child)
    assert child.process is not None
    ended = asyncio.create_task(child.process.wait())
    if not await done_before_stop(ended, stop):
        ended.cancel()
        await _stop_children([child])
        return None
    return ended.result()


async def _spawn(child: Child) -> None:
    child.process = await asyncio.create_subprocess_exec(
        *child.args, env=child.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True, preexec_fn=die_with_parent, limit=PUMP_LIMIT,
    )
    asyncio.get_running_loop().create_task(_pump(child.name, child.process))


async def _pump(name: str, process: asyncio.subprocess.Process) -> None:
    """Copy a child's output, a line at a time with its name in front. A line longer than the
    reader's limit goes out in pieces: a pump that stopped would block the child on its next
    write, for good."""
    assert process.stdout is not None
    while True:
        try:
            line = await process.stdout.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:  # the last line, without its newline
            line = end.partial
        except asyncio.LimitOverrunError as long:  # no newline within the limit: a piece of it
            line = await process.stdout.read(long.consumed)
        if not line:
            return
        sys.stdout.write(f"{name:<22}| {line.decode(errors='replace')}")
        if not line.endswith(b"\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()


async def _supervise(child: Child, stop: asyncio.Event) -> None:
    """Keep a child running until ``stop``; restart it with backoff when it dies."""
    while not stop.is_set():
        if child.process is None or child.process.returncode is not None:
            await _spawn(child)
        assert child.process is not None
        started = time.monotonic()
        waiter = asyncio.create_task(child.process.wait())
        await done_before_stop(waiter, stop)
        if stop.is_set():
            waiter.cancel()
            return
        if child.process.returncode == EX_CONFIG:
            logger.error("%s: its settings are wrong (the line above says which); not restarting it, "
                         "stopping everything", child.name)
            child.refused = True
            stop.set()
            return
        if time.monotonic() - started > 60:
            child.backoff.reset()
        delay = child.backoff.next_delay()
        child.restarts += 1
        logger.warning("%s exited with %s; restart %d in %.1fs", child.name,
                       child.process.returncode, child.restarts, delay)
        await stopped_within(stop, delay)
        child.process = None


async def _stop_children(children: list[Child]) -> None:
    running = [c for c in children if c.process is not None and c.process.returncode is None]
    for child in running:
        assert child.process is not None
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
    for child in running:
        assert child.process is not None
        try:
            await asyncio.wait_for(child.process.wait(), timeout=STOP_GRACE_S)
        except TimeoutError:
            logger.warning("%s did not stop in %.0fs; killing it", child.name, STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            await child.process.wait()


def _write_up_file(data_dir: Path, redis_url: str, pg_dsn: str, options: UpOptions, shards: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    info = {"redis_url": redis_url, "pg_dsn": pg_dsn, "simulate": options.simulate,
            "venues": [] if options.servers_only else options.venues, "servers_only": options.servers_only,
            "shards": shards, "pid": os.getpid(), "started_ms": time.time_ns() // 1_000_000}
    write_whole(data_dir / UP_FILE, json.dumps(info, indent=2))


SERVERS_ENV_FILE = "servers.env"
SERVERS_ENV = ("LIQ_REDIS_URL", "LIQ_PG_DSN", "LIQ_DATA_DIR", "LIQ_VENUE_URLS", "LIQ_SHARDS")
"""What ``liq up --servers-only`` writes to ``<data_dir>/servers.env`` for the processes that
honcho (``honcho -e .liq/servers.env start``) or supervisord run beside it. LIQ_SHARDS is the
count ``up.json`` records as theirs (``liq status`` and ``liq replay`` take it from there)."""


def _write_servers_env(data_dir: Path, env: dict[str, str], shards: int) -> None:
    """Each value quoted as sh quotes it (``shlex.quote``), which honcho's parser (shlex too)
    reads back the same: a user's DSN may hold '&', ';', '#', '$' or spaces (a key=value DSN)."""
    env = {**env, "LIQ_SHARDS": str(shards)}
    lines = [f"{name}={shlex.quote(env[name])}" for name in SERVERS_ENV if name in env]
    write_whole(data_dir / SERVERS_ENV_FILE, "\n".join(lines) + "\n")



def _print_banner(redis_url: str, pg_dsn: str, options: UpOptions, data_dir: Path) -> None:
    mode = "SIMULATED exchanges" if options.simulate else "LIVE exchanges"
    if options.servers_only:
        env_file = data_dir / SERVERS_ENV_FILE
        logger.info("servers up, no pipeline process%s; their variables are in %s: "
                    "honcho -e %s start   or   set -a; . %s; set +a; supervisord -c deploy/supervisord.conf",
                    " (the simulator runs)" if options.simulate else "", env_file, env_file, env_file)
    else:
        logger.info("pipeline up on %s: %s", mode, ", ".join(options.venues))
    logger.info("redis: %s   (redis-cli -u %s)", redis_url, redis_url)
    logger.info("postgres: %s   (psql '%s')", pg_dsn, pg_dsn)
    logger.info("state: liq status   stop: Ctrl-C")
