"""``liq write`` (the database writer) and ``liq migrate`` (schema migrations)."""

from __future__ import annotations

import asyncio
import sys

import click
import psycopg

from shared import logs, runtime
from shared.metrics import serve_consumer_metrics
from shared.redisconn import make_async_redis
from shared.settings import load
from writer.config import WriterSettings, require_dsn
from writer.migrate import MigrationError, PlanParams, migrate_dsn
from writer.service import Writer

METRICS_PORT = 9431


def plan_params(settings: WriterSettings) -> PlanParams:
    return PlanParams(retention_days=settings.retention_days,
                      rollup_retention_days=settings.rollup_retention_days,
                      compress_after_days=settings.compress_after_days)


@click.command()
def write() -> None:
    """Store significant liquidations and cascades in PostgreSQL/TimescaleDB."""
    settings = load(WriterSettings)
    dsn = require_dsn(settings)

    async def main(stop: asyncio.Event) -> None:
        serve_consumer_metrics(settings.metrics_host, settings.metrics_port, METRICS_PORT)
        redis = make_async_redis(settings.redis_url)
        writer = Writer(redis, settings, dsn)
        try:
            await writer.run(stop)
        finally:
            await writer.aclose()
            await redis.aclose()

    sys.exit(runtime.run_service("write", main, settings.log_level))


@click.command()
def migrate() -> None:
    """Apply the SQL migrations (idempotent); TimescaleDB is detected unless LIQ_STORAGE_MODE says."""
    settings = load(WriterSettings)
    dsn = require_dsn(settings)
    logs.configure(settings.log_level, "migrate")
    try:
        result = migrate_dsn(dsn, settings.storage_mode, plan_params(settings))
    except (MigrationError, psycopg.Error) as exc:
        raise click.ClickException(f"migration failed: {exc}") from exc
    ext = f"TimescaleDB {result.extversion}" if result.mode == "timescale" else "plain PostgreSQL"
    click.echo(f"storage mode: {result.mode} ({ext}); applied {len(result.applied)} migration(s)"
               f"{' ' + ', '.join(result.applied) if result.applied else ''}, "
               f"{len(result.already)} already applied")
