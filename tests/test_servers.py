"""The embedded servers really start and answer (they back `liq up` and every integration test)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import cast

import psycopg
import pytest
import redis

from shared import servers
from shared.backoff import Backoff
from shared.servers import RedisServer, start_postgres, start_redis
from tests.redistypes import Entries

pytestmark = pytest.mark.integration


def test_redis_fixture_is_a_real_server(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.xadd("t", {"a": "1"})
    assert client.xlen("t") == 1
    info = client.info("server")
    assert int(str(info["redis_version"]).split(".")[0]) >= 6


def test_pg_fixture_is_a_real_server(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    assert row is not None and row[0] >= 140000
    assert fsync == ("off",), "test servers hold throwaway data: no fsync"


def test_a_persistent_redis_keeps_streams_and_pending_entries_across_a_restart(tmp_path: Path) -> None:
    """``liq up``'s Redis: what the collectors added and the consumers had not acked survives."""
    server = start_redis(tmp_path / "redis", persistent=True)
    try:
        client = redis.Redis.from_url(server.url)
        ids = [client.xadd("liq:events:0", {"d": str(i)}) for i in range(3)]
        client.xgroup_create("liq:events:0", "writer", id="0")
        client.xreadgroup("writer", "w1", {"liq:events:0": ">"}, count=2)
        client.hset("liq:levels:BTCUSDT:67200:LONG", mapping={"count": 2, "value_usd": 250000.5})
        client.close()
    finally:
        server.stop()
    again = start_redis(tmp_path / "redis", port=server.port, persistent=True)
    try:
        client = redis.Redis.from_url(again.url)
        assert [entry_id for entry_id, _ in cast(Entries, client.xrange("liq:events:0"))] == ids
        assert client.xpending("liq:events:0", "writer")["pending"] == 2
        assert client.hgetall("liq:levels:BTCUSDT:67200:LONG") == {b"count": b"2", b"value_usd": b"250000.5"}
        client.close()
    finally:
        again.stop()


def test_a_plain_redis_writes_nothing_to_disk(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        config = redis.Redis.from_url(server.url).config_get("appendonly")
    finally:
        server.stop()
    assert config == {"appendonly": "no"}
    assert sorted(p.name for p in (tmp_path / "redis").iterdir()) == ["redis.log"]


def test_server_logs_over_the_limit_are_moved_aside_when_the_servers_start(
        reachable_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``.liq/`` used for months: each start moves a log over ``LOG_KEEP_BYTES`` to ``.1``
    (the one before is replaced) and the server writes a new one; a smaller log is kept."""
    monkeypatch.setattr(servers, "LOG_KEEP_BYTES", 5000)
    base = reachable_dir / "logs"
    base.mkdir()
    old = "an old line\n" * 500  # 6,000 bytes: over the limit
    (base / "redis.log").write_text(old)
    (base / "redis.log.1").write_text("older still\n")
    (base / "pg.log").write_text(old)
    redis_server = start_redis(base)
    redis_server.stop()
    pg_server = start_postgres(base)
    pg_server.stop()
    pg_dir = pg_server.data_dir  # as root, the data (and pg.log) may be elsewhere
    assert (base / "redis.log.1").read_text() == old
    assert old not in (base / "redis.log").read_text()
    assert "Ready to accept connections" in (base / "redis.log").read_text()
    if pg_dir == base:
        assert (base / "pg.log.1").read_text() == old
        assert old not in (base / "pg.log").read_text()
    assert "database system is ready to accept connections" in (pg_dir / "pg.log").read_text()
    small = (base / "redis.log").read_text()
    assert len(small) < 5000
    again = start_redis(base)
    again.stop()
    assert (base / "redis.log").read_text().startswith(small), "a log under the limit is kept"
    assert (base / "redis.log.1").read_text() == old


def test_a_redis_left_running_by_a_killed_run_is_stopped_first_and_its_data_kept(tmp_path: Path) -> None:
    """``liq up`` killed with SIGKILL leaves its redis-server running on the data directory; the
    next start must not put a second server on the same append-only file."""
    leftover = start_redis(tmp_path / "redis", persistent=True)
    try:
        redis.Redis.from_url(leftover.url).xadd("liq:cascades", {"d": "kept"})
        again = start_redis(tmp_path / "redis", persistent=True)
        try:
            assert leftover.process.wait(timeout=5) == 0, "the leftover server was shut down cleanly"
            client = redis.Redis.from_url(again.url)
            assert [fields for _, fields in cast(Entries, client.xrange("liq:cascades"))] == [{b"d": b"kept"}]
            client.close()
        finally:
            again.stop()
    finally:
        leftover.stop()


def _keep_a_row(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")


def _kept_rows(dsn: str) -> list[tuple[int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT v FROM kept").fetchall()


def test_a_postgres_left_running_by_a_killed_run_is_stopped_first_and_its_data_kept(
        reachable_dir: Path) -> None:
    base = reachable_dir / "pg"
    leftover = start_postgres(base)
    try:
        _keep_a_row(leftover.dsn)
        again = start_postgres(base)
        try:
            assert again.port != leftover.port
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(leftover.dsn, connect_timeout=2).close()
            assert _kept_rows(again.dsn) == [(42,)]
        finally:
            again.stop()
    finally:
        leftover.stop()


def test_the_postgresql_shipped_in_the_pgserver_wheel_runs_the_migrations(
        reachable_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for a machine without a system PostgreSQL and without root to install one.
    (Run as root here, the binaries are copied where the postgres user can run them.)"""
    from shared import servers
    from writer.migrate import migrate_dsn

    shipped = servers.pip_postgres_bin_dir()
    assert shipped is not None, "pgserver is a dependency"
    monkeypatch.setattr(servers, "FALLBACK_PG_ROOT", reachable_dir / "fallback")
    reachable = servers._reachable
    monkeypatch.setattr(servers, "_reachable",  # as if the virtualenv were under /root
                        lambda user, path, write=True: path != shipped and reachable(user, path, write))
    server = start_postgres(reachable_dir / "pg", bin_dir=shipped)
    try:
        assert server.bin_dir.is_relative_to(reachable_dir / "fallback"), "run from the copy"
        with psycopg.connect(server.dsn) as conn:
            version = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert version is not None and version[0] // 10000 == 16, "the wheel's PostgreSQL, not the system's"
        assert migrate_dsn(server.dsn, "auto").mode == "native"
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM liquidations_significant").fetchone() == (0,)
    finally:
        server.stop()


def test_a_free_port_range_is_free_and_consecutive() -> None:
    from shared.servers import _port_free, free_port_range

    base = free_port_range(14)
    assert 20_000 <= base <= 60_000 - 14 and all(_port_free(p) for p in range(base, base + 14))


def test_a_free_port_range_stays_below_the_ports_outgoing_connections_get(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A free port the kernel may give a connection could be taken before its server binds."""
    from shared import servers

    assert servers.ephemeral_low() == int(servers.EPHEMERAL_PORTS.read_text().split()[0])
    monkeypatch.setattr(servers, "EPHEMERAL_PORTS", tmp_path / "absent")
    assert servers.ephemeral_low() == 49_152
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("32768\t60999\n")
    monkeypatch.setattr(servers, "EPHEMERAL_PORTS", setting)
    assert servers.ephemeral_low() == 32_768
    bases = {servers.free_port_range(17) for _ in range(200)}
    assert all(20_000 <= b and b + 17 <= 32_768 for b in bases), sorted(bases)[-3:]
    setting.write_text("20010 60999\n")  # no room below: the whole range is searched, as before
    assert any(b + 17 > 20_010 for b in {servers.free_port_range(17) for _ in range(200)})


def test_a_client_only_postgresql_version_is_not_taken_for_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import servers

    client_only = tmp_path / "17" / "bin"
    client_only.mkdir(parents=True)
    (client_only / "psql").touch()
    real = servers.postgres_bin_dir()
    monkeypatch.setattr(servers.glob, "glob",  # type: ignore[attr-defined]  # the glob servers calls
                        lambda pattern: [str(real), str(client_only)])
    assert servers.postgres_bin_dir() == real, "postgresql-client-17 next to server 15"


def test_redis_on_a_port_another_program_listens_on_is_an_error_not_that_programs_server(
        tmp_path: Path) -> None:
    import socket

    from shared.errors import ServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"127.0.0.1:{port} is taken by another program"):
            servers.start_redis(tmp_path / "redis", port=port)


def test_a_redis_that_exits_before_listening_fails_at_once_with_its_exit_code(tmp_path: Path) -> None:
    from unittest import mock

    from shared.errors import ServerError

    with mock.patch.object(servers, "redis_binary", return_value="/bin/false"), \
            pytest.raises(ServerError, match="exited with code 1 before listening"):
        servers.start_redis(tmp_path / "redis")


def test_an_embedded_redis_killed_under_liq_up_is_started_again_on_its_port_with_its_data(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The OOM killer took the embedded redis-server: ``liq up`` starts it again, where every
    process connects, instead of leaving the pipeline retrying against nothing until a human
    restarts it."""
    from shared.up import Watched

    data_dir = tmp_path / "redis"
    first = start_redis(data_dir, persistent=True)
    client = redis.Redis.from_url(first.url)
    client.set("kept", "1")  # in the append-only file before the reply (fsync aside, which a kill spares)
    client.close()

    async def run() -> Watched[RedisServer]:
        watched = Watched("redis", first, lambda: start_redis(data_dir, port=first.port, persistent=True),
                          every_s=0.01)
        stop = asyncio.Event()
        task = asyncio.create_task(watched.keep(stop))
        os.kill(first.process.pid, signal.SIGKILL)
        await asyncio.wait_for(watched.restarted.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 10)
        return watched

    with caplog.at_level(logging.INFO, logger="up"):
        watched = asyncio.run(run())
    try:
        again = redis.Redis.from_url(watched.server.url)
        assert (watched.restarts, watched.server.port, again.get("kept")) == (1, first.port, b"1")
        again.close()
    finally:
        watched.server.stop()
    assert [r.getMessage() for r in caplog.records if r.name == "up"] == [
        "redis stopped unexpectedly; starting it again (restart 1)", "redis is back"]


def test_a_restart_of_an_embedded_server_that_fails_otherwise_than_by_server_error_is_retried(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Starting a server again can fail with what its tools raise (pg_ctl timing out, a fork
    refused), not only ServerError: the keeper retries with backoff instead of ending, which left
    the server dead for the rest of ``liq up`` without a word."""
    from shared.up import Watched

    data_dir = tmp_path / "redis"
    first = start_redis(data_dir, persistent=True)
    attempts: list[int] = []

    def start() -> RedisServer:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise subprocess.TimeoutExpired(["redis-server"], 120)
        return start_redis(data_dir, port=first.port, persistent=True)

    async def run() -> Watched[RedisServer]:
        watched = Watched("redis", first, start, every_s=0.01, backoff=Backoff(base_s=0.01, cap_s=0.02))
        stop = asyncio.Event()
        task = asyncio.create_task(watched.keep(stop))
        os.kill(first.process.pid, signal.SIGKILL)
        restarted = asyncio.create_task(watched.restarted.wait())
        await asyncio.wait([task, restarted], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        restarted.cancel()
        await asyncio.wait_for(task, 10)  # raises what ended the keeper, if anything did
        return watched

    with caplog.at_level(logging.INFO, logger="up"):
        watched = asyncio.run(run())
    try:
        assert (watched.restarts, len(attempts), watched.server.port) == (1, 2, first.port)
        assert watched.server.alive()
    finally:
        watched.server.stop()
    assert [r.getMessage() for r in caplog.records if r.name == "up"] == [
        "redis stopped unexpectedly; starting it again (restart 1)",
        "starting redis: unavailable (TimeoutExpired: Command '['redis-server']' timed out after 120 "
        "seconds); retrying with backoff (first in 0.0s), logged again when it works",
        "redis is back"]


def test_an_embedded_postgresql_killed_under_liq_up_is_started_again_on_its_port_with_its_data(
        reachable_dir: Path) -> None:
    from shared.up import Watched

    base = reachable_dir / "pg"
    first = start_postgres(base, durable=True)
    with psycopg.connect(first.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    postmaster = int((first.data_dir / "data" / "postmaster.pid").read_text().split()[0])

    async def run() -> Watched[servers.PostgresServer]:
        watched = Watched("postgresql", first, lambda: start_postgres(base, port=first.port, durable=True),
                          every_s=0.01, backoff=Backoff(base_s=0.05, cap_s=0.2))
        stop = asyncio.Event()
        task = asyncio.create_task(watched.keep(stop))
        os.kill(postmaster, signal.SIGKILL)
        await asyncio.wait_for(watched.restarted.wait(), 60)
        stop.set()
        await asyncio.wait_for(task, 10)
        return watched

    watched = asyncio.run(run())
    try:
        with psycopg.connect(watched.server.dsn) as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]
        assert (watched.restarts, watched.server.port) == (1, first.port)
    finally:
        watched.server.stop()


def test_a_redis_restarted_on_its_data_is_ready_for_commands_when_start_returns(tmp_path: Path) -> None:
    """Restarted on a large append-only file, Redis listens at once but answers LOADING until the
    data is read back: every process of ``liq up`` (and a restarted collector reading back what
    it published) would start with errors."""
    data_dir = tmp_path / "redis"
    first = start_redis(data_dir, persistent=True)
    client = redis.Redis.from_url(first.url)
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"k{i}", "v")
    pipe.execute()
    client.close()
    first.stop()
    # The same server, reading its data back slowly (1 ms a key), as a large one would.
    slow = subprocess.Popen([servers.redis_binary(), "--port", str(first.port), "--bind", "127.0.0.1",
                             "--dir", str(data_dir), "--appendonly", "yes", "--save", "",
                             "--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        servers.wait_ready(first.port, 60, data_dir / "redis.log", slow)
        again = redis.Redis(port=first.port)
        assert again.dbsize() == 3000, "answered at once, nothing LOADING"
        again.close()
    finally:
        slow.terminate()
        slow.wait(timeout=30)


def unreachable_pg_dir(reachable_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder the ``postgres`` user is taken to be unable to reach (as if mode 0700, under
    /root), so its data goes to the fallback folder, here ``reachable_dir / "fallback"``."""
    from shared import servers

    monkeypatch.setattr(servers, "FALLBACK_PG_ROOT", reachable_dir / "fallback")
    asked = reachable_dir / "private" / "pg"
    reachable = servers._reachable
    monkeypatch.setattr(servers, "_reachable",
                        lambda user, path, write=True: path != asked and reachable(user, path, write))
    return asked


@pytest.mark.parametrize("durable", [False, True])
def test_a_throwaway_postgres_in_the_fallback_folder_removes_it_when_stopped(
        reachable_dir: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    """A folder the ``postgres`` user cannot reach (a private TMPDIR, a project under /root)
    sends the data to ``/var/lib/liq/pg-…``. A throwaway server (``liq bench``, tests) left 50 MB
    there at every run: its stop now removes it. ``liq up``'s durable data stays."""
    asked = unreachable_pg_dir(reachable_dir, monkeypatch)
    server = start_postgres(asked, durable=durable)
    try:
        assert server.data_dir.parent == reachable_dir / "fallback"
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert server.data_dir.exists() is durable
    assert asked.is_dir(), "the folder asked for is the caller's to remove"


def test_a_throwaway_start_on_data_it_did_not_create_in_the_fallback_folder_keeps_it(
        reachable_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``liq up``'s durable data in the fallback folder, its server left running (``liq up``
    killed), then a throwaway start on the same folder (as after a kill): that start stops the
    leftover server and serves the data, and neither that stop nor its own removes the data it
    did not create."""
    asked = unreachable_pg_dir(reachable_dir, monkeypatch)
    durable = start_postgres(asked, durable=True)
    try:
        _keep_a_row(durable.dsn)
        again = start_postgres(asked)
        try:
            assert again.data_dir == durable.data_dir
            assert _kept_rows(again.dsn) == [(42,)]
        finally:
            again.stop()
        assert (durable.data_dir / "data" / "PG_VERSION").exists(), "liq up's durable data is kept"
    finally:
        durable.stop()
