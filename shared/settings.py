"""Typed settings from ``LIQ_*`` environment variables, read once and passed down.

Each component declares a frozen Struct of its own settings (``detector.config``,
``writer.config``, …) and loads it with :func:`load`. A field ``foo_bar`` is read from
``LIQ_FOO_BAR``. Values are coerced leniently (``"5"`` → 5, ``"true"`` → True); lists are
comma-separated (``BTCUSDT,ETHUSDT``) and mappings are ``KEY=VALUE`` pairs
(``BTCUSDT=250000,ETHUSDT=100000``). A bad value, or a ``LIQ_*`` variable no process reads (a
typo), stops the process with a :class:`~shared.errors.ConfigError` that names the variable and
the expected form (the ``liq`` command prints it as one line, exit code 78).

Tests build settings with :func:`load` on a plain dict; nothing here reads ``os.environ``
unless asked to.
"""

from __future__ import annotations

import difflib
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from redis.connection import parse_url

from shared import keys
from shared.errors import ConfigError

ENV_PREFIX = "LIQ_"
REDIS_URL_FORM = "a Redis URL: redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH"
DSN_FORM = "a PostgreSQL connection string, e.g. postgresql://user@127.0.0.1:5432/liq"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
S = TypeVar("S", bound=msgspec.Struct)
SETTING_NAMES = frozenset({
    "LIQ_BAND_EDGES", "LIQ_BATCH_AGE_MS", "LIQ_BATCH_SIZE", "LIQ_COMPRESS_AFTER_DAYS",
    "LIQ_CROSS_FULL_VENUES", "LIQ_CROSS_TAU_S", "LIQ_DATA_DIR", "LIQ_DB_TIMEOUT_S", "LIQ_DETECT_SHARDS",
    "LIQ_EMBEDDED_PG_PORT", "LIQ_EMBEDDED_REDIS_PORT", "LIQ_INSTITUTIONAL_USD",
    "LIQ_INSTRUMENTS_REFRESH_S", "LIQ_JANITOR_INTERVAL_S", "LIQ_LEVEL_SIZES", "LIQ_LOG_LEVEL",
    "LIQ_METRICS_HOST", "LIQ_METRICS_PORT", "LIQ_MIN_COUNT", "LIQ_MIN_USD", "LIQ_PARTITIONS_AHEAD_DAYS",
    "LIQ_PG_DSN", "LIQ_PRICE_BAND_BPS", "LIQ_QUIET_S", "LIQ_RATE_CAP_PER_MIN", "LIQ_RECORD_DIR",
    "LIQ_REDIS_URL", "LIQ_RETENTION_DAYS", "LIQ_RING_CAPACITY", "LIQ_ROLLUP_RETENTION_DAYS",
    "LIQ_SAMPLED_GAP_MS", "LIQ_SAMPLED_WEIGHT", "LIQ_SHARDS", "LIQ_SIGNIFICANT_USD",
    "LIQ_SIGNIFICANT_USD_BY_SYMBOL", "LIQ_STORAGE_MODE", "LIQ_STREAM_MAXLEN", "LIQ_TICK_LAG_S", "LIQ_TICK_S",
    "LIQ_VENUE_URLS", "LIQ_VOLUME_CAP_USD", "LIQ_VOLUME_FLOOR_USD", "LIQ_WEIGHTS", "LIQ_WINDOW_S",
})
"""Every variable some process reads (a test keeps it equal to the fields of the components'
settings): any other ``LIQ_*`` variable is a typo, refused by :func:`load` rather than ignored
while its default stays in force. ``LIQ_TEST_*`` belongs to the test suite."""


class CommonSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings every process shares: where Redis is, how events are sharded, metrics, logs."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    pg_dsn: str = ""
    """PostgreSQL/TimescaleDB (empty: none given; ``liq up`` starts its own). Its form is checked
    (:func:`check_dsn`) by the commands that use it: the writer's settings, ``liq up`` and
    ``liq status``; the others never load psycopg."""
    shards: int = 4
    stream_maxlen: int = keys.EVENT_STREAM_MAXLEN
    """Each event stream keeps about this many entries (``XADD MAXLEN ~``), about 320 bytes of
    Redis memory each: the streams are the backlog a stopped consumer catches up from."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "INFO"
    data_dir: str = ".liq"
    embedded_redis_port: int = 0
    """``liq up``'s own Redis listens here (0: a free port)."""
    embedded_pg_port: int = 0
    """``liq up``'s own PostgreSQL listens here (0: a free port)."""
    significant_usd: float = 100_000.0
    significant_usd_by_symbol: dict[str, float] = {}
    """What the writer stores (``shared.significance``): read by the collectors, which route
    significant liquidations to ``liq:significant``, and by the writer, which keeps them."""

    def __post_init__(self) -> None:
        check_redis_url(self.redis_url)
        if not self.metrics_host.strip():
            raise ConfigError("LIQ_METRICS_HOST", "an address to serve metrics on, e.g. 127.0.0.1 "
                              "(0.0.0.0 for every interface)", self.metrics_host)
        if not self.data_dir.strip():  # "" would put the servers' data and the spools in the cwd
            raise ConfigError("LIQ_DATA_DIR", "a folder for the embedded servers' data, caches and spools, "
                              "e.g. .liq", self.data_dir)
        _within("LIQ_SHARDS", self.shards, 1, keys.MAX_SHARDS, "event streams; every consumer reads each one")
        _within("LIQ_STREAM_MAXLEN", self.stream_maxlen, keys.MIN_EVENT_STREAM_MAXLEN,
                keys.MAX_EVENT_STREAM_MAXLEN, "entries kept per event stream, about 320 bytes of Redis memory"
                " each; fewer would trim what a consumer has not read yet during a burst")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError("LIQ_LOG_LEVEL", "one of " + ", ".join(LOG_LEVELS), self.log_level)
        at_least(self, "significant_usd", 0)
        for symbol, usd in self.significant_usd_by_symbol.items():
            if usd < 0:
                raise ConfigError(env_name("significant_usd_by_symbol"), "amounts >= 0", f"{symbol}={usd}")
        for name in ("embedded_redis_port", "embedded_pg_port", "metrics_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(env_name(name), "a port number (0: any free port)", str(port))


def check_redis_url(url: str, variable: str = "LIQ_REDIS_URL") -> None:
    """A :class:`ConfigError` naming ``variable`` unless redis-py can connect with ``url`` as
    written: it would read database 0 for a path that is no number (``/db1``), and refuse a
    negative database or a protocol other than 2 or 3 only when it connects, at every retry."""
    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # untyped in redis-py
    except ValueError as exc:
        raise ConfigError(variable, REDIS_URL_FORM, url) from exc
    ignored_path = "db" not in options and url.startswith("redis") and urlsplit(url).path.strip("/")
    if ignored_path or options.get("db", 0) < 0 or options.get("protocol", 2) not in (2, 3):
        raise ConfigError(variable, REDIS_URL_FORM, url)


def check_dsn(dsn: str) -> None:
    """A :class:`ConfigError` naming ``LIQ_PG_DSN`` when it is set but libpq cannot parse it
    (unset is no error here: the commands that need one say so)."""
    if not dsn.strip():
        return
    import psycopg  # here: the processes that never use a database do not load it

    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError("LIQ_PG_DSN", DSN_FORM, dsn) from exc


def writable_folder(path: str, variable: str = "LIQ_DATA_DIR") -> Path:
    """``path`` as a folder, created when missing (the one function here that touches the disk);
    a :class:`ConfigError` naming ``variable`` when this user cannot create or write it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(variable, "a folder this user can create and write", path) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(variable, "a folder this user can create and write", path)
    return folder


PAIR_EXAMPLES = {
    "LIQ_LEVEL_SIZES": "BTC=100,ETH=10,SOL=1",
    "LIQ_WEIGHTS": "cross_exchange=0.6,side_imbalance=0.5",
    "LIQ_VENUE_URLS": "okx=ws://127.0.0.1:9001",
}
"""The example a bad ``KEY=VALUE`` setting is shown when its keys are not symbols."""
SYMBOL_PAIRS_EXAMPLE = "BTCUSDT=250000,ETHUSDT=100000"


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def at_least(settings: msgspec.Struct, field: str, minimum: float, *, above: bool = False,
             bound: str = "") -> None:
    """A :class:`ConfigError` naming ``LIQ_<FIELD>`` unless that setting is at least ``minimum``
    (more than it, with ``above``). The message names the bound: ``minimum``, or ``bound`` (the
    setting it comes from, say) followed by its value."""
    value = getattr(settings, field)
    if value > minimum if above else value >= minimum:
        return
    form = _expected_form(typing.get_type_hints(type(settings))[field])
    limit = f"{bound} ({minimum:g})" if bound else f"{minimum:g}"
    raise ConfigError(env_name(field), f"{form} {'>' if above else '>='} {limit}", f"{value:g}")


def _within(variable: str, value: int, low: int, high: int, why: str) -> None:
    """A :class:`ConfigError` naming ``variable`` unless ``low <= value <= high``: a huge value
    would hang the process (a stream per shard) or fail every command that takes it."""
    if not low <= value <= high:
        raise ConfigError(variable, f"a whole number from {low:,} to {high:,} ({why})", str(value))


def _expected_form(tp: Any, variable: str = "") -> str:
    origin = typing.get_origin(tp)
    if origin is dict:
        return "comma-separated KEY=VALUE pairs, e.g. " + PAIR_EXAMPLES.get(variable, SYMBOL_PAIRS_EXAMPLE)
    if origin is list:
        return "a comma-separated list, e.g. BTCUSDT,ETHUSDT"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
        return _expected_form(args[0], variable)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    return "a value of type " + getattr(tp, "__name__", str(tp))


def _split_value(raw: str, tp: Any) -> Any:
    """Turn the env string into the shape msgspec can convert (lists and mappings)."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        if raw.strip() == "":
            return None
        return _split_value(raw, args[0])
    if origin is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if origin is dict:
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{part!r} is not KEY=VALUE")
            pairs[key.strip()] = value.strip()
        return pairs
    return raw


def load(cls: type[S], environ: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """Build ``cls`` from ``LIQ_*`` variables in ``environ`` (``os.environ`` when None).

    ``overrides`` (already-typed values, e.g. from CLI options) win over the environment.
    """
    env = os.environ if environ is None else environ
    _refuse_unknown(env, {env_name(f.name) for f in msgspec.structs.fields(cls)})
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        name = env_name(field.name)
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        if name not in env:
            continue
        raw = env[name]
        tp = hints[field.name]
        try:
            values[field.name] = msgspec.convert(_split_value(raw, tp), tp, strict=False)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ConfigError(name, _expected_form(tp, name), raw) from exc
        if _non_finite(values[field.name]):  # nan passes every "< minimum" check that follows
            raise ConfigError(name, _expected_form(tp, name) + ", with finite numbers (not nan or inf)", raw)
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_field_env_from_error(cls, str(exc)), "a valid value", str(exc)) from exc


def _refuse_unknown(env: Mapping[str, str], own: set[str]) -> None:
    known = SETTING_NAMES | own
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and not name.startswith("LIQ_TEST_"):
            suffixes = sorted(k.removeprefix(ENV_PREFIX) for k in known)  # the prefix would match them all
            guess = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.75)
            hint = f"did you mean {ENV_PREFIX}{guess[0]}?" if guess else "README.md, Settings, lists them"
            raise ConfigError(name, f"a liq setting ({hint})", env[name])


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _field_env_from_error(cls: type[msgspec.Struct], message: str) -> str:
    for field in msgspec.structs.fields(cls):
        if f"`$.{field.name}`" in message:
            return env_name(field.name)
    return ENV_PREFIX + "*"
