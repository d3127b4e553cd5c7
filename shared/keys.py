"""Every Redis name the system uses: streams, consumer groups, hash keys, their TTLs and caps.

No other module builds a key with an f-string. Keys readable with plain ``redis-cli``:

- ``liq:{s<k>}:events``                      event stream of shard k (hash tag = one cluster slot)
- ``liq:significant``                        significant liquidations (the writer's; ``shared.significance``)
- ``liq:cascades``                           cascade lifecycle stream (start/escalate/end)
- ``liq:cascade:members``                    liquidations that belong to a cascade
- ``<stream>:dlq``                           entries a group set aside (``liq dlq``)
- ``liq:cascade:status:{SYMBOL}``            current cascade state of a symbol (hash)
- ``liq:levels:{SYMBOL}:{LEVEL}:{SIDE}``     price-level cluster (hash), 1 h TTL
- ``liq:agg:{SYMBOL}:60s:{BUCKET_MS}``       1-minute bucket (hash), 1 h TTL
- ``liq:venue:{VENUE}``                      collector health (hash)
- ``liq:proc:{NAME}``                        process heartbeat (hash with TTL)
- ``liq:detector:published:{NAME}``          a detector's last publication number
- ``liq:collector:published:{VENUE}``        a venue's last published batch (hash: first, last, n)

Events are sharded by a stable CRC32 of the canonical symbol, so that one detector consumer
per shard sees every venue's events for a symbol in order.
"""

from __future__ import annotations

import zlib

from shared.models import Side

PREFIX = "liq"
CASCADE_STREAM = "liq:cascades"
SIGNIFICANT_STREAM = "liq:significant"
CASCADE_MEMBER_STREAM = "liq:cascade:members"
DEAD_LETTER_SUFFIX = ":dlq"

DETECTOR_GROUP = "detector"
AGGREGATOR_GROUP = "aggregator"
WRITER_GROUP = "writer"

EVENT_STREAM_MAXLEN = 1_000_000
"""The default of ``LIQ_STREAM_MAXLEN``: entries each event stream keeps (about 320 MB of Redis
memory per stream when full)."""
MIN_EVENT_STREAM_MAXLEN = 100_000
MAX_EVENT_STREAM_MAXLEN = 100_000_000
"""The most ``LIQ_STREAM_MAXLEN`` may be: about 32 GB of Redis memory per stream when full."""
MAX_SHARDS = 256
"""The most ``LIQ_SHARDS`` may be: every consumer reads, and reports the backlog of, each shard."""
CASCADE_STREAM_MAXLEN = 100_000
DEAD_LETTER_MAXLEN = 100_000
"""A dead-letter stream keeps about this many entries (the consumer logs an error once it is
full, since older ones are then trimmed)."""
L2_TTL_SECONDS = 3600
VENUE_HEALTH_TTL_SECONDS = 24 * 3600
PROCESS_HEARTBEAT_TTL_SECONDS = 15
BUCKET_MS = 60_000


def shard_of(symbol: str, shards: int) -> int:
    """Stable shard index of a canonical symbol (Python's ``hash`` is salted per process)."""
    return zlib.crc32(symbol.encode()) % shards


def event_stream(shard: int) -> str:
    return f"{PREFIX}:{{s{shard}}}:events"


def event_stream_of(symbol: str, shards: int) -> str:
    """The event stream a liquidation of ``symbol`` goes to, with ``shards`` shards."""
    return event_stream(shard_of(symbol, shards))


EVENT_STREAM_PATTERN = f"{PREFIX}:{{s*}}:events"
"""SCAN pattern of every event shard stream, whatever the shard count that wrote it."""


def event_streams(shards: int) -> list[str]:
    return [event_stream(k) for k in range(shards)]


def all_streams(shards: int) -> list[str]:
    """Every stream a consumer group reads: the event shards, the significant liquidations,
    cascades and cascade members."""
    return [*event_streams(shards), SIGNIFICANT_STREAM, CASCADE_STREAM, CASCADE_MEMBER_STREAM]


def dead_letter_stream(stream: str) -> str:
    return stream + DEAD_LETTER_SUFFIX


def detector_publications(name: str) -> str:
    """The sequence number of a detector's last publication (see ``detector.service``)."""
    return f"{PREFIX}:detector:published:{name}"


def publisher_mark(venue: str) -> str:
    """The venue's last published batch, so that one sent again is not added twice
    (``shared.streams.publish``)."""
    return f"{PREFIX}:collector:published:{venue}"


def cascade_status(symbol: str) -> str:
    return f"{PREFIX}:cascade:status:{symbol}"


def status_symbol(key: str) -> str:
    """The symbol of a :func:`cascade_status` key, whole: a symbol may hold ':' (Hyperliquid's
    ``dex:COIN`` markets)."""
    return key.removeprefix(cascade_status(""))


def price_level(symbol: str, level: int | float, side: Side) -> str:
    level_text = str(int(level)) if float(level).is_integer() else repr(float(level))
    return f"{PREFIX}:levels:{symbol}:{level_text}:{side.upper()}"


def time_bucket(symbol: str, bucket_start_ms: int) -> str:
    return f"{PREFIX}:agg:{symbol}:60s:{bucket_start_ms}"


def venue_health(venue: str) -> str:
    return f"{PREFIX}:venue:{venue}"


def process_heartbeat(name: str) -> str:
    return f"{PREFIX}:proc:{name}"


KEY_KINDS: dict[str, str] = {
    "levels": f"{PREFIX}:levels:*",
    "agg": f"{PREFIX}:agg:*",
    "cascade_status": f"{PREFIX}:cascade:status:*",
    "venue": f"{PREFIX}:venue:*",
    "proc": f"{PREFIX}:proc:*",
}
