"""Dead letters end to end against a real Redis: a group sets an entry aside, ``liq dlq`` lists
it and replays it to that group alone; the aggregator, which had handled it, counts it once."""

from __future__ import annotations

import asyncio
import json
from typing import cast

import pytest
import redis as syncredis
from click.testing import CliRunner

from aggregator.service import Aggregator
from aggregator.service import make_consumer as make_aggregator
from shared import codec, dlq, keys
from shared.cli import cli as liq
from shared.errors import LiqError
from shared.models import Liquidation
from shared.redisconn import make_async_redis
from shared.streams import Message, StreamConsumer, publish
from tests.factories import liq as make_liq
from tests.redistypes import Entries, Hash

pytestmark = pytest.mark.integration
STREAM = keys.event_stream(0)
DLQ = keys.dead_letter_stream(STREAM)
EVENTS = [make_liq(price=67_200.0, quantity=float(q), timestamp_ms=1_729_512_000_000 + q, event_id=f"e{q}")
          for q in (1, 2, 3)]


class FlakyWriter:
    """A stand-in for a group whose handler has a bug on one entry, until it is fixed."""

    def __init__(self) -> None:
        self.fixed = False
        self.stored: list[Liquidation] = []

    async def handle(self, batch: list[Message[Liquidation]]) -> None:
        if not self.fixed and any(m.value.quantity == 2 for m in batch):
            raise ZeroDivisionError("a bug this entry triggers")
        self.stored.extend(m.value for m in batch)


def _consumer(client, group: str, handler) -> StreamConsumer[Liquidation]:  # type: ignore[no-untyped-def]
    return StreamConsumer(redis=client, group=group, consumer="c1", streams=[STREAM],
                          decode=codec.decode_liquidation, handler=handler, component=group)


async def _drain(url: str, writer: FlakyWriter, seen_by_detector: list[Liquidation]) -> tuple[int, int, int]:
    client = make_async_redis(url)

    async def detector(batch: list[Message[Liquidation]]) -> None:
        seen_by_detector.extend(m.value for m in batch)

    handled = (await make_aggregator(client, 1, Aggregator(client), name="a1").run_until_idle(),
               await _consumer(client, keys.WRITER_GROUP, writer.handle).run_until_idle(),
               await _consumer(client, keys.DETECTOR_GROUP, detector).run_until_idle())
    await client.aclose()
    return handled


def _cli(url: str, *args: str) -> str:
    result = CliRunner().invoke(liq, ["dlq", *args], env={"LIQ_REDIS_URL": url, "LIQ_SHARDS": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_replayed_dead_letter_reaches_its_group_alone_and_counts_once(
        redis_url: str, r: syncredis.Redis) -> None:
    writer, detector_saw = FlakyWriter(), []  # type: ignore[var-annotated]

    async def seed() -> None:
        client = make_async_redis(redis_url)
        await publish(client, [(STREAM, e) for e in EVENTS], keys.EVENT_STREAM_MAXLEN)
        await client.aclose()

    asyncio.run(seed())
    assert asyncio.run(_drain(redis_url, writer, detector_saw)) == (3, 2, 3)
    assert writer.stored == [EVENTS[0], EVENTS[2]]

    (letter,) = [json.loads(line) for line in _cli(redis_url, "list", "--json").splitlines()]
    assert (letter["group"], letter["stage"], letter["stream"], letter["reason"]) == (
        "writer", "handle", STREAM, "ZeroDivisionError: a bug this entry triggers")
    assert codec.decode_liquidation(letter["payload"].encode()) == EVENTS[1]
    assert _cli(redis_url, "list", "--group", "aggregator") == "no dead letters\n"
    assert "reason:  ZeroDivisionError: a bug this entry triggers" in _cli(redis_url, "list")

    writer.fixed = True
    assert _cli(redis_url, "replay", "--group", "writer") == "replayed 1 of 1 dead letters\n"
    assert r.xlen(DLQ) == 0 and r.xlen(STREAM) == 4
    ((_, fields),) = cast(Entries, r.xrevrange(STREAM, count=1))
    assert fields == {codec.PAYLOAD_FIELD: letter["payload"].encode(), codec.TARGET_GROUP_FIELD: b"writer"}

    handled = asyncio.run(_drain(redis_url, writer, detector_saw))
    assert handled == (0, 1, 0), "only the writer handles the replay; the others ack it unhandled"
    assert writer.stored == [EVENTS[0], EVENTS[2], EVENTS[1]]
    assert detector_saw == EVENTS
    level = {k.decode(): v.decode()
             for k, v in cast(Hash, r.hgetall("liq:levels:BTCUSDT:67200:LONG")).items()}
    assert (level["count"], float(level["quantity"])) == ("3", 6.0), "the aggregator counted each event once"
    for group in (keys.AGGREGATOR_GROUP, keys.WRITER_GROUP, keys.DETECTOR_GROUP):
        assert r.xpending(STREAM, group)["pending"] == 0


def test_an_entry_trimmed_before_it_was_processed_cannot_be_replayed_only_dropped(
        redis_url: str, r: syncredis.Redis) -> None:
    trimmed = cast(bytes, r.xadd(DLQ, {"reason": "trimmed", "source_id": "1-0", "group": "writer",
                                        "stage": "handle"}))
    kept = cast(bytes, r.xadd(DLQ, {"d": codec.encode(EVENTS[0]), "reason": "x", "source_id": "2-0",
                                    "group": "aggregator", "stage": "decode"}))
    letters = list(dlq.read(r, [STREAM]))
    assert [d.id for d in letters] == [trimmed.decode(), kept.decode()]
    assert letters[0].payload is None and letters[1].payload == codec.encode(EVENTS[0])
    assert dlq.replay(r, dlq.select(letters, group="writer")) == (0, [letters[0]])
    assert "(trimmed before it was processed)" in dlq.render(letters)
    output = _cli(redis_url, "drop", "--id", trimmed.decode(), "--yes")
    assert output == "deleted 1 dead letters\n"
    assert [d.id for d in dlq.read(r, [STREAM])] == [kept.decode()]


def test_dead_letters_are_read_page_by_page(r: syncredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq, "PAGE", 2)
    ids = [cast(bytes, r.xadd(DLQ, {"d": b"{}", "group": "writer", "reason": str(i)})).decode()
           for i in range(5)]
    letters = list(dlq.read(r, [STREAM, keys.CASCADE_STREAM]))
    assert [d.id for d in letters] == ids and [d.reason for d in letters] == ["0", "1", "2", "3", "4"]
    assert dlq.select(letters, ids=[ids[3]]) == [letters[3]]
    progress: list[int] = []
    assert dlq.replay(r, letters[:4], progress.append) == (4, []) and progress == [2, 4]
    assert r.xlen(DLQ) == 1 and r.xlen(STREAM) == 4
    assert [f[codec.TARGET_GROUP_FIELD] for _, f in cast(Entries, r.xrange(STREAM))] == [b"writer"] * 4
    assert dlq.drop(r, letters) == 1 and r.xlen(DLQ) == 0


def test_ids_that_are_not_dead_letters_are_named(redis_url: str) -> None:
    result = CliRunner().invoke(liq, ["dlq", "replay", "--id", "1-1"], env={"LIQ_REDIS_URL": redis_url})
    assert result.exit_code == 0
    assert "not found: 1-1" in result.output and "replayed 0 of 0 dead letters" in result.output


def test_two_replays_of_the_same_dead_letters_move_each_once(r: syncredis.Redis) -> None:
    for i in range(3):
        r.xadd(DLQ, {"d": codec.encode(EVENTS[i]), "group": "writer", "reason": "x", "stage": "handle"})
    letters = list(dlq.read(r, [STREAM]))
    assert dlq.replay(r, letters) == (3, [])
    assert dlq.replay(r, letters) == (0, []), "another run had moved them already"
    assert r.xlen(STREAM) == 3 and r.xlen(DLQ) == 0


def test_a_replay_to_a_key_of_another_type_fails_and_keeps_the_dead_letters(redis_url: str,
                                                                           r: syncredis.Redis) -> None:
    """Redis does not undo a script's writes when a later command fails: the XDEL ran, the XADD
    to a stream key another program had overwritten failed, and the dead letter was lost."""
    for i in range(2):
        r.xadd(DLQ, {"d": codec.encode(EVENTS[i]), "group": "writer", "reason": "x", "stage": "handle"})
    r.set(STREAM, "another program's")
    result = CliRunner().invoke(liq, ["dlq", "replay"], env={"LIQ_REDIS_URL": redis_url, "LIQ_SHARDS": "1"})
    assert result.exit_code == 1
    assert result.output == (f"Error: WRONGTYPE {STREAM} holds a string, not a stream: no dead letter of "
                             "that page moved (the script checks the key types first); delete or rename that "
                             "key, then replay again\n")
    assert r.xlen(DLQ) == 2 and r.get(STREAM) == b"another program's"


def test_replay_as_a_library_says_a_key_of_another_type_with_its_own_error(
        r: syncredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The function raised redis-py's ResponseError where the command said one line: a caller got
    two error types for one failure. It raises the line the command shows, and how many moved
    before (a first page whose keys were streams)."""
    monkeypatch.setattr(dlq, "PAGE", 2)
    other = keys.event_stream(1)
    for i in range(2):
        r.xadd(DLQ, {"d": codec.encode(EVENTS[i]), "group": "writer", "reason": "x", "stage": "handle"})
    r.xadd(keys.dead_letter_stream(other), {"d": codec.encode(EVENTS[2]), "group": "writer", "reason": "x",
                                            "stage": "handle"})
    r.set(other, "another program's")
    letters = list(dlq.read(r, [STREAM, other]))
    with pytest.raises(dlq.ReplayRefused) as refused:
        dlq.replay(r, letters)
    assert str(refused.value) == (f"WRONGTYPE {other} holds a string, not a stream: no dead letter of that "
                                  "page moved (the script checks the key types first); delete or rename that "
                                  "key, then replay again")
    assert refused.value.moved == 2 and isinstance(refused.value, LiqError)
    assert r.xlen(STREAM) == 2 and r.xlen(keys.dead_letter_stream(other)) == 1


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["replay"], ["drop", "--yes"]])
def test_a_dead_letter_stream_key_of_another_type_is_one_line(
        redis_url: str, r: syncredis.Redis, command: list[str]) -> None:
    """Reading the dead letters raised redis-py's ResponseError (a traceback) when their own key
    held another type: each command says so in one line, naming the key, and changes nothing."""
    r.set(DLQ, "another program's")
    result = CliRunner().invoke(liq, ["dlq", *command], env={"LIQ_REDIS_URL": redis_url, "LIQ_SHARDS": "1"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == (f"Error: WRONGTYPE {DLQ} holds a string, not a stream: no dead letter can be "
                             "read from it; delete or rename that key\n")
    assert r.get(DLQ) == b"another program's"


def test_reading_a_dead_letter_stream_key_of_another_type_raises_its_own_error(r: syncredis.Redis) -> None:
    """As a library, read() raises a LiqError naming the key (the other streams' entries before it
    were read), not redis-py's ResponseError."""
    other = keys.event_stream(1)
    r.xadd(DLQ, {"d": codec.encode(EVENTS[0]), "group": "writer", "reason": "x", "stage": "handle"})
    r.hset(keys.dead_letter_stream(other), "a", "hash")
    letters = dlq.read(r, [STREAM, other])
    assert next(letters).dlq == DLQ
    with pytest.raises(dlq.DeadLettersUnreadable) as unreadable:
        next(letters)
    other_dlq = keys.dead_letter_stream(other)
    assert unreadable.value.dlq == other_dlq and isinstance(unreadable.value, LiqError)
    assert str(unreadable.value).startswith(f"WRONGTYPE {other_dlq} holds a hash, not a stream: ")
