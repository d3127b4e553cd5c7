"""HTX (Huobi) derivatives: ``public.{code}.liquidation_orders`` on the three notification endpoints.

Docs: HTX USDT-M / coin-M swap / coin-M futures WebSocket, "liquidation orders" topic. One
``{"op":"sub","cid":…,"topic":"public.BTC-USDT.liquidation_orders"}`` per contract (coin-M
futures subscribe by symbol, ``public.BTC.liquidation_orders``). Frames are gzip-compressed;
the connection loop inflates them, and this parser also accepts the raw gzip bytes::

    {"op":"notify","topic":"public.BTC.liquidation_orders","ts":1593561769911,"data":[
     {"symbol":"BTC","contract_code":"BTC200703","direction":"sell","offset":"close",
      "volume":1450,"price":9062.71,"created_at":1593561769833}]}

Side rule: ``direction`` is the liquidation ORDER direction: ``sell`` means a long was liquidated.

Units: ``volume`` is contracts. Coin-margined contracts are 100 USD (BTC) or 10 USD (other
coins), so notional = volume × size and base = notional / price; ``BTC200703`` is the
inverse future expiring 2020-07-03. USDT-margined frames also carry ``amount`` (base) and
``trade_turnover`` (USDT), which are used as quantity and notional (BTC-USDT is 0.001 BTC per
contract). Timestamp: ``created_at`` (ms). No exchange id: ``event_id`` is the digest.
Heartbeat: the server sends ``{"op":"ping","ts":…}`` (old endpoints ``{"ping":…}``) and
expects the same ``ts`` back in ``{"op":"pong"}`` (``{"pong":…}``); a connection with no frame
for three of its ping intervals is dead (``VenueSpec.server_heartbeat_s``).

Instruments endpoints (``VENUE.instruments``, refreshed by ``collectors.refresh``), one per
market: ``GET /linear-swap-api/v1/swap_contract_info?business_type=all`` (USDT-margined swaps
and futures), ``/swap-api/v1/swap_contract_info`` (coin-margined swaps) and
``/api/v1/contract_contract_info`` (coin-margined futures), each ``{"status":"ok","data":[
{"symbol","contract_code","contract_size","delivery_date",…}]}``. ``contract_size`` is base
per contract (USDT-margined) or USD per contract (coin-margined); ``delivery_date``
(``YYYYMMDD``, empty for swaps) is the expiry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
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
from collectors.venues._common import (
    decode,
    decode_row,
    each_row,
    inflate,
    make_liquidation,
    market_type,
    num,
    position_side,
    server_error,
    yymmdd_expiry,
)
from shared.errors import ParseError
from shared.models import Liquidation, plausible_amount

NAME = "htx"
ENDPOINTS = {  # path → which contract codes it serves
    "/linear-swap-notification": "linear",
    "/swap-notification": "swap",
    "/futures-notification": "futures",
}
SERVER_PING_S = 10.0
"""HTX documents a ping every 5 s; clients have seen one every 10 s, so 10 s is the safe bound."""
DEFAULT_CODES = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "BTC-USD", "ETH-USD", "SOL-USD", "BTC", "ETH")
TURNOVER_TOLERANCE = 0.1
"""How far ``trade_turnover`` may be from amount × price (venue rounding, a fill-price turnover)."""
_CODE = re.compile(r"^(?P<base>[A-Z0-9]+?)(?:-(?P<quote>USDT|USD))?(?:-?(?P<date>\d{6}))?$")


class Order(msgspec.Struct):
    contract_code: str
    direction: str
    volume: float | str
    price: float | str
    created_at: int
    symbol: str = ""
    amount: float | str | None = None
    trade_turnover: float | str | None = None


class Frame(msgspec.Struct):
    op: str = ""
    topic: str = ""
    ts: int | str | None = None
    data: list[msgspec.Raw] | None = None
    """Orders kept raw: each is typed on its own (a wrong-typed order costs only itself)."""
    ping: int | str | None = None
    err_code: int = msgspec.field(default=0, name="err-code")
    err_msg: str = msgspec.field(default="", name="err-msg")


_frame = msgspec.json.Decoder(Frame)
_order = msgspec.json.Decoder(Order)


def endpoint_of(code: str) -> str:
    """Which endpoint serves a code: ``BTC-USDT`` linear, ``BTC-USD`` swap, ``BTC`` futures."""
    if code.endswith("-USDT") or "-USDT-" in code:
        return "linear"
    return "swap" if "-USD" in code else "futures"


def coin_margined_value(base: str) -> float:
    """HTX coin-margined contract size in USD: 100 for BTC, 10 for every other coin."""
    return 100.0 if base == "BTC" else 10.0


def code_instrument(code: str, symbol: str = "") -> Instrument:
    """``BTC-USDT`` / ``BTC-USDT-250627`` / ``ETH-USD`` / ``BTC200703`` → Instrument by HTX's rules."""
    match = _CODE.match(code)
    if match is None or (match["quote"] is None and match["date"] is None):
        raise ParseError(NAME, f"unknown contract_code {code!r}")
    base = symbol or match["base"]
    expiry = yymmdd_expiry(match["date"]) if match["date"] else None  # ValueError when not a date
    if match["quote"] == "USDT":  # size unknown here; the frame's own amount gives base
        return Instrument(code, base, "USDT", market_type(True, expiry), expiry=expiry)
    cv = coin_margined_value(base)
    return Instrument(code, base, "USD", market_type(False, expiry), cv, "USD", expiry)


class HtxSession:
    """One connection to one notification endpoint, one ``sub`` per contract code."""

    def __init__(self, codes: Sequence[str] = (), table: InstrumentTable | None = None) -> None:
        self.codes = list(codes) or list(DEFAULT_CODES)
        self.table = TABLE if table is None else table  # the live table: refreshed in place

    def on_open(self) -> list[Outgoing]:
        return [
            json.dumps({"op": "sub", "cid": str(n), "topic": f"public.{code}.liquidation_orders"})
            for n, code in enumerate(self.codes, start=1)
        ]

    def confirmations(self) -> int:
        """One ``{"op":"sub","err-code":0,…}`` reply per contract code."""
        return len(self.codes)

    def heartbeat(self) -> Outgoing | None:
        return None

    def on_message(self, raw: bytes | str, received_ms: int) -> SessionOutput:
        frame = decode(_frame, inflate(raw, NAME), NAME)
        if frame.op == "ping":
            return SessionOutput(replies=[json.dumps({"op": "pong", "ts": frame.ts})])
        if frame.ping is not None:
            return SessionOutput(replies=[json.dumps({"pong": frame.ping})])
        if frame.err_code or frame.op in ("error", "close"):
            return server_error(NAME, f"{frame.op} {frame.err_code}: {frame.err_msg}")
        if frame.op == "sub":
            return CONFIRMED
        if frame.op != "notify" or not frame.topic.endswith(".liquidation_orders") or not frame.data:
            return EMPTY
        return each_row(NAME, raw, frame.data, lambda order: self._liquidation(order, received_ms))

    def _liquidation(self, raw_order: msgspec.Raw, received_ms: int) -> Liquidation:
        order = decode_row(_order, raw_order, NAME)
        inst = self.table.get(order.contract_code) or code_instrument(order.contract_code, order.symbol)
        liq = make_liquidation(
            NAME,
            inst,
            side=position_side(order.direction, long_if="sell", short_if="buy", venue=NAME),
            side_raw=order.direction,
            price=num(order.price, NAME, "price"),
            quantity_native=num(order.volume, NAME, "volume"),
            native_unit="contracts",
            timestamp_ms=order.created_at,
            received_ms=received_ms,
        )
        return _with_frame_amounts(liq, order) if inst.quote == "USDT" else liq


def _with_frame_amounts(liq: Liquidation, order: Order) -> Liquidation:
    """USDT-margined: the frame's ``amount`` (base) and ``trade_turnover`` (USDT) win.

    Both are checked as ``make_liquidation`` checks its own: above 0 and below 1e15, and the
    turnover within ``TURNOVER_TOLERANCE`` of amount × price (else the frame is malformed).
    A contract missing from the table gets its size from the frame itself (amount / volume).
    """
    if order.amount is None:
        return liq
    qty = _frame_amount(num(order.amount, NAME, "amount"), "amount")
    turnover = order.trade_turnover
    notional = qty * liq.price
    if turnover is not None:
        notional = _frame_amount(num(turnover, NAME, "trade_turnover"), "trade_turnover", notional)
    cv, cv_unit = liq.contract_value, liq.contract_value_unit
    if cv is None and liq.quantity_native > 0:
        cv, cv_unit = float(f"{qty / liq.quantity_native:.12g}"), liq.base
    return msgspec.structs.replace(
        liq, quantity=qty, quantity_unit="base", notional_usd=notional, notional_known=True,
        contract_value=cv, contract_value_unit=cv_unit,
    )


def _frame_amount(value: float, name: str, expected: float | None = None) -> float:
    """``value`` when above 0, below 1e15 and (given ``expected``) close to it; else ParseError."""
    if not (value > 0 and plausible_amount(value)):
        raise ParseError(NAME, f"{name} {value!r} is not in (0, 1e15)")
    if expected is not None and not math.isclose(value, expected, rel_tol=TURNOVER_TOLERANCE):
        raise ParseError(NAME, f"{name} {value!r} is not amount x price ({expected!r})")
    return value


def endpoint_url(base_url: str, path: str) -> str:
    """``path`` on ``base_url``'s host, replacing a known endpoint path, keeping any other prefix."""
    parts = urlsplit(base_url)
    prefix = parts.path.rstrip("/")
    for known in ENDPOINTS:
        prefix = prefix.removesuffix(known)
    return f"{parts.scheme}://{parts.netloc}{prefix}{path}"


def _plans(base_url: str, symbols: Sequence[str]) -> list[ConnectionPlan]:
    """One connection per endpoint that serves at least one of the codes."""
    codes = list(symbols) or list(DEFAULT_CODES)
    plans = []
    for path, kind in ENDPOINTS.items():
        mine = [c for c in codes if endpoint_of(c) == kind]
        if mine:
            plans.append(ConnectionPlan(endpoint_url(base_url, path), f"{NAME}:{kind}", _factory(mine)))
    return plans


def _factory(codes: list[str]) -> Callable[[], HtxSession]:
    return lambda: HtxSession(codes)


INSTRUMENT_PATHS = {  # instruments request → which contracts it lists
    "/linear-swap-api/v1/swap_contract_info?business_type=all": "linear",
    "/swap-api/v1/swap_contract_info": "swap",
    "/api/v1/contract_contract_info": "futures",
}


class RestContract(msgspec.Struct):
    """One ``data[]`` contract of the contract-info endpoints (the fields used here)."""

    symbol: str
    contract_code: str
    contract_size: float
    delivery_date: str = ""


class RestAnswer(msgspec.Struct):
    status: str
    data: list[RestContract] | None = None
    err_msg: str = ""


_rest = msgspec.json.Decoder(RestAnswer)


def parse_instruments(body: bytes, request: InstrumentRequest) -> list[Instrument]:
    """The contracts one contract-info answer lists; ValueError when malformed or an error."""
    answer = _rest.decode(body)
    if answer.status != "ok" or answer.data is None:
        raise ValueError(f"{NAME} contract info: status {answer.status!r}: {answer.err_msg[:200]}")
    kind = INSTRUMENT_PATHS.get(request.path)
    if kind is None:
        raise ValueError(f"{NAME}: no contract-info endpoint {request.path!r}")
    return [rest_instrument(contract, kind == "linear") for contract in answer.data]


def rest_instrument(c: RestContract, linear: bool) -> Instrument:
    """A contract-info row as the table holds it: base or USD per contract, expiry from the date."""
    expiry = datetime.strptime(c.delivery_date, "%Y%m%d").date().isoformat() if c.delivery_date else None
    kind = market_type(linear, expiry)
    if not linear:
        return Instrument(c.contract_code, c.symbol, "USD", kind, c.contract_size, "USD", expiry)
    quote = c.contract_code.split("-")[1] if "-" in c.contract_code else ""
    if not quote:
        raise ValueError(f"{NAME} USDT-margined contract_code {c.contract_code!r} is not BASE-QUOTE")
    return Instrument(c.contract_code, c.symbol, quote, kind, c.contract_size, c.symbol, expiry)


TABLE = InstrumentTable.load(NAME)

VENUE = VenueSpec(
    name=NAME,
    live_url="wss://api.hbdm.com/linear-swap-notification",
    markets="HTX USDT-margined swaps, coin-margined swaps and coin-margined futures",
    semantics="complete",
    semantics_note="every liquidation order of the subscribed contracts, real time",
    heartbeat_s=30.0,
    server_heartbeat_s=SERVER_PING_S,
    usual_gap_s=300.0,
    plans=_plans,
    new_parser=HtxSession,
    gzip=True,
    default_symbols=DEFAULT_CODES,
    instruments=InstrumentSource(
        live_rest_url="https://api.hbdm.com",
        requests=tuple(InstrumentRequest(path) for path in INSTRUMENT_PATHS),
        parse=parse_instruments,
        table=TABLE,
    ),
)
