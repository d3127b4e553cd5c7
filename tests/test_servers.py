"""The embedded servers really start and answer (they back `liq up` and every integration test)."""

from __future__ import annotations

import psycopg
import pytest
import redis

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
    assert row is not None and row[0] >= 140000
