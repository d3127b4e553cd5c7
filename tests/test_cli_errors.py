"""The operator's error paths through the real ``liq`` entry point: a bad ``LIQ_*`` value, a
Redis that does not answer, no running system. Each stops the command at once with one line
saying what is wrong (the variable and the form expected, or the server), a non-zero exit, and
no traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shared.errors import EX_CONFIG
from shared.servers import free_port
from shared.up import liq_command

BAD_VALUES = [
    # (variable, value, command, what the message must say)
    ("LIQ_REDIS_URL", "foo", ["status"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["venues"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["dlq", "list"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["watch", "--no-follow"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["detect"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["aggregate"], "a Redis URL"),
    ("LIQ_REDIS_URL", "foo", ["collect", "okx"], "a Redis URL"),
    ("LIQ_REDIS_URL", "", ["collect", "okx"], "a Redis URL"),
    ("LIQ_REDIS_URL", "", ["status"], "a Redis URL"),
    ("LIQ_REDIS_URL", "redis://127.0.0.1:port/0", ["aggregate"], "a Redis URL"),
    ("LIQ_REDIS_URL", "redis://127.0.0.1:6379/db1", ["dlq", "list"], "a Redis URL"),
    ("LIQ_PG_DSN", "nonsense", ["write"], "a PostgreSQL connection string"),
    ("LIQ_PG_DSN", "nonsense", ["migrate"], "a PostgreSQL connection string"),
    ("LIQ_PG_DSN", "nonsense", ["status"], "a PostgreSQL connection string"),
    ("LIQ_PG_DSN", "not a dsn", ["up", "--for", "1"], "a PostgreSQL connection string"),
    ("LIQ_METRICS_HOST", "", ["aggregate"], "an address to serve metrics on"),
    ("LIQ_DATA_DIR", "", ["collect", "okx"], "a folder"),
    ("LIQ_RECORD_DIR", "/proc/no/such/dir", ["collect", "okx"], "a folder liq collect can write"),
    ("LIQ_DATA_DIR", "/proc/no/such/dir", ["up", "--for", "1"], "a folder this user can create and write"),
    ("LIQ_DATA_DIR", "/proc/no/such/dir", ["simulate", "--max-events", "1", "--exit-when-done"],
     "a folder this user can create and write"),
    ("LIQ_REDIS_ULR", "redis://127.0.0.1:6379/0", ["status"], "a liq setting (did you mean LIQ_REDIS_URL?"),
    ("LIQ_RETENTION_DAY", "30", ["migrate"], "a liq setting (did you mean LIQ_RETENTION_DAYS?"),
    ("LIQ_WHATEVER", "1", ["aggregate"], "a liq setting (README.md, Settings, lists them)"),
    ("LIQ_DATA_DIR", " ", ["status"], "a folder"),
    ("LIQ_VENUE_URLS", "okx_spot=ws://127.0.0.1:9001", ["collect", "okx"], "comma-separated VENUE=ws://"),
    ("LIQ_VENUE_URLS", "okx=127.0.0.1:9001", ["collect", "okx"], "comma-separated VENUE=ws://"),
    ("LIQ_VENUE_URLS", "okx=ws://127.0.0.1:1 bybit=ws://127.0.0.1:2", ["collect", "okx"],
     "comma-separated VENUE=ws://HOST:PORT"),
    ("LIQ_VENUE_URLS", "okx=ws://127.0.0.1:90x1", ["collect", "okx"], "comma-separated VENUE=ws://"),
    ("LIQ_VENUE_URLS", "okx=ws://:9001", ["collect", "okx"], "comma-separated VENUE=ws://"),
    ("LIQ_INSTRUMENTS_REFRESH_S", "-5", ["collect", "okx"], "0 (never) or seconds >= 60"),
    ("LIQ_INSTRUMENTS_REFRESH_S", "0.5", ["collect", "okx"], "0 (never) or seconds >= 60"),
    ("LIQ_RING_CAPACITY", "8", ["detect"], "a whole number >= 16"),
    ("LIQ_QUIET_S", "0", ["detect"], "a number > 0"),
    ("LIQ_SAMPLED_WEIGHT", "0.5", ["detect"], "a number >= 1"),
    ("LIQ_VOLUME_CAP_USD", "5000", ["detect"], "a number > LIQ_VOLUME_FLOOR_USD (10000)"),
    ("LIQ_MIN_COUNT", "0", ["evaluate"], "a whole number >= 1"),
]


def run_liq(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIQ_")}
    return subprocess.run(liq_command(*args), env={**clean, "LIQ_DATA_DIR": str(cwd / ".liq"), **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("var", "value", "args", "form"), BAD_VALUES,
                         ids=[f"{v}={val!r}-{' '.join(a)}" for v, val, a, _ in BAD_VALUES])
def test_a_bad_setting_stops_the_command_with_one_line(var: str, value: str, args: list[str], form: str,
                                                       tmp_path: Path) -> None:
    env = {var: value}
    if var == "LIQ_PG_DSN":
        env["LIQ_REDIS_URL"] = "redis://127.0.0.1:1/0"  # never reached: the DSN stops it first
    result = run_liq(args, env, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EX_CONFIG, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Error: {var}: expected {form}"), lines[0]
    assert f"(got {value!r})" in lines[0]


UNREACHABLE_REDIS = [["dlq", "list"], ["dlq", "replay"], ["dlq", "drop", "--yes"], ["watch", "--no-follow"],
                     ["replay", "frames.jsonl"]]


@pytest.mark.parametrize("args", UNREACHABLE_REDIS, ids=[" ".join(a) for a in UNREACHABLE_REDIS])
def test_a_redis_that_does_not_answer_is_one_line(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "frames.jsonl").write_text(
        '{"venue":"okx","conn":"c","received_ms":1,"frame":"{\\"event\\":\\"subscribe\\"}","binary":false}\n'
        '{"venue":"okx","conn":"c","received_ms":2,"frame":"{\\"arg\\":{\\"channel\\":\\"liquidation-orders\\"},'
        '\\"data\\":[{\\"instId\\":\\"BTC-USDT-SWAP\\",\\"instType\\":\\"SWAP\\",\\"details\\":[{\\"bkPx\\":\\"60000\\",'
        '\\"sz\\":\\"1\\",\\"side\\":\\"sell\\",\\"posSide\\":\\"long\\",\\"ts\\":\\"1700000000000\\"}]}]}","binary":false}\n')
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_liq(args, {"LIQ_REDIS_URL": url}, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and url.split("/")[2] in error[0], result.stderr


NO_SYSTEM = [["status"], ["dlq", "list"], ["watch"], ["replay", "frames.jsonl"]]


@pytest.mark.parametrize("args", NO_SYSTEM, ids=[" ".join(a) for a in NO_SYSTEM])
def test_no_running_system_is_one_line(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "frames.jsonl").write_text("")
    result = run_liq(args, {}, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: no running system found"), lines[0]


@pytest.mark.parametrize("args", NO_SYSTEM, ids=[" ".join(a) for a in NO_SYSTEM])
def test_no_running_system_names_the_folder_it_looked_in(args: list[str], tmp_path: Path) -> None:
    """Run outside the folder liq up runs in (a relative LIQ_DATA_DIR, the default), the command
    says where it looked rather than only "run liq up", which is running."""
    (tmp_path / "frames.jsonl").write_text("")
    result = run_liq(args, {"LIQ_DATA_DIR": ".liq"}, tmp_path)
    unset = "LIQ_REDIS_URL and LIQ_PG_DSN are" if args == ["status"] else "LIQ_REDIS_URL is"
    assert result.returncode == 1
    assert result.stderr.strip() == (f"Error: no running system found: no liq up in {tmp_path / '.liq'} "
                                     f"(run this where liq up runs, or set LIQ_DATA_DIR) and {unset} not set "
                                     "(under honcho: honcho run liq …)")


def test_status_with_redis_down_says_so_and_shows_no_empty_redis_sections(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_liq(["status"], {"LIQ_REDIS_URL": url}, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"redis: {url}   postgres: None"
    assert lines[1].startswith(f"REDIS UNREACHABLE: Error 111 connecting to {url.split('/')[2]}")
    assert len(lines) == 2, lines  # no STREAMS, VENUES, KEYS or CASCADES headings over nothing
    json_result = run_liq(["status", "--json"], {"LIQ_REDIS_URL": url}, tmp_path)
    assert json_result.returncode == 1
    report = json.loads(json_result.stdout)
    assert sorted(report) == ["pg_dsn", "problems", "redis_error", "redis_url"]
    assert report["problems"] == [f"redis: {report['redis_error']}"]


OUT_OF_RANGE = [
    (["up", "--for", "-5"], "--for"), (["up", "--for", "0"], "--for"), (["up", "--speed", "-1"], "--speed"),
    (["watch", "--last", "-3"], "--last"), (["watch", "--big", "-1"], "--big"),
    (["replay", "frames.jsonl", "--speed", "-2"], "--speed"),
    (["simulate", "--speed", "-1"], "--speed"), (["simulate", "--duration", "-1"], "--duration"),
    (["simulate", "--max-events", "-1"], "--max-events"),
    (["bench", "--events", "0"], "--events"), (["bench", "--rows", "-1"], "--rows"),
]


@pytest.mark.parametrize(("args", "option"), OUT_OF_RANGE, ids=[" ".join(a) for a, _ in OUT_OF_RANGE])
def test_an_option_out_of_range_is_refused_before_anything_starts(args: list[str], option: str,
                                                                  tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shared.cli import cli

    (tmp_path / "frames.jsonl").write_text("")
    with CliRunner().isolated_filesystem(tmp_path):
        (Path.cwd() / "frames.jsonl").write_text("")
        result = CliRunner().invoke(cli, args, env={"LIQ_DATA_DIR": str(tmp_path / ".liq")})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize(("args", "says"), [
    (["detect", "--help"], "default: LIQ_DETECT_SHARDS, else all"),
    (["collect", "--help"], "default: LIQ_VENUE_URLS, else the live endpoint"),
])
def test_help_names_the_setting_behind_a_default(args: list[str], says: str) -> None:
    from click.testing import CliRunner

    from shared.cli import cli

    result = CliRunner().invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0 and says in " ".join(result.output.split()), result.output


def test_a_webhook_url_that_is_not_http_is_refused_as_an_option(tmp_path: Path) -> None:
    result = run_liq(["watch", "--webhook", "hooks.slack.com/services/x"],
                     {"LIQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2
    assert "Invalid value for '--webhook': must start with http:// or https://" in result.stderr


def test_a_record_file_that_cannot_be_written_is_refused_as_an_option(tmp_path: Path) -> None:
    result = run_liq(["collect", "okx", "--record", "/proc/no/such/dir/okx.jsonl"], {}, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2
    assert "Invalid value for '--record': cannot write /proc/no/such/dir/okx.jsonl" in result.stderr


@pytest.mark.parametrize(("url", "problem"), [
    ("ws://127.0.0.1:90x1", "Port could not be cast to integer value as '90x1'"),
    ("ws://127.0.0.1:9001 bybit=ws://127.0.0.1:9002", "Port could not be cast"),
    ("ws://host name:9001", "a space in the URL"),
    ("http://127.0.0.1:9001", "the scheme is not ws:// or wss://"),
    ("ws://:9001", "no host"),
])
def test_a_url_no_collector_could_open_is_refused_as_an_option(url: str, problem: str,
                                                               tmp_path: Path) -> None:
    """It would otherwise fail every connection attempt, retried with backoff for ever."""
    result = run_liq(["collect", "okx", "--url", url], {}, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2
    assert f"Invalid value for '--url': {url!r} is not a WebSocket URL: {problem}" in result.stderr


@pytest.mark.parametrize("text", ['{"redis_url": "redis://127.0.0.1:1/0", "pg_d',
                                  '{"redis_url": "redis://127.0.0.1:1/0", "shards": 100000000}',
                                  '{"redis_url": "redis://127.0.0.1:1/0", "pid": 0}'],
                         ids=["cut short", "shard count out of range", "pid not a process id"])
def test_an_up_json_cut_short_is_one_line(tmp_path: Path, text: str) -> None:
    up_file = tmp_path / ".liq" / "up.json"
    up_file.parent.mkdir()
    up_file.write_text(text)
    result = run_liq(["status"], {}, tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Error: {up_file} is not liq up's file as it writes it ("), lines


def test_a_redis_that_answers_no_is_not_said_not_to_answer(tmp_path: Path) -> None:
    """A one-shot tool meeting a Redis that refuses the password, or that is loading its data,
    says so (as ``liq status`` does, ``shared.streams.redis_failure``), not "does not answer":
    both are redis-py ConnectionErrors, but the server answered."""
    import redis as syncredis

    from shared import servers
    from tests.shared.test_status import _loading_redis

    server = servers.start_redis(tmp_path / "redis")
    try:
        syncredis.Redis.from_url(server.url).config_set("requirepass", "s3cret")
        wrong = server.url.replace("redis://", "redis://:wrong@")
        refused = run_liq(["dlq", "list"], {"LIQ_REDIS_URL": wrong}, tmp_path)
    finally:
        server.stop()
    with _loading_redis() as url:
        loading = run_liq(["dlq", "list"], {"LIQ_REDIS_URL": url}, tmp_path)
    for result in (refused, loading):
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1, (result.returncode, result.stderr)
    assert refused.stderr.strip().splitlines() == [
        "Error: Redis refused the request: AuthenticationError: "
        "invalid username-password pair or user is disabled."]
    assert loading.stderr.strip().splitlines() == [
        "Error: Redis is loading its data (it answers once done; try again): "
        "Redis is loading the dataset in memory"]
