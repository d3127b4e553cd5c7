"""liq up's pure parts: the pipeline it starts and each process's metrics port."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from shared import up
from shared.discovery import UP_FILE

ENV = {"LIQ_REDIS_URL": "redis://127.0.0.1:1/0", "LIQ_METRICS_PORT": "9300"}


def _ports(children: list[up.Child]) -> list[str | None]:
    return [c.env.get("LIQ_METRICS_PORT") for c in children]


def test_each_process_gets_the_next_metrics_port_in_start_order() -> None:
    children = up._pipeline_children(["okx", "gate"], ENV, 9300)
    assert [c.name for c in children] == ["collect-okx", "collect-gate", "detect", "aggregate", "write"]
    assert _ports(children) == ["9300", "9301", "9302", "9303", "9304"]
    assert all(c.env["LIQ_REDIS_URL"] == ENV["LIQ_REDIS_URL"] for c in children)


@pytest.mark.parametrize("port", [None, 0])
def test_without_a_port_or_with_port_0_every_process_keeps_the_environment(port: int | None) -> None:
    """No LIQ_METRICS_PORT: each its default port; 0: each any free port (the OS picks)."""
    env = {"LIQ_REDIS_URL": ENV["LIQ_REDIS_URL"], **({"LIQ_METRICS_PORT": "0"} if port == 0 else {})}
    children = up._pipeline_children(["okx"], env, port)
    assert [c.env for c in children] == [env] * 4


def test_a_first_port_without_room_for_every_process_is_said_and_not_used(
        caplog: pytest.LogCaptureFixture) -> None:
    """The environment holds the refused port (liq up's children inherit it): it is taken out,
    so that each process binds its own default port instead of all of them that one."""
    env = {**ENV, "LIQ_METRICS_PORT": "65532"}
    with caplog.at_level(logging.ERROR, logger="shared.up"):
        children = up._pipeline_children(["okx", "gate"], env, 65_532)
    assert _ports(children) == [None] * 5
    assert all(c.env == {"LIQ_REDIS_URL": ENV["LIQ_REDIS_URL"]} for c in children)
    assert [r.getMessage() for r in caplog.records] == [
        "LIQ_METRICS_PORT=65532 leaves no room for 5 consecutive ports (the last must be at most 65535); "
        "each process uses its default port"]


TRICKY = {
    "LIQ_PG_DSN": "postgresql://u:p%40x@h:5432/db?sslmode=disable&application_name=liq",
    "LIQ_REDIS_URL": "redis://:pa$$word;x@127.0.0.1:6379/0",
    "LIQ_DATA_DIR": "/tmp/my liq's data #1",
    "LIQ_VENUE_URLS": "okx=ws://127.0.0.1:9001,bybit=ws://[::1]:9002",
}


@pytest.mark.parametrize("dsn", [TRICKY["LIQ_PG_DSN"], "host=h port=5432 dbname=db user=u password=a#b;c"])
def test_servers_env_gives_honcho_and_sh_the_values_as_they_are(tmp_path: Path, dsn: str) -> None:
    """.liq/servers.env is read by honcho (-e) and by POSIX sh (set -a; . file; set +a): a
    user's LIQ_PG_DSN with '&' put the assignment in the background (sh kept no LIQ_PG_DSN),
    and a libpq key=value DSN or a data folder with a space lost its spaces in honcho and ran
    the rest as a command in sh."""
    from honcho.environ import parse

    env = {**TRICKY, "LIQ_PG_DSN": dsn, "HOME": "/root", "PATH": os.environ["PATH"]}
    up._write_servers_env(tmp_path, env, shards=4)
    written = tmp_path / up.SERVERS_ENV_FILE
    names = [name for name in up.SERVERS_ENV if name in env]
    assert {k: v for k, v in parse(written.read_text()).items() if k in names} == {k: env[k] for k in names}
    script = f"set -a; . '{written}'; set +a; " + "; ".join(f'printf "%s\\0" "${name}"' for name in names)
    shell = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": env["PATH"]},
                           check=True)
    assert shell.stderr == ""
    assert shell.stdout.split("\0")[:-1] == [env[k] for k in names]


def test_servers_env_gives_the_processes_the_shard_count_liq_status_expects(tmp_path: Path) -> None:
    """up.json records liq up's LIQ_SHARDS as the count "its processes run with", and liq status
    and liq replay take it from there. Under --servers-only those processes are honcho's or
    supervisord's: without LIQ_SHARDS in servers.env they ran with the default 4 while
    `LIQ_SHARDS=8 liq up --servers-only` made liq replay publish to 8 (4 of them read by no one)."""
    from honcho.environ import parse

    up._write_servers_env(tmp_path, {"LIQ_REDIS_URL": "redis://127.0.0.1:1/0"}, shards=8)
    assert parse((tmp_path / up.SERVERS_ENV_FILE).read_text())["LIQ_SHARDS"] == "8"


def test_up_json_and_servers_env_are_replaced_whole_leaving_no_temporary_file(tmp_path: Path) -> None:
    """liq status and honcho read these files while liq up writes them: written in place, a
    reader could get half a file. Each is written aside and renamed over the old one, so a
    reader that opened the old one reads it whole, and nothing else is left in the folder."""
    options = up.UpOptions(venues=["okx"], simulate=False, duration=None, seed=0, speed=1.0)
    up._write_up_file(tmp_path, "redis://127.0.0.1:1/0", "", options, shards=4)
    up._write_servers_env(tmp_path, {"LIQ_REDIS_URL": "redis://127.0.0.1:1/0"}, shards=4)
    old_up = (tmp_path / UP_FILE).read_text()
    old_env = (tmp_path / up.SERVERS_ENV_FILE).read_text()
    with (tmp_path / UP_FILE).open() as up_reader, (tmp_path / up.SERVERS_ENV_FILE).open() as env_reader:
        up._write_up_file(tmp_path, "redis://127.0.0.1:2/0", "", options, shards=8)
        up._write_servers_env(tmp_path, {"LIQ_REDIS_URL": "redis://127.0.0.1:2/0"}, shards=8)
        assert (up_reader.read(), env_reader.read()) == (old_up, old_env)
    assert json.loads((tmp_path / UP_FILE).read_text())["redis_url"] == "redis://127.0.0.1:2/0"
    assert (tmp_path / up.SERVERS_ENV_FILE).read_text() == "LIQ_REDIS_URL=redis://127.0.0.1:2/0\nLIQ_SHARDS=8\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [up.SERVERS_ENV_FILE, UP_FILE]
