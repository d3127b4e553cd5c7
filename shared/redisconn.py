"""Redis clients: one factory, so every process uses the same timeouts, parser and packer (hiredis).

redis-py parses replies with hiredis when it is installed, but its asyncio connection packs
every command in Python (its sync connection uses hiredis for that too). For our commands with
hundreds of arguments (a batch's XACK, the aggregator's script) and pipelines of hundreds of
XADDs, that Python packing was the largest single cost of the collectors and the aggregator, so
the asyncio clients made here pack with ``hiredis.pack_command``, whatever the connection type
(TCP, TLS or Unix socket).

XREADGROUP replies are left as Redis sent them (nested lists): see :func:`_raw_reply`.

Likewise, redis-py arms an asyncio timer around every reply it reads, even one already in the
parser's buffer: for a pipeline of 500 XADDs that is 500 timers, about 40 % of what a
collector spent publishing. These connections read a reply that is already buffered without a
timer; every read that waits for the socket keeps ``socket_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.exceptions import DataError

_FAST_CLASSES: dict[type[Any], type[Any]] = {}


class _HiredisFastPath:
    """Mixin for a redis-py asyncio connection: C packing, no timer for a buffered reply."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The same bytes as redis-py's Python packer: a command name holding spaces
        (``"CLIENT SETNAME"``) is split into words, and an argument of an unsupported type
        (``None``, ``bool``) raises :class:`DataError`."""
        name = args[0]
        if isinstance(name, str):
            name = name.encode()
        if b" " in name:
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(f"cannot send {args[0]!r}: {exc}") from exc

    async def read_response(self, disable_decoding: bool = False, timeout: float | None = None,  # noqa: ASYNC109 - redis-py signature
                            *, disconnect_on_error: bool = True, push_request: bool | None = False) -> Any:
        if timeout is None and self._reply_buffered():
            timeout = math.inf  # redis-py's "no timer": the data is here, nothing to wait for
        return await super().read_response(  # type: ignore[misc]
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request)

    def _reply_buffered(self) -> bool:
        reader = getattr(getattr(self, "_parser", None), "_reader", None)
        return bool(reader is not None and reader.has_data())


def fast_connection(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with :class:`_HiredisFastPath` (one subclass per class)."""
    if issubclass(connection_class, _HiredisFastPath):
        return connection_class
    if connection_class not in _FAST_CLASSES:
        _FAST_CLASSES[connection_class] = type(
            f"HiredisFast{connection_class.__name__}", (_HiredisFastPath, connection_class), {})
    return _FAST_CLASSES[connection_class]


def reply_text(value: Any) -> str:
    """A value from a Redis reply as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def group_info(groups: Sequence[Mapping[Any, Any]], group: str) -> dict[str, Any] | None:
    """``group``'s line of an XINFO GROUPS reply, its field names as text (None: no such group)."""
    for info in groups:
        fields = {reply_text(k): v for k, v in info.items()}
        if reply_text(fields.get("name", "")) == group:
            return fields
    return None


def stream_entries(reply: Any) -> list[tuple[str, str, Any]]:
    """An XREAD or XREADGROUP reply as ``(stream, entry id, fields)``. RESP3 answers a map
    ``{stream: entries}``, RESP2 a list of ``[stream, entries]``; the fields stay as they came
    (the raw flat list, see :func:`_raw_reply`, or a dict parsed by redis-py)."""
    pairs = reply.items() if isinstance(reply, dict) else (reply or ())
    out: list[tuple[str, str, Any]] = []
    for stream_name, messages in pairs:
        stream = reply_text(stream_name)
        out += [(stream, reply_text(entry_id), fields) for entry_id, fields in messages]
    return out


def make_async_redis(url: str) -> aioredis.Redis:
    """Client for a consumer or producer process.

    ``socket_timeout`` stays well above the longest XREADGROUP BLOCK (1 s) so that blocking
    reads never raise a spurious TimeoutError (redis-py #3138).
    """
    client = aioredis.Redis.from_url(
        url, socket_timeout=10.0, socket_connect_timeout=5.0, health_check_interval=30
    )
    pool = client.connection_pool
    pool.connection_class = fast_connection(pool.connection_class)
    client.set_response_callback("XREADGROUP", _raw_reply)
    return client


def _raw_reply(response: Any, **_options: Any) -> Any:
    """XREADGROUP's reply as Redis sent it: ``{stream: [[id, [field, value, ...]], ...]}`` (RESP3,
    redis-py's default), or ``[[stream, entries], ...]`` (RESP2).

    redis-py turns every entry's fields into a dict (in Python); ``StreamConsumer`` reads the
    one payload field straight from the list, which costs a fraction of that per entry."""
    return response


def make_sync_redis(url: str) -> redis.Redis:
    """Client for command-line tools (``liq status``) and tests."""
    return redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
