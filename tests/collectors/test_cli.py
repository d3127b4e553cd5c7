"""The collectors' user commands: ``liq parse``, ``liq collect --record`` + ``liq replay``, ``liq venues``.

``liq parse`` is fed one real liquidation frame per venue from the peer corpus
(``../shared/peer-corpus``; a missing folder or record is a failure, never a skip) and, for Gate,
which has no corpus file, a frame in the simulator's format (``collectors/sim/gate.py``). The
record/replay and health tests run a real collector against the exchange simulator and a real
Redis (``redis_url`` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import redis as syncredis
from click.testing import CliRunner, Result

from collectors import VENUES, load_venue
from collectors.base import Collector, CollectorConfig
from collectors.cli import parse, replay, venues, ws_url_problem
from collectors.publisher import Publisher
from collectors.recording import FrameRecord
from collectors.sim.server import ExchangeSimulator
from collectors.venue import ConnectionPlan
from collectors.venues._common import liquidation_to_row
from shared import codec, keys
from shared.market import MarketEvent
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.venues import VENUE_NAMES

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "peer-corpus"
RECEIVED_MS = 1_700_000_000_000
SHARDS = 4
T0 = 1_767_225_600_000
FIELDS = ("exchange", "symbol", "symbol_native", "side", "price", "quantity", "notional_usd", "timestamp_ms")

# Gate has no corpus file: one ``futures.public_liquidates`` update as the simulator sends it
# (size is signed contracts of 0.0001 BTC; negative = sell order = a long liquidated).
GATE_FRAME: dict[str, Any] = {
    "time": 1767225600, "time_ms": 1767225600123, "channel": "futures.public_liquidates", "event": "update",
    "result": [{"price": "67200.5", "size": -3000, "time": 1767225600000, "contract": "BTC_USDT"}]}

# venue -> the frames fed to ``liq parse`` (corpus "stem/record id", or a literal frame)
PARSE_INPUT: dict[str, list[str | dict[str, Any]]] = {
    "binance_usdm": ["binance_usdm/binance_usdm-001"],
    "binance_coinm": ["binance_coinm/binance_coinm-001"],
    "bybit": ["bybit/bybit-005"],
    "okx": ["okx/okx-007"],
    "bitmex": ["bitmex/bitmex-001"],
    "deribit": ["deribit/deribit-001"],
    # the subscribe ack maps chanId 386841 to liq:global; the data frame is routed by it
    "bitfinex": ["bitfinex/bitfinex-001", "bitfinex/bitfinex-002"],
    "htx": ["huobi/huobi-001"],
    "gate": [GATE_FRAME],
    "bitget": ["bitget/bitget-001"],
    "kraken_futures": ["kraken_futures/kraken_futures-001"],
    "dydx": ["dydx_v4/dydx_v4-001"],
    "hyperliquid": ["hyperliquid/hyperliquid-001"],
    "lighter": ["lighter/lighter-003"],
}

# venue -> the exact rows (FIELDS) ``liq parse --received-ms RECEIVED_MS`` prints
PARSE_EXPECTED: dict[str, list[tuple[str, str, str, str, float, float, float, int]]] = {
    "binance_usdm": [("binance_usdm", "BTCUSDT", "BTCUSDT", "short", 4793.91, 0.014, 67.11474,
                      1584059031421)],
    "binance_coinm": [("binance_coinm", "BTCUSD", "BTCUSD_200925", "long", 9314.5, 0.03220784797895754, 300.0,
                       1594622954021)],
    "bybit": [("bybit", "BTCUSDT", "BTCUSDT", "short", 45212.5, 0.009, 406.91249999999997, 1632123952732)],
    "okx": [("okx", "XRPUSD", "XRP-USD-230929", "short", 0.55205, 706.4577483923557, 390.0, 1680173247614)],
    # BitMEX sends no time: the receive time is used
    "bitmex": [("bitmex", "BTCUSD", "XBTUSD", "short", 10106.0, 0.9117356026123096, 9214.0, RECEIVED_MS)],
    "deribit": [("deribit", "BTCUSD", "BTC-PERPETUAL", "long", 4469.5, 0.2505873140172279, 1120.0,
                 1584058044032)],
    "bitfinex": [("bitfinex", "BTCUSDT", "tBTCF0:USTF0", "long", 9135.972557016, 0.00268657,
                  24.544429792502477, 1593522802742)],
    "htx": [("htx", "BTCUSD", "BTC200703", "long", 9062.71, 15.999629249970486, 145000.0, 1593561769833)],
    "gate": [("gate", "BTCUSDT", "BTC_USDT", "long", 67200.5, 0.3, 20160.149999999998, 1767225600000)],
    "bitget": [("bitget", "APEUSDT", "APEUSDT", "long", 0.1649, 83.1, 13.70319, 1777358886549),
               ("bitget", "IPUSDT", "IPUSDT", "long", 0.500280739469, 286.49999999999903, 143.330431857868,
                1777358876983)],
    "kraken_futures": [("kraken_futures", "XRPUSD", "PI_XRPUSD", "long", 0.1736, 69124.42396313364, 12000.0,
                        1593561965283)],
    "dydx": [("dydx", "BTCUSD", "BTC-USD", "long", 22.87, 3.9, 89.193, 1722756890628)],
    "hyperliquid": [("hyperliquid", "BTCUSDC", "BTC", "short", 66653.0, 0.001, 66.653, 1781528065899)],
    "lighter": [("lighter", "BTCUSDC", "1", "short", 75602.8, 0.01664, 1258.0305919999998, 1776687656653)],
}


def corpus_raw(ref: str) -> dict[str, Any]:
    """The ``raw`` frame of corpus record ``stem/record-id``; a missing file or record fails."""
    stem, record_id = ref.split("/")
    path = CORPUS / f"{stem}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"peer corpus file missing: {path} (expected ../shared/peer-corpus)")
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if record["id"] == record_id:
                raw: dict[str, Any] = record["raw"]
                return raw
    raise LookupError(f"record {record_id} not in {path}")


def frame_line(item: str | dict[str, Any]) -> str:
    return json.dumps(corpus_raw(item) if isinstance(item, str) else item)


def invoke(command: Any, args: list[str], stdin: str | None = None,
           env: dict[str, str] | None = None, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(command, args, input=stdin, env=env, catch_exceptions=False)
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    return result


def rows(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def picked(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[f] for f in FIELDS)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``liq replay`` installs a stderr handler bound to CliRunner's stream; remove it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


# -- liq parse ---------------------------------------------------------------------------------


def test_parse_cases_cover_every_venue() -> None:
    assert set(PARSE_INPUT) == set(PARSE_EXPECTED) == set(VENUE_NAMES)
    assert len(VENUE_NAMES) == 14


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_parse_prints_one_json_line_per_liquidation(venue: str) -> None:
    stdin = "".join(frame_line(item) + "\n" for item in PARSE_INPUT[venue])
    result = invoke(parse, [venue, "--received-ms", str(RECEIVED_MS)], stdin)
    assert result.stderr == ""
    got = rows(result.stdout)
    assert [picked(row) for row in got] == PARSE_EXPECTED[venue]
    assert all(row["received_ms"] == RECEIVED_MS and row["event_id"] for row in got)


def test_parse_into_a_reader_that_leaves_early_stops_quietly(tmp_path: Path) -> None:
    """``liq parse < frames | head -1``: the reader closes the pipe after one line; the command
    stops without a BrokenPipeError traceback, and exits 0 as nothing went wrong."""
    from shared.up import liq_command

    frames = tmp_path / "frames.jsonl"
    frames.write_text((frame_line(PARSE_INPUT["bybit"][0]) + "\n") * 20_000)  # more than a pipe holds
    with frames.open("rb") as stdin:
        proc = subprocess.Popen(liq_command("parse", "bybit"), stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        json.loads(proc.stdout.readline())  # one whole row, then the reader leaves
        proc.stdout.close()
        assert proc.wait(timeout=60) == 0
        with proc.stderr:
            assert proc.stderr.read() == b""


@pytest.mark.parametrize(("venue", "frame"), [
    pytest.param("bitfinex", "bitfinex/bitfinex-001", id="bitfinex-subscribe-ack"),
    pytest.param("htx", "huobi/huobi-004", id="htx-sub-ack"),
    pytest.param("htx", {"op": "ping", "ts": 1593561769911}, id="htx-ping"),
    pytest.param("bitmex", "bitmex/bitmex-002", id="bitmex-delete"),
    pytest.param("lighter", "lighter/lighter-001", id="lighter-subscribe-snapshot"),
    pytest.param("gate", {"time": 1767225600, "time_ms": 1767225600000, "channel": "futures.pong",
                          "event": "", "result": None}, id="gate-pong"),
    pytest.param("binance_usdm", {"result": None, "id": 1}, id="binance-subscribe-ack"),
])
def test_parse_prints_nothing_for_control_frames(venue: str, frame: str | dict[str, Any]) -> None:
    result = invoke(parse, [venue], frame_line(frame) + "\n")
    assert (result.stdout, result.stderr) == ("", "")


def test_parse_reports_malformed_lines_carries_on_and_exits_1() -> None:
    good = corpus_raw("binance_usdm/binance_usdm-001")
    other = corpus_raw("binance_usdm/binance_usdm-004")
    stdin = "\n".join([json.dumps(good), "", "{not json", '{"e":1}', json.dumps(other)]) + "\n"
    result = invoke(parse, ["binance_usdm", "--received-ms", str(RECEIVED_MS)], stdin, exit_code=1)
    assert [picked(row) for row in rows(result.stdout)] == [
        ("binance_usdm", "BTCUSDT", "BTCUSDT", "short", 4793.91, 0.014, 67.11474, 1584059031421),
        ("binance_usdm", "BTCUSDT", "BTCUSDT", "long", 9910.0, 0.014, 138.74, 1568014460893),
    ]
    assert result.stderr.splitlines() == [
        "line 3: binance_usdm: JSON is malformed: object keys must be strings (byte 1): '{not json'",
        "line 4: binance_usdm: Expected `str | null`, got `int` - at `$.e`: '{\"e\":1}'",
        "2 malformed frame(s) or row(s) skipped",
    ]


@pytest.mark.parametrize(("venue", "ref"), [
    ("binance_usdm", "binance_usdm/binance_usdm-001"),
    ("deribit", "deribit/deribit-001"),
    ("bitget", "bitget/bitget-001"),
])
def test_parse_dedupe_drops_a_repeated_frame(venue: str, ref: str) -> None:
    line = frame_line(ref) + "\n"
    args = [venue, "--received-ms", str(RECEIVED_MS)]
    plain = rows(invoke(parse, args, line * 3).stdout)
    deduped = rows(invoke(parse, [*args, "--dedupe"], line * 3).stdout)
    n = len(PARSE_EXPECTED[venue])
    assert len(plain) == 3 * n
    assert deduped == plain[:n]
    assert len({row["event_id"] for row in deduped}) == n


def test_equal_liquidations_of_one_frame_are_two_events_and_a_replayed_frame_is_none() -> None:
    """Gate sends every liquidation of a contract and second in one frame, and no ids: two
    liquidations alike in time, side, price and size must not be taken for a replay."""
    row = '{"price":"65000","size":-1,"time":1781000000045,"contract":"BTC_USDT"}'
    frame = ('{"time":1781000000,"channel":"futures.public_liquidates","event":"update","result":['
             + row + "," + row + "]}\n")
    args = ["gate", "--received-ms", str(RECEIVED_MS), "--dedupe"]
    parsed = rows(invoke(parse, args, frame * 2).stdout)
    first, second = parsed
    assert second["event_id"] == first["event_id"] + ":1"
    assert {k: v for k, v in first.items() if k != "event_id"} == {
        k: v for k, v in second.items() if k != "event_id"}


def test_parse_rejects_an_unknown_venue() -> None:
    result = CliRunner().invoke(parse, ["ftx"], input="{}\n")
    assert result.exit_code == 2
    assert "unknown venue 'ftx'" in result.stderr


# -- liq collect --record, liq replay ------------------------------------------------------------


def market(venue: str, n: int) -> list[MarketEvent]:
    bases = ("BTC", "ETH")
    prices = {"BTC": 67_200.0, "ETH": 3_450.0}
    return [MarketEvent(venue=venue, base=bases[i % 2], side="long" if i % 3 else "short",
                        price=prices[bases[i % 2]] + 10 * i, notional_usd=20_000.0 + 1_000 * i,
                        timestamp_ms=T0 + 1_000 * i) for i in range(n)]


def stream_contents(url: str) -> list[Liquidation]:
    client = syncredis.Redis.from_url(url)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    for stream in keys.event_streams(SHARDS):
        entries += cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream))
    client.close()
    return [codec.decode_liquidation(fields[b"d"]) for _id, fields in entries]


def as_rows(liqs: list[Liquidation]) -> list[dict[str, Any]]:
    """Rows as ``liq replay --stdout`` prints them (through JSON), in a stable order."""
    out = [json.loads(json.dumps(liquidation_to_row(liq))) for liq in liqs]
    return sorted(out, key=lambda r: (r["exchange"], r["event_id"], r["side"]))


async def run_collector(venue: str, redis_url: str, n_events: int, record_path: Path | None = None,
                        ) -> tuple[list[Liquidation], Collector]:
    """A collector against the simulated venue until the ``n_events`` it emits are published."""
    spec = load_venue(venue)
    async with ExchangeSimulator([venue]) as exchange:
        redis = make_async_redis(redis_url)
        collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                              base_url=exchange.urls[venue],
                                              symbols=list(spec.default_symbols),
                                              record_path=record_path, health_every_s=0.05))
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        try:
            async with asyncio.timeout(20):
                await collector.wait_until(lambda c: c.health.connections_total > 0)
                await exchange.wait_subscribed(venue, collector.health.connections_total)
                sent = await exchange.emit(market(venue, n_events))
                await collector.wait_until(lambda c: c.published == len(sent))
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await redis.aclose()
    return sent, collector


def normalized(liq: Liquidation) -> Liquidation:
    return msgspec.structs.replace(liq, received_ms=0)


@pytest.mark.integration
@pytest.mark.parametrize("venue", ["bybit", "htx"])
def test_recorded_frames_replay_to_the_same_liquidations(venue: str, redis_url: str, tmp_path: Path) -> None:
    record = tmp_path / "rec" / f"{venue}.jsonl"
    sent, collector = asyncio.run(run_collector(venue, redis_url, 6, record))
    published = stream_contents(redis_url)
    assert len(sent) == 6
    assert collector.published == len(published) == 6
    assert as_rows([normalized(x) for x in published]) == as_rows([normalized(x) for x in sent])

    lines = record.read_text(encoding="utf-8").splitlines()
    recs = [msgspec.json.decode(line, type=FrameRecord) for line in lines]
    assert {r.venue for r in recs} == {venue}
    assert {r.conn for r in recs} <= {p.label for p in collector.plans}
    if venue == "htx":  # gzip frames are recorded decompressed, as JSON text
        assert all(not r.binary and r.frame.startswith("{") for r in recs)

    result = invoke(replay, [str(record), "--stdout", "--speed", "0"])
    assert sorted(rows(result.stdout), key=lambda r: (r["exchange"], r["event_id"], r["side"])) \
        == as_rows(published)
    counts = json.loads(result.stderr.splitlines()[-1])
    assert counts == {"frames": len(recs), "liquidations": 6, "duplicates": 0, "parse_errors": 0,
                      "bad_lines": 0}

    syncredis.Redis.from_url(redis_url).flushdb()
    env = {"LIQ_REDIS_URL": redis_url, "LIQ_SHARDS": str(SHARDS)}
    result = invoke(replay, [str(record), "--speed", "0"], env=env)
    assert result.stdout == ""
    assert json.loads(result.stderr.splitlines()[-1])["liquidations"] == 6
    client = syncredis.Redis.from_url(redis_url)
    lengths = {s: client.xlen(s) for s in keys.event_streams(SHARDS)}
    client.close()
    assert sum(lengths.values()) == 6
    assert as_rows(stream_contents(redis_url)) == as_rows(published)


@pytest.mark.integration
def test_a_record_file_that_cannot_be_written_stops_the_recording_not_the_collecting(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """/dev/full refuses every write (ENOSPC, as a full disk does): each frame is still parsed
    and published, none counted malformed, and the recording stops with one error line."""
    sent, collector = asyncio.run(run_collector("bybit", redis_url, 300, Path("/dev/full")))
    assert len(sent) == 300
    assert collector.published == len(stream_contents(redis_url)) == 300
    assert collector.health.parse_errors == 0
    said = [r.getMessage() for r in caplog.records if "/dev/full" in r.getMessage()]
    assert len(said) == 1 and "recording to /dev/full stopped" in said[0], said


@pytest.mark.integration
def test_a_collector_asked_to_stop_says_so_at_info_not_as_a_warning(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="collectors.base"):
        asyncio.run(run_collector("bybit", redis_url, 2))
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "state down" in r.getMessage()]
    assert said == [("INFO", "bybit: state down (collector stopped)")]


@pytest.mark.integration
def test_a_record_buffer_lost_at_stop_is_said_and_the_collector_stops_cleanly(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two frames fit in the file's buffer: nothing fails until the close at stop flushes it."""
    sent, collector = asyncio.run(run_collector("bybit", redis_url, 2, Path("/dev/full")))
    assert collector.published == len(sent) == 2
    lost = [r for r in caplog.records if "the end of the recording to /dev/full was lost" in r.getMessage()]
    assert len(lost) == 1


# -- liq venues ----------------------------------------------------------------------------------

ENDPOINTS = {
    "binance_usdm": ("wss://fstream.binance.com/market/stream?streams=!forceOrder@arr", "sampled"),
    "binance_coinm": ("wss://dstream.binance.com/stream?streams=!forceOrder@arr", "sampled"),
    "bybit": ("wss://stream.bybit.com/v5/public/linear", "complete"),
    "okx": ("wss://ws.okx.com:8443/ws/v5/public", "partial"),
    "bitmex": ("wss://ws.bitmex.com/realtime", "complete"),
    "deribit": ("wss://www.deribit.com/ws/api/v2", "complete"),
    "bitfinex": ("wss://api-pub.bitfinex.com/ws/2", "complete"),
    "htx": ("wss://api.hbdm.com/linear-swap-notification", "complete"),
    "gate": ("wss://fx-ws.gateio.ws/v4/ws/usdt", "complete"),
    "bitget": ("wss://ws.bitget.com/v3/ws/public", "aggregated"),
    "kraken_futures": ("wss://futures.kraken.com/ws/v1", "complete"),
    "dydx": ("wss://indexer.dydx.trade/v4/ws", "complete"),
    "hyperliquid": ("wss://api.hyperliquid.xyz/ws", "partial"),
    "lighter": ("wss://mainnet.zklighter.elliot.ai/stream", "complete"),
}


def venue_rows(redis_url: str, stderr: str = "") -> list[dict[str, Any]]:
    result = invoke(venues, ["--json"], env={"LIQ_REDIS_URL": redis_url})
    assert stderr in result.stderr if stderr else result.stderr == ""
    out: list[dict[str, Any]] = json.loads(result.stdout)
    return out


def test_venues_json_lists_every_venue_without_redis(tmp_path: Path) -> None:
    got = venue_rows(f"unix://{tmp_path}/no-redis.sock", stderr="cannot reach Redis at unix://")
    assert [row["venue"] for row in got] == list(VENUE_NAMES)
    assert {row["venue"]: (row["endpoint"], row["semantics"]) for row in got} == ENDPOINTS
    for row in got:
        assert set(row) == {"venue", "endpoint", "markets", "semantics", "semantics_note", "state", "reason",
                            "events", "last_event_age_s", "collectors"}
        assert row["markets"] and row["semantics_note"]
        health = (row["state"], row["reason"], row["events"], row["last_event_age_s"])
        assert health == ("not running", "", 0, None)
    assert got[0] == {
        "venue": "binance_usdm",
        "endpoint": "wss://fstream.binance.com/market/stream?streams=!forceOrder@arr",
        "markets": "USDⓈ-M perpetuals and dated futures (all symbols)",
        "semantics": "sampled",
        "semantics_note": "at most 1 liquidation per symbol per second (latest-in-1000ms snapshot)",
        "state": "not running", "reason": "", "events": 0, "last_event_age_s": None, "collectors": [],
    }


def test_venues_text_output_names_every_venue(tmp_path: Path) -> None:
    result = invoke(venues, [], env={"LIQ_REDIS_URL": f"unix://{tmp_path}/no-redis.sock"})
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * len(VENUE_NAMES)
    assert [line.split()[0] for line in lines[::2]] == list(VENUE_NAMES)
    assert lines[0].split()[:3] == ["binance_usdm", "not", "running"]
    assert lines[1].strip() == ("USDⓈ-M perpetuals and dated futures (all symbols); "
                                "at most 1 liquidation per symbol per second (latest-in-1000ms snapshot)")


@pytest.mark.integration
def test_venues_json_shows_health_written_by_a_collector(redis_url: str) -> None:
    sent, collector = asyncio.run(run_collector("bybit", redis_url, 3))
    assert len(sent) == 3
    stored = syncredis.Redis.from_url(redis_url).hgetall(keys.venue_health("bybit"))
    # The collector has stopped: its last health write says so (a stopped venue never shows "up").
    assert stored[b"state"] == b"down" and stored[b"events"] == b"3"
    assert stored[b"connections"] == f"0/{len(collector.plans)}".encode()

    got = {row["venue"]: row for row in venue_rows(redis_url)}
    bybit = got.pop("bybit")
    assert (bybit["state"], bybit["reason"], bybit["events"]) == ("down", "collector stopped", 3)
    assert 0.0 <= bybit["last_event_age_s"] < 60.0
    assert bybit["semantics"] == "complete"
    # The endpoint shown is the one the collector connected to (here the simulator), not the live one.
    assert bybit["endpoint"] == collector.config.base_url
    assert bybit["endpoint"].startswith("ws://127.0.0.1:")
    assert {(row["state"], row["events"]) for row in got.values()} == {("not running", 0)}
    assert {name: row["endpoint"] for name, row in got.items()} == {
        name: endpoint for name, (endpoint, _) in ENDPOINTS.items() if name != "bybit"}


def test_venues_shows_a_collector_that_stopped_writing_its_health_as_stopped(redis_url: str) -> None:
    """SIGKILLed or OOM-killed: the hash still says up, but nobody has written it for an hour."""
    hour_ago = int(time.time() * 1000) - 3_600_000
    client = syncredis.Redis.from_url(redis_url)
    client.hset(keys.venue_health("bybit"), mapping={"state": "up", "reason": "", "events": "5",
                                                      "updated_ms": str(hour_ago),
                                                      "last_liquidation_received_ms": str(hour_ago)})
    client.close()
    bybit = {row["venue"]: row for row in venue_rows(redis_url)}["bybit"]
    assert (bybit["state"], bybit["events"]) == ("stopped", 5)


def test_venues_and_replay_find_the_system_liq_up_runs(redis_url: str, tmp_path: Path) -> None:
    """No LIQ_REDIS_URL: liq up's file (in LIQ_DATA_DIR) names the Redis, as for liq status."""
    (tmp_path / "up.json").write_text(json.dumps({"redis_url": redis_url, "pg_dsn": "postgresql://x",
                                                  "shards": SHARDS, "pid": os.getpid()}))
    client = syncredis.Redis.from_url(redis_url)
    client.hset(keys.venue_health("okx"), mapping={"state": "up", "events": "2",
                                                    "updated_ms": str(int(time.time() * 1000))})
    client.close()
    result = invoke(venues, ["--json"], env={"LIQ_DATA_DIR": str(tmp_path)})
    okx = {row["venue"]: row for row in json.loads(result.stdout)}["okx"]
    assert (okx["state"], okx["events"]) == ("up", 2) and result.stderr == ""


def test_replay_without_a_running_system_says_so(tmp_path: Path) -> None:
    frame = ('{"time":1781000000,"channel":"futures.public_liquidates","event":"update","result":['
             '{"price":"65000","size":-1,"time":1781000000045,"contract":"BTC_USDT"}]}')
    record = tmp_path / "r.jsonl"
    record.write_text(json.dumps({"venue": "gate", "conn": "gate:usdt", "received_ms": RECEIVED_MS,
                                  "frame": frame}) + "\n")
    result = CliRunner().invoke(replay, [str(record)], env={"LIQ_DATA_DIR": str(tmp_path / "none")})
    assert result.exit_code == 1 and "no running system found" in result.output
    result = CliRunner().invoke(replay, [str(record), "--speed", "0"],
                                env={"LIQ_REDIS_URL": f"unix://{tmp_path}/no.sock"})
    assert result.exit_code == 1 and f"cannot publish to Redis at unix://{tmp_path}/no.sock" in result.output
    assert "Traceback" not in result.output


# -- plans are built off the event loop ----------------------------------------------------------


@pytest.mark.integration
def test_collector_builds_its_plans_in_a_worker_thread(redis_url: str) -> None:
    """A venue whose plans block (live Bybit lists its symbols over HTTP) must not stall the loop."""

    async def main() -> tuple[bool, int, int]:
        loop = asyncio.get_running_loop()
        planning, release = asyncio.Event(), threading.Event()
        real = load_venue("bybit")
        threads: list[threading.Thread] = []

        def blocking_plans(base_url: str, symbols: Any) -> list[ConnectionPlan]:
            threads.append(threading.current_thread())
            loop.call_soon_threadsafe(planning.set)
            release.wait(10)
            return real.plans(base_url, symbols)

        spec = dataclasses.replace(real, plans=blocking_plans)
        async with ExchangeSimulator(["bybit"]) as exchange:
            redis = make_async_redis(redis_url)
            collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                                  base_url=exchange.urls["bybit"], health_every_s=0.05))
            stop = asyncio.Event()
            task = asyncio.create_task(collector.run(stop))
            try:
                async with asyncio.timeout(10):
                    await planning.wait()  # reached only if the loop is free while plans() blocks
                    during = collector.health.connections_total
                    release.set()
                    await collector.wait_until(lambda c: c.health.connections_total > 0)
                    await exchange.wait_subscribed("bybit", collector.health.connections_total)
            finally:
                release.set()
                stop.set()
                await asyncio.wait_for(task, 10)
                await redis.aclose()
        off_loop = len(threads) == 1 and threads[0] is not threading.main_thread()
        return off_loop, during, len(collector.plans)

    off_loop, during, planned = asyncio.run(main())
    assert off_loop, "plans() must run once, in a worker thread"
    assert (during, planned) == (0, 2)  # bybit: the linear and the inverse endpoint


def test_replay_skips_a_line_that_is_not_a_recorded_frame_names_it_and_exits_1(tmp_path: Path) -> None:
    """A recording cut short by a crash ends in half a line: the frames around it are replayed."""
    later = {**GATE_FRAME, "result": [{**GATE_FRAME["result"][0], "price": "67100.5", "time": 1767225601000}]}
    record = tmp_path / "gate.jsonl"
    record.write_text("\n".join([
        msgspec.json.encode(FrameRecord("gate", "c", RECEIVED_MS, json.dumps(GATE_FRAME))).decode(),
        '{"venue": "gate", "conn": "c", "recei',
        msgspec.json.encode(FrameRecord("gate", "c", RECEIVED_MS + 1, json.dumps(later))).decode(),
    ]) + "\n")
    result = invoke(replay, [str(record), "--stdout", "--speed", "0"], exit_code=1)
    assert [row["price"] for row in rows(result.stdout)] == [67200.5, 67100.5]
    assert f"{record}: line 2 is not a recorded frame" in result.stderr
    assert json.loads(result.stderr.splitlines()[-1]) == {
        "frames": 2, "liquidations": 2, "duplicates": 0, "parse_errors": 0, "bad_lines": 1}


def test_replay_logs_at_the_level_liq_log_level_sets(tmp_path: Path) -> None:
    import logging

    record = tmp_path / "empty.jsonl"
    record.write_text("")
    root = logging.getLogger()
    level = root.level
    try:
        invoke(replay, [str(record), "--stdout"],
               env={"LIQ_LOG_LEVEL": "ERROR", "LIQ_DATA_DIR": str(tmp_path)})
        assert root.level == logging.ERROR
    finally:
        root.setLevel(level)


@pytest.mark.integration
def test_a_collector_whose_publisher_died_is_not_reported_as_stopped_on_request(redis_url: str) -> None:
    """The publisher failing on a bug stops the collector with its error: the venue's health must
    not say 'collector stopped' (asked for), which ``liq status --check`` leaves alone."""
    from unittest import mock

    from shared.status import problems
    from shared.venue_health import venue_row

    async def bug(self: Publisher, batch: list[Liquidation]) -> None:
        raise RuntimeError("a bug")

    async def run() -> None:
        spec = load_venue("bybit")
        async with ExchangeSimulator(["bybit"]) as exchange:
            redis = make_async_redis(redis_url)
            collector = Collector(CollectorConfig(venue=spec, redis=redis, shards=SHARDS,
                                                  base_url=exchange.urls["bybit"],
                                                  symbols=list(spec.default_symbols)))
            task = asyncio.create_task(collector.run(asyncio.Event()))
            try:
                await collector.wait_until(lambda c: c.health.connections_total > 0)
                await exchange.wait_subscribed("bybit", collector.health.connections_total)
                await exchange.emit(market("bybit", 1))
                await asyncio.wait_for(task, 20)  # ends on its own: the publisher died
            finally:
                await redis.aclose()

    with mock.patch.object(Publisher, "_publish", bug), pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(run())
    raw = cast(dict[bytes, bytes], syncredis.Redis.from_url(redis_url).hgetall(keys.venue_health("bybit")))
    health = {k.decode(): v.decode() for k, v in raw.items()}
    assert health["state"] == "down"
    assert health["reason"] == "collector failed: the publisher stopped unexpectedly"
    row = {"venue": "bybit", **venue_row(health, int(health["updated_ms"]))}
    assert problems({"venues": [row]}) == [
        "venue bybit: down (collector failed: the publisher stopped unexpectedly)"]


@pytest.mark.parametrize("url", [
    *(load_venue(name).live_url for name in VENUES),
    "wss://fstream.binance.com/market/stream?streams=!forceOrder@arr",
    "ws://[::1]:9001", "ws://[::1]:9001/okx?x=1", "wss://example.com", "ws://127.0.0.1:9001",
    "ws://user:secret@127.0.0.1:9001/path",
])
def test_a_websocket_url_a_collector_can_open_is_accepted(url: str) -> None:
    """Every live endpoint, the simulator's (ws://127.0.0.1:PORT), IPv6 literals, paths, query
    strings, no port (the scheme's) and user:password are what websockets connects to."""
    assert ws_url_problem(url) is None


@pytest.mark.parametrize(("url", "problem"), [
    ("ws://127.0.0.1:9001/ws#okx", "fragment"),
    ("ws://user@127.0.0.1:9001", "username provided without password"),
    ("ws://127.0.0.1:0", "port 0"),
    ("ws://127.0.0.1\x00:9001", "a control character"),
])
def test_a_url_websockets_refuses_at_every_attempt_is_refused_at_start(url: str, problem: str) -> None:
    """websockets refuses a fragment and a user without a password (InvalidURI) at every connection
    attempt, retried for ever, and takes port 0 for the scheme's default port (80 or 443); a
    control character makes a host no resolver finds."""
    assert problem in (ws_url_problem(url) or "")
