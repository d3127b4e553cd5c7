"""Simulated HTX: gzip ``notify`` frames of ``public.{code}.liquidation_orders``, ``op`` ping/pong.

Contracts: BTC → ``BTC-USDT`` (0.001 BTC), ETH → ``ETH-USDT`` (0.01 ETH), both USDT-margined
with ``amount`` (base) and ``trade_turnover`` (USDT) in the frame; SOL → ``SOL-USD``
(coin-margined swap, 10 USD per contract), the contract whose size HTX documents; and
``NEWCOIN-USDT`` (10 NEWCOIN per contract), a made-up listing absent from the shipped fallback
table. REST: the contract-info endpoints list exactly these contracts in HTX's format
(``/linear-swap-api/v1/swap_contract_info`` the USDT-margined ones, ``/swap-api/v1/swap_contract_info``
the coin-margined ones, ``/api/v1/contract_contract_info`` none; ``listed()`` is what a correct
parser reads from them). ``volume`` is
a whole number of contracts. The expected Liquidation follows HTX's rules: ``direction`` is the
order side (a liquidated long sells), linear quantity = ``amount`` and notional =
``trade_turnover``, coin-margined notional = contracts × 10 USD and base = notional / price.
Every frame is gzip-compressed; the server pings every ``heartbeat_s`` with
``{"op":"ping","ts":…}`` and hangs up after ``max_unanswered`` pings without a
``{"op":"pong"}`` echoing their ``ts``. Prices keep few decimals (``tick``), so every float
round-trips exactly.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from collectors.instruments import Instrument
from collectors.sim._numbers import tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem, request_of
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

WILDCARD = "*"


@dataclass(frozen=True)
class Contract:
    code: str
    base: str
    quote: str
    size: float
    """Base per contract (USDT-margined) or USD per contract (coin-margined)."""


CONTRACTS = {
    "BTC": Contract("BTC-USDT", "BTC", "USDT", 0.001),
    "ETH": Contract("ETH-USDT", "ETH", "USDT", 0.01),
    "SOL": Contract("SOL-USD", "SOL", "USD", 10.0),
    "NEWCOIN": Contract("NEWCOIN-USDT", "NEWCOIN", "USDT", 10.0),
}
CONTRACT_INFO = {  # path → the quote of the contracts it lists
    "/linear-swap-api/v1/swap_contract_info": "USDT",
    "/swap-api/v1/swap_contract_info": "USD",
    "/api/v1/contract_contract_info": "",
}


def topic_of(code: str) -> str:
    return f"public.{code}.liquidation_orders"


def _now_ms() -> int:
    return int(time.time() * 1000)


class HtxSim:
    """HTX has no liquidation id (collectors digest the row), so a contract's rows get distinct
    ``created_at`` values: a row that would repeat one is moved 1 ms later."""

    name = "htx"
    gzip = True
    heartbeat_s = 5.0
    max_unanswered = 2
    """HTX hangs up on a client that stops answering its pings."""

    def __init__(self) -> None:
        self._last_ms: dict[str, int] = {}

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        contract = CONTRACTS.get(event.base)
        if contract is None:
            return None
        ms = max(event.timestamp_ms, self._last_ms.get(contract.code, 0) + 1)
        self._last_ms[contract.code] = ms
        event = msgspec.structs.replace(event, timestamp_ms=ms)
        price = tick(event.price)
        if contract.quote == "USD":
            return self._coin_margined(contract, event, price)
        return self._linear(contract, event, price)

    def _linear(self, c: Contract, event: MarketEvent, price: float) -> SimItem:
        contracts = max(1, round(event.notional_usd / (price * c.size)))
        amount = float(wire(contracts * c.size))
        turnover = float(wire(amount * price))
        native = self._native(c, event, price, contracts)
        native.update(amount=amount, trade_turnover=turnover)
        expected = self._expected(c, event, price, contracts, amount, turnover, c.base)
        return SimItem(native=native, expected=[expected], topic=topic_of(c.code))

    def _coin_margined(self, c: Contract, event: MarketEvent, price: float) -> SimItem:
        contracts = max(1, round(event.notional_usd / c.size))
        notional = contracts * c.size
        expected = self._expected(c, event, price, contracts, notional / price, notional, "USD")
        native = self._native(c, event, price, contracts)
        return SimItem(native=native, expected=[expected], topic=topic_of(c.code))

    @staticmethod
    def _native(c: Contract, event: MarketEvent, price: float, contracts: int) -> dict[str, Any]:
        return {
            "symbol": c.base,
            "contract_code": c.code,
            "direction": "sell" if event.side == "long" else "buy",
            "offset": "close",
            "volume": contracts,
            "price": price,
            "created_at": event.timestamp_ms,
        }

    @staticmethod
    def _expected(
        c: Contract, event: MarketEvent, price: float, contracts: int, qty: float, notional: float,
        cv_unit: str,
    ) -> Liquidation:
        return Liquidation(
            exchange="htx",
            symbol=c.base + c.quote,
            symbol_native=c.code,
            base=c.base,
            quote=c.quote,
            market_type="linear_perpetual" if c.quote == "USDT" else "inverse_perpetual",
            side=event.side,
            price=price,
            quantity=qty,
            notional_usd=notional,
            timestamp_ms=event.timestamp_ms,
            event_id=event_digest(c.code, event.timestamp_ms, event.side, price, float(contracts)),
            side_raw="sell" if event.side == "long" else "buy",
            quantity_native=float(contracts),
            quantity_native_unit="contracts",
            contract_value=c.size,
            contract_value_unit=cv_unit,
        )

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(gzip.decompress(message) if isinstance(message, bytes) else message)
        op = msg.get("op")
        if op == "sub":
            topic = str(msg["topic"])
            if not (topic.startswith("public.") and topic.endswith(".liquidation_orders")):
                raise ValueError(f"invalid topic {topic}")
            client.subscriptions.add(WILDCARD if topic == topic_of("*") else topic)
            ack = {"op": "sub", "cid": msg.get("cid"), "topic": topic, "ts": _now_ms(), "err-code": 0}
            return [json.dumps(ack)]
        if op == "pong":
            if msg.get("ts") == client.state.get("ping_ts"):  # the documented answer echoes ts
                client.unanswered = 0
            return []
        if op == "unsub":
            return []
        raise ValueError(f"unknown op {op!r}")

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        request = request_of(message)
        return json.dumps({"op": request.get("op", "error"), "cid": request.get("cid"),
                           "topic": request.get("topic", ""), "ts": _now_ms(), "err-code": 4000,
                           "err-msg": reason})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_topic.setdefault(item.topic, []).append(item.native)
        return [
            gzip.compress(json.dumps({"op": "notify", "topic": t, "ts": _now_ms(), "data": d}).encode())
            for t, d in by_topic.items()
        ]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        client.state["ping_ts"] = ts = str(_now_ms())
        client.unanswered += 1
        return gzip.compress(json.dumps({"op": "ping", "ts": ts}).encode())

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """A contract-info answer: the simulated contracts of that endpoint's market (not gzipped)."""
        quote = CONTRACT_INFO.get(urlsplit(path).path)
        if quote is None:
            return None
        data = [_contract_row(c) for c in CONTRACTS.values() if c.quote == quote]
        return json.dumps({"status": "ok", "data": data, "ts": _now_ms()}).encode()

    def listed(self) -> list[Instrument]:
        return [
            Instrument(c.code, c.base, c.quote, "linear_perpetual", c.size, c.base)
            if c.quote == "USDT"
            else Instrument(c.code, c.base, c.quote, "inverse_perpetual", c.size, "USD")
            for c in CONTRACTS.values()
        ]


def _contract_row(c: Contract) -> dict[str, Any]:
    """A perpetual swap as the contract-info endpoints describe it."""
    row: dict[str, Any] = {
        "symbol": c.base, "contract_code": c.code, "contract_size": c.size, "price_tick": 0.1,
        "delivery_time": "", "create_date": "20201021", "contract_status": 1,
        "settlement_date": "1781020800000",
    }  # fmt: skip
    if c.quote == "USDT":
        row.update(support_margin_mode="all", business_type="swap", pair=c.code, contract_type="swap",
                   delivery_date="", trade_partition="USDT")
    return row


SIM = HtxSim()
