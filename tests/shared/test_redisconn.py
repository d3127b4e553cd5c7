"""The asyncio Redis connections' fast path: C packing byte-identical to redis-py's, and no reply
timer only where the reply is already buffered (a waiting read still times out)."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redisconn import fast_connection, group_info, make_async_redis

COMMANDS = [
    ("XADD", "liq:events:0", "MAXLEN", "~", 1_000_000, "*", b"d", b'{"price":67234.5}'),
    ("CLIENT SETNAME", "collector-binance"),
    (b"CONFIG GET", "maxmemory"),
    ("HINCRBYFLOAT", "liq:levels:BTCUSDT:67200:long", "value_usd", 0.1 + 0.2),
    ("HSET", "k", "f", "pr\u00e9cis", "n", -42, "big", 2**70, "x", 1e-300),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_packing_is_byte_identical_to_redis_py(command: tuple[Any, ...]) -> None:
    fast = fast_connection(Connection)()
    assert b"".join(fast.pack_command(*command)) == b"".join(Connection().pack_command(*command))


@pytest.mark.parametrize("bad", [None, True])
def test_an_unsupported_argument_is_a_data_error(bad: object) -> None:
    with pytest.raises(DataError, match="HSET"):
        fast_connection(Connection)().pack_command("HSET", "k", "f", bad)


def test_one_subclass_per_connection_class() -> None:
    assert fast_connection(Connection) is fast_connection(Connection)
    assert fast_connection(fast_connection(Connection)) is fast_connection(Connection)
    pool = make_async_redis("redis://127.0.0.1:1/0").connection_pool
    assert pool.connection_class is fast_connection(Connection)


def test_a_groups_line_is_found_whether_its_field_names_are_text_or_bytes() -> None:
    reply: list[dict[Any, Any]] = [{b"name": b"writer", b"last-delivered-id": b"5-0"},
                                   {"name": "detector", "pending": 2}]
    assert group_info(reply, "writer") == {"name": b"writer", "last-delivered-id": b"5-0"}
    assert group_info(reply, "detector") == {"name": "detector", "pending": 2}
    assert group_info(reply, "aggregator") is None


def test_a_pipeline_reads_every_reply_and_a_waiting_read_still_times_out(redis_url: str) -> None:
    async def scenario() -> None:
        client = make_async_redis(redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            for i in range(2000):
                pipe.xadd("test:fast", {b"d": str(i).encode()})
            ids = await pipe.execute()
            assert len(ids) == 2000 and len(set(ids)) == 2000
            assert await client.xlen("test:fast") == 2000
        finally:
            await client.aclose()
        slow = aioredis.Redis.from_url(redis_url, socket_timeout=0.2)
        slow.connection_pool.connection_class = fast_connection(slow.connection_pool.connection_class)
        try:
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(slow.blpop(["test:never"], timeout=0), timeout=10)
        finally:
            await slow.aclose()

    asyncio.run(scenario())


async def _serve_a_reply_cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers PINGs, but cuts the second reply of a two-PING pipeline short, then goes silent
    (a half-open connection in the middle of a pipeline's replies)."""
    parser = hiredis.Reader()
    try:
        while data := await reader.read(65536):
            parser.feed(data)
            pings = 0
            out = b""
            while (command := parser.gets()) is not False:
                pings += command[0].upper() == b"PING"
                out += b"+PONG\r\n" if command[0].upper() == b"PING" else b"+OK\r\n"
            if pings == 2:
                out = b"+PONG\r\n+PO"
            writer.write(out)
            await writer.drain()
    finally:
        writer.close()


def test_a_reply_cut_short_in_a_pipeline_still_times_out() -> None:
    """The first reply is read from the buffer without a timer; the second, only part of which
    is buffered, must still time out after socket_timeout instead of waiting for ever."""
    async def scenario() -> None:
        server = await asyncio.start_server(_serve_a_reply_cut_short, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = make_async_redis(f"redis://127.0.0.1:{port}/0")
        client.connection_pool.connection_kwargs["socket_timeout"] = 0.3
        try:
            pipe = client.pipeline(transaction=False)
            pipe.ping()
            pipe.ping()
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(pipe.execute(), timeout=10)
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
