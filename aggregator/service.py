"""The aggregator process: event shards → price-level and time-bucket hashes in Redis.

Each batch's increments and the XACK of its entries go out in one MULTI/EXEC, so a batch is
applied exactly once: either the hashes moved and the entries are acked, or neither happened
and the entries are redelivered. Any number of aggregator consumers can share the group.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import redis.asyncio as aioredis

from aggregator.buckets import DEFAULT_LEVEL_SIZES, fold
from shared import codec, keys
from shared.metrics import EVENTS_OUT
from shared.models import Liquidation
from shared.streams import Message, StreamConsumer

COMPONENT = "aggregator"


def consumer_name() -> str:
    return f"aggregator-{socket.gethostname()}-{os.getpid()}"


class Aggregator:
    def __init__(self, redis: aioredis.Redis, level_sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES,
                 ttl_s: int = keys.L2_TTL_SECONDS) -> None:
        self.redis = redis
        self.level_sizes = level_sizes
        self.ttl_s = ttl_s

    async def handle(self, messages: list[Message[Liquidation]]) -> None:
        deltas = fold((m.value for m in messages), self.level_sizes)
        pipe = self.redis.pipeline(transaction=True)
        for key, delta in deltas.items():
            for name, count in delta.counts.items():
                pipe.hincrby(key, name, count)
            for name, total in delta.sums.items():
                pipe.hincrbyfloat(key, name, total)
            pipe.expire(key, self.ttl_s)
        by_stream: dict[str, list[str]] = {}
        for m in messages:
            by_stream.setdefault(m.stream, []).append(m.id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, keys.AGGREGATOR_GROUP, *ids)
        await pipe.execute()
        EVENTS_OUT.labels(COMPONENT, "redis").inc(len(messages))


def make_consumer(redis: aioredis.Redis, shards: int, aggregator: Aggregator,
                  name: str | None = None) -> StreamConsumer[Liquidation]:
    return StreamConsumer(
        redis=redis, group=keys.AGGREGATOR_GROUP, consumer=name or consumer_name(),
        streams=keys.event_streams(shards), decode=codec.decode_liquidation,
        handler=aggregator.handle, component=COMPONENT,
    )
