"""Focused regressions for frames that broke the malformed-frame rule (found by the fuzzer in
``test_venue_fuzz``): each must raise :class:`~shared.errors.ParseError`, the one exception the
connection loop, ``liq parse`` and ``liq replay`` count and skip, and never yield an unusable
Liquidation."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import pytest

from collectors.venue import VenueSession
from collectors.venues._common import MAX_INFLATED, MIN_EVENT_MS, inflate
from shared.errors import ParseError
from shared.venues import VENUE_NAMES
from tests.collectors.test_sim_a import _connect, _items

RX = 1_767_225_600_000


def _session_and_frame(venue: str) -> tuple[VenueSession, bytes]:
    """A subscribed session and one real (inflated) data frame the simulator rendered for it."""
    sim, client, session = _connect(venue)
    frame = sim.frames(_items(sim)[:1], client)[0]
    data = frame.encode() if isinstance(frame, str) else frame
    return session, gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data


def _malformed(session: VenueSession, *frames: str | bytes) -> None:
    for frame in frames:
        with pytest.raises(ParseError):
            session.on_message(frame, RX)


@pytest.mark.parametrize("venue", VENUE_NAMES)
def test_undecodable_text_and_deep_nesting_are_parse_errors(venue: str) -> None:
    """msgspec raises UnicodeDecodeError (bad UTF-8 in a bytes frame, or in an inflated HTX
    frame), UnicodeEncodeError (a str with lone surrogates, as ``liq parse`` reads bytes it
    cannot decode under a C locale) and RecursionError (deep nesting), none a DecodeError."""
    session, text = _session_and_frame(venue)
    at = text.index(b'"', 3) + 1  # inside the first string after the opening key
    bad_utf8 = text[:at] + b"\xff" + text[at:]
    deep = b"[" * 5000 + b"]" * 5000
    _malformed(session, bad_utf8, gzip.compress(bad_utf8, mtime=0),
               bad_utf8.decode("utf-8", "surrogateescape"), deep, b'{"a":' + deep + b"}")


def _with(venue: str, path: tuple[str | int, ...], value: object) -> tuple[VenueSession, str]:
    """A subscribed session and its first simulated frame with the value at ``path`` replaced."""
    session, text = _session_and_frame(venue)
    tree = json.loads(text)
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return session, json.dumps(tree)


OKX_DETAIL = ("data", 0, "details", 0)


@pytest.mark.parametrize(("venue", "path", "value"), [
    ("okx", (*OKX_DETAIL, "ts"), "1e999"),  # int(inf): OverflowError
    ("okx", (*OKX_DETAIL, "ts"), "NaN"),
    ("okx", (*OKX_DETAIL, "bkLoss"), "inf"),  # extra bankruptcy_loss
    ("gate", ("result", 0, "size"), 10**400),  # float(int): OverflowError
    ("binance_usdm", ("data", "o", "ap"), "NaN"),  # extra price_avg
    ("binance_usdm", ("data", "o", "l"), "1e999"),  # extra quantity_last_fill
    ("lighter", ("liquidation_trades", 0, "usd_amount"), "Infinity"),
    ("hyperliquid", ("data", "fills", 0, "liquidation", "markPx"), "-inf"),
], ids=lambda v: str(v)[:12])  # fmt: skip
def test_a_number_that_is_not_finite_is_malformed(venue: str, path: tuple[str | int, ...],
                                                  value: object) -> None:
    """``num`` read "NaN", "inf" and "1e999" as floats (into the event time or an extra) and let
    ``float()`` of a huge integer overflow; each is a malformed number naming its field."""
    session, frame = _with(venue, path, value)
    with pytest.raises(ParseError, match="bad number"):
        session.on_message(frame, RX)


@pytest.mark.parametrize(("venue", "path", "value"), [
    ("binance_usdm", ("data", "o", "p"), "0"),
    ("binance_usdm", ("data", "o", "p"), "-0"),
    ("binance_usdm", ("data", "o", "z"), "-1.923"),  # z not above 0 → q, which is 1.923: fine
    ("bybit", ("data", 0, "v"), "0.0"),
    ("bybit", ("data", 0, "v"), "-0.5"),
    ("bitmex", ("data", 0, "leavesQty"), 0),
    ("kraken_futures", ("qty",), -3),
    ("dydx", ("contents", "trades", 0, "size"), "-0"),
    ("hyperliquid", ("data", "fills", 0, "sz"), "-1.5"),
    ("deribit", ("params", "data", 0, "amount"), -100),
    ("okx", (*OKX_DETAIL, "bkPx"), "0"),
    ("lighter", ("liquidation_trades", 0, "price"), "0"),
], ids=lambda v: str(v)[:12])  # fmt: skip
def test_a_price_or_quantity_not_above_zero_is_malformed(venue: str, path: tuple[str | int, ...],
                                                         value: object) -> None:
    """``make_liquidation`` accepted a price or quantity of 0 (and ``-0``), and quietly took the
    absolute value of a negative quantity on venues whose quantities are never signed (Bitfinex
    and Gate pass the magnitude of their signed amounts themselves)."""
    session, frame = _with(venue, path, value)
    if path[-1] == "z":  # Binance: a z that is not above 0 means "use q"
        assert session.on_message(frame, RX).liquidations[0].quantity == 1.923
        return
    with pytest.raises(ParseError, match="above 0"):
        session.on_message(frame, RX)


HTX_ORDER = ("data", 0)


@pytest.mark.parametrize(("field", "value"), [
    ("amount", 0), ("amount", -1.923), ("amount", 1e16),
    ("trade_turnover", 0), ("trade_turnover", -5), ("trade_turnover", 3.44e-06), ("trade_turnover", 1e16),
])  # fmt: skip
def test_htx_frame_amount_and_turnover_are_checked_like_any_amount(field: str, value: float) -> None:
    """The USDT-margined ``amount`` (base) and ``trade_turnover`` (notional) replaced the checked
    quantity and notional after ``make_liquidation``: a zero, negative or absurd value, or a
    turnover nowhere near amount × price, was published as it came."""
    session, frame = _with("htx", (*HTX_ORDER, field), value)
    with pytest.raises(ParseError, match=field):
        session.on_message(frame, RX)


@pytest.mark.parametrize(("venue", "path", "value"), [
    ("binance_usdm", ("data", "o", "T"), 1_700_000_000),  # seconds read as milliseconds
    ("okx", (*OKX_DETAIL, "ts"), "16800.0"),
    ("gate", ("result", 0, "time"), 17_000.0),  # "seconds" by magnitude: 1970-01-01T04:43:20
    ("lighter", ("liquidation_trades", 0, "timestamp"), 1),
    ("kraken_futures", ("time",), 0),
])  # fmt: skip
def test_an_event_time_before_2009_is_malformed(venue: str, path: tuple[str | int, ...],
                                                value: object) -> None:
    """Only times from 2100 on were refused: a time in seconds (or 0) became a 1970 event that
    the aggregator buckets and the writer stores decades before any crypto exchange existed."""
    session, frame = _with(venue, path, value)
    with pytest.raises(ParseError, match="is not epoch milliseconds"):
        session.on_message(frame, RX)
    assert MIN_EVENT_MS == 1_230_768_000_000  # 2009-01-01T00:00:00Z


@pytest.mark.parametrize(("venue", "path", "value"), [
    ("binance_coinm", ("data", "o", "s"), ""),  # the pair "ps" named the instrument alone
    ("okx", ("data", 0, "instId"), "-1"),  # read as a spot pair "" / "1"
    ("bitfinex", (1, 0, 4), ":"),  # base "" and quote ""
    ("bitfinex", (1, 0, 4), "tF0:USTF0"),  # a perpetual of base ""
    ("bybit", ("data", 0, "s"), "USDT-26DEC25"),  # a future of base ""
])  # fmt: skip
def test_an_instrument_without_a_name_base_or_quote_is_malformed(venue: str, path: tuple[str | int, ...],
                                                                 value: object) -> None:
    """Symbol fallbacks split whatever a frame named: an empty native symbol, base or quote
    became a Liquidation of symbol ``""``, ``"USDT"`` or ``"1"``."""
    session, frame = _with(venue, path, value)
    with pytest.raises(ParseError, match="empty"):
        session.on_message(frame, RX)


def test_an_extra_that_overflows_is_malformed() -> None:
    """Binance's ``notional_usd_at_price_avg`` is z × ap, each finite: 1.923 × 1e308 is inf, which
    the stream codec writes as null, so the extra changed on its way to every consumer."""
    session, frame = _with("binance_usdm", ("data", "o", "ap"), 1e308)
    with pytest.raises(ParseError, match="notional_usd_at_price_avg"):
        session.on_message(frame, RX)


def test_a_gzip_frame_that_inflates_beyond_the_frame_limit_is_malformed() -> None:
    """``inflate`` had no bound: a 17 KB gzip frame inflating to 17 MiB (or a 16 MiB one, the
    largest the socket accepts, inflating to 16 GB) was decompressed whole in memory. Beyond
    ``MAX_INFLATED`` (the socket's own frame limit) it is malformed; a truncated gzip frame
    still is too."""
    session, text = _session_and_frame("htx")
    bomb = gzip.compress(text + b" " * MAX_INFLATED, mtime=0)
    with pytest.raises(ParseError, match="inflates beyond"):
        inflate(bomb, "htx")
    with pytest.raises(ParseError, match="inflates beyond"):
        session.on_message(bomb, RX)
    packed = gzip.compress(text, mtime=0)
    with pytest.raises(ParseError, match="gzip"):
        inflate(packed[:-12], "htx")
    assert inflate(packed, "htx") == text


def _at(tree: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


MULTI_ROW: list[tuple[str, tuple[str | int, ...], tuple[str | int, ...], object]] = [
    ("bybit", ("data",), ("v",), "0.0"),
    ("bitget", ("data",), ("price",), "0"),
    ("bitmex", ("data",), ("leavesQty",), 0),
    ("gate", ("result",), ("price",), "0"),
    ("htx", ("data",), ("amount",), 0),
    ("hyperliquid", ("data", "fills"), ("sz",), "-1.5"),
    ("lighter", ("liquidation_trades",), ("price",), "0"),
    ("dydx", ("contents", "trades"), ("size",), "-0"),
    ("deribit", ("params", "data"), ("amount",), -100),
    ("okx", ("data",), ("details", 0, "bkPx"), "0"),
    ("okx", ("data", 0, "details"), ("ts",), "1e999"),
    ("bitfinex", (1,), (5,), 0),
]  # fmt: skip
"""Every venue whose frames carry several rows: where the rows are, and a value that makes one
row invalid."""


def _bad_row_first(venue: str, rows: tuple[str | int, ...], field: tuple[str | int, ...],
                   value: object) -> list[ParseError]:
    """One invalid row (first, so that it does not stop the rows after it) is left out and
    returned in ``rejected`` with the frame's sample; the good row is kept as if it came alone.
    A frame with no valid row raises, as a single-row frame does. ``field`` ``()``: the row
    itself is ``value``. Returns the rejected errors."""
    session, text = _session_and_frame(venue)
    alone = session.on_message(text, RX).liquidations
    tree = json.loads(text)
    row_list = _at(tree, rows)
    bad = copy.deepcopy(row_list[0])
    if field:
        _at(bad, field[:-1])[field[-1]] = value
    else:
        bad = value
    row_list[:] = [bad, row_list[0]]
    frame = json.dumps(tree)
    fresh, _ = _session_and_frame(venue)
    output = fresh.on_message(frame, RX)
    assert len(alone) == 1 and output.liquidations == alone
    assert [(e.venue, e.sample) for e in output.rejected] == [(venue, frame[:200])]
    row_list[:] = [bad, bad]
    _malformed(session, json.dumps(tree))  # acked its channel (Bitfinex: else not a liq:global frame)
    return output.rejected


@pytest.mark.parametrize(("venue", "rows", "field", "value"), MULTI_ROW, ids=lambda v: str(v)[:12])
def test_a_bad_row_costs_only_itself_and_a_frame_of_bad_rows_is_malformed(
        venue: str, rows: tuple[str | int, ...], field: tuple[str | int, ...], value: object) -> None:
    """A row whose values are bad costs only itself (see ``_bad_row_first``)."""
    _bad_row_first(venue, rows, field, value)


WRONG_TYPED: list[tuple[str, tuple[str | int, ...], tuple[str | int, ...], object]] = [
    ("bybit", ("data",), ("p",), {}),  # p and v may be null (the old topics' price and size)
    ("bitget", ("data",), ("price",), None),
    ("bitmex", ("data",), ("price",), {}),  # price may be null
    ("gate", ("result",), ("price",), None),
    ("htx", ("data",), ("price",), None),
    ("hyperliquid", ("data", "fills"), ("sz",), None),
    ("lighter", ("liquidation_trades",), ("price",), None),
    ("dydx", ("contents", "trades"), ("size",), None),
    ("deribit", ("params", "data"), ("amount",), None),
    ("okx", ("data",), ("instId",), 5),
    ("okx", ("data",), ("details",), {}),
    ("okx", ("data", 0, "details"), ("sz",), {}),  # bkPx and sz may be null
    ("bitfinex", (1,), (5,), None),
]  # fmt: skip
"""Every multi-row venue (``MULTI_ROW``): a field of one row set to a value of the wrong type."""
NOT_A_ROW: list[tuple[str, tuple[str | int, ...], tuple[str | int, ...], object]] = [
    (venue, rows, (), 7) for venue, rows in dict.fromkeys((venue, rows) for venue, rows, _, _ in MULTI_ROW)]
"""The same rows replaced by a JSON number (an object, or Bitfinex's array, is due)."""


@pytest.mark.parametrize(("venue", "rows", "field", "value"), WRONG_TYPED + NOT_A_ROW,
                         ids=lambda v: str(v)[:12])
def test_a_wrong_typed_row_costs_only_itself_and_a_frame_of_them_is_malformed(
        venue: str, rows: tuple[str | int, ...], field: tuple[str | int, ...], value: object) -> None:
    """A row of the wrong type (``"price": null``, ``"sz": {}``, a number for a row) failed
    the typed decode of the whole frame, losing its other rows: each row is now typed on its
    own (``_common.decode_row``), so it costs only itself, as a row of bad values does."""
    rejected = _bad_row_first(venue, rows, field, value)
    assert [e.reason.split(":")[0] for e in rejected] == [
        "not a pos row" if venue == "bitfinex" and not field else "row"]


def test_okx_v3_rows_of_the_wrong_type_cost_only_themselves() -> None:
    """The tardis v3 ``swap/liquidation`` envelope: its rows are typed one by one too."""
    good = {"loss": "0", "size": "8", "price": "3.523", "created_at": "2020-12-18T00:30:58.374Z",
            "type": "3", "instrument_id": "UNI-USD-SWAP"}
    session, _ = _session_and_frame("okx")
    for bad in ({**good, "size": {}}, {**good, "type": 3}, 7):
        frame = json.dumps({"table": "swap/liquidation", "generated": True, "data": [bad, good]})
        output = session.on_message(frame, RX)
        got = [(liq.symbol_native, liq.quantity_native, liq.timestamp_ms) for liq in output.liquidations]
        assert got == [("UNI-USD-SWAP", 8.0, 1_608_251_458_374)]
        assert [(e.reason.split(":")[0], e.sample) for e in output.rejected] == [("row", frame[:200])]
        _malformed(session, json.dumps({"table": "swap/liquidation", "data": [bad, bad]}))


def test_an_okx_entry_without_inst_id_costs_only_itself() -> None:
    """A ``liquidation-orders`` push of several instruments: the entry without ``instId`` is a
    bad row like any other (rejected with the frame's sample), not the whole frame."""
    session, text = _session_and_frame("okx")
    alone = session.on_message(text, RX).liquidations
    tree = json.loads(text)
    nameless = copy.deepcopy(tree["data"][0])
    del nameless["instId"]
    tree["data"][:] = [nameless, tree["data"][0]]
    frame = json.dumps(tree)
    fresh, _ = _session_and_frame("okx")
    output = fresh.on_message(frame, RX)
    assert len(alone) == 1 and output.liquidations == alone
    assert [(e.venue, e.sample) for e in output.rejected] == [("okx", frame[:200])]
    assert [e.reason.split(":")[0] for e in output.rejected] == ["liquidation-orders entry without instId"]
    # the reason shows the entry itself (its details kept raw printed as "<msgspec.Raw object
    # at 0x…>": neither what the entry held nor the same text twice)
    assert json.dumps(nameless["details"][0]) in output.rejected[0].reason
    tree["data"][:] = [nameless, nameless]
    _malformed(fresh, json.dumps(tree))
