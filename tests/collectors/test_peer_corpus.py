"""Every peer-corpus record through its venue's parser, compared field by field with ``expected``.

The corpus lives outside the repository (``../shared/peer-corpus``); a missing folder is a
failure, never a skip. Records of venue modules that do not exist yet are collected and marked
xfail (non-strict) until the module is written.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from collectors import VENUES, load_venue
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

EXACT_FIELDS = ("symbol_native", "symbol", "base", "quote", "market_type", "side", "quantity_unit")
FLOAT_FIELDS = ("price", "quantity", "quantity_native")
OPTIONAL_FIELDS = ("expiry", "quantity_native_unit", "contract_value_unit")


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
                params.append(pytest.param(venue, record, id=record["id"], marks=_marks(venue)))
    return params


def _marks(venue: str) -> list[pytest.MarkDecorator]:
    if importlib.util.find_spec(VENUES[venue]) is None:
        return [pytest.mark.xfail(reason="venue module not written yet", strict=False)]
    return []


def _close(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=REL, abs_tol=1e-12)


def _compare(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    problems = [f"{f}: {got.get(f)!r} != {want[f]!r}" for f in EXACT_FIELDS if got.get(f) != want[f]]
    problems += [f"{f}: {got.get(f)!r} != {want[f]!r}" for f in FLOAT_FIELDS if not _close(got[f], want[f])]
    problems += [
        f"{f}: {got.get(f)!r} != {want[f]!r}" for f in OPTIONAL_FIELDS if f in want and got.get(f) != want[f]
    ]
    if "contract_value" in want and not _close(got.get("contract_value"), want["contract_value"]):
        problems.append(f"contract_value: {got.get('contract_value')!r} != {want['contract_value']!r}")
    if not _close(got["notional_usd"], want["notional_usd"]):
        problems.append(f"notional_usd: {got['notional_usd']!r} != {want['notional_usd']!r}")
    if want.get("timestamp_ms") is not None and got["timestamp_ms"] != want["timestamp_ms"]:
        problems.append(f"timestamp_ms: {got['timestamp_ms']!r} != {want['timestamp_ms']!r}")
    return problems


def test_corpus_folder_present() -> None:
    assert CORPUS.is_dir(), f"peer corpus folder missing: {CORPUS}"
    stems = {p.stem for p in CORPUS.glob("*.jsonl")}
    assert stems - EXCLUDED_FILES <= set(FILE_VENUE), "unmapped corpus file"


@pytest.mark.parametrize(("venue", "record"), _records())
def test_corpus_record(venue: str, record: dict[str, Any]) -> None:
    session = load_venue(venue).new_parser()
    for chan_id, key in (record.get("channel_id_map") or {}).items():
        ack = {"event": "subscribed", "channel": "status", "chanId": int(chan_id), "key": key}
        assert session.on_message(json.dumps(ack), RECEIVED_MS).liquidations == []
    output = session.on_message(json.dumps(record["raw"]), RECEIVED_MS)
    rows = [liquidation_to_row(liq) for liq in output.liquidations]
    assert len(rows) == len(record["expected"]), rows
    for got, want in zip(rows, record["expected"], strict=True):
        assert got["exchange"] == venue
        assert _compare(got, want) == [], record["id"]
    event_ids = [liq.event_id for liq in output.liquidations]
    assert len(set(event_ids)) == len(event_ids), "event ids must be distinct"
