"""Outages an operator meets, against real servers and real processes: a consumer killed with
SIGKILL in the middle of a batch and another of its group taking its entries over (XAUTOCLAIM);
Redis and PostgreSQL stopped and started again under running consumers. Every check is an
exact count or sum: each event applied once, stored once, nothing left pending."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as syncredis

from aggregator.buckets import fold
from aggregator.service import Aggregator, make_consumer
from shared import keys, servers
from shared.backoff import Backoff
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.significance import SignificanceRules, publication
from shared.streams import StreamConsumer, publish
from tests.conftest import server_dir
from tests.factories import liq
from writer.config import WriterSettings
from writer.migrate import migrate_dsn
from writer.service import Writer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
SHARDS = 4
READ = 5
"""Entries a consumer reads at once from each stream: the events are on two shard streams, so the
killed one applied a first read of ``2 * READ`` and holds a second one."""

# The doomed consumer: handles its first read, then holds the second (delivered to it, not acked)
# and says so on stdout; the test kills it there with SIGKILL.
DOOMED_AGGREGATOR = """
import asyncio, sys
from aggregator.service import Aggregator, make_consumer
from shared.redisconn import make_async_redis

async def main(url, shards, read):
    client = make_async_redis(url)
    aggregator = Aggregator(client)
    consumer = make_consumer(client, shards, aggregator, name="doomed")
    consumer.count = read
    calls = 0
    async def apply_then_hold(messages):
        nonlocal calls
        calls += 1
        if calls == 2:
            print(len(messages), flush=True)
            await asyncio.Event().wait()
        await aggregator.handle(messages)
    consumer.handler = apply_then_hold
    await consumer.run_until_idle()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""

# The doomed writer: commits its first read, then holds the second inside its transaction, its
# rows inserted and not committed.
DOOMED_WRITER = """
import asyncio, sys
from writer.config import WriterSettings
from writer.service import Writer
from shared.redisconn import make_async_redis

async def main(url, dsn, shards, read):
    client = make_async_redis(url)
    settings = WriterSettings(pg_dsn=dsn, shards=shards, batch_age_ms=0, batch_size=read)
    writer = Writer(client, settings, dsn, name="doomed")
    real = writer.sink._write_in_transaction
    calls = 0
    async def hold_in_transaction(conn, batch):
        nonlocal calls
        calls += 1
        result = await real(conn, batch)
        if calls == 2:
            print(len(batch.events), flush=True)
            await asyncio.Event().wait()
        return result
    writer.sink._write_in_transaction = hold_in_transaction
    await writer.run_until_idle()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def recent_events(n: int) -> list[Liquidation]:
    """``n`` liquidations of the last minutes, every one significant (>= $100K), on two symbols."""
    now = int(time.time() * 1000)
    return [liq(symbol="BTCUSDT" if i % 2 else "ETHUSDT", price=67_000.0 + i if i % 2 else 3_400.0 + i,
                quantity=(110_000.0 + 1_000 * i) / (67_000.0 + i if i % 2 else 3_400.0 + i),
                side="long" if i % 3 else "short", timestamp_ms=now - 60_000 - 1_000 * i,
                event_id=f"e{i}") for i in range(n)]


def publish_events(url: str, events: list[Liquidation]) -> None:
    async def run() -> None:
        client = make_async_redis(url)
        await publish(client, publication(events, SHARDS, SignificanceRules()), keys.EVENT_STREAM_MAXLEN)
        await client.aclose()
    asyncio.run(run())


@pytest.fixture
def killed() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes the test starts; any still running at the end are killed."""
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def start_doomed(children: list[subprocess.Popen[str]], script: str, *args: str) -> int:
    """Start a doomed consumer; returns the size of the batch it holds once it holds it."""
    child = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    children.append(child)
    assert child.stdout is not None
    line = child.stdout.readline()  # blocks until it holds its batch (or dies: then "")
    assert line, f"the doomed consumer exited with {child.wait(timeout=10)} before holding a batch"
    return int(line)


def sigkill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


def pending(r: syncredis.Redis, group: str) -> dict[str, int]:
    """Per consumer with entries of ``group`` pending on the streams it reads, how many."""
    out: dict[str, int] = {}
    for stream in keys.all_streams(SHARDS):
        if not r.exists(stream) or group not in {g["name"].decode() for g in r.xinfo_groups(stream)}:
            continue
        info: Any = r.xpending(stream, group)
        for consumer in info["consumers"]:
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            out[name] = out.get(name, 0) + int(consumer["pending"])
    return out


def test_an_aggregator_killed_mid_batch_is_taken_over_and_every_event_counted_once(
        redis_url: str, r: syncredis.Redis, killed: list[subprocess.Popen[str]]) -> None:
    events = recent_events(40)
    publish_events(redis_url, events)
    held = start_doomed(killed, DOOMED_AGGREGATOR, redis_url, str(SHARDS), str(READ))
    sigkill(killed[0])
    assert held == 2 * READ and pending(r, keys.AGGREGATOR_GROUP) == {"doomed": held}

    async def take_over() -> tuple[int, int]:
        client = make_async_redis(redis_url)
        alive = make_consumer(client, SHARDS, Aggregator(client), name="alive")
        alive.claim_idle_ms = 0  # stands for the dead consumer's entries idling past the claim time
        handled = await alive.run_until_idle()
        await client.aclose()
        return handled, alive.stats.claimed

    assert asyncio.run(take_over()) == (len(events) - held, held)
    assert pending(r, keys.AGGREGATOR_GROUP) == {}
    assert_aggregated_once(r, events)


def test_a_writer_killed_inside_its_transaction_is_taken_over_and_every_row_stored_once(
        redis_url: str, r: syncredis.Redis, pg_dsn: str, killed: list[subprocess.Popen[str]]) -> None:
    migrate_dsn(pg_dsn, "native")
    events = recent_events(40)
    publish_events(redis_url, events)
    held = start_doomed(killed, DOOMED_WRITER, redis_url, pg_dsn, str(SHARDS), str(READ))
    assert held == READ and stored(pg_dsn)[0] == READ, "the first read only is committed"
    sigkill(killed[0])
    assert pending(r, keys.WRITER_GROUP) == {"doomed": held}

    async def take_over() -> int:
        client = make_async_redis(redis_url)
        settings = WriterSettings(pg_dsn=pg_dsn, shards=SHARDS, batch_age_ms=0, batch_size=READ)
        alive = Writer(client, settings, pg_dsn, name="alive")
        for consumer in alive.consumers:
            consumer.claim_idle_ms = 0
        handled = await alive.run_until_idle()
        await alive.aclose()
        await client.aclose()
        return handled

    assert asyncio.run(take_over()) == len(events) - held
    assert pending(r, keys.WRITER_GROUP) == {}
    assert stored(pg_dsn) == (40, pytest.approx(sum(e.notional_usd for e in events), rel=1e-12))  # type: ignore[comparison-overlap]  # approx equals a float


def stored(dsn: str) -> tuple[int, float]:
    """Distinct events stored (a duplicate row would fail the count) and their total value."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(DISTINCT event_id), count(*), coalesce(sum(value_usd), 0) "
                           "FROM liquidations_significant").fetchone()
    assert row is not None and row[0] == row[1], "an event stored twice"
    return int(row[0]), float(row[2])


class Progress:
    """Entries a running consumer's handler committed, and its failures: a test awaits counts."""

    def __init__(self) -> None:
        self.handled = 0
        self.failed = 0
        self.changed = asyncio.Condition()

    def counting(self, handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``handler`` (its batch first), counting what it commits."""
        async def handle(messages: list[Any], *more: Any) -> None:
            try:
                await handler(messages, *more)
            except Exception:
                self.failed += 1
                raise
            else:
                self.handled += len(messages)
            finally:
                async with self.changed:
                    self.changed.notify_all()
        return handle

    async def until(self, predicate: Callable[[Progress], bool]) -> None:
        async with asyncio.timeout(60), self.changed:
            await self.changed.wait_for(lambda: predicate(self))


def test_redis_and_postgresql_restarted_under_running_consumers_lose_and_repeat_nothing(
        tmp_path: Path) -> None:
    """Redis stopped and started again (its data kept, as under ``liq up``) while the aggregator
    and the writer wait on their streams; then PostgreSQL stopped between two transactions of
    the writer's batch, and started again. Every event is counted once in the hashes and stored
    once in the table, and nothing is left pending."""
    redis_server = servers.start_redis(tmp_path / "redis", persistent=True)
    pg_base = server_dir("outages")
    pg_server = servers.start_postgres(pg_base)
    migrate_dsn(pg_server.dsn, "native")
    events = recent_events(60)

    async def run() -> Writer:
        nonlocal redis_server, pg_server
        client = make_async_redis(redis_server.url)
        aggregated, written = Progress(), Progress()
        aggregator = make_consumer(client, SHARDS, Aggregator(client), name="a1")
        aggregator.handler = aggregated.counting(aggregator.handler)
        settings = WriterSettings(pg_dsn=pg_server.dsn, shards=SHARDS, batch_age_ms=0, batch_size=7)
        writer = Writer(client, settings, pg_server.dsn, name="w1")
        writer.consumers[0].count = 20  # reads of several transactions (as an old group's drain)
        writer.handle = written.counting(writer.handle)  # type: ignore[assignment,method-assign]
        consumers: list[StreamConsumer[Any]] = [aggregator, *writer.consumers]
        for consumer in consumers:
            consumer.backoff = Backoff(base_s=0.001, cap_s=0.01)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(aggregator.run(stop)), asyncio.create_task(writer.run(stop))]
        await asyncio.to_thread(publish_events, redis_server.url, events[:20])
        await aggregated.until(lambda p: p.handled == 20)
        await written.until(lambda p: p.handled == 20)

        redis_server.stop()
        await asyncio.wait_for(retried(aggregator, *writer.consumers), 30)
        redis_server = servers.start_redis(tmp_path / "redis", port=redis_server.port, persistent=True)
        await asyncio.to_thread(publish_events, redis_server.url, events[20:40])
        await aggregated.until(lambda p: p.handled == 40)
        await written.until(lambda p: p.handled == 40)

        stop_postgres_at_the_second_transaction(writer, pg_server)
        await asyncio.to_thread(publish_events, redis_server.url, events[40:])
        await aggregated.until(lambda p: p.handled == 60)
        await written.until(lambda p: p.failed >= 3)
        pg_server = servers.start_postgres(pg_base, port=pg_server.port)
        await written.until(lambda p: p.handled == 60)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await writer.aclose()
        await client.aclose()
        return writer

    try:
        stats = asyncio.run(run()).sink.stats
        r = syncredis.Redis.from_url(redis_server.url)
        assert pending(r, keys.AGGREGATOR_GROUP) == {} and pending(r, keys.WRITER_GROUP) == {}
        assert_aggregated_once(r, events)
        r.close()
        assert stored(pg_server.dsn) == (60, pytest.approx(sum(e.notional_usd for e in events), rel=1e-12))  # type: ignore[comparison-overlap]  # approx equals a float
        # The read's first transaction had committed before PostgreSQL stopped: its retry found
        # those rows stored (one replayed batch) and inserted none of them again.
        assert (stats.inserted, stats.replayed_batches) == (60, 1)
    finally:
        redis_server.stop()
        pg_server.stop()
        shutil.rmtree(pg_base, ignore_errors=True)


async def retried(*consumers: StreamConsumer[Any]) -> None:
    """Until each of ``consumers`` has failed and is backing off (awaited, not polled)."""
    events = []
    for consumer in consumers:
        retry = asyncio.Event()
        real = consumer.backoff.next_delay

        def next_delay(real: Callable[[], float] = real, retry: asyncio.Event = retry) -> float:
            retry.set()
            return real()

        consumer.backoff.next_delay = next_delay  # type: ignore[method-assign]
        events.append(retry)
    await asyncio.gather(*(e.wait() for e in events))


def stop_postgres_at_the_second_transaction(writer: Writer, server: servers.PostgresServer) -> None:
    """The writer's next read commits its first transaction; PostgreSQL stops before its second."""
    real = writer.sink.write
    calls = 0

    async def write(batch: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            server.stop()
        return await real(batch)

    writer.sink.write = write  # type: ignore[method-assign]


def assert_aggregated_once(r: syncredis.Redis, events: list[Liquidation]) -> None:
    for key, delta in fold(events).items():
        stored_ = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}  # type: ignore[union-attr]
        assert {f: int(stored_[f]) for f in delta.counts} == delta.counts, key
        assert {f: float(stored_[f]) for f in delta.sums} == pytest.approx(delta.sums, rel=1e-12), key
