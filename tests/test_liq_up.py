"""``liq up --simulate`` as a user runs it: real processes, embedded servers, Ctrl-C.

Within the time limit, ``liq status --json`` must show events in the streams, ``liq:levels:*``
and ``liq:agg:*`` keys, a cascade status and rows in PostgreSQL; after SIGINT, no process that
``liq up`` started may be left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis
from honcho.environ import parse as honcho_parse

from shared import keys
from shared.errors import EX_CONFIG
from shared.servers import free_port_range, start_redis
from shared.settings import CommonSettings
from shared.venues import VENUE_NAMES
from tests.scrape import scrape

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def _status(env: dict[str, str]) -> dict[str, Any] | None:
    result = subprocess.run([sys.executable, "-m", "shared", "status", "--json"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _ready(report: dict[str, Any] | None) -> bool:
    if not report or "streams" not in report:
        return False
    # the shards, the significant copies and both cascade streams
    every_stream = all(s["length"] > 0 for s in report["streams"])
    rows = report.get("database", {}).get("rows", {})
    return (len(report["streams"]) == CommonSettings().shards + 3 and every_stream
            and report["keys"]["levels"] > 0 and report["keys"]["agg"] > 0
            and report["keys"]["cascade_status"] > 0
            and rows.get("liquidations_significant", 0) > 0 and rows.get("cascade_events", 0) > 0)


PIPELINE = [*(("collector", v) for v in VENUE_NAMES), ("detector", None), ("aggregator", None),
            ("writer", None)]
"""liq up's pipeline processes in the order of their metrics ports: component and venue."""


def _serves_metrics_of(port: int, component: str, venue: str | None) -> bool:
    """The endpoint on ``port`` is that process's: its samples name the component (and venue)."""
    labels = [dict(labelset) for _name, labelset in scrape(port)]
    return any(ls.get("component") == component and venue in (None, *ls.values()) for ls in labels)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_liq_up_simulate_reaches_every_level_and_stops_cleanly(reachable_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    first_port = free_port_range(len(PIPELINE))
    env.update({"LIQ_DATA_DIR": str(reachable_dir / "liq"), "LIQ_METRICS_PORT": str(first_port),
                "LIQ_SIGNIFICANT_USD": "50000"})
    proc = subprocess.Popen([sys.executable, "-m", "shared", "up", "--simulate", "--speed", "5",
                             "--for", "240"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    report: dict[str, Any] | None = None
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            children = _descendants(proc.pid) or children
            report = _status(env)
            if _ready(report):
                break
        assert _ready(report), json.dumps(report, indent=1)[:4000]
        assert report is not None
        with psycopg.connect(report["pg_dsn"]) as conn:  # the user's data: crash-safe settings
            settings = [conn.execute(f"SHOW {name}").fetchone() for name in
                        ("fsync", "full_page_writes", "synchronous_commit")]
        assert settings == [("on",), ("on",), ("on",)]
        for k, (component, source) in enumerate(PIPELINE):  # each its own port, in this order
            assert _serves_metrics_of(first_port + k, component, source), (k, component, source)
        children = _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert proc.returncode == 0, output[-4000:]
    assert len(children) >= 6, "liq up must start servers, simulator, collectors and consumers"
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[p.info if hasattr(p, 'info') else p.pid for p in alive]}"
    assert "all stopped" in output
    assert report is not None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(report["pg_dsn"], connect_timeout=3).close()  # the embedded server is gone
    _assert_redis_kept_its_data(reachable_dir / "liq" / "redis", report)


def _assert_redis_kept_its_data(redis_dir: Path, report: dict[str, Any]) -> None:
    """The embedded Redis keeps its data in .liq/redis: started again, it has the streams (at
    least as long as the last status saw them), their groups and the cascade status hashes."""
    server = start_redis(redis_dir, persistent=True)
    try:
        client = redis.Redis.from_url(server.url)
        for stream in report["streams"]:
            assert client.xlen(stream["stream"]) >= stream["length"], stream["stream"]
        events = [s["stream"] for s in report["streams"] if s["stream"].endswith(":events")]
        assert {g["name"] for s in events for g in client.xinfo_groups(s)} == {b"detector", b"aggregator"}
        assert {g["name"] for g in client.xinfo_groups(keys.SIGNIFICANT_STREAM)} == {b"writer"}
        assert len(client.keys("liq:cascade:status:*")) >= report["keys"]["cascade_status"]
        client.close()
    finally:
        server.stop()


def test_a_stop_during_start_up_leaves_nothing_behind(reachable_dir: Path) -> None:
    """SIGTERM while the simulator is starting (before the pipeline runs) stops it too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(reachable_dir / "liq"), "LIQ_METRICS_PORT": "0"})
    proc = subprocess.Popen([sys.executable, "-m", "shared", "up", "--simulate", "--for", "60"], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[psutil.Process] = []
    simulator: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 60
        while simulator is None and time.monotonic() < deadline and proc.poll() is None:
            seen = _descendants(proc.pid) or seen
            simulator = next((p for p in seen if _is_simulator(p)), None)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    assert simulator is not None, "the simulator was never started"
    assert proc.returncode == 0, output[-3000:]
    _gone, alive = psutil.wait_procs(seen, timeout=10)
    assert not alive, f"left behind: {[p.pid for p in alive]}"


def _is_simulator(process: psutil.Process) -> bool:
    try:
        return "simulate" in process.cmdline()
    except psutil.Error:
        return False


def test_a_second_liq_up_on_the_same_folder_is_refused_before_it_starts_anything(tmp_path: Path) -> None:
    """It would start a second Redis on the first one's append-only file, and remove the first
    one's up.json (``liq status`` would lose it) when it stops."""
    import click

    from shared.up import only_one_up

    data_dir = tmp_path / "liq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env["LIQ_DATA_DIR"] = str(data_dir)
    with only_one_up(data_dir):
        (data_dir / "up.json").write_text("{}")
        result = subprocess.run([sys.executable, "-m", "shared", "up", "--for", "1"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=60, check=False)
        with pytest.raises(click.ClickException, match="already running"), only_one_up(data_dir):
            pass
    assert result.returncode == 1
    assert f"liq up is already running on {data_dir} (pid {os.getpid()})" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["up.json", "up.lock"], (
        "nothing started, nothing removed")
    with only_one_up(data_dir):  # released with its holder
        pass


def test_a_server_that_cannot_start_is_one_clear_line_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from shared import up
    from shared.cli import cli
    from shared.errors import ServerError

    def no_redis(data_dir: Path, port: int) -> None:
        raise ServerError("redis-server did not listen on 127.0.0.1:6390 within 15s")

    monkeypatch.setattr(up, "_redis", no_redis)
    result = CliRunner().invoke(cli, ["up", "--for", "1"], env={"LIQ_DATA_DIR": str(tmp_path / "liq")})
    assert result.exit_code == 1
    assert "Error: redis-server did not listen on 127.0.0.1:6390 within 15s" in result.output


def _is_writer(process: psutil.Process) -> bool:
    try:
        return process.cmdline()[-1:] == ["write"]
    except psutil.Error:
        return False


def test_a_killed_liq_up_orphans_nothing_and_the_next_one_takes_over(reachable_dir: Path) -> None:
    """SIGKILL gives ``liq up`` no chance to stop anything: its processes and its Redis stop by
    themselves (SIGTERM from Linux when their parent dies), and the PostgreSQL that pg_ctl
    detached is stopped by the next start on the folder, with its data."""
    from shared.servers import start_postgres
    from shared.up import only_one_up

    data_dir = reachable_dir / "liq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(data_dir), "LIQ_METRICS_PORT": "0"})
    proc = subprocess.Popen([sys.executable, "-m", "shared", "up", "--venues", "bybit", "--for", "120"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    started = False
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not started:
            assert proc.poll() is None, "liq up ended early"
            children = _descendants(proc.pid)
            started = any(_is_writer(p) for p in children)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert started, "liq up never started its writer"
    postgres = [p for p in psutil.process_iter() if _serves(p, data_dir)]
    assert postgres, "pg_ctl detaches PostgreSQL from liq up"
    _gone, alive = psutil.wait_procs([p for p in children if p not in postgres], timeout=20)
    assert not alive, f"orphaned: {[p.pid for p in alive]}"
    with only_one_up(data_dir):  # the lock went with the killed process
        pass
    info = json.loads((data_dir / "up.json").read_text())
    with psycopg.connect(info["pg_dsn"]) as conn:
        conn.execute("CREATE TABLE kept_across_the_kill (v int)")
    again = start_postgres(data_dir / "pg")
    try:
        assert not any(_alive(p) for p in postgres), "the leftover server was stopped first"
        with psycopg.connect(again.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM kept_across_the_kill").fetchone() == (0,)
    finally:
        again.stop()


def _alive(process: psutil.Process) -> bool:
    """Running, not a zombie (a detached server's parent, init here, may reap it late)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _serves(process: psutil.Process, data_dir: Path) -> bool:
    try:
        cmdline = process.cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and cmdline[0].endswith("/postgres") and str(data_dir / "pg") in " ".join(cmdline)


def test_a_child_printing_a_very_long_line_keeps_running_and_is_copied_whole(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The pump stopped on a line past asyncio's 64 KiB limit, and the child then blocked for good
    on its next write, still "running"."""
    from shared.up import Child, _spawn

    script = "print('x' * 3_000_000); [print(i) for i in range(3000)]; print('done')"

    async def run() -> int:
        child = Child("long", [sys.executable, "-c", script], dict(os.environ))
        await _spawn(child)
        assert child.process is not None
        code = await asyncio.wait_for(child.process.wait(), 30)
        pumps = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*pumps), 30)
        return code

    assert asyncio.run(run()) == 0
    out = capsys.readouterr().out
    assert out.count("x") == 3_000_000 and out.rstrip().endswith("long                  | done")


def test_ctrl_c_while_the_migrations_wait_on_a_silent_database_stops_at_once(
        reachable_dir: Path, redis_url: str) -> None:
    """A database that takes the connection and never answers: Ctrl-C must not wait for it."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts into the backlog, never answers
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(reachable_dir / "liq"), "LIQ_REDIS_URL": redis_url,
                "LIQ_PG_DSN": f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/liq"})
    proc = subprocess.Popen([sys.executable, "-m", "shared", "up", "--venues", "bybit", "--for", "120"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        migrating = False
        while not migrating and time.monotonic() < deadline and proc.poll() is None:
            migrating = any("migrate" in _cmdline(p) for p in _descendants(proc.pid))
        assert migrating, "liq up never started its migrations"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=10)  # not the 15 s connect timeout, nor forever
    finally:
        if proc.poll() is None:
            proc.kill()
        silent.close()
    assert proc.returncode == 0, output[-2000:]
    assert "all stopped" in output


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_a_process_refusing_its_settings_stops_liq_up_instead_of_a_restart_loop(reachable_dir: Path) -> None:
    """A folder the collector cannot write its frames to (LIQ_RECORD_DIR under a file), which it
    finds only when it starts, stops ``liq collect`` with exit code 78 (EX_CONFIG): restarting it
    can never help, so ``liq up`` says so once and stops, exit 1."""
    (reachable_dir / "a file").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(reachable_dir / "liq"), "LIQ_METRICS_PORT": "0",
                "LIQ_RECORD_DIR": str(reachable_dir / "a file" / "frames")})
    result = subprocess.run([sys.executable, "-m", "shared", "up", "--venues", "bybit", "--for", "90"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stdout[-3000:]
    output = result.stdout + result.stderr
    assert "Error: LIQ_RECORD_DIR: expected a folder liq collect can write" in output
    assert "collect-bybit: its settings are wrong (the line above says which); not restarting it" in output
    assert "restart 1 in" not in output
    assert "stopping" in output


def test_a_setting_a_process_would_refuse_stops_liq_up_before_it_starts_a_server(tmp_path: Path) -> None:
    """LIQ_LEVEL_SIZES, read by ``liq migrate``, the aggregator and the writer, was refused by
    ``liq migrate`` once Redis and PostgreSQL had started (and were stopped again): it is now the
    migration's one line at once, exit code 78 (EX_CONFIG), and the data folder stays empty
    (no redis/ nor pg/, no lock: nothing ran)."""
    data_dir = tmp_path / "liq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(data_dir), "LIQ_LEVEL_SIZES": "BTC=abc"})
    result = subprocess.run([sys.executable, "-m", "shared", "up", "--venues", "bybit", "--for", "90"],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == EX_CONFIG, result.stdout[-3000:]
    assert result.stdout == ""
    assert result.stderr == ("Error: LIQ_LEVEL_SIZES: expected comma-separated KEY=VALUE pairs, e.g. "
                             "BTC=100,ETH=10,SOL=1 (got 'BTC=abc')\n")
    assert list(data_dir.iterdir()) == []


REFUSED_BEFORE_SERVERS = [
    ({"LIQ_WEIGHTS": "nonsense=1"}, [], "LIQ_WEIGHTS: expected FACTOR=WEIGHT pairs for "),
    ({"LIQ_VENUE_URLS": "okx=http://x"}, [], "LIQ_VENUE_URLS: expected comma-separated VENUE=ws://"),
    ({"LIQ_INSTRUMENTS_REFRESH_S": "1"}, [], "LIQ_INSTRUMENTS_REFRESH_S: expected 0 (never) or seconds >= "),
    ({"LIQ_SIGNIFICANT_USD": "-1"}, ["--servers-only"], "LIQ_SIGNIFICANT_USD: expected a number >= 0"),
    ({"LIQ_DETECT_SHARDS": "7"}, [], "LIQ_DETECT_SHARDS: expected shard numbers in 0..3"),
]


@pytest.mark.parametrize(("env", "args", "line"), REFUSED_BEFORE_SERVERS,
                         ids=[next(iter(env)) for env, _a, _l in REFUSED_BEFORE_SERVERS])
def test_each_process_settings_are_checked_before_a_server_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: list[str],
        line: str) -> None:
    """The collectors', detector's, aggregator's and writer's own settings, each refused with the
    line that process gives, before liq up starts Redis or PostgreSQL."""
    started = _servers_started(monkeypatch)
    result = _invoke_up(tmp_path, env, args)
    assert (result.exit_code, started) == (EX_CONFIG, []), result.output
    assert result.output.startswith(f"Error: {line}")


@pytest.mark.parametrize(("env", "args"), [({"LIQ_VENUE_URLS": "garbage"}, ["--simulate"]),
                                           ({"LIQ_WEIGHTS": "nonsense=1"}, ["--servers-only"])],
                         ids=["simulated venues", "no detector"])
def test_a_setting_no_process_liq_up_starts_reads_as_given_is_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: list[str]) -> None:
    """With --simulate the collectors get the simulator's LIQ_VENUE_URLS; with --servers-only
    liq up starts no detector (honcho does, with its own environment)."""
    started = _servers_started(monkeypatch)
    result = _invoke_up(tmp_path, env, args)
    assert (result.exit_code, started) == (1, ["redis"]), result.output
    assert "Error: no server in this test" in result.output


def _servers_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The servers liq up starts from now on (in this process), each start refused."""
    from shared import up
    from shared.errors import ServerError

    started: list[str] = []

    def refuse(name: str) -> Any:
        def start(*_args: Any, **_kwargs: Any) -> None:
            started.append(name)
            raise ServerError("no server in this test")
        return start

    monkeypatch.setattr(up, "start_redis", refuse("redis"))
    monkeypatch.setattr(up, "start_postgres", refuse("postgresql"))
    return started


def _invoke_up(tmp_path: Path, env: dict[str, str], args: list[str]) -> Any:
    from click.testing import CliRunner

    from shared.cli import cli

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LIQ_")}
    return CliRunner().invoke(cli, ["up", "--venues", "bybit", *args, "--for", "1"],
                              env={**unset, "LIQ_DATA_DIR": str(tmp_path / "liq"), **env})


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    """The output of ``proc`` up to the first line holding ``marker`` (a line at a time, so
    without sleeping); fails after ``timeout_s`` or when the process ends first."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no line with {marker!r}:\n" + "".join(seen)[-4000:])


def test_servers_only_gives_honcho_what_it_needs_to_run_the_processes(reachable_dir: Path) -> None:
    """The README's honcho path: ``liq up --servers-only --simulate`` starts the servers, the
    database schema and the simulator, and writes their variables to .liq/servers.env;
    ``honcho -e .liq/servers.env start …`` runs Procfile processes against them, and
    ``liq status`` sees those processes (a venue up, every group read)."""
    data_dir = reachable_dir / "liq"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    env.update({"LIQ_DATA_DIR": str(data_dir),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
    up = subprocess.Popen([sys.executable, "-m", "shared", "up", "--servers-only", "--simulate",
                           "--for", "240"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    honcho: subprocess.Popen[bytes] | None = None
    started: list[psutil.Process] = []
    report: dict[str, Any] | None = None
    rest: list[str] = []
    assert up.stdout is not None
    reader = threading.Thread(target=rest.extend, args=(up.stdout,), daemon=True)
    try:
        banner = _read_until(up, "servers up, no pipeline process (the simulator runs)", 120)
        reader.start()  # keeps the pipe drained, so liq up never blocks on its output
        env_file = data_dir / "servers.env"
        written = honcho_parse(env_file.read_text())  # as honcho reads it (values are quoted)
        assert sorted(written) == ["LIQ_DATA_DIR", "LIQ_PG_DSN", "LIQ_REDIS_URL", "LIQ_SHARDS",
                                   "LIQ_VENUE_URLS"], banner
        assert written["LIQ_DATA_DIR"] == str(data_dir)
        assert sorted(p.split("=")[0] for p in written["LIQ_VENUE_URLS"].split(",")) == sorted(VENUE_NAMES)
        assert "collect-" not in banner, "no pipeline process of its own"
        honcho = subprocess.Popen([sys.executable, "-m", "honcho", "-e", str(env_file),
                                   "-f", str(REPO / "Procfile"), "-d", str(reachable_dir), "start",
                                   "collect-okx", "detect", "aggregate", "write"],
                                  env=env, cwd=reachable_dir, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and honcho.poll() is None:
            report = _status(env)
            if report and _honcho_processes_seen(report):
                break
        assert report is not None and _honcho_processes_seen(report), json.dumps(report, indent=1)[:4000]
        assert report["pg_dsn"] == written["LIQ_PG_DSN"] and report["redis_url"] == written["LIQ_REDIS_URL"]
    finally:
        for proc in (honcho, up):
            if proc is None:
                continue
            with contextlib.suppress(psutil.NoSuchProcess):  # the Procfile's processes hold no data_dir
                started += psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if reader.is_alive():
            reader.join(timeout=30)  # it ends at the output's end, once liq up has exited
        up.stdout.close()
    assert up.returncode == 0, "".join(rest)[-4000:]
    assert not env_file.exists(), "servers.env goes with the servers"
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(data_dir) in " ".join(p.info["cmdline"] or [])]
    leftovers += [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert started, "honcho's and liq up's processes were seen"
    assert not leftovers, leftovers


def _honcho_processes_seen(report: dict[str, Any]) -> bool:
    """okx's collector up, each event stream read by a detector and an aggregator, and the
    significant copies by a writer."""
    okx_up = any(v["venue"] == "okx" and v["state"] in ("up", "suspect") for v in report.get("venues", []))
    readers = {s["stream"]: {g["group"] for g in s["groups"] if g["consumers"] > 0}
               for s in report.get("streams", [])}
    shards = [groups for stream, groups in readers.items() if stream.endswith(":events")]
    return (okx_up and len(shards) == 4 and all(g == {"detector", "aggregator"} for g in shards)
            and readers.get(keys.SIGNIFICANT_STREAM) == {"writer"})
