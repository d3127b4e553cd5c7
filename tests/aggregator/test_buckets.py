"""Pure bucket math of the aggregator."""

from __future__ import annotations

import math
import random

import msgspec
import pytest

from aggregator import buckets
from aggregator.buckets import LevelKeys, bucket_start, fold
from shared import keys
from shared.levels import level_of, level_size, price_level
from tests.factories import liq


@pytest.mark.parametrize(("base", "price", "size"), [
    ("BTC", 67234.5, 100.0), ("ETH", 3456.7, 10.0), ("SOL", 150.2, 1.0),
    ("DOGE", 0.15, 0.001), ("XRP", 2.5, 0.01), ("BNB", 600.0, 1.0),
])
def test_level_size(base: str, price: float, size: float) -> None:
    assert level_size(base, price) == pytest.approx(size)


@pytest.mark.parametrize(("price", "size", "level"), [
    (67234.5, 100.0, 67200.0), (67200.0, 100.0, 67200.0), (67299.99, 100.0, 67200.0),
    (0.15349, 0.001, 0.153), (3459.99, 10.0, 3450.0),
])
def test_price_level_edges(price: float, size: float, level: float) -> None:
    assert price_level(price, size) == pytest.approx(level)


def test_bucket_start_is_minute_aligned() -> None:
    assert bucket_start(1_729_512_059_999) == 1_729_512_000_000
    assert bucket_start(1_729_512_060_000) == 1_729_512_060_000


def test_fold_sums_per_key_and_side() -> None:
    batch = [
        liq(price=67234.5, quantity=1.0, side="long", exchange="bybit"),
        liq(price=67250.0, quantity=2.0, side="long", exchange="okx"),
        liq(price=67250.0, quantity=0.5, side="short", exchange="okx"),
    ]
    deltas = fold(batch)
    assert sorted(deltas) == ["liq:agg:BTCUSDT:60s:1699999980000", "liq:levels:BTCUSDT:67200:LONG",
                              "liq:levels:BTCUSDT:67200:SHORT"]
    level = deltas["liq:levels:BTCUSDT:67200:LONG"]
    assert level.counts == {"count": 2, "count:bybit": 1, "count:okx": 1}
    assert level.sums == pytest.approx({"value_usd": 67234.5 + 134500.0, "quantity": 3.0,
                                        "value_usd:bybit": 67234.5, "value_usd:okx": 134500.0})
    short = deltas["liq:levels:BTCUSDT:67200:SHORT"]
    assert short.counts == {"count": 1, "count:okx": 1}
    assert short.sums == pytest.approx({"value_usd": 33625.0, "quantity": 0.5, "value_usd:okx": 33625.0})
    bucket = deltas["liq:agg:BTCUSDT:60s:1699999980000"]
    assert bucket.counts == {"count": 3, "count:bybit": 1, "count:okx": 2, "long_count": 2, "short_count": 1}
    assert bucket.sums == pytest.approx({
        "value_usd": 235359.5, "long_usd": 201734.5, "short_usd": 33625.0,
        "value_usd:bybit": 67234.5, "value_usd:okx": 168125.0})


def test_one_fold_keeps_each_symbol_and_minute_in_its_own_bucket() -> None:
    """Events of two symbols around a minute's edge, interleaved, in one read."""
    edge = 1_700_000_040_000
    times = [edge - 1, edge, edge - 2, edge + 59_999, edge + 60_000, edge - 60_000]
    batch = [liq(symbol=symbol, timestamp_ms=ts, price=100.0, quantity=1.0)
             for ts in times for symbol in ("BTCUSDT", "ETHUSDT")]
    counts = {key: d.counts["count"] for key, d in fold(batch).items() if key.startswith("liq:agg:")}
    assert counts == {keys.time_bucket(symbol, start): n for symbol in ("BTCUSDT", "ETHUSDT")
                      for start, n in ((edge - 60_000, 3), (edge, 2), (edge + 60_000, 1))}


def test_a_quantity_in_contracts_of_unknown_size_is_not_added_to_base_quantities() -> None:
    known = liq(price=67_210.0, quantity=0.5)
    contracts = msgspec.structs.replace(liq(price=67_250.0, quantity=1_000.0), quantity_unit="contracts",
                                        notional_known=False)
    (level,) = [d for k, d in fold([known, contracts]).items() if k.startswith("liq:levels:")]
    assert level.counts["count"] == 2 and level.sums["quantity"] == 0.5
    assert level.sums["value_usd"] == pytest.approx(33_605.0)


def test_tiny_prices_keep_their_level_and_bad_level_sizes_are_refused() -> None:
    from shared.errors import ConfigError
    from shared.levels import check_level_sizes, level_of

    assert level_of("PEPE", 3.46e-9) == 3.46e-9 and level_of("X", 4e-11) == 4e-11
    assert price_level(67_234.5, 100.0) == 67_200.0 and price_level(0.15234, 0.001) == 0.152
    for bad in ({"BTC": 0.0}, {"BTC": -100.0}, {"BTC": float("nan")}):
        with pytest.raises(ConfigError, match="LIQ_LEVEL_SIZES"):
            check_level_sizes(bad)


def test_level_size_settings_name_base_assets_in_any_case_for_both_consumers() -> None:
    """``LIQ_LEVEL_SIZES=btc=50`` sets BTC: the aggregator and the writer share the merged sizes."""
    from aggregator.cli import AggregatorSettings
    from shared.levels import level_of, level_sizes
    from shared.settings import load
    from writer.config import WriterSettings
    from writer.service import Writer

    env = {"LIQ_LEVEL_SIZES": "btc=50,Doge=0.01"}
    sizes = level_sizes(load(AggregatorSettings, env).level_sizes)
    assert sizes == {"BTC": 50.0, "ETH": 10.0, "SOL": 1.0, "DOGE": 0.01}
    assert level_of("BTC", 67_260.0, sizes) == 67_250.0
    writer = Writer(None, load(WriterSettings, env), "postgresql://unused", name="t")  # type: ignore[arg-type]
    assert writer.level_sizes == sizes


def test_a_remembered_level_key_is_the_key_the_level_rule_makes_even_when_the_memory_restarts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Property: over prices spanning 16 orders of magnitude, on levels hit again and again
    and with a memory that fills and starts again, every key is the one ``shared.levels``
    and ``shared.keys`` make without it."""
    monkeypatch.setattr(buckets, "LEVEL_KEYS_KEPT", 50)
    rng = random.Random(20261202)
    sizes = {"BTC": 100.0, "ETH": 10.0, "PEPE": 1e-9}
    level_keys = LevelKeys(sizes)
    for k in range(5000):
        symbol = rng.choice(["BTCUSDT", "ETHUSDT", "PEPEUSDT", "DOGEUSDT", "DUSTUSDT"])
        price = rng.choice([67_200.0, 99.999999999, 1e-7 * 3]) if k % 3 == 0 else 10 ** rng.uniform(-8, 8)
        event = liq(symbol=symbol, price=price, side=rng.choice(["long", "short"]))
        expected = keys.price_level(event.symbol, level_of(event.base, event.price, sizes), event.side)
        assert level_keys.of(event) == expected, (symbol, price)
    assert len(level_keys._known) <= 50


def test_a_remembered_level_key_is_the_uncached_one_at_level_boundaries_and_odd_prices() -> None:
    """Property: prices on a level's start, a float step either side, at the rule's 1e-9 nudge,
    zero, negative; each asked twice (the second answer from the memory); a price with no
    level (NaN, infinite) raises as the rule does, remembering nothing."""
    rng = random.Random(7)
    sizes = {"BTC": 100.0, "ETH": 10.0, "PEPE": 1e-9, "ODD": 0.3}
    level_keys = LevelKeys(sizes)
    prices = [0.0, -0.0, -5.0, -67_234.5, 1e-300, 0.1 + 0.2, 0.3, 0.6, 0.9]
    for _ in range(400):
        size = rng.choice([100.0, 10.0, 1e-9, 0.3, 1.0, 0.01, 1e-6, 1e-3])
        start = rng.randint(-50, 10**6) * size
        prices += [start, math.nextafter(start, math.inf), math.nextafter(start, -math.inf),
                   start - size * 1e-9, start - size * 2e-9, start + size * (1 - 1e-9)]
    for symbol in ["BTCUSDT", "ETHUSDT", "PEPEUSDT", "ODDUSDT", "DOGEUSDT"]:
        for price in [*prices, *prices]:
            event = liq(symbol=symbol, price=price)
            expected = keys.price_level(symbol, level_of(event.base, price, sizes), event.side)
            assert level_keys.of(event) == expected, (symbol, price)
    known = len(level_keys._known)
    for price in [math.nan, math.inf, -math.inf]:
        for symbol in ["BTCUSDT", "DOGEUSDT"]:
            event = liq(symbol=symbol, price=price)
            with pytest.raises((ValueError, OverflowError)) as uncached:
                level_of(event.base, price, sizes)
            with pytest.raises(uncached.type):
                level_keys.of(event)
    assert len(level_keys._known) == known
