"""Encoding of stream payloads: one ``d`` field per Redis stream entry, msgspec JSON inside.

JSON (not msgpack) keeps entries readable with plain ``redis-cli XRANGE``. Encoders and typed
decoders are built once at import, never per message.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from shared.models import CascadeEvent, CascadeMember, Liquidation

PAYLOAD_FIELD = b"d"
TARGET_GROUP_FIELD = b"for"
"""Set only on an entry replayed from a dead-letter stream: the one group that handles it."""

_encoder = msgspec.json.Encoder()
_liquidation_decoder = msgspec.json.Decoder(Liquidation)
_cascade_decoder = msgspec.json.Decoder(CascadeEvent)
_member_decoder = msgspec.json.Decoder(CascadeMember)

T = TypeVar("T")


def encode(obj: msgspec.Struct) -> bytes:
    """Serialize a Struct to the bytes stored in a stream entry's ``d`` field."""
    return _encoder.encode(obj)


def entry_payload(fields: dict[Any, Any] | list[Any] | None) -> bytes:
    """The payload bytes of a stream entry: from its fields as a dict, or as the raw reply's
    flat ``[field, value, ...]`` list (what consumers read), whatever the decode setting."""
    payload = payload_for(fields, None)
    assert payload is not None  # only a group's view can leave an entry out
    return payload


def payload_for(fields: dict[Any, Any] | list[Any] | None, group: str | None) -> bytes | None:
    """:func:`entry_payload` as ``group`` sees it: None when the entry was replayed from a
    dead-letter stream for another group (its ``for`` field, see ``shared.dlq``). ``group``
    None sees every entry."""
    if isinstance(fields, list):
        if len(fields) == 2 and fields[0] == PAYLOAD_FIELD:
            return fields[1]  # type: ignore[no-any-return]  # the usual entry: one field, no target
        fields = entry_fields(fields)
    if fields is None:
        raise ValueError("stream entry was deleted (trimmed by MAXLEN) before it was processed")
    if group is not None:
        target = _field(fields, TARGET_GROUP_FIELD)
        if target is not None and target != group.encode():
            return None
    raw = _field(fields, PAYLOAD_FIELD)
    if raw is None:
        raise ValueError("stream entry has no 'd' field")
    return raw


def _field(fields: dict[Any, Any], name: bytes) -> bytes | None:
    raw = fields.get(name)
    if raw is None:
        raw = fields.get(name.decode())
    if raw is None:
        return None
    return raw if isinstance(raw, bytes) else str(raw).encode()


def entry_fields(fields: dict[Any, Any] | list[Any] | None) -> dict[Any, Any]:
    """A stream entry's fields as a dict (empty for an entry deleted before it was read)."""
    if fields is None:
        return {}
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


def decode_liquidation(data: bytes) -> Liquidation:
    return _liquidation_decoder.decode(data)


def decode_cascade(data: bytes) -> CascadeEvent:
    return _cascade_decoder.decode(data)


def decode_member(data: bytes) -> CascadeMember:
    return _member_decoder.decode(data)
