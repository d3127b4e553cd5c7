"""Every peer-corpus record through its venue's parser, compared field by field with ``expected``.

The corpus lives outside the repository (``../shared/peer-corpus``); a missing folder is a
failure, never a skip; so is a record whose venue module is missing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collectors import load_venue
from collectors.venues._common import liquidation_to_row

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "peer-corpus"
RECEIVED_MS = 1_700_000_000_000
REL = 1e-9

# corpus file stem -> venue name. ftx.jsonl is deliberately absent: FTX is closed and has no
# venue module here, so its records are not parametrized at all.
FILE_VENUE = {
    "binance_usdm": "binance_usdm",
    "binance_coinm": "binance_coinm",
    "bybit": "bybit",
    "okx": "okx",
    "bitmex": "bitmex",
    "deribit": "deribit",
    "bitfinex": "bitfinex",
    "huobi": "htx",
    "kraken_futures": "kraken_futures",
    "dydx_v4": "dydx",
    "bitget": "bitget",
    "lighter": "lighter",
    "hyperliquid": "hyperliquid",
}
EXCLUDED_FILES = {"ftx"}

DOCUMENTED_INSTEAD: dict[tuple[str, str], str] = {
    ("binance_coinm", "notional_usd_at_price_avg"):
        "the corpus multiplied contracts by the price as if they were BTC; an inverse contract is "
        "worth its face at any price (exchanges.md 1.2: notional = z x contractSize), so ours is "
        "notional_usd",
}
"""Fields where the corpus breaks its venue's documented rule: ours follows the rule instead."""
_ABSENT = object()


def _records() -> list[Any]:
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"peer corpus folder missing: {CORPUS}")
    params = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        if path.stem in EXCLUDED_FILES:
            continue
        venue = FILE_VENUE[path.stem]  # a new corpus file must be mapped here explicitly
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                params.append(pytest.param(venue, record, id=record["id"]))
    return params


def _same(got: Any, want: Any) -> bool:
    if want is None:
        return got is None or got is _ABSENT
    if isinstance(want, int | float) and not isinstance(want, bool):
        return isinstance(got, int | float) and not isinstance(got, bool) and math.isclose(
            got, want, rel_tol=REL, abs_tol=1e-12)
    return type(got) is type(want) and got == want


def _compare(venue: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Every field of ``want`` (extras included) against ours: numbers within a relative 1e-9,
    the rest exact; a null in the corpus must be null or absent in ours."""
    problems = []
    for field, expected in want.items():
        ours = got.get(field, _ABSENT)
        if (venue, field) in DOCUMENTED_INSTEAD:
            expected = got["notional_usd"]
        elif field == "timestamp_ms" and expected is None:  # BitMEX: no time in the message
            expected, ours = "receive", got.get("timestamp_source")  # ours: the receive time, marked
        elif field == "timestamp_source" and "receive" in str(expected):  # prose in the corpus
            expected = "receive"
        if not _same(ours, expected):
            problems.append(f"{field}: {'<absent>' if ours is _ABSENT else repr(ours)} != {expected!r}")
    return problems


def _rows(venue: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    session = load_venue(venue).new_parser()
    for chan_id, key in (record.get("channel_id_map") or {}).items():
        ack = {"event": "subscribed", "channel": "status", "chanId": int(chan_id), "key": key}
        assert session.on_message(json.dumps(ack), RECEIVED_MS).liquidations == []
    output = session.on_message(json.dumps(record["raw"]), RECEIVED_MS)
    # a row left out as bad (each_row) would not change the liquidations of a frame that has
    # others (dydx-001's LIMIT trade, a row of bybit-002 or bitget-001): none may be rejected
    assert [e.reason for e in output.rejected] == [], record["id"]
    event_ids = [liq.event_id for liq in output.liquidations]
    assert len(set(event_ids)) == len(event_ids), "event ids must be distinct"
    return [liquidation_to_row(liq) for liq in output.liquidations]


def _assert_matches(venue: str, record: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    rows = _rows(venue, record)
    assert len(rows) == len(expected), rows
    for got, want in zip(rows, expected, strict=True):
        assert got["exchange"] == venue
        assert _compare(venue, got, want) == [], record["id"]


def test_corpus_folder_present() -> None:
    assert CORPUS.is_dir(), f"peer corpus folder missing: {CORPUS}"
    stems = {p.stem for p in CORPUS.glob("*.jsonl")}
    assert stems - EXCLUDED_FILES <= set(FILE_VENUE), "unmapped corpus file"


@pytest.mark.parametrize(("venue", "record"), _records())
def test_corpus_record(venue: str, record: dict[str, Any]) -> None:
    _assert_matches(venue, record, record["expected"])


ALTERNATIVES: dict[str, Callable[[Any], Any]] = {
    # the one input each alternative hinges on, flipped: Bitfinex counts a match row, Lighter its
    # subscribe snapshot; the alternative's extra fields are then checked like any expected item
    "alternative_expected_if_matches_counted": lambda raw: [*raw[:1], [[*r[:8], 0, *r[9:]] for r in raw[1]],
                                                            *raw[2:]],
    "alternative_expected_if_snapshot_counted": lambda raw: {**raw, "type": "update/trade"},
}


def _alternatives() -> list[Any]:
    return [pytest.param(venue, record, key, id=f"{record['id']}:{key}")
            for venue, record in ((p.values[0], p.values[1]) for p in _records())
            for key in record if key.startswith("alternative_expected")]


@pytest.mark.parametrize(("venue", "record", "key"), _alternatives())
def test_corpus_alternative(venue: str, record: dict[str, Any], key: str) -> None:
    """Our policy (match rows and subscribe snapshots are not counted) is a choice: the
    alternative outputs must still come out right when that input is flipped."""
    flipped = {**record, "raw": ALTERNATIVES[key](record["raw"])}
    _assert_matches(venue, flipped, record[key])
