"""``liq bench``: throughput and latency of every stage, each next to a baseline run alongside it.

These machines are noisy, so absolute figures mean little: every result is reported with a
baseline measured in the same run, and the ratio between them.

- **streams**: a bare redis-py loop (pipelined XADD of the same payloads, then XREADGROUP
  COUNT 500 + XACK) is the baseline. Run twice: on the market model's liquidations (what the
  simulator sends: quiet periods, cross-venue cascades, 0.3 % of events significant), and
  as ``streams_stress`` on 20 symbols that are in a cascade all the time, where nearly every
  event is also a cascade member that the detector publishes and the writer stores. The stages
  are measured through the real code: ``publish`` (what collectors do: each event to its shard,
  a significant one's copy to ``liq:significant``), then the aggregator, detector and writer
  consumers each draining what they read alone, then **end to end**: the producer and the
  three consumers as separate processes at once, timed until every group has acked every
  event it reads (the detector and the aggregator the shard, the writer the significant copies).
- **parsers**: frames/s per venue parser on single-event frames (target > 100k on one core).
- **detector**: per-event hot-path latency p50/p99 and events/s of the pure engine.
- **writer**: rows/s of the writer's COPY + ON CONFLICT path against a bare binary COPY.

Components are loaded by module name, so ``shared`` imports none of them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec
import redis

from shared import codec, keys, logs
from shared.market_model import last_liquidations
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.runtime import settle_gc, settled_gc
from shared.servers import PostgresServer, RedisServer, start_postgres, start_redis
from shared.settings import CommonSettings, load
from shared.significance import SignificanceRules, publication
from shared.streams import publish

BATCH = 500
SECTIONS = ("streams", "parsers", "detector", "writer")


def synthetic(n: int, symbols: int = 20, start_ms: int | None = None) -> list[Liquidation]:
    """``n`` liquidations over 20 symbols and 4 venues, starting an hour ago (inside retention)."""
    venues = ("binance_usdm", "bybit", "okx", "bitmex")
    if start_ms is None:
        start_ms = time.time_ns() // 1_000_000 - 3_600_000
    out = []
    for i in range(n):
        sym = f"BENCHS{i % symbols}USDT"
        price = 100.0 + (i % 97)
        qty = 1.0 + (i % 13)
        out.append(Liquidation(
            exchange=venues[i % 4], symbol=sym, symbol_native=sym, base=f"S{i % symbols}", quote="USDT",
            market_type="linear_perpetual", side="long" if i % 3 else "short", price=price, quantity=qty,
            notional_usd=price * qty * (2000 if i % 50 == 0 else 1), timestamp_ms=start_ms + i * 5,
            event_id=f"bench-{i}"))
    return out


def relabel(events: list[Liquidation]) -> list[Liquidation]:
    """``events`` under symbols (``BENCH…``) and ids (``bench-…``) of the benchmark's own, which
    ``writer.bench.cleanup`` removes, with their rollups, even from a user's database."""
    return [msgspec.structs.replace(x, symbol="BENCH" + x.symbol, event_id="bench-" + x.event_id)
            for x in events]


def market(n: int) -> list[Liquidation]:
    """``n`` liquidations of the simulator's market model, the last one a minute ago (relabelled)."""
    return relabel(last_liquidations(n, seed=11, end_ms=time.time_ns() // 1_000_000 - 60_000))


def bare_loop(url: str, payloads: list[bytes]) -> float:
    """Events/s of a plain redis-py XADD (pipelined) → XREADGROUP + XACK loop."""
    client = redis.Redis.from_url(url)
    stream = "bench:bare"
    client.delete(stream)
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        pipe = client.pipeline(transaction=False)
        for p in payloads[i:i + BATCH]:
            pipe.xadd(stream, {b"d": p}, maxlen=keys.EVENT_STREAM_MAXLEN, approximate=True)
        pipe.execute()
    done = 0
    while done < len(payloads):
        reply: Any = client.xreadgroup("g", "c", {stream: ">"}, count=BATCH)
        ids = [i for _s, msgs in reply for i, f in msgs if codec.decode_liquidation(f[b"d"])]
        client.xack(stream, "g", *ids)
        done += len(ids)
    elapsed = time.perf_counter() - started
    client.delete(stream)
    client.close()
    return len(payloads) / elapsed


def _consumer_factories(redis_url: str, pg_dsn: str | None,
                        live: bool = False) -> dict[str, Callable[[Any], Any]]:
    """Each consumer as ``liq bench`` runs it: ``live`` for the end-to-end processes, with the
    writer's batch age as deployed; a stage drained alone reads without pausing."""
    aggregator = importlib.import_module("aggregator.service")
    detector = importlib.import_module("detector.service")
    factories: dict[str, Callable[[Any], Any]] = {
        "aggregator": lambda r: aggregator.make_consumer(r, 1, aggregator.Aggregator(r), name="bench"),
        "detector": lambda r: detector.bench_consumer(r, 1),
    }
    if pg_dsn:
        writer = importlib.import_module("writer.service")
        factories["writer"] = lambda r: writer.bench_consumer(r, 1, pg_dsn, live)
    return factories


async def _drain(url: str, make: Callable[[Any], Any]) -> int:
    client = make_async_redis(url)
    try:
        consumer = make(client)
        result = await consumer.run_until_idle()
        await getattr(consumer, "aclose", _noop)()
        return int(result)
    finally:
        await client.aclose()


async def _noop() -> None:
    return None


def _consume_process(url: str, pg_dsn: str | None, name: str, ready: Any, stop_flag: Any,
                     cpu_report: Any) -> None:
    """One consumer process running its real loop (blocking reads) until ``stop_flag`` is set;
    it then reports the CPU seconds it used after start-up."""
    make = _consumer_factories(url, pg_dsn, live=True)[name]
    settle_gc()  # as run_service does in the deployed process

    async def loop() -> None:
        client = make_async_redis(url)
        consumer = make(client)
        await consumer.ensure_groups()
        stop = asyncio.Event()
        started = time.process_time()
        ready.release()

        async def watch() -> None:
            await asyncio.to_thread(stop_flag.wait)
            stop.set()

        await asyncio.gather(consumer.run(stop), watch())
        cpu_report.put((name, time.process_time() - started))
        await getattr(consumer, "aclose", _noop)()
        await client.aclose()

    asyncio.run(loop())


def stream_section(url: str, pg_dsn: str | None, events: list[Liquidation]) -> dict[str, Any]:
    n = len(events)
    settle_gc()  # the workload just built lives through the section: out of the collector's walks
    baseline = bare_loop(url, [codec.encode(e) for e in events])
    result: dict[str, Any] = {"events": n, "bare_xadd_xreadgroup_per_s": round(baseline)}
    client = redis.Redis.from_url(url)
    rules = SignificanceRules()

    async def produce() -> float:
        r = make_async_redis(url)
        started = time.perf_counter()
        for i in range(0, n, BATCH):  # as a collector publishes: significant ones copied
            await publish(r, publication(events[i:i + BATCH], 1, rules), keys.EVENT_STREAM_MAXLEN,
                          keys.publisher_mark("bench"))
        elapsed = time.perf_counter() - started
        await r.aclose()
        return n / elapsed

    client.flushdb()
    result["publish_per_s"] = round(asyncio.run(produce()))
    for name, make in _consumer_factories(url, pg_dsn).items():
        started = time.perf_counter()
        handled = asyncio.run(_drain(url, make))
        result[f"{name}_per_s"] = round(handled / (time.perf_counter() - started))
    client.flushdb()
    if pg_dsn:  # the writer stage stored these events: the run end to end must store them anew
        importlib.import_module("writer.bench").cleanup(pg_dsn)
    end_to_end = _end_to_end(url, pg_dsn, n, produce)
    result["end_to_end_per_s"] = round(end_to_end.per_s)
    # From the figures reported beside it, so that a reader dividing them finds the same ratio.
    result["end_to_end_vs_bare"] = round(result["end_to_end_per_s"] / result["bare_xadd_xreadgroup_per_s"], 3)
    result["end_to_end_cpu_us_per_event"] = end_to_end.cpu_us_per_event()
    result["end_to_end_cpu_bound_per_s"] = end_to_end.cpu_bound_per_s()
    result["end_to_end_machine_busy"] = end_to_end.machine_busy
    client.flushdb()
    client.close()
    if pg_dsn:
        importlib.import_module("writer.bench").cleanup(pg_dsn)
    return result


@dataclass
class EndToEnd:
    """What the end-to-end run measured: its rate, and where the CPU went."""

    events: int
    per_s: float
    cpu_s: dict[str, float]
    """CPU seconds per process over the run: the producer, Redis, each consumer, PostgreSQL."""
    machine_busy: float | None
    """Share of all cores busy over the run, whatever ran (PostgreSQL too); None off Linux."""

    def cpu_us_per_event(self) -> dict[str, float]:
        split = {name: round(seconds / self.events * 1e6, 2) for name, seconds in self.cpu_s.items()}
        return {**split, "total": round(sum(self.cpu_s.values()) / self.events * 1e6, 2)}

    def cpu_bound_per_s(self) -> int:
        """Events/s these processes could reach with every core busy all the time."""
        total = sum(self.cpu_s.values()) / self.events
        return round((os.cpu_count() or 1) / total) if total > 0 else 0


def _end_to_end(url: str, pg_dsn: str | None, n: int, produce: Callable[[], Any]) -> EndToEnd:
    """Events/s from the first XADD until every consumer group has acked the last event.

    The consumers are separate processes running their real service loops (blocking
    XREADGROUP), as deployed; completion is polled every 2 ms with XINFO GROUPS. The CPU time
    of each process (start-up excluded), of Redis and of PostgreSQL is recorded, with the
    machine's busy share.
    """
    ctx = mp.get_context("spawn")
    names = list(_consumer_factories(url, pg_dsn))
    ready, stop_flag, cpu_report = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_consume_process, args=(url, pg_dsn, name, ready, stop_flag, cpu_report),
                         daemon=True) for name in names]
    for p in procs:
        p.start()
    client = redis.Redis.from_url(url)
    postmaster = postmaster_pid(pg_dsn) if pg_dsn else None
    try:
        _await_ready(ready, procs, names)
        before = _ServerCpu.now(client, postmaster)
        started, producer_before = time.perf_counter(), time.process_time()
        asyncio.run(produce())
        producer_cpu = time.process_time() - producer_before
        while not _all_acked(client, _readers(names)):
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        servers_used = _ServerCpu.now(client, postmaster).since(before)
        stop_flag.set()
        reported = dict(cpu_report.get(timeout=60) for _ in procs)
    finally:
        client.close()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    cpu = {"producer": producer_cpu, "redis": servers_used.redis_s, **{n: reported[n] for n in names}}
    if postmaster is not None:
        cpu["postgres"] = servers_used.postgres_s
    return EndToEnd(events=n, per_s=n / elapsed, cpu_s=cpu, machine_busy=servers_used.machine_busy())


def _await_ready(ready: Any, procs: list[Any], names: list[str]) -> None:
    """Wait until every consumer process is consuming; fail (not hang) when one died at start."""
    for _ in procs:
        while not ready.acquire(timeout=1.0):
            dead = [f"{name} (exit code {p.exitcode})" for name, p in zip(names, procs, strict=True)
                    if not p.is_alive()]
            if dead:
                raise click.ClickException(f"consumer process died while starting: {', '.join(dead)}")


@dataclass
class _ServerCpu:
    """CPU seconds Redis and PostgreSQL have used, and the machine's (busy, total) ticks."""

    redis_s: float
    postgres_s: float
    machine: tuple[int, int] | None

    @classmethod
    def now(cls, client: redis.Redis, postmaster: int | None) -> _ServerCpu:
        postgres = _process_tree_cpu(postmaster) if postmaster is not None else 0.0
        return cls(_redis_cpu(client), postgres, _machine_cpu())

    def since(self, before: _ServerCpu) -> _ServerCpu:
        machine = None
        if self.machine and before.machine:
            machine = (self.machine[0] - before.machine[0], self.machine[1] - before.machine[1])
        return _ServerCpu(self.redis_s - before.redis_s, self.postgres_s - before.postgres_s, machine)

    def machine_busy(self) -> float | None:
        """Share of all cores busy over an interval (from :meth:`since`)."""
        if not self.machine or self.machine[1] <= 0:
            return None
        return round(self.machine[0] / self.machine[1], 3)


def _redis_cpu(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def postmaster_pid(pg_dsn: str) -> int | None:
    """The pid of the PostgreSQL server behind ``pg_dsn`` when it runs on this machine (the
    parent of this connection's backend, from /proc), else None: its CPU is then not measured.
    A server elsewhere (another machine, a container) answers a pid of its own, which may be
    any local process's: the backend and its parent must both be ``postgres`` processes."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = int(row[0]) if row else None
        stat = _proc_stat(backend) if backend and _is_postgres(backend) else None  # while connected
    return int(stat[1]) if stat and _is_postgres(int(stat[1])) else None


def _is_postgres(pid: int) -> bool:
    """Process ``pid`` runs the ``postgres`` executable (its /proc comm)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when the
    process does not exist (ended, or not on this machine)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(") ")[2].split()


def _process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` and its children (Linux /proc; 0 elsewhere).

    For PostgreSQL's postmaster that is the server and its backends: a child's time stays
    counted after it exits, in the parent's time of waited-for children. Nothing else on the
    machine is counted (another PostgreSQL's backends ending mid-run made the sum go down)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _proc_stat(int(stat.parent.name))
        if fields is None or (int(stat.parent.name) != pid and fields[1] != str(pid)):
            continue
        ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17)
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat (None off Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _readers(consumers: list[str]) -> dict[str, int]:
    """How many groups read each stream the events go to: the detector's and the aggregator's
    the event shard, the writer's the significant copies."""
    shard = sum(name in ("aggregator", "detector") for name in consumers)
    return {keys.event_stream(0): shard, **({keys.SIGNIFICANT_STREAM: 1} if "writer" in consumers else {})}


def _all_acked(client: redis.Redis, readers: dict[str, int]) -> bool:
    """Each stream's groups (as many as ``readers`` says) have been delivered its last entry
    and have acked them all."""
    for stream, groups in readers.items():
        last = client.xinfo_stream(stream)["last-generated-id"]
        info: list[dict[str, Any]] = client.xinfo_groups(stream)
        if len(info) != groups or any(g["pending"] or g["last-delivered-id"] != last for g in info):
            return False
    return True


@contextmanager
def servers(workdir: Path, with_db: bool = True) -> Iterator[tuple[str, str | None]]:
    settings = load(CommonSettings)
    redis_url = settings.redis_url if "LIQ_REDIS_URL" in os.environ else None
    pg_dsn = settings.pg_dsn if with_db else None
    started: list[RedisServer | PostgresServer] = []
    if redis_url:
        _require_empty(redis_url)
    else:
        r = start_redis(workdir / "redis")
        started.append(r)
        redis_url = r.url
    if not pg_dsn and with_db:
        try:
            pg = start_postgres(workdir / "pg")
            started.append(pg)
            pg_dsn = pg.dsn
        except Exception as exc:  # noqa: BLE001 - the writer section is then reported as skipped
            click.echo(f"postgres unavailable, writer stage skipped: {exc}", err=True)
    try:
        yield redis_url, pg_dsn
    finally:
        for server in reversed(started):
            server.stop()


def _require_empty(url: str) -> None:
    """The benchmark flushes its Redis database: never one that holds anything."""
    client = redis.Redis.from_url(url)
    try:
        held = client.dbsize()
    finally:
        client.close()
    if held:
        raise click.UsageError(
            f"LIQ_REDIS_URL points at a Redis database holding {held} keys; liq bench flushes its "
            "database, so give it an empty one (e.g. redis://127.0.0.1:6379/15) or unset "
            "LIQ_REDIS_URL to let it start its own Redis")


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Events through the streams.")
@click.option("--rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Rows for the writer stage.")
@click.option("--only", default=",".join(SECTIONS), show_default=True, help="Sections to run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--no-db", is_flag=True,
              help="Without PostgreSQL: no writer, so the streams show what the Redis stages cost alone.")
def bench(events: int, rows: int, only: str, as_json: bool, no_db: bool) -> None:
    """Measure throughput and latency of each stage against a bare baseline in the same run."""
    logs.configure("WARNING", "bench")
    wanted = [s for s in only.split(",") if s]
    report: dict[str, Any] = {"cpu_count": os.cpu_count()}
    workdir = Path(tempfile.mkdtemp(prefix="liq-bench-"))
    workdir.chmod(0o755)  # the postgres user (when run as root) must reach its data dir
    try:
        # every section measures code as a deployed process runs it (shared.runtime.settle_gc)
        with servers(workdir, with_db=not no_db) as (redis_url, pg_dsn), settled_gc():
            if pg_dsn:
                importlib.import_module("writer.migrate").migrate_dsn(pg_dsn)
            if "parsers" in wanted:
                report["parsers"] = importlib.import_module("collectors.bench").run()
            if "detector" in wanted:
                report["detector"] = importlib.import_module("detector.bench").run(events)
            if "writer" in wanted and pg_dsn:
                report["writer"] = importlib.import_module("writer.bench").run(pg_dsn, rows)
            if "streams" in wanted:
                report["streams"] = stream_section(redis_url, pg_dsn, market(events))
                report["streams_stress"] = stream_section(redis_url, pg_dsn, synthetic(events))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


def render(report: dict[str, Any]) -> str:
    lines = [f"liq bench on {report['cpu_count']} cores"]
    for row in report.get("parsers", []):
        lines.append(f"  parser {row['venue']:<15} {row['frames_per_s']:>10,} frames/s")
    for section in ("detector", "writer", "streams", "streams_stress"):
        if section in report:
            lines.append(f"  {section}: " + ", ".join(f"{k}={v}" for k, v in report[section].items()))
    return "\n".join(lines)
