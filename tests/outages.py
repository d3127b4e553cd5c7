"""Helpers for outage tests: await what a retried method did, and read log lines without
what varies from one run to the next."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from shared import servers
from shared.servers import RedisServer


class Counted:
    """Wraps a service's coroutine method: counts its successes and failures, and lets a test
    await a count (no polling)."""

    def __init__(self, method: Callable[[], Awaitable[None]]) -> None:
        functools.update_wrapper(self, method)  # its __name__, which the service may log
        self.method = method
        self.ok = 0
        self.failed = 0
        self.changed = asyncio.Condition()

    async def __call__(self) -> None:
        try:
            await self.method()
        except Exception:
            self.failed += 1
            raise
        else:
            self.ok += 1
        finally:
            async with self.changed:
                self.changed.notify_all()

    async def until(self, predicate: Callable[[Counted], bool]) -> None:
        async with asyncio.timeout(30), self.changed:
            await self.changed.wait_for(lambda: predicate(self))


RETRYING = "(…); retrying with backoff (…), logged again when it works"


def outage_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[tuple[str, str]]:
    """Logger ``name``'s lines, with what varies (the error, the delay, the counts) as "…"."""
    def vague(line: str) -> str:
        line = re.sub(r"\(.*\); retrying with backoff \(.*?\)", "(…); retrying with backoff (…)", line)
        return re.sub(r"after \d+s and \d+", "after …s and …", line)
    return [(r.levelname, vague(r.getMessage())) for r in caplog.records if r.name == name]


async def redis_down_and_back(server: RedisServer, data_dir: Path, heartbeat: Counted) -> RedisServer:
    """Once ``heartbeat`` has run, stop Redis; after five failed runs start it again on the same
    port and data; return the new server once a run succeeds again."""
    await heartbeat.until(lambda h: h.ok >= 1)
    server.stop()
    await heartbeat.until(lambda h: h.failed >= 5)
    server = servers.start_redis(data_dir, port=server.port)
    ok = heartbeat.ok
    await heartbeat.until(lambda h: h.ok > ok)
    return server
