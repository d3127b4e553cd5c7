"""Precise types of the Redis replies tests read.

redis-py annotates a reply for every client setting at once (``bytes | str``, an entry's id or
fields possibly ``None``): a test casts the reply it reads to one of these, ``bytes`` for a client
that does not decode responses (the default), ``str`` for one made with ``decode_responses=True``."""

from __future__ import annotations

from typing import TypeAlias

Entry: TypeAlias = tuple[bytes, dict[bytes, bytes]]
"""One stream entry: its id and its fields."""
Entries: TypeAlias = list[Entry]
"""XRANGE / XREVRANGE / XCLAIM: a stream's entries, oldest first (XREVRANGE: newest first)."""
ReadGroup: TypeAlias = list[tuple[bytes, Entries]]
"""XREADGROUP (RESP2): per stream, its name and the entries read."""
TextEntries: TypeAlias = list[tuple[str, dict[str, str]]]
""":data:`Entries` read by a client with ``decode_responses=True``."""
Hash: TypeAlias = dict[bytes, bytes]
"""HGETALL: a hash's fields and values."""
