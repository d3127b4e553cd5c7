"""The writer's settings (``LIQ_*``), loaded once in the CLI and passed down.

``pg_dsn`` is optional here so that ``load`` never fails for unrelated commands; the commands
that need a database call :func:`require_dsn`, which names ``LIQ_PG_DSN`` when it is missing.
"""

from __future__ import annotations

from typing import Literal

from shared.errors import ConfigError
from shared.levels import check_level_sizes
from shared.settings import DSN_FORM, CommonSettings, at_least, check_dsn

StorageMode = Literal["auto", "timescale", "native"]


class WriterSettings(CommonSettings, frozen=True, kw_only=True):
    storage_mode: StorageMode = "auto"
    batch_size: int = 500
    batch_age_ms: int = 100
    retention_days: int = 90
    rollup_retention_days: int = 365
    compress_after_days: int = 7
    partitions_ahead_days: int = 2
    janitor_interval_s: float = 3600.0
    db_timeout_s: float = 60.0
    """Longest wait for the database to take a batch: past it, the connection is given up (a
    host that hangs, a network path that died without a reset) and the batch retried."""
    level_sizes: dict[str, float] = {}
    """``LIQ_LEVEL_SIZES`` (shared with the aggregator): price-level sizes per base asset."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_dsn(self.pg_dsn)
        at_least(self, "batch_size", 1)
        at_least(self, "batch_age_ms", 0)
        at_least(self, "retention_days", 1)
        # rollups must outlive their raw rows
        at_least(self, "rollup_retention_days", self.retention_days, bound="LIQ_RETENTION_DAYS")
        at_least(self, "compress_after_days", 1)
        at_least(self, "partitions_ahead_days", 0)
        at_least(self, "janitor_interval_s", 1)
        at_least(self, "db_timeout_s", 0.1)
        check_level_sizes(self.level_sizes)


def require_dsn(settings: WriterSettings) -> str:
    """The DSN, or a :class:`ConfigError` naming ``LIQ_PG_DSN``."""
    if not settings.pg_dsn.strip():
        raise ConfigError(
            "LIQ_PG_DSN", DSN_FORM + " (it is not set; liq up sets it for the processes it starts, "
            "and liq status shows its DSN)", None,
        )
    return settings.pg_dsn
