"""``liq aggregate``: run one aggregator consumer until Ctrl-C."""

from __future__ import annotations

import asyncio
import sys

import click

from aggregator.service import Aggregator, make_consumer
from shared import runtime
from shared.levels import check_level_sizes, level_sizes
from shared.metrics import serve_consumer_metrics
from shared.redisconn import make_async_redis
from shared.settings import CommonSettings, load

METRICS_PORT = 9421


class AggregatorSettings(CommonSettings, frozen=True, kw_only=True):
    """``LIQ_LEVEL_SIZES=BTC=100,ETH=10`` sets price-level sizes per base asset."""

    level_sizes: dict[str, float] = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_level_sizes(self.level_sizes)


@click.command()
def aggregate() -> None:
    """Maintain liq:levels:* and liq:agg:* hashes from the event streams."""
    settings = load(AggregatorSettings)
    sizes = level_sizes(settings.level_sizes)

    async def main(stop: asyncio.Event) -> None:
        serve_consumer_metrics(settings.metrics_host, settings.metrics_port, METRICS_PORT)
        redis = make_async_redis(settings.redis_url)
        try:
            await make_consumer(redis, settings.shards, Aggregator(redis, sizes)).run(stop)
        finally:
            await redis.aclose()

    sys.exit(runtime.run_service("aggregate", main, settings.log_level))
