"""Schema migrations: ``sql/NNN_name[.variant].sql`` applied in order, per storage mode.

A file without a variant applies to both modes; ``.native`` and ``.timescale`` to one mode;
``.ts-columnstore`` / ``.ts-compress`` to TimescaleDB >= / < 2.18 (the compression API was
renamed in 2.18). ``{{name}}`` placeholders are filled from :class:`PlanParams`.

:func:`plan` is pure (mode + TimescaleDB version → ordered statements), so the TimescaleDB path
can be executed outside psycopg (tests run it in PGlite). :func:`migrate` detects the mode
(storage.md §1.4), records it with the extension version in ``schema_meta``, refuses a mode that
differs from the recorded one, and applies each version not yet in ``schema_migrations`` in its
own transaction. Re-running applies nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg

from shared.errors import LiqError
from writer.config import StorageMode
from writer.rows import timescale_retention_error
from writer.statements import VALUE_COLUMN_TYPE

logger = logging.getLogger(__name__)

Mode = Literal["timescale", "native"]


def _migrations_dir() -> Path:
    """``writer/sql`` in an installed wheel (pyproject maps the top-level ``sql/`` there), else
    the repository's ``sql/`` beside ``writer/`` (a checkout, an editable install)."""
    here = Path(__file__).resolve().parent
    installed = here / "sql"
    return installed if installed.is_dir() else here.parent / "sql"


SQL_DIR = _migrations_dir()
MIN_TIMESCALE = (2, 13)
COLUMNSTORE_FROM = (2, 18)
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)(?:\.([a-z0-9-]+))?\.sql$")
_PLACEHOLDER_RE = re.compile(r"\{\{([a-z_]+)\}\}")

BOOTSTRAP = (
    """CREATE TABLE IF NOT EXISTS schema_meta (
        key text PRIMARY KEY, value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS schema_migrations (
        version text PRIMARY KEY, name text NOT NULL, filename text NOT NULL,
        checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""",
)


class MigrationError(LiqError):
    """The schema cannot be (or must not be) migrated as asked."""


VALUE_TYPE = "double precision"


def old_schema_problem(value_type: tuple[object, ...] | None) -> str | None:
    """What is wrong with a database whose ``VALUE_COLUMN_TYPE`` answer is ``value_type``: a
    pre-release schema (numeric values); None when the schema is current or not there yet."""
    if value_type is None or value_type[0] == VALUE_TYPE:
        return None
    return (f"liquidations_significant.value_usd is {value_type[0]}, not {VALUE_TYPE}: this database "
            "was created by a pre-release schema. Recreate it (for the embedded server: stop liq and "
            "remove .liq/pg), then run `liq migrate`")


@dataclass(frozen=True)
class PlanParams:
    retention_days: int = 90
    rollup_retention_days: int = 365
    compress_after_days: int = 7


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    filename: str
    checksum: str
    statements: tuple[str, ...]


@dataclass
class MigrateResult:
    mode: Mode
    extversion: str | None
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)


def parse_version(text: str) -> tuple[int, int, int]:
    """``"2.23.0-dev"`` → ``(2, 23, 0)``."""
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return (parts + [0, 0, 0])[0], (parts + [0, 0, 0])[1], (parts + [0, 0, 0])[2]


def _variant_applies(variant: str | None, mode: Mode, ts_version: tuple[int, int, int] | None) -> bool:
    if variant is None:
        return True
    if variant == "native":
        return mode == "native"
    if mode != "timescale" or ts_version is None:
        return False
    if variant == "timescale":
        return True
    if variant == "ts-columnstore":
        return ts_version[:2] >= COLUMNSTORE_FROM
    if variant == "ts-compress":
        return ts_version[:2] < COLUMNSTORE_FROM
    raise MigrationError(f"unknown migration variant {variant!r}")


def render(text: str, values: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise MigrationError(f"no value for placeholder {{{{{match.group(1)}}}}}")
        return values[match.group(1)]

    return _PLACEHOLDER_RE.sub(sub, text)


def plan(mode: Mode, ts_version: str | None = None, params: PlanParams | None = None,
         sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Every migration of ``mode`` in order, with rendered, split statements."""
    if mode == "timescale" and ts_version is None:
        raise MigrationError("the TimescaleDB plan needs the extension version")
    version = parse_version(ts_version) if ts_version else None
    p = params or PlanParams()
    if mode == "timescale" and (error := timescale_retention_error(p.retention_days)) is not None:
        raise error
    values = {
        "partition_by": "PARTITION BY RANGE (time)" if mode == "native" else "",
        "retention_days": str(int(p.retention_days)),
        "rollup_retention_days": str(int(p.rollup_retention_days)),
        "compress_after_days": str(int(p.compress_after_days)),
    }
    paths = sorted(sql_dir.glob("*.sql"))
    if not paths:  # an installation without its sql/ folder would otherwise migrate nothing
        raise MigrationError(f"no migrations in {sql_dir}: the installation is missing its sql/ files")
    out: list[Migration] = []
    for path in paths:
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"unexpected file name in {sql_dir}: {path.name}")
        if not _variant_applies(match.group(3), mode, version):
            continue
        text = path.read_text()
        out.append(Migration(
            version=match.group(1), name=match.group(2), filename=path.name,
            checksum=hashlib.sha256(text.encode()).hexdigest()[:16],
            statements=tuple(split_statements(render(text, values))),
        ))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version for mode {mode}: {versions}")
    return out


def split_statements(sql: str) -> list[str]:
    """Split a script on top-level ``;`` (quotes, dollar quotes and comments respected)."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        j = _skip_token(sql, i)
        if j == i + 1 and sql[i] == ";":
            statements.append("".join(buf))
            buf = []
        else:
            buf.append(sql[i:j])
        i = j
    statements.append("".join(buf))
    return [s.strip() for s in statements if _strip_comments(s).strip()]


_DOLLAR_RE = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def _skip_token(sql: str, i: int) -> int:
    """Index just after the lexical unit starting at ``i`` (a quote, comment, or one char)."""
    ch = sql[i]
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return len(sql) if end < 0 else end + 2
    if ch in ("'", '"'):
        j = i + 1
        while j < len(sql):
            if sql[j] == ch:
                if sql.startswith(ch, j + 1):
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(sql)
    if ch == "$":
        match = _DOLLAR_RE.match(sql, i)
        if match:
            end = sql.find(match.group(0), match.end())
            return len(sql) if end < 0 else end + len(match.group(0))
    return i + 1


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


# --- applying ---------------------------------------------------------------------------------


def _scalar(conn: psycopg.Connection[tuple[object, ...]], query: str) -> object:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def timescale_version(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    value = _scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    return None if value is None else str(value)


def recorded_meta(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """``schema_meta`` as a dict ({} when the database was never migrated)."""
    if _scalar(conn, "SELECT to_regclass('schema_meta')") is None:
        return {}
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM schema_meta").fetchall()}


LOADER_SETTING = "timescaledb.disable_load"
"""A setting TimescaleDB's loader defines when it starts: it exists in a session only where the
library was preloaded, and any role may read it."""


def _preloaded(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether ``shared_preload_libraries`` names timescaledb. Only superusers and
    pg_read_all_settings may read it (a plain owner of the database may not): for the others,
    whether the loader's own setting exists. Guessing instead is no option: CREATE EXTENSION
    where the library is not preloaded ends the session (the loader's FATAL 'extension
    "timescaledb" must be preloaded'), and the database owner may run it (the extension is
    trusted)."""
    try:
        with conn.transaction():
            preload = _scalar(conn, "SELECT current_setting('shared_preload_libraries')")
    except psycopg.errors.InsufficientPrivilege:
        return _scalar(conn, f"SELECT current_setting('{LOADER_SETTING}', true)") is not None
    return "timescaledb" in str(preload or "")


def _try_create_extension(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    available = _scalar(conn, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not available or not _preloaded(conn):
        return
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        logger.info("created extension timescaledb")
    except psycopg.Error as exc:
        logger.warning("timescaledb is available but CREATE EXTENSION failed: %s", exc)


def detect_mode(conn: psycopg.Connection[tuple[object, ...]], requested: StorageMode,
                may_create_extension: bool = True) -> tuple[Mode, str | None]:
    """The mode to use and the TimescaleDB version (storage.md §1.4)."""
    version = timescale_version(conn)
    if version is None and requested != "native" and may_create_extension:
        _try_create_extension(conn)
        version = timescale_version(conn)
    license_ = str(_scalar(conn, "SELECT current_setting('timescaledb.license', true)") or "")
    usable = (version is not None and license_ == "timescale"
              and parse_version(version)[:2] >= MIN_TIMESCALE)
    if requested == "timescale" and not usable:
        raise MigrationError(
            "LIQ_STORAGE_MODE=timescale but TimescaleDB is not usable here "
            f"(extversion={version}, license={license_ or 'n/a'}; needs the Timescale-License edition "
            f">= {MIN_TIMESCALE[0]}.{MIN_TIMESCALE[1]}, preloaded via shared_preload_libraries)"
        )
    if requested == "auto" and version is not None and not usable:
        logger.warning("timescaledb %s (license %s) lacks caggs/compression or is too old: native mode",
                       version, license_ or "n/a")
    mode: Mode = "timescale" if requested != "native" and usable else "native"
    return mode, version


def check_recorded(recorded: dict[str, str], mode: Mode) -> None:
    previous = recorded.get("mode")
    if previous and previous != mode:
        raise MigrationError(
            f"this database was created in {previous} mode but {mode} mode was selected; "
            f"the table layouts differ (a hypertable cannot be made from a partitioned table). "
            f"Set LIQ_STORAGE_MODE={previous} to keep using it, or migrate into a new database."
        )


def migrate(conn: psycopg.Connection[tuple[object, ...]], requested: StorageMode = "auto",
            params: PlanParams | None = None) -> MigrateResult:
    """Detect the mode, record it, and apply pending migrations. ``conn`` must be autocommit."""
    conn.execute("SELECT pg_advisory_lock(hashtext('liq_migrate'))")
    try:
        for statement in BOOTSTRAP:
            conn.execute(statement)
        recorded = recorded_meta(conn)
        mode, version = detect_mode(conn, requested, may_create_extension=not recorded)
        check_recorded(recorded, mode)
        result = MigrateResult(mode=mode, extversion=version)
        with conn.transaction():
            _record_meta(conn, mode, version)
        done = {str(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
        for migration in plan(mode, version, params):
            _apply_one(conn, migration, done, result)
        if mode == "timescale":
            _apply_policies(conn, params or PlanParams())
        problem = old_schema_problem(conn.execute(VALUE_COLUMN_TYPE).fetchone())
        if problem is not None:
            raise MigrationError(problem)
        return result
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtext('liq_migrate'))")


def _apply_one(conn: psycopg.Connection[tuple[object, ...]], migration: Migration,
               done: dict[str, str], result: MigrateResult) -> None:
    if migration.version in done:
        if done[migration.version] != migration.checksum:
            logger.warning("migration %s changed since it was applied (not re-applied)", migration.filename)
        result.already.append(migration.version)
        return
    with conn.transaction():
        for statement in migration.statements:
            conn.execute(statement.encode())
        conn.execute(
            "INSERT INTO schema_migrations (version, name, filename, checksum) VALUES (%s, %s, %s, %s)",
            (migration.version, migration.name, migration.filename, migration.checksum),
        )
    logger.info("applied migration %s", migration.filename)
    result.applied.append(migration.version)


CONNECT_TIMEOUT_S = 15
"""A server that takes the connection but never answers fails the migration instead of hanging."""

APPLY_POLICIES = "SELECT liq_apply_policies(make_interval(days => %s), make_interval(days => %s), " \
                 "make_interval(days => %s))"


def _apply_policies(conn: psycopg.Connection[tuple[object, ...]], params: PlanParams) -> None:
    """Bring the TimescaleDB policies to the current settings (006 and 007 set them only once)."""
    with conn.transaction():
        changed = conn.execute(APPLY_POLICIES, (params.retention_days, params.rollup_retention_days,
                                                params.compress_after_days)).fetchall()
    for (line,) in changed:
        logger.info("policy: %s", line)


def _record_meta(conn: psycopg.Connection[tuple[object, ...]], mode: Mode, version: str | None) -> None:
    for key, value in (("mode", mode), ("extversion", version or "none")):
        conn.execute(
            "INSERT INTO schema_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now() "
            "WHERE schema_meta.value IS DISTINCT FROM EXCLUDED.value",
            (key, value),
        )


def migrate_dsn(dsn: str, requested: StorageMode = "auto", params: PlanParams | None = None) -> MigrateResult:
    """Open an autocommit connection to ``dsn`` and :func:`migrate` it."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        return migrate(conn, requested, params)
