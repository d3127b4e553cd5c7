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
timer; every read that waits for the socket keeps ``socket_timeout``, including one that finds
only part of a reply buffered (the parser then arms the timer itself).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

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

    def set_parser(self, parser_class: type[Any]) -> None:
        if parser_class is _AsyncHiredisParser:
            parser_class = _TimedHiredisParser
        super().set_parser(parser_class)  # type: ignore[misc]

    async def read_response(self, disable_decoding: bool = False, timeout: float | None = None,  # noqa: ASYNC109 - redis-py signature
                            *, disconnect_on_error: bool = True, push_request: bool | None = False) -> Any:
        parser = getattr(self, "_parser", None)
        if timeout is None and isinstance(parser, _TimedHiredisParser) and parser.has_data():
            # redis-py's "no timer" (math.inf): the data is here. Should it be only part of a
            # reply, the parser times its socket reads itself.
            parser.socket_read_timeout = self.socket_timeout  # type: ignore[attr-defined]
            try:
                return await super().read_response(  # type: ignore[misc]
                    disable_decoding, math.inf, disconnect_on_error=disconnect_on_error,
                    push_request=push_request)
            finally:
                parser.socket_read_timeout = None
        return await super().read_response(  # type: ignore[misc]
            disable_decoding, timeout, disconnect_on_error=disconnect_on_error, push_request=push_request)


class _TimedHiredisParser(_AsyncHiredisParser):
    """redis-py's hiredis parser, whose socket reads keep ``socket_read_timeout`` when it is set:
    the connection sets it while it reads without its own timer."""

    __slots__ = ("socket_read_timeout",)

    def __init__(self, socket_read_size: int) -> None:
        super().__init__(socket_read_size)
        self.socket_read_timeout: float | None = None

    def has_data(self) -> bool:
        reader = self._reader
        return bool(reader is not None and reader.has_data())

    async def read_from_socket(self) -> bool:
        if self.socket_read_timeout is None:
            return bool(await super().read_from_socket())  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self.socket_read_timeout):
                return bool(await super().read_from_socket())  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            raise RedisTimeoutError("Timeout reading the rest of a reply") from exc


def fast_connection(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` with :class:`_HiredisFastPath` (one subclass per class)."""
    if issubclass(connection_class, _HiredisFastPath):
        return connection_class
    if connection_class not in _FAST_CLASSES:
        _FAST_CLASSES[connection_class] = type(
            f"HiredisFast{connection_class.__name__}", (_HiredisFastPath, connection_class), {})
    return _FAST_CLASSES[connection_class]


def reply_text(value: Any) -> str:
    """A value from a Redis reply as text, whether the client decodes responses or not. Bytes
    that are not UTF-8 (another program's value in one of our keys) are replaced, not raised:
    what reads them (``liq status``, a collector's health loop) shows the rest."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def hash_text(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An HGETALL reply as text, field and value (see :func:`reply_text`)."""
    return {reply_text(k): reply_text(v) for k, v in raw.items()}


def wrong_type(exc: BaseException) -> bool:
    """Redis refused a command for a key of another type (its own ``WRONGTYPE`` reply, or the
    key check of ``shared.streams.streams_check_lua``): another program wrote that key."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


def entry_key(entry_id: Any) -> tuple[int, int]:
    """A stream entry id (text or bytes) as a pair that sorts as Redis orders the entries
    (``"1700-3"`` → (1700, 3))."""
    ms, _, seq = reply_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def group_names(groups: Sequence[Mapping[Any, Any]]) -> list[str]:
    """The group names of an XINFO GROUPS reply, whether its field names are text or bytes."""
    return [reply_text({reply_text(k): v for k, v in info.items()}.get("name", "")) for info in groups]


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
