"""Settings: defaults, coercion, lists/maps, and errors that name the variable."""

from __future__ import annotations

import msgspec
import pytest

from aggregator.cli import AggregatorSettings
from collectors.cli import CollectorSettings
from detector.config import DetectorSettings
from shared.errors import ConfigError
from shared.settings import CommonSettings, load
from writer.config import WriterSettings


class Demo(CommonSettings, frozen=True, kw_only=True):
    threshold_usd: float = 100_000.0
    symbols: list[str] = []
    by_symbol: dict[str, float] = {}
    enabled: bool = False
    mode: str = "auto"


def test_defaults_without_environment() -> None:
    s = load(Demo, {})
    assert s.shards == 4 and s.redis_url.startswith("redis://") and s.symbols == []


def test_coercion_lists_and_mappings() -> None:
    s = load(Demo, {"LIQ_SHARDS": "8", "LIQ_THRESHOLD_USD": "250000", "LIQ_ENABLED": "true",
                    "LIQ_SYMBOLS": "BTCUSDT, ETHUSDT", "LIQ_BY_SYMBOL": "BTCUSDT=250000,ETHUSDT=1e5"})
    assert (s.shards, s.threshold_usd, s.enabled) == (8, 250000.0, True)
    assert s.symbols == ["BTCUSDT", "ETHUSDT"]
    assert s.by_symbol == {"BTCUSDT": 250000.0, "ETHUSDT": 100000.0}


@pytest.mark.parametrize(("var", "value", "expected"), [
    ("LIQ_SHARDS", "many", "a whole number"),
    ("LIQ_THRESHOLD_USD", "lots", "a number"),
    ("LIQ_ENABLED", "perhaps", "true or false"),
    ("LIQ_BY_SYMBOL", "BTCUSDT:5", "KEY=VALUE"),
    ("LIQ_METRICS_PORT", "http", "a whole number"),
])
def test_bad_value_names_variable_and_form(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(Demo, {var: value})
    assert err.value.variable == var
    assert expected in str(err.value) and value in str(err.value)


@pytest.mark.parametrize(("var", "value"), [
    ("LIQ_THRESHOLD_USD", "nan"), ("LIQ_THRESHOLD_USD", "inf"), ("LIQ_THRESHOLD_USD", "-Infinity"),
    ("LIQ_BY_SYMBOL", "BTCUSDT=nan"), ("LIQ_BY_SYMBOL", "ETHUSDT=1e5,BTCUSDT=inf"),
])
def test_non_finite_numbers_are_refused_naming_the_variable(var: str, value: str) -> None:
    """nan passes every "below the minimum" check (all comparisons are false): refused first."""
    with pytest.raises(ConfigError) as err:
        load(Demo, {var: value})
    assert err.value.variable == var and "finite" in str(err.value) and value in str(err.value)


@pytest.mark.parametrize(("cls", "var", "value"), [
    (WriterSettings, "LIQ_SIGNIFICANT_USD", "nan"),
    (WriterSettings, "LIQ_SIGNIFICANT_USD_BY_SYMBOL", "BTCUSDT=nan"),
    (WriterSettings, "LIQ_JANITOR_INTERVAL_S", "nan"),
    (DetectorSettings, "LIQ_MIN_USD", "nan"),
    (DetectorSettings, "LIQ_BAND_EDGES", "25,nan,75"),
])
def test_components_refuse_nan_in_their_settings(cls: type[msgspec.Struct], var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(cls, {var: value})
    assert err.value.variable == var


@pytest.mark.parametrize(("cls", "var", "value", "example"), [
    (AggregatorSettings, "LIQ_LEVEL_SIZES", "BTC=abc", "e.g. BTC=100,ETH=10,SOL=1 "),
    (DetectorSettings, "LIQ_WEIGHTS", "cross_exchange=high", "e.g. cross_exchange=0.6,side_imbalance=0.5 "),
    (CollectorSettings, "LIQ_VENUE_URLS", "ws://127.0.0.1:9001", "e.g. okx=ws://127.0.0.1:9001 "),
    (WriterSettings, "LIQ_SIGNIFICANT_USD_BY_SYMBOL", "BTCUSDT:5", "e.g. BTCUSDT=250000,ETHUSDT=100000 "),
])
def test_a_bad_mapping_is_shown_an_example_of_its_own_keys(cls: type[msgspec.Struct], var: str, value: str,
                                                           example: str) -> None:
    """Level sizes are keyed by base asset, weights by factor, URLs by venue: not by symbol."""
    with pytest.raises(ConfigError) as err:
        load(cls, {var: value})
    assert err.value.variable == var
    assert str(err.value) == f"{var}: expected comma-separated KEY=VALUE pairs, {example}(got {value!r})"


def test_invalid_shard_count_names_variable() -> None:
    with pytest.raises((ConfigError, msgspec.ValidationError)) as err:
        load(Demo, {"LIQ_SHARDS": "0"})
    assert "LIQ_SHARDS" in str(err.value)


def test_overrides_win_over_environment() -> None:
    assert load(Demo, {"LIQ_SHARDS": "8"}, shards=2).shards == 2


def test_log_level_and_embedded_ports_name_their_variable() -> None:
    from shared.errors import ConfigError
    from shared.settings import CommonSettings, load

    with pytest.raises(ConfigError, match="LIQ_LOG_LEVEL.*one of DEBUG, INFO"):
        load(CommonSettings, {"LIQ_LOG_LEVEL": "bogus"})
    with pytest.raises(ConfigError, match="LIQ_EMBEDDED_REDIS_PORT"):
        load(CommonSettings, {"LIQ_EMBEDDED_REDIS_PORT": "abc"})
    with pytest.raises(ConfigError, match="LIQ_EMBEDDED_PG_PORT.*a port number"):
        load(CommonSettings, {"LIQ_EMBEDDED_PG_PORT": "70000"})
    with pytest.raises(ConfigError, match="LIQ_METRICS_PORT.*a port number"):
        load(CommonSettings, {"LIQ_METRICS_PORT": "99999"})
    assert load(CommonSettings, {"LIQ_METRICS_PORT": ""}).metrics_port is None
    assert load(CommonSettings, {"LIQ_LOG_LEVEL": "debug"}).log_level == "debug"


@pytest.mark.parametrize(("cls", "env", "message"), [
    (WriterSettings, {"LIQ_BATCH_SIZE": "0"}, "LIQ_BATCH_SIZE: expected a whole number >= 1 (got '0')"),
    (WriterSettings, {"LIQ_DB_TIMEOUT_S": "0.05"}, "LIQ_DB_TIMEOUT_S: expected a number >= 0.1 (got '0.05')"),
    (WriterSettings, {"LIQ_ROLLUP_RETENTION_DAYS": "30"},
     "LIQ_ROLLUP_RETENTION_DAYS: expected a whole number >= LIQ_RETENTION_DAYS (90) (got '30')"),
    (DetectorSettings, {"LIQ_QUIET_S": "0"}, "LIQ_QUIET_S: expected a number > 0 (got '0')"),
    (CommonSettings, {"LIQ_STREAM_MAXLEN": "5000"},
     "LIQ_STREAM_MAXLEN: expected a whole number from 100,000 to 100,000,000 (entries kept per event stream,"
     " about 320 bytes of Redis memory each; fewer would trim what a consumer has not read yet during a"
     " burst) (got '5000')"),
    (CommonSettings, {"LIQ_STREAM_MAXLEN": "99999999999999999999999"},
     "LIQ_STREAM_MAXLEN: expected a whole number from 100,000 to 100,000,000 (entries kept per event stream,"
     " about 320 bytes of Redis memory each; fewer would trim what a consumer has not read yet during a"
     " burst) (got '99999999999999999999999')"),
    (CommonSettings, {"LIQ_SHARDS": "99999999999999999999999"},
     "LIQ_SHARDS: expected a whole number from 1 to 256 (event streams; every consumer reads each one)"
     " (got '99999999999999999999999')"),
    (DetectorSettings, {"LIQ_VOLUME_CAP_USD": "5000"},
     "LIQ_VOLUME_CAP_USD: expected a number > LIQ_VOLUME_FLOOR_USD (10000) (got '5000')"),
])
def test_a_bound_names_the_form_the_bound_and_the_value(cls: type[msgspec.Struct], env: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(cls, env)
    assert str(raised.value) == message


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/db1", "redis://127.0.0.1:6379/-1", "redis://127.0.0.1:6379/0?db=-2",
    "unix:///run/redis.sock?db=x", "redis://127.0.0.1:6379/0?protocol=4",
])
def test_a_redis_url_whose_database_or_protocol_redis_py_would_ignore_or_refuse_is_refused(url: str) -> None:
    """redis-py drops a database that is no number (``/db1`` reads database 0: another system's
    data) and meets a negative one or a protocol it lacks only when it connects, for ever."""
    with pytest.raises(ConfigError) as err:
        load(CommonSettings, {"LIQ_REDIS_URL": url})
    assert (err.value.variable, err.value.got) == ("LIQ_REDIS_URL", url)
    assert str(err.value).startswith("LIQ_REDIS_URL: expected a Redis URL: redis://HOST:PORT/DB")


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "redis://h:6379/15", "rediss://:pw@h:6380/2",
    "unix:///run/redis.sock", "unix:///run/redis.sock?db=3", "redis://h/0?protocol=2",
])
def test_every_redis_url_form_redis_py_reads_as_written_is_taken(url: str) -> None:
    assert load(CommonSettings, {"LIQ_REDIS_URL": url}).redis_url == url
