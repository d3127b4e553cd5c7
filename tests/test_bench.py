"""``liq bench`` end to end on small numbers, against the test run's real Redis and PostgreSQL:
every section runs, counts what it must, and leaves no rows or tables behind."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner

from shared.bench import _process_tree_cpu, bench, postmaster_pid
from shared.venues import VENUE_NAMES

EVENTS, ROWS = 2000, 1000


def test_bench_runs_every_section_and_cleans_up(redis_url: str, pg_dsn: str) -> None:
    result = CliRunner().invoke(
        bench, ["--events", str(EVENTS), "--rows", str(ROWS), "--json"],
        env={"LIQ_REDIS_URL": redis_url, "LIQ_PG_DSN": pg_dsn}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    assert sorted(p["venue"] for p in report["parsers"]) == sorted(VENUE_NAMES)
    assert all(p["liquidations_per_frame"] == 1 for p in report["parsers"])
    assert report["detector"]["events"] == EVENTS
    writer = report["writer"]
    assert (writer["rows"], writer["inserted"], writer["replayed_inserted"]) == (ROWS, ROWS, 0)
    for section in ("streams", "streams_stress"):
        streams = report[section]
        assert streams["events"] == EVENTS
        ratio = streams["end_to_end_per_s"] / streams["bare_xadd_xreadgroup_per_s"]
        assert streams["end_to_end_vs_bare"] == round(ratio, 3)
        cpu = streams["end_to_end_cpu_us_per_event"]
        parts = ["producer", "redis", "aggregator", "detector", "writer", "postgres"]
        assert list(cpu) == [*parts, "total"]
        assert all(cpu[p] >= 0 for p in parts), cpu
        assert cpu["total"] == pytest.approx(sum(cpu[p] for p in parts), abs=0.04)
        bound = streams["end_to_end_cpu_bound_per_s"]
        assert bound == pytest.approx(report["cpu_count"] * 1e6 / cpu["total"], rel=0.01)
        assert 0 < streams["end_to_end_machine_busy"] <= 1

    with psycopg.connect(pg_dsn) as conn:
        leftovers = conn.execute(
            "SELECT (SELECT count(*) FROM liquidations_significant),"
            " (SELECT count(*) FROM liquidations_hourly), (SELECT count(*) FROM liquidation_heatmap),"
            " to_regclass('liq_bench_bare') IS NULL").fetchone()
    assert leftovers == (0, 0, 0, True)


def test_bench_refuses_a_redis_database_that_holds_data(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("liq:something", "live data")
    try:
        result = CliRunner().invoke(bench, ["--only", "streams"], env={"LIQ_REDIS_URL": redis_url})
        assert result.exit_code == 2
        assert "LIQ_REDIS_URL points at a Redis database holding 1 keys" in result.output
        assert client.get("liq:something") == b"live data"
    finally:
        client.close()


def test_bench_without_the_database_measures_the_redis_stages_alone(redis_url: str) -> None:
    collector_before = gc.get_threshold(), gc.get_freeze_count()
    result = CliRunner().invoke(
        bench, ["--only", "streams", "--events", "1000", "--no-db", "--json"],
        env={"LIQ_REDIS_URL": redis_url, "LIQ_PG_DSN": "postgresql://nobody@127.0.0.1:1/none"},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (gc.get_threshold(), gc.get_freeze_count()) == collector_before, "this process goes on"
    streams = json.loads(result.stdout)["streams"]
    assert "writer_per_s" not in streams and streams["events"] == 1000
    assert list(streams["end_to_end_cpu_us_per_event"]) == [
        "producer", "redis", "aggregator", "detector", "total"]


def test_postmaster_pid_is_the_server_s_own(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    written = int((Path(row[0]) / "postmaster.pid").read_text().split("\n", 1)[0])
    assert postmaster_pid(pg_dsn) == written


def test_process_tree_cpu_keeps_the_time_of_children_that_ended() -> None:
    """A child's CPU stays counted once it exits (as the parent's waited-for children's time), so
    the server's figure never goes down when a backend ends mid-run."""
    burn = "import time\nwhile time.process_time() < 0.3: pass"
    before = _process_tree_cpu(os.getpid())
    subprocess.run([sys.executable, "-c", burn], check=True)
    after = _process_tree_cpu(os.getpid())
    assert after - before >= 0.28
    assert _process_tree_cpu(2**22 + 7) == 0.0  # above pid_max: no such process, nothing counted


def test_postmaster_pid_of_a_server_elsewhere_is_none(pg_dsn: str) -> None:
    """A server on another machine (or in a container) answers a backend pid of its own: a local
    process with that pid (here this test's, standing in) is not PostgreSQL, and neither its
    parent nor anything else is measured."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION public.pg_backend_pid() RETURNS int LANGUAGE sql "
                     f"AS 'SELECT {os.getpid()}'")
    elsewhere = psycopg.conninfo.make_conninfo(pg_dsn, options="-c search_path=public,pg_catalog")
    assert postmaster_pid(elsewhere) is None
