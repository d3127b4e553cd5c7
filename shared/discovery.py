"""Finding a running system: ``LIQ_REDIS_URL`` / ``LIQ_PG_DSN`` when set, otherwise the URLs
that ``liq up`` wrote to ``<data_dir>/up.json`` (:data:`UP_FILE`).

Light on purpose: every tool that inspects a running system imports it, ``liq collect``'s
commands too, so it loads neither psycopg nor numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import click
import msgspec

from shared import keys
from shared.settings import CommonSettings

UP_FILE = "up.json"
"""The file in ``<data_dir>`` where ``liq up`` writes the URLs in use, its pid and shard count."""


PID_MAX = 2**31 - 1
"""The largest process id (``pid_t`` is a signed 32-bit int; ``os.kill`` overflows past it)."""


class UpFile(msgspec.Struct):
    """What the tools read of :data:`UP_FILE` (``liq up`` writes more). The shard count is
    bounded as ``LIQ_SHARDS`` is, the pid to a process's (``os.kill`` reads 0 and a negative
    one as process groups): a file with another one is not what ``liq up`` writes."""

    redis_url: str | None = None
    pg_dsn: str | None = None
    shards: Annotated[int, msgspec.Meta(ge=1, le=keys.MAX_SHARDS)] | None = None
    pid: Annotated[int, msgspec.Meta(ge=1, le=PID_MAX)] | None = None


@dataclass(frozen=True)
class Discovered:
    """Where a running system is, for the tools that inspect it."""

    redis_url: str | None
    pg_dsn: str | None
    shards: int
    stale_up: str | None = None
    """Why ``liq up``'s file was ignored: its process is gone (killed), so are its servers; or the
    file is not what ``liq up`` writes (cut short, another program's)."""
    looked_in: str = ""
    """The folder where ``liq up``'s file was looked for (``LIQ_DATA_DIR``, resolved)."""

    def not_found(self, unset: str = "LIQ_REDIS_URL is") -> str:
        """Why no system was found: ``liq up`` is gone, or was never in ``looked_in``."""
        return self.stale_up or (f"no running system found: no liq up in {self.looked_in} (run this where "
                                 f"liq up runs, or set LIQ_DATA_DIR) and {unset} not set (under honcho: "
                                 "honcho run liq …)")


def discover(settings: CommonSettings, environ: dict[str, str]) -> Discovered:
    """Redis URL, PostgreSQL DSN and shard count: the environment first, then ``liq up``'s file
    (whose shard count is the one its processes run with), unless that ``liq up`` is gone."""
    redis_url = settings.redis_url if "LIQ_REDIS_URL" in environ else None  # as validated
    pg_dsn = settings.pg_dsn or None
    shards = settings.shards
    folder = Path(settings.data_dir).resolve()
    up_file = folder / UP_FILE
    if not up_file.exists():
        return Discovered(redis_url, pg_dsn, shards, looked_in=str(folder))
    try:
        info = msgspec.json.decode(up_file.read_bytes(), type=UpFile)
    except msgspec.DecodeError as exc:  # liq up replaces it whole: not one of its files
        return Discovered(redis_url, pg_dsn, shards, looked_in=str(folder),
                          stale_up=f"{up_file} is not liq up's file as it writes it ({exc}): remove it if "
                                   "no liq up runs there")
    if info.pid is not None and not _alive(info.pid):
        return Discovered(redis_url, pg_dsn, shards, looked_in=str(folder),
                          stale_up=f"liq up (pid {info.pid}) is not running: {up_file} is left from it")
    if "LIQ_SHARDS" not in environ and info.shards is not None:
        shards = info.shards
    return Discovered(redis_url or info.redis_url, pg_dsn or info.pg_dsn, shards, looked_in=str(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def require_redis(found: Discovered) -> str:
    """The Redis URL of a running system, or a clear error saying why there is none."""
    if found.redis_url:
        return found.redis_url
    raise click.ClickException(found.not_found())
