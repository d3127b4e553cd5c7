"""Gate futures v4: ``futures.public_liquidates`` on the USDT-, BTC- and USD1-settled endpoints.

Docs: gate.com/docs/developers/futures/ws (``futures.public_liquidates``). Subscribing with the
payload ``["!all"]`` covers every contract of a settle currency; since 2026-08-20 every
liquidation is pushed, batched per contract per ~1 s (no peer recording exists, so this frame is
built from the docs)::

    {"time":1781000000,"time_ms":1781000000123,"channel":"futures.public_liquidates",
     "event":"update","result":[{"price":"65000.5","size":-124,"time":1781000000045,
     "contract":"BTC_USDT"}]}

Side rule: ``size`` is the signed size of the liquidation ORDER (Gate's order convention):
negative = sell = a long was liquidated, positive = a short (inference, exchanges.md 1.7).

Units: ``|size|`` contracts × ``quanto_multiplier`` (the instrument table's contract value in
base) for USDT and USD1 contracts; BTC-settled inverse contracts are 1 USD each. A contract missing
from the table keeps its quantity in contracts with the notional unknown. ``size`` is an
integer, or a string with the ``X-Gate-Size-Decimal`` header. ``time`` was seconds before the
change and is ms after it (older rows carry ``time_ms``), so it is read by magnitude. The
handshake sends ``X-Gate-Size-Decimal: 1`` (exchanges.md trap 7): without it Gate sends sizes as
integers, and a fractional size would be rounded.
No exchange id: ``event_id`` is the digest. Heartbeat: ``futures.ping`` → ``futures.pong``.

Instruments endpoint (``VENUE.instruments``, refreshed by ``collectors.refresh``):
``GET /api/v4/futures/{usdt,btc,usd1}/contracts`` → ``[{"name":"BTC_USDT","type":"direct",
"quanto_multiplier":"0.0001",…}]``. A ``direct`` contract quoted in its settle currency is
``quanto_multiplier`` base per contract; ``inverse`` ``X_USD`` is 1 USD per contract; a quanto
contract (``direct``, quoted in another currency than it settles in) is listed with its size
unknown, since its multiplier is not in base.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from collectors.instruments import Instrument, InstrumentTable
from collectors.venue import (
    CONFIRMED,
    EMPTY,
    ConnectionPlan,
    InstrumentRequest,
    InstrumentSource,
    Outgoing,
    SessionOutput,
    VenueSpec,
)
from collectors.venues._common import decode, decode_row, each_row, make_liquidation, num, server_error
from shared.errors import ParseError
from shared.models import Liquidation

NAME = "gate"
CHANNEL = "futures.public_liquidates"
ALL = "!all"
WS_PATH = "/v4/ws/"
SETTLES = {"usdt": "_USDT", "btc": "_USD", "usd1": "_USD1"}
"""Settle currency → contract suffix; one connection each (USD1-settled since 2026-08-19)."""
SECONDS_BELOW = 100_000_000_000  # a time below this (year 5138 in s, 1973 in ms) is in seconds


class Row(msgspec.Struct):
    contract: str
    size: int | float | str
    price: float | str
    time: int | float | None = None
    time_ms: int | None = None


class Frame(msgspec.Struct):
    channel: str = ""
    event: str = ""
    result: list[msgspec.Raw] | dict[str, Any] | None = None
    """Rows kept raw: each is typed on its own (a wrong-typed row costs only itself)."""
    error: dict[str, Any] | None = None


_frame = msgspec.json.Decoder(Frame)
_row = msgspec.json.Decoder(Row)


def contract_instrument(contract: str) -> Instrument:
    """``X_USDT`` / ``X_USD1`` → linear perpetual, size unknown; ``X_USD`` → inverse, 1 USD per
    contract."""
    base, _, quote = contract.rpartition("_")
    if not base or quote not in ("USDT", "USD", "USD1"):
        raise ParseError(NAME, f"unknown contract {contract!r}")
    if quote == "USD":
        return Instrument(contract, base, "USD", "inverse_perpetual", 1.0, "USD")
    return Instrument(contract, base, quote, "linear_perpetual")


def row_time_ms(row: Row) -> int:
    """``time_ms`` when present, else ``time`` read as seconds or ms by its magnitude."""
    if row.time_ms is not None:
        return row.time_ms
    if row.time is None:
        raise ParseError(NAME, f"liquidation of {row.contract} without time")
    return round(row.time * 1000) if row.time < SECONDS_BELOW else round(row.time)


class GateSession:
    """One connection to one settle endpoint, subscribed to ``!all`` or a contract list."""

    def __init__(self, contracts: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.contracts = list(contracts) or [ALL]
        self.table = TABLE if table is None else table  # the live table: refreshed in place

    def on_open(self) -> list[Outgoing]:
        return [json.dumps({"time": int(time.time()), "channel": CHANNEL, "event": "subscribe",
                            "payload": self.contracts})]

    def confirmations(self) -> int:
        """The one ``{"event":"subscribe","result":{"status":"success"}}`` reply."""
        return 1

    def heartbeat(self) -> Outgoing | None:
        return json.dumps({"time": int(time.time()), "channel": "futures.ping"})

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, raw, NAME)
        if frame.error is not None:
            return server_error(NAME, frame.error)
        if frame.channel == CHANNEL and frame.event == "subscribe":
            return CONFIRMED
        if frame.channel != CHANNEL or frame.event != "update" or not isinstance(frame.result, list):
            return EMPTY
        return each_row(NAME, raw, frame.result, lambda row: self._liquidation(row, received_ms))

    def _liquidation(self, raw_row: msgspec.Raw, received_ms: int) -> Liquidation:
        row = decode_row(_row, raw_row, NAME)
        size = num(row.size, NAME, "size")
        if size == 0:
            raise ParseError(NAME, f"liquidation of {row.contract} with size 0")
        return make_liquidation(
            NAME,
            self.table.get(row.contract) or contract_instrument(row.contract),
            side="long" if size < 0 else "short",
            side_raw=str(row.size),
            price=num(row.price, NAME, "price"),
            quantity_native=abs(size),
            native_unit="contracts",
            timestamp_ms=row_time_ms(row),
            received_ms=received_ms,
        )


def settle_url(base_url: str, settle: str) -> str:
    """``.../v4/ws/{settle}`` on ``base_url``'s host, keeping any prefix path before it."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    for known in SETTLES:
        path = path.removesuffix(WS_PATH + known)
    return f"{parts.scheme}://{parts.netloc}{path}{WS_PATH}{settle}"


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection per settle currency: ``!all``, or the given contracts of that settle."""
    plans = []
    for settle, suffix in SETTLES.items():
        contracts = [s for s in symbols if s.endswith(suffix)]
        if symbols and not contracts:
            continue
        plans.append(
            ConnectionPlan(settle_url(base_url, settle), f"{NAME}:{settle}", _factory(contracts))
        )
    return plans


def _factory(contracts: list[str]) -> Callable[[], GateSession]:
    return lambda: GateSession(contracts)


class RestContract(msgspec.Struct):
    """One contract of ``GET /api/v4/futures/{settle}/contracts`` (the fields used here)."""

    name: str
    type: str = ""
    quanto_multiplier: str = ""


_rest = msgspec.json.Decoder(list[RestContract])
CONTRACTS_PATH = "/api/v4/futures/{settle}/contracts"


def parse_instruments(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The contracts one settle currency's answer lists; ValueError when malformed."""
    settle = request.path.removeprefix("/api/v4/futures/").split("/")[0].upper()
    return [rest_instrument(contract, settle) for contract in _rest.decode(body)]


def rest_instrument(contract: RestContract, settle: str) -> Instrument:
    """A contracts row as the table holds it (see the module docstring for the size rules)."""
    base, _, quote = contract.name.rpartition("_")
    if not base or not quote:
        raise ValueError(f"{NAME} contract name {contract.name!r} is not BASE_QUOTE")
    if contract.type == "inverse":  # 1 USD per contract (exchanges.md 1.7)
        if quote != "USD":
            return Instrument(contract.name, base, quote, "inverse_perpetual")
        return Instrument(contract.name, base, quote, "inverse_perpetual", 1.0, "USD")
    multiplier = float(contract.quanto_multiplier or "0")
    if contract.type != "direct" or quote != settle or multiplier <= 0:
        return Instrument(contract.name, base, quote, "linear_perpetual")
    return Instrument(contract.name, base, quote, "linear_perpetual", multiplier, base)


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://fx-ws.gateio.ws/v4/ws/usdt",
    markets="Gate USDT-, USD1- and BTC-settled perpetuals (all contracts via !all)",
    headers=(("X-Gate-Size-Decimal", "1"),),  # sizes as exact decimal strings, never rounded
    semantics="complete",
    semantics_note="every liquidation since 2026-08-20, batched per contract per ~1 s (before: 1/s/contract)",
    heartbeat_s=10.0,
    answers_pings=True,
    usual_gap_s=120.0,
    plans=_plans,
    new_parser=GateSession,
    instruments=InstrumentSource(
        live_rest_url="https://api.gateio.ws",
        requests=tuple(InstrumentRequest(CONTRACTS_PATH.format(settle=s)) for s in SETTLES),
        parse=parse_instruments,
        table=TABLE,
    ),
)
