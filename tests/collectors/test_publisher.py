"""The publisher's stop with liquidations both on disk and in memory (no Redis needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from collectors.publisher import Publisher
from shared.models import Liquidation
from tests.factories import liq


def _liqs(n: int, start: int = 0) -> list[Liquidation]:
    return [liq(event_id=f"e{i}", timestamp_ms=1_700_000_000_000 + i) for i in range(start, start + n)]


def test_a_stop_moves_the_queue_behind_what_the_spool_holds_and_leaves_it_on_disk(tmp_path: Path) -> None:
    """The queue holds liquidations beside a waiting spool only after the disk refused a write;
    at stop they go to the spool, behind its lines, for the next start (nothing stays in memory)."""
    async def run() -> list[str]:
        async def nothing() -> None:
            return None

        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # never reached: stop is set
        publisher = Publisher("okx", client, 4, nothing, tmp_path)
        assert publisher.spool is not None
        publisher.spool.append(_liqs(2))
        for item in _liqs(3, start=2):
            publisher.queue.put_nowait(item)
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(publisher.run(stop), 5)
        assert publisher.queue.empty()
        await client.aclose()
        return [x.event_id for x in publisher.spool.waiting()]

    assert asyncio.run(run()) == [f"e{i}" for i in range(5)]
