"""The aggregator process: event shards → price-level and time-bucket hashes in Redis.

Each batch's increments and the XACK of its entries run in one Lua script (atomic in Redis), so
a batch is applied exactly once: either the hashes moved and the entries are acked, or neither
happened and the entries are redelivered. Any number of aggregator consumers can share the group.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aggregator.buckets import fold
from shared import codec, keys
from shared.levels import DEFAULT_LEVEL_SIZES
from shared.metrics import EVENTS_OUT
from shared.models import Liquidation
from shared.streams import Message, StreamConsumer

COMPONENT = "aggregator"


def consumer_name() -> str:
    return f"aggregator-{socket.gethostname()}-{os.getpid()}"


WRONG_TYPE = "LIQWRONGTYPE"
"""The error code the script answers when a hash key holds another type (nothing was written)."""


class KeyTypeConflict(Exception):
    """A hash key the batch must increment holds another type (another program wrote it).

    Not a server failure, so not retried: the consumer loop isolates the events that touch that
    key and dead-letters them (``liq dlq replay --group aggregator`` once the key is deleted);
    the other events are applied."""


# One EVALSHA per batch: every HINCRBY/HINCRBYFLOAT/EXPIRE of the batch and the XACK of its
# entries run atomically inside Redis. Building ~13 commands per event in Python capped the
# aggregator at ~11k events/s; a flat argument list is several times cheaper.
#   KEYS: the hash keys, then the streams to ack
#   ARGV: ttl, number of hash keys, group, then per hash key: n_int, n_float, then its
#         (field, increment) pairs (ints first), then per stream: n_ids, ids
#   Redis does not undo a script's writes when a command in it fails, so every hash key's type
#   is checked before the first write: a key some other program set to a string fails the batch
#   whole, with nothing applied, instead of half-applying it on every retry.
APPLY_BATCH_LUA = """
local ttl = ARGV[1]
local nkeys = tonumber(ARGV[2])
local group = ARGV[3]
for k = 1, nkeys do
  local kind = redis.call('TYPE', KEYS[k])['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    return redis.error_reply('""" + WRONG_TYPE + """ ' .. KEYS[k] .. ' holds a ' .. kind)
  end
end
local i = 4
for k = 1, nkeys do
  local key = KEYS[k]
  local ni, nf = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, ni do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]); i = i + 2 end
  for _ = 1, nf do redis.call('HINCRBYFLOAT', key, ARGV[i], ARGV[i + 1]); i = i + 2 end
  redis.call('EXPIRE', key, ttl)
end
for s = nkeys + 1, #KEYS do
  local nids = tonumber(ARGV[i])
  i = i + 1
  for j = i, i + nids - 1, 500 do
    redis.call('XACK', KEYS[s], group, unpack(ARGV, j, math.min(j + 499, i + nids - 1)))
  end
  i = i + nids
end
return nkeys
"""


class Aggregator:
    def __init__(self, redis: aioredis.Redis, level_sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES,
                 ttl_s: int = keys.L2_TTL_SECONDS) -> None:
        self.redis = redis
        self.level_sizes = level_sizes
        self.ttl_s = ttl_s
        self.apply_batch = redis.register_script(APPLY_BATCH_LUA)

    async def handle(self, messages: list[Message[Liquidation]]) -> None:
        deltas = fold((m.value for m in messages), self.level_sizes)
        script_keys: list[str] = list(deltas)
        args: list[str | int | float] = [self.ttl_s, len(deltas), keys.AGGREGATOR_GROUP]
        for delta in deltas.values():  # floats are sent as repr() (hiredis packs them so)
            args += (len(delta.counts), len(delta.sums))
            for count_item in delta.counts.items():
                args += count_item
            for sum_item in delta.sums.items():
                args += sum_item
        by_stream: dict[str, list[str]] = {}
        for m in messages:
            by_stream.setdefault(m.stream, []).append(m.id)
        for stream, ids in by_stream.items():
            script_keys.append(stream)
            args += [len(ids), *ids]
        try:
            await self.apply_batch(keys=script_keys, args=args)
        except ResponseError as exc:
            if str(exc).startswith(WRONG_TYPE):
                raise KeyTypeConflict(f"{str(exc).removeprefix(WRONG_TYPE).strip()}, not a hash: delete it "
                                      "(or rename it) and replay the dead letters") from exc
            raise
        EVENTS_OUT.labels(COMPONENT, "redis").inc(len(messages))


def make_consumer(redis: aioredis.Redis, shards: int, aggregator: Aggregator,
                  name: str | None = None) -> StreamConsumer[Liquidation]:
    return StreamConsumer(
        redis=redis, group=keys.AGGREGATOR_GROUP, consumer=name or consumer_name(),
        streams=keys.event_streams(shards), decode=codec.decode_liquidation,
        handler=aggregator.handle, component=COMPONENT, handler_acks=True,
    )
