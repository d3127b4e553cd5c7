"""``liq dlq``: the dead-letter streams: list their entries, replay them, or drop them.

The consumer loop (``shared.streams``) copies an entry that a group can never process to
``<stream>:dlq``, with the group, the stage (``decode`` or ``handle``), the reason and the
entry's id. Once the cause is gone (a fixed release, a repaired table), ``liq dlq replay`` adds
the payload back to its stream with a ``for`` field naming that group
(:data:`shared.codec.TARGET_GROUP_FIELD`): the other groups ack it unhandled, so an event the
writer refused is not counted a second time by the aggregator. Entries move atomically: each
one's XDEL from the dead-letter stream and XADD to its stream run in one script (1,000 entries
per run), and the XADD happens only if that XDEL removed the entry, so a replay interrupted at
any point, or two replays at once, neither lose nor double an entry. A run whose keys are not
all streams (one another program overwrote) fails before its first XDEL, moving nothing, and
:func:`replay` raises :class:`ReplayRefused` saying so. A dead-letter stream's key of another
type cannot be read: :func:`read` raises :class:`DeadLettersUnreadable` naming it.
``liq dlq drop`` deletes entries that are not worth keeping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis

from shared import codec, keys
from shared.discovery import discover, require_redis
from shared.errors import LiqError
from shared.redisconn import make_sync_redis, reply_text, wrong_type
from shared.settings import CommonSettings, load
from shared.streams import streams_check_lua

PAGE = 1000


class ReplayRefused(LiqError):
    """A replay run found a key of another type than a stream (``WRONGTYPE``): none of that
    run's entries moved. ``moved``: how many the runs before it had moved."""

    def __init__(self, reason: str, moved: int) -> None:
        self.moved = moved
        super().__init__(f"{reason}: no dead letter of that page moved (the script checks the key types "
                         "first); delete or rename that key, then replay again")


class DeadLettersUnreadable(LiqError):
    """A dead-letter stream's key holds another type than a stream (``WRONGTYPE``): its entries
    cannot be read, so none can be listed, replayed or dropped. ``dlq``: that key."""

    def __init__(self, dlq: str, kind: str) -> None:
        self.dlq = dlq
        super().__init__(f"WRONGTYPE {dlq} holds a {kind}, not a stream: no dead letter can be read from it; "
                         "delete or rename that key")


@dataclass(frozen=True)
class DeadLetter:
    """One entry of a dead-letter stream."""

    dlq: str
    id: str
    stream: str
    source_id: str
    group: str
    stage: str
    reason: str
    payload: bytes | None
    """None when the entry was trimmed from its stream before it was processed."""

    def summary(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["payload"] = None if self.payload is None else self.payload.decode(errors="replace")
        return fields


def parse(dlq: str, entry_id: str, fields: dict[Any, Any]) -> DeadLetter:
    """A dead-letter entry as the consumer loop wrote it (pure)."""
    text = {reply_text(k): v for k, v in fields.items()}
    payload = text.get(codec.PAYLOAD_FIELD.decode())
    return DeadLetter(
        dlq=dlq, id=entry_id, stream=dlq.removesuffix(keys.DEAD_LETTER_SUFFIX),
        source_id=reply_text(text.get("source_id", "")), group=reply_text(text.get("group", "")),
        stage=reply_text(text.get("stage", "decode")), reason=reply_text(text.get("reason", "")),
        payload=payload if isinstance(payload, bytes | None) else str(payload).encode(),
    )


def select(letters: Iterable[DeadLetter], group: str | None = None,
           ids: Sequence[str] = ()) -> list[DeadLetter]:
    """The entries of ``group`` (all when None), and only ``ids`` when some are given (pure)."""
    wanted = set(ids)
    return [d for d in letters
            if (group is None or d.group == group) and (not wanted or d.id in wanted)]


def read(client: redis.Redis, streams: Sequence[str]) -> Iterator[DeadLetter]:
    """Every entry of the dead-letter streams of ``streams``, oldest first, page by page."""
    for stream in streams:
        dlq = keys.dead_letter_stream(stream)
        start = "-"
        while True:
            page = _page(client, dlq, start)
            for entry_id, fields in page:
                yield parse(dlq, reply_text(entry_id), fields)
            if len(page) < PAGE:
                break
            start = "(" + reply_text(page[-1][0])


def _page(client: redis.Redis, dlq: str, start: str) -> Any:
    """Up to :data:`PAGE` entries of ``dlq`` from ``start``; a key of another type raises
    :class:`DeadLettersUnreadable`."""
    try:
        return client.xrange(dlq, min=start, count=PAGE)
    except redis.ResponseError as exc:
        if not wrong_type(exc):
            raise
        raise DeadLettersUnreadable(dlq, reply_text(client.type(dlq))) from exc


# Each entry moves only if this run is the one that deletes it from the dead-letter stream, so
# two replays running at once move it once. Redis does not undo the XDELs a script made before an
# XADD failed, so the key types are checked before the first one. KEYS: per entry, its
# dead-letter stream then its stream; ARGV: payload field, group field, then per entry: its id,
# payload, group.
REPLAY_LUA = streams_check_lua("#KEYS") + """
local moved = 0
for k = 1, #KEYS, 2 do
  local a = 3 + (k - 1) / 2 * 3
  if redis.call('XDEL', KEYS[k], ARGV[a]) == 1 then
    redis.call('XADD', KEYS[k + 1], '*', ARGV[1], ARGV[a + 1], ARGV[2], ARGV[a + 2])
    moved = moved + 1
  end
end
return moved
"""


def replay(client: redis.Redis, letters: Sequence[DeadLetter],
           progress: Callable[[int], None] | None = None) -> tuple[int, list[DeadLetter]]:
    """Move each entry back to its stream for its group, :data:`PAGE` entries per script run;
    returns how many moved and the entries that cannot be replayed (trimmed before they were
    processed: only ``drop`` applies). ``progress`` gets the running count after each run.
    A key of another type stops it with :class:`ReplayRefused`."""
    usable: list[DeadLetter] = []
    unusable: list[DeadLetter] = []
    for letter in letters:
        (usable if letter.payload is not None and letter.group else unusable).append(letter)
    script = client.register_script(REPLAY_LUA)
    moved = 0
    for i in range(0, len(usable), PAGE):
        page = usable[i:i + PAGE]
        script_keys = [name for d in page for name in (d.dlq, d.stream)]
        args: list[Any] = [codec.PAYLOAD_FIELD, codec.TARGET_GROUP_FIELD]
        for d in page:
            args += [d.id, d.payload or b"", d.group]
        moved += _run(script, script_keys, args, moved)
        if progress is not None:
            progress(moved)
    return moved, unusable


def _run(script: Any, script_keys: list[str], args: list[Any], moved: int) -> int:
    """One run of :data:`REPLAY_LUA`: how many entries it moved."""
    try:
        return int(script(keys=script_keys, args=args))
    except redis.ResponseError as exc:
        if not wrong_type(exc):
            raise
        raise ReplayRefused(str(exc), moved) from exc


def drop(client: redis.Redis, letters: Sequence[DeadLetter]) -> int:
    """Delete entries from their dead-letter streams; returns how many were deleted."""
    deleted = 0
    for dlq in sorted({d.dlq for d in letters}):
        ids = [d.id for d in letters if d.dlq == dlq]
        for i in range(0, len(ids), PAGE):
            deleted += int(client.xdel(dlq, *ids[i:i + PAGE]))
    return deleted


def render(letters: Sequence[DeadLetter]) -> str:
    if not letters:
        return "no dead letters"
    lines = []
    for d in letters:
        payload = ("(trimmed before it was processed)" if d.payload is None
                   else d.payload.decode(errors="replace"))
        lines.append(f"{d.dlq} {d.id}  group={d.group or '?'} stage={d.stage} "
                     f"source={d.stream} {d.source_id}")
        lines.append(f"    reason:  {d.reason[:200]}")
        lines.append(f"    payload: {payload[:200]}")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------

def _client() -> tuple[redis.Redis, list[str]]:
    found = discover(load(CommonSettings), dict(os.environ))
    return make_sync_redis(require_redis(found)), keys.all_streams(found.shards)


def _selected(client: redis.Redis, streams: list[str], stream: str | None, group: str | None,
              ids: Sequence[str]) -> list[DeadLetter]:
    if stream is not None:
        if stream not in streams:
            raise click.BadParameter(f"expected one of: {', '.join(streams)}", param_hint="--stream")
        streams = [stream]
    try:
        letters = select(read(client, streams), group, ids)
    except DeadLettersUnreadable as exc:
        raise click.ClickException(str(exc)) from exc
    missing = sorted(set(ids) - {d.id for d in letters})
    if missing:
        click.echo(f"not found: {', '.join(missing)}", err=True)
    return letters


_STREAM = click.option("--stream", help="Only this stream's dead letters (e.g. liq:{s0}:events).")
GROUPS = (keys.DETECTOR_GROUP, keys.AGGREGATOR_GROUP, keys.WRITER_GROUP)
_GROUP = click.option("--group", type=click.Choice(GROUPS),
                      help="Only the entries this consumer group set aside.")
_IDS = click.option("--id", "ids", multiple=True, help="Only this dead-letter entry id (repeatable).")


@click.group()
def dlq() -> None:
    """Dead letters: entries a consumer group could not process, set aside in <stream>:dlq."""


@dlq.command("list")
@_STREAM
@_GROUP
@_IDS
@click.option("--json", "as_json", is_flag=True, help="One JSON document per entry, one per line.")
def list_command(stream: str | None, group: str | None, ids: tuple[str, ...], as_json: bool) -> None:
    """Show each dead letter: group, stage, reason and payload."""
    client, streams = _client()
    letters = _selected(client, streams, stream, group, ids)
    if as_json:
        for letter in letters:
            click.echo(json.dumps(letter.summary()))
    else:
        click.echo(render(letters))


@dlq.command("replay")
@_STREAM
@_GROUP
@_IDS
def replay_command(stream: str | None, group: str | None, ids: tuple[str, ...]) -> None:
    """Give dead letters back to the group that set them aside (and to no other group)."""
    client, streams = _client()
    letters = _selected(client, streams, stream, group, ids)
    many = len(letters) > PAGE
    try:
        moved, unusable = replay(client, letters, lambda n: click.echo(f"  {n} replayed") if many else None)
    except ReplayRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"replayed {moved} of {len(letters)} dead letters")
    for letter in unusable:
        click.echo(f"  not replayable (trimmed before it was processed; drop it): {letter.dlq} {letter.id}")


@dlq.command("drop")
@_STREAM
@_GROUP
@_IDS
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop_command(stream: str | None, group: str | None, ids: tuple[str, ...], yes: bool) -> None:
    """Delete dead letters for good."""
    client, streams = _client()
    letters = _selected(client, streams, stream, group, ids)
    if letters and not yes:
        click.confirm(f"delete {len(letters)} dead letters for good?", abort=True)
    click.echo(f"deleted {drop(client, letters)} dead letters")
