"""Redis clients: one factory, so every process uses the same timeouts and parser (hiredis)."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis


def make_async_redis(url: str) -> aioredis.Redis:
    """Client for a consumer or producer process.

    ``socket_timeout`` stays well above the longest XREADGROUP BLOCK (1 s) so that blocking
    reads never raise a spurious TimeoutError (redis-py #3138).
    """
    return aioredis.Redis.from_url(
        url, socket_timeout=10.0, socket_connect_timeout=5.0, health_check_interval=30
    )


def make_sync_redis(url: str) -> redis.Redis:
    """Client for command-line tools (``liq status``) and tests."""
    return redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
