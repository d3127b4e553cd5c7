"""How far each consumer group is behind: stream length, pending and lag, as Prometheus gauges.

Every consumer reports the backlog of every group on its streams every few seconds (one XLEN
and one XINFO GROUPS per stream), so an alert on ``liq_stream_lag`` or ``liq_stream_pending``
needs no extra process, and still fires for a group whose own consumers are all dead.
``lag`` is what Redis (7+) counts as not yet delivered to the group;
``pending`` is delivered but not acked yet. A series Redis no longer gives (a lag it cannot count
any more, a group or stream deleted) is removed rather than left at its last value.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Gauge
from redis.exceptions import ResponseError

from shared.redisconn import group_info, group_names

STREAM_LENGTH = Gauge("liq_stream_length", "Entries in the stream (XLEN)", ["stream"])
STREAM_PENDING = Gauge("liq_stream_pending", "Entries delivered to the group, not acked yet",
                       ["stream", "group"])
STREAM_LAG = Gauge("liq_stream_lag", "Entries not delivered to the group yet (Redis 7+)", ["stream", "group"])


@dataclass(frozen=True)
class Backlog:
    stream: str
    group: str
    length: int
    pending: int
    lag: int | None
    """None when Redis cannot tell (Redis 6, or entries deleted from the middle of the stream)."""


def group_backlog(stream: str, group: str, length: int, groups: Sequence[dict[Any, Any]]) -> Backlog | None:
    """``group``'s line of an XINFO GROUPS reply, as a :class:`Backlog` (pure)."""
    fields = group_info(groups, group)
    if fields is None:
        return None
    lag = fields.get("lag")
    return Backlog(stream, group, length, int(fields.get("pending", 0)), None if lag is None else int(lag))


async def report(redis: aioredis.Redis, group: str, streams: Sequence[str]) -> list[Backlog]:
    """Publish the backlog of every group on each of ``streams``, and return ``group``'s: a
    group whose consumers are all dead reports nothing itself, so the live consumers of the
    other groups report its growing lag."""
    out: list[Backlog] = []
    for stream in streams:
        try:
            length = int(await redis.xlen(stream))
            groups: list[dict[Any, Any]] = await redis.xinfo_groups(stream)
        except ResponseError:  # the stream does not exist (yet, or any more)
            STREAM_LENGTH.remove(stream)
            _forget_groups(stream, keep=())
            continue
        STREAM_LENGTH.labels(stream).set(length)
        _forget_groups(stream, keep=group_names(groups))
        for name in group_names(groups):
            backlog = group_backlog(stream, name, length, groups)
            if backlog is None:
                continue
            _publish(backlog)
            if name == group:
                out.append(backlog)
    return out


def _publish(backlog: Backlog) -> None:
    STREAM_PENDING.labels(backlog.stream, backlog.group).set(backlog.pending)
    if backlog.lag is None:
        STREAM_LAG.remove(backlog.stream, backlog.group)
    else:
        STREAM_LAG.labels(backlog.stream, backlog.group).set(backlog.lag)


def _forget_groups(stream: str, keep: Collection[str]) -> None:
    """Remove the pending and lag series of ``stream``'s groups that are not in ``keep``."""
    for gauge in (STREAM_PENDING, STREAM_LAG):
        samples = (s for m in gauge.collect() for s in m.samples if s.labels["stream"] == stream)
        for group in {s.labels["group"] for s in samples}.difference(keep):
            gauge.remove(stream, group)
