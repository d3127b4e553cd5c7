"""A seeded mutation fuzzer over every venue parser: hostile frames are malformed, never harmful.

Each venue's real frames (the simulator's renders and the peer-corpus records) are mutated
deterministically: fields dropped, values nulled or swapped for other types, numbers replaced by
``"NaN"``, ``"inf"``, ``"-0"``, ``1e999``, huge or negative values, timestamps rescaled, event
types renamed, the text truncated or salted with non-UTF-8 bytes, and (HTX) gzip garbage. For
every mutant a fresh session (subscribed through the simulator's acks) either raises
:class:`~shared.errors.ParseError`, which the connection loop counts and skips, or returns only
liquidations that a consumer can use: finite positive price and quantity, a notional that
follows from them, a known side, a plausible event time and a non-empty symbol.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import random
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

from collectors import load_venue
from collectors.venue import VenueSession
from collectors.venues._common import MIN_EVENT_MS
from collectors.venues.htx import TURNOVER_TOLERANCE
from shared import codec
from shared.errors import ParseError
from shared.models import MAX_AMOUNT, MAX_EPOCH_MS, Liquidation
from shared.venues import VENUE_NAMES
from tests.collectors.test_peer_corpus import CORPUS, FILE_VENUE
from tests.collectors.test_sim_a import _connect, _items

SEED = 20_260_501
MUTANTS_PER_FRAME = 200
RECEIVED_MS = 1_767_225_600_000
NOTIONAL_REL = TURNOVER_TOLERANCE
"""How far a known notional may stray from price × base quantity (HTX's own turnover)."""

HOSTILE_STRINGS = (
    "", "NaN", "nan", "inf", "-inf", "Infinity", "-0", "0", "-1", "1e999", "-1e999", "1e-400",
    "0x10", "1_000", " 5 ", "１２３", "null", "true", "abc", "\x00", "é", "a" * 300,
    "snapshot", "update", "insert", "partial", "delete", "error", "subscribed", "hb", "pos",
    "ping", "forceOrder", "liquidation", "LIQUIDATED", "Buy", "Sell", "buy", "sell", "A", "B",
    "long", "short", "net", "T", "M", "MT", "_", "-", ":", "-USD-", "X_USD", "PI_", "@1",
)  # fmt: skip
HOSTILE_NUMBERS = (0, -0.0, -1, 1, -1.5, 1e-320, 10**20, 10**30, -(10**30), 2**63, 2**64, 1e308)
HOSTILE_OTHERS: tuple[Any, ...] = (None, True, False, [], {}, [[]], [None], {"a": {"b": []}}, [1, "x"])
TEXT_NUMBERS = ("1e999", "-1e999", "NaN", "Infinity", "-0", "1" + "0" * 400, "0.0")
BAD_BYTES = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x80", b"\x00", b"\xed\xa0\x80")


class Seed:
    """One real frame of a venue and how to open a session that may receive it."""

    def __init__(self, venue: str, frame: str | bytes, acks: list[str | bytes]) -> None:
        self.venue, self.frame, self.acks = venue, frame, acks

    def session(self) -> VenueSession:
        session = load_venue(self.venue).new_parser()
        for ack in self.acks:
            session.on_message(ack, RECEIVED_MS)
        return session


def _sim_seeds(venue: str) -> list[Seed]:
    sim, client, _session = _connect(venue)
    acks = _acks(venue)
    items = _items(sim)
    frames = sim.frames(items, client) + [f for item in items for f in sim.frames([item], client)]
    assert frames, f"{venue}: the simulator rendered nothing"
    return [Seed(venue, frame, acks) for frame in frames]


def _acks(venue: str) -> list[str | bytes]:
    """What the simulator answers a fresh session's subscribe (Bitfinex: its chanId)."""
    sim, client, session = _connect(venue)
    return [reply for message in session.on_open() for reply in sim.on_client_message(client, message)]


def _corpus_seeds(venue: str) -> list[Seed]:
    seeds = []
    for stem, name in FILE_VENUE.items():
        if name != venue:
            continue
        for line in (CORPUS / f"{stem}.jsonl").read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                acks: list[str | bytes] = [
                    json.dumps({"event": "subscribed", "channel": "status", "chanId": int(cid), "key": key})
                    for cid, key in (record.get("channel_id_map") or {}).items()
                ]
                seeds.append(Seed(venue, json.dumps(record["raw"]), acks))
    return seeds


def seeds(venue: str) -> list[Seed]:
    return _sim_seeds(venue) + _corpus_seeds(venue)


# -- mutations ---------------------------------------------------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON tree (the root is ``()``)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _hostile(rng: random.Random, old: Any) -> Any:
    pools: list[Callable[[], Any]] = [
        lambda: rng.choice(HOSTILE_STRINGS),
        lambda: rng.choice(HOSTILE_NUMBERS),
        lambda: rng.choice(HOSTILE_OTHERS),
        lambda: _swap_type(old),
        lambda: _rescale(rng, old),
    ]
    return copy.deepcopy(rng.choice(pools)())  # never share the pools' lists and dicts


def _swap_type(old: Any) -> Any:
    """A number as its string, a numeric string as its number, anything else wrapped in a list."""
    if isinstance(old, bool):
        return str(old).lower()
    if isinstance(old, int | float):
        return str(old)
    if isinstance(old, str):
        try:
            return float(old)
        except ValueError:
            return [old]
    return [old]


def _rescale(rng: random.Random, old: Any) -> Any:
    """A number (or numeric string) negated, zeroed, or read in the wrong unit (s, µs, ns)."""
    try:
        value = float(old)
    except (TypeError, ValueError):
        return old
    factor = rng.choice((-1, 0, 1e-3, 1e3, 1e6, 1e-9))
    scaled = int(value * factor) if isinstance(old, int) and abs(factor) >= 1 else value * factor
    return str(scaled) if isinstance(old, str) else scaled


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return tree


def _delete(tree: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return None
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return tree


def mutate_tree(rng: random.Random, tree: Any) -> Any:
    """One to three structural mutations of a decoded frame."""
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(tree)))
        old = _get(tree, path)
        choice = rng.random()
        if choice < 0.25:
            tree = _delete(tree, path)
        elif choice < 0.35 and isinstance(old, list) and old:
            tree = _set(tree, path, old + old)  # a repeated row
        else:
            tree = _set(tree, path, _hostile(rng, old))
    return tree


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def mutate_text(rng: random.Random, text: bytes) -> bytes:
    """A byte-level mutation: truncation, bad bytes, hostile number literals, deep nesting."""
    choice = rng.randrange(5)
    if choice == 0:
        return text[: rng.randrange(len(text) + 1)]
    if choice == 1:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(BAD_BYTES) + text[at:]
    if choice == 2:
        digits = [i for i, c in enumerate(text) if chr(c).isdigit()]
        if digits:
            at = rng.choice(digits)
            end = at
            while end < len(text) and chr(text[end]) in "0123456789.eE+-":
                end += 1
            return text[:at] + rng.choice(TEXT_NUMBERS).encode() + text[end:]
        return text
    if choice == 3:
        return b"[" * 5000 + text + b"]" * 5000
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))


def gzip_garbage(rng: random.Random, text: bytes) -> bytes:
    """HTX: a truncated or corrupted gzip frame, or gzip around a broken payload."""
    packed = gzip.compress(text, mtime=0)
    choice = rng.randrange(3)
    if choice == 0:
        return packed[: rng.randrange(2, len(packed))]
    if choice == 1:
        at = rng.randrange(10, len(packed))
        return packed[:at] + bytes([packed[at] ^ 0xFF]) + packed[at + 1 :]
    return gzip.compress(mutate_text(rng, text), mtime=0)


def _plain(frame: str | bytes) -> bytes:
    data = frame.encode() if isinstance(frame, str) else frame
    return zlib.decompress(data, 16 + zlib.MAX_WBITS) if data.startswith(b"\x1f\x8b") else data


def mutants(rng: random.Random, seed: Seed, n: int) -> Iterator[str | bytes]:
    text = _plain(seed.frame)
    tree = json.loads(text)
    for _ in range(n):
        kind = rng.random()
        if kind < 0.7:
            data = json.dumps(mutate_tree(rng, json.loads(json.dumps(tree)))).encode()
        elif kind < 0.9 or seed.venue != "htx":
            data = mutate_text(rng, text)
        else:
            yield gzip_garbage(rng, text)
            continue
        if seed.venue == "htx" and rng.random() < 0.5:
            yield gzip.compress(data, mtime=0)
        elif rng.random() < 0.5:
            yield data.decode("utf-8", "surrogateescape")
        else:
            yield data


# -- the rule ----------------------------------------------------------------------------------


def problems(liq: Liquidation, venue: str) -> list[str]:
    """Why ``liq`` is not a liquidation any consumer could use (empty when it is)."""
    out = _amount_problems(liq) + _notional_problems(liq)
    if liq.side not in ("long", "short"):
        out.append(f"side={liq.side!r}")
    if not MIN_EVENT_MS <= liq.timestamp_ms < MAX_EPOCH_MS:
        out.append(f"timestamp_ms={liq.timestamp_ms}")
    names = (liq.symbol, liq.symbol_native, liq.base, liq.quote, liq.event_id)
    if not all(names):
        out.append(f"an empty name among {names!r}")
    if liq.exchange != venue or liq.received_ms != RECEIVED_MS:
        out.append(f"exchange {liq.exchange!r} / received_ms {liq.received_ms}")
    try:
        if codec.decode_liquidation(codec.encode(liq)) != liq:
            out.append("changes through the stream codec")
    except msgspec.ValidationError as exc:
        out.append(f"every consumer would dead-letter it: {exc}")
    return out


def _amount_problems(liq: Liquidation) -> list[str]:
    out = []
    positive = {"price": liq.price, "quantity": liq.quantity, "quantity_native": liq.quantity_native}
    for name, value in {**positive, "notional_usd": liq.notional_usd}.items():
        low_ok = value > 0 if name in positive else value >= 0
        if not (math.isfinite(value) and low_ok and value < MAX_AMOUNT):
            out.append(f"{name}={value!r}")
    if liq.contract_value is not None and not (math.isfinite(liq.contract_value) and liq.contract_value > 0):
        out.append(f"contract_value={liq.contract_value!r}")
    for key, extra in liq.extra.items():
        if isinstance(extra, float) and not math.isfinite(extra):
            out.append(f"extra[{key}]={extra!r}")
    return out


def _notional_problems(liq: Liquidation) -> list[str]:
    if not liq.notional_known:
        return [] if liq.notional_usd == 0 else [f"unknown notional is {liq.notional_usd!r}"]
    if liq.quantity_unit != "base":
        return ["a known notional with a quantity in contracts"]
    expected = liq.price * liq.quantity
    if not math.isclose(liq.notional_usd, expected, rel_tol=NOTIONAL_REL, abs_tol=1e-9):  # subnormals
        return [f"notional {liq.notional_usd!r} != price x quantity {expected!r}"]
    return []


def verdict(seed: Seed, frame: str | bytes) -> str | None:
    """None when the session handles ``frame`` by the rule, else what went wrong."""
    session = seed.session()
    try:
        output = session.on_message(frame, RECEIVED_MS)
    except ParseError:
        return None
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return f"raised {type(exc).__name__}: {exc}"
    if not all(isinstance(r, str | bytes) for r in output.replies):
        return f"replies {output.replies!r}"
    found = [f"{liq.symbol_native}: {p}" for liq in output.liquidations for p in problems(liq, seed.venue)]
    return "; ".join(found) or None


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_every_seed_frame_parses_cleanly_and_some_yield_liquidations(venue: str) -> None:
    """The unmutated frames follow the rule, and liquidations come out of them (else the
    mutants would only ever probe control frames)."""
    venue_seeds = seeds(venue)
    assert [(seed.frame, why) for seed in venue_seeds if (why := verdict(seed, seed.frame))] == []
    assert any(seed.session().on_message(seed.frame, RECEIVED_MS).liquidations for seed in venue_seeds)


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_mutated_frames_are_malformed_or_plausible(venue: str) -> None:
    rng = random.Random(f"{SEED}:{venue}")
    failures = []
    tried = 0
    for seed in seeds(venue):
        for frame in mutants(rng, seed, MUTANTS_PER_FRAME):
            tried += 1
            why = verdict(seed, frame)
            if why is not None:
                failures.append((frame[:300], why[:300]))
    assert tried >= MUTANTS_PER_FRAME
    assert failures == [], f"{len(failures)} of {tried} mutants broke the rule; first: {failures[:3]}"

