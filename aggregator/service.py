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
from msgspec.msgpack import encode as msgpack_encode
from redis.exceptions import ResponseError

from aggregator.buckets import LevelKeys, fold
from shared import codec, keys
from shared.levels import DEFAULT_LEVEL_SIZES
from shared.metrics import EVENTS_OUT
from shared.models import Liquidation
from shared.streams import Message, SinkRetry, StreamConsumer

COMPONENT = "aggregator"
READ_COUNT = 2000
"""Entries read, and applied in one script, at most at once. Folding merges the events of a
read that land on the same hash, so a larger read writes fewer hashes per event: on the market
load 0.55 hashes per event at 500, 0.45 at 2,000, and the script's Redis CPU went from 7.0 to
5.9 µs per event (``BENCHMARKS.md``). Live, a read holds what arrived since the last one, far
fewer; a full read holds Redis about 12 ms."""


def consumer_name() -> str:
    return f"aggregator-{socket.gethostname()}-{os.getpid()}"


SERVER_STATES = frozenset({"OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN",
                           "CLUSTERDOWN", "NOSCRIPT", "NOGROUP"})
"""Error codes that say what state Redis is in (retried), not what the data is. NOGROUP: the
group is gone (Redis restarted without its data): the consumer loop creates it again."""

WRONG_TYPE = "LIQWRONGTYPE"
"""The script's error when a hash key holds another type, or a field a value that is not a
number (nothing was written)."""
STALE = "LIQSTALE"
"""The script's error when entries of the batch are no longer this consumer's (nothing was
written)."""


class KeyTypeConflict(Exception):
    """A hash key the batch must increment holds another type, or a field of it a value that is
    not a number (another program wrote it).

    Not a server failure, so not retried: the consumer loop isolates the events that touch that
    key and dead-letters them (``liq dlq replay --group aggregator`` once the key is deleted);
    the other events are applied."""


class StaleBatch(SinkRetry):
    """Entries of the batch were acked meanwhile by another consumer that claimed them (this one
    stalled past ``claim_idle_ms``): nothing was applied, and the loop re-reads what is still
    this consumer's."""


# One EVALSHA per batch: every write of the batch and the XACK of its entries run atomically
# inside Redis. Each hash costs three commands: HMGET (what is there), HSET (counts and sums
# added to it) and EXPIRE. Sums are written to 15 significant digits (HINCRBYFLOAT's long
# doubles showed 62807.68370000000008346 in HGETALL for 62807.6837); a count too long for a
# double's exact integers (over 15 digits) is left to HINCRBY.
#   KEYS: the hash keys, then the streams to ack
#   ARGV[1]: one msgpack document (cmsgpack is built into Redis' Lua):
#            [ttl, group, consumer, [[n_counts, fields, increments] per hash key],
#             [ids per stream]], the fields of a hash its counts first, then its sums
# What it replaced, measured on the market load (`liq bench` events, the aggregator alone):
# - ~13 commands per event built in Python capped the aggregator at ~11k events/s;
# - a flat argument list (about 10 per event) cost 4.3 µs of Python per event to build and
#   pack beside the folding; the document costs 2.1, with the same hashes to the byte;
# - a TYPE and an HINCRBY per count besides the three commands cost 13.1 µs of Redis CPU per
#   event where these cost 12.0.
# Redis does not undo a script's writes when a command in it fails, so everything that could
# fail is checked before the first write:
#   1. each hash key is a hash (or absent) and each field to increment holds a number (or
#      nothing): otherwise the batch would be half applied, and again on every retry;
#   2. each entry is still pending, and becomes this consumer's (XCLAIM … JUSTID): an entry
#      another consumer claimed and applied while this one stalled is acked already, and
#      applying the batch again would count it twice. The consumer that applies a batch is
#      the first whose script runs; the other finds entries missing and writes nothing.
APPLY_BATCH_LUA = """
-- locals: a global or a field costs a table lookup in Lua 5.1, in this loop once per field
local KEYS, tonumber, call = KEYS, tonumber, redis.call
local format, match, find = string.format, string.match, string.find
local function whole(v)  -- what HINCRBY takes: no leading zeros, no '-0', within 64 bits
  return #v <= 18 and (v == '0' or match(v, '^%-?[1-9]%d*$') ~= nil)
end
local function decimal(v)  -- a sum this script can add to: a plain finite number, no spaces
  if not (match(v, '^%-?%d+%.?%d*$') or match(v, '^%-?%d+%.?%d*[eE][%+%-]?%d+$')) then
    return false
  end
  local n = tonumber(v)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end
local function tidy(n)  -- a sum as HGETALL shows it: 62807.6837, not 62807.68370000000008346
  -- 15 significant digits, always as a plain decimal: '%.15g' writes 1.2e+15 (and drops the
  -- units above 1e15) and 1e-05; a sum of 1e15 or more keeps all its integer digits.
  local text = format('%.15g', n)
  if not find(text, 'e', 1, true) then  -- 1e-4 <= |n| < 1e15: nearly every sum
    if text == '-0' then return '0' end
    return text
  end
  local decimals = 14 - math.floor(math.log10(math.abs(n)))
  if decimals < 0 then decimals = 0 elseif decimals > 99 then decimals = 99 end  -- %.99f at most
  text = format('%.' .. decimals .. 'f', n)
  if decimals > 0 then text = string.gsub(string.gsub(text, '0+$', ''), '%.$', '') end
  if text == '-0' then return '0' end
  return text
end
local doc = cmsgpack.unpack(ARGV[1])
local ttl, group, consumer, hashes, id_lists = doc[1], doc[2], doc[3], doc[4], doc[5]
local nkeys = #hashes
local olds = {}
for k = 1, nkeys do
  local key, fields, ni = KEYS[k], hashes[k][2], hashes[k][1]
  local values = redis.pcall('HMGET', key, unpack(fields))  -- an absent key: no value at all
  if values['err'] then
    if string.sub(values['err'], 1, 9) ~= 'WRONGTYPE' then return values end
    local kind = call('TYPE', key)['ok']
    return redis.error_reply('""" + WRONG_TYPE + """ ' .. key .. ' holds a ' .. kind .. ', not a hash')
  end
  for f = 1, #fields do
    local v = values[f]
    if v and not ((f <= ni and whole(v)) or (f > ni and decimal(v))) then
      return redis.error_reply('""" + WRONG_TYPE + """ ' .. key .. ' field ' .. fields[f] ..
                               ' holds ' .. string.sub(v, 1, 40) .. ', not a number')
    end
  end
  olds[k] = values
end
for s = 1, #id_lists do
  local stream, ids = KEYS[nkeys + s], id_lists[s]
  for j = 1, #ids, 500 do
    local claim = {stream, group, consumer, '0'}
    for x = j, math.min(j + 499, #ids) do claim[#claim + 1] = ids[x] end
    local wanted = #claim - 4
    claim[#claim + 1] = 'JUSTID'
    local owned = call('XCLAIM', unpack(claim))
    if #owned < wanted then
      return redis.error_reply('""" + STALE + """ ' .. (wanted - #owned) .. ' entries of ' .. stream ..
                               ' are no longer pending')
    end
  end
end
for k = 1, nkeys do  -- one HSET per key: counts and sums added here, to what was read above
  local key, old, out = KEYS[k], olds[k], {}
  local ni, fields, increments = hashes[k][1], hashes[k][2], hashes[k][3]
  for f = 1, ni do
    local before = old[f]
    if before and #before > 15 then  -- past the integers a double holds exactly: Redis adds it
      call('HINCRBY', key, fields[f], increments[f])
    else
      out[#out + 1] = fields[f]
      out[#out + 1] = format('%d', (tonumber(before) or 0) + increments[f])
    end
  end
  for f = ni + 1, #fields do
    out[#out + 1] = fields[f]
    out[#out + 1] = tidy((tonumber(old[f]) or 0) + increments[f])
  end
  if #out > 0 then call('HSET', key, unpack(out)) end
  call('EXPIRE', key, ttl)
end
for s = 1, #id_lists do
  local stream, ids = KEYS[nkeys + s], id_lists[s]
  for j = 1, #ids, 500 do
    call('XACK', stream, group, unpack(ids, j, math.min(j + 499, #ids)))
  end
end
return nkeys
"""


class Aggregator:
    def __init__(self, redis: aioredis.Redis, level_sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES,
                 ttl_s: int = keys.L2_TTL_SECONDS, consumer: str | None = None) -> None:
        self.redis = redis
        self.level_keys = LevelKeys(level_sizes)
        self.ttl_s = ttl_s
        self.consumer = consumer or consumer_name()
        """The consumer whose entries the batches are (the script claims them for it)."""
        self.apply_batch = redis.register_script(APPLY_BATCH_LUA)

    async def handle(self, messages: list[Message[Liquidation]]) -> None:
        deltas = fold((m.value for m in messages), self.level_keys)
        by_stream: dict[str, list[str]] = {}
        for m in messages:
            by_stream.setdefault(m.stream, []).append(m.id)
        document = msgpack_encode([
            self.ttl_s, keys.AGGREGATOR_GROUP, self.consumer,
            [[len(d.counts), [*d.counts, *d.sums], [*d.counts.values(), *d.sums.values()]]
             for d in deltas.values()],
            list(by_stream.values()),
        ])
        script_keys = [*deltas, *by_stream]
        try:
            await self.apply_batch(keys=script_keys, args=[document])
        except ResponseError as exc:
            text = str(exc)
            if text.startswith(WRONG_TYPE):
                raise KeyTypeConflict(f"{text.removeprefix(WRONG_TYPE).strip()}: delete it (or rename it) "
                                      "and replay the dead letters") from exc
            if text.startswith(STALE):
                raise StaleBatch(text.removeprefix(STALE).strip()) from exc
            if text.split(" ", 1)[0] in SERVER_STATES:
                raise  # the server's state, not the data: retried
            # Anything else the checks did not foresee may have left part of the batch applied:
            # retrying would apply that part again, so its events are isolated and set aside.
            raise KeyTypeConflict(f"the batch's script failed: {text}") from exc
        EVENTS_OUT.labels(COMPONENT, "redis").inc(len(messages))


def make_consumer(redis: aioredis.Redis, shards: int, aggregator: Aggregator,
                  name: str | None = None) -> StreamConsumer[Liquidation]:
    if name is not None:
        aggregator.consumer = name
    return StreamConsumer(
        redis=redis, group=keys.AGGREGATOR_GROUP, consumer=aggregator.consumer,
        streams=keys.event_streams(shards), decode=codec.decode_liquidation,
        handler=aggregator.handle, component=COMPONENT, handler_acks=True, count=READ_COUNT,
    )
