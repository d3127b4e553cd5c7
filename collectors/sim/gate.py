"""Simulated Gate futures: ``futures.public_liquidates`` updates batched per contract, ``futures.ping``.

Contracts (USDT-settled, ``/v4/ws/usdt``): BTC → ``BTC_USDT`` (quanto 0.0001 BTC), ETH →
``ETH_USDT`` (0.01 ETH), and ``NEWCOIN_USDT`` (10 NEWCOIN), a made-up listing absent from the
shipped fallback table; SOL is not simulated (its multiplier is not in our sources). REST:
``GET /api/v4/futures/usdt/contracts`` lists exactly these contracts in Gate's format
(``listed()`` is what a correct parser reads from it); ``/btc`` and ``/usd1`` list none, and
their endpoints carry no simulated contract. ``size`` is a signed whole number of contracts:
negative = sell order = a long was liquidated. ``time`` is ms (the post-2026-08-20 format).
Expected: base = |size| × multiplier, notional = base × price, event_id = the digest. ``!all``
on the USDT endpoint subscribes every simulated contract; at most 20 rows go in one frame, as
Gate flushes a contract's buffer at 20.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from collectors.instruments import Instrument
from collectors.sim._numbers import tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem, request_of
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

CHANNEL = "futures.public_liquidates"
SIZE_DECIMAL_HEADER = "X-Gate-Size-Decimal"
ALL = "!all"
MAX_ROWS = 20


@dataclass(frozen=True)
class Contract:
    name: str
    base: str
    multiplier: float


CONTRACTS = {
    "BTC": Contract("BTC_USDT", "BTC", 0.0001),
    "ETH": Contract("ETH_USDT", "ETH", 0.01),
    "NEWCOIN": Contract("NEWCOIN_USDT", "NEWCOIN", 10.0),
}
CONTRACTS_PATH = "/api/v4/futures/{settle}/contracts"


def _envelope(channel: str, event: str, **fields: Any) -> str:
    now = time.time()
    return json.dumps({"time": int(now), "time_ms": int(now * 1000), "channel": channel,
                       "event": event, **fields})


class GateSim:
    """Gate rows carry no id (collectors digest them), so a contract's rows get distinct times:
    a row that would repeat one is moved 1 ms later."""

    name = "gate"
    gzip = False
    heartbeat_s = 0.0

    def __init__(self) -> None:
        self._last_ms: dict[str, int] = {}

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        c = CONTRACTS.get(event.base)
        if c is None:
            return None
        ms = max(event.timestamp_ms, self._last_ms.get(c.name, 0) + 1)
        self._last_ms[c.name] = ms
        event = msgspec.structs.replace(event, timestamp_ms=ms)
        price = tick(event.price)
        contracts = max(1, round(event.notional_usd / (price * c.multiplier)))
        size = -contracts if event.side == "long" else contracts
        native = {"price": wire(price), "size": size, "time": event.timestamp_ms, "contract": c.name}
        qty = contracts * c.multiplier
        expected = Liquidation(
            exchange="gate",
            symbol=c.base + "USDT",
            symbol_native=c.name,
            base=c.base,
            quote="USDT",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=qty,
            notional_usd=qty * price,
            timestamp_ms=event.timestamp_ms,
            event_id=event_digest(c.name, event.timestamp_ms, event.side, price, float(contracts)),
            side_raw=str(size),
            quantity_native=float(contracts),
            quantity_native_unit="contracts",
            contract_value=c.multiplier,
            contract_value_unit=c.base,
        )
        return SimItem(native=native, expected=[expected], topic=c.name)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        channel, event = msg.get("channel"), msg.get("event")
        if channel == "futures.ping":
            return [_envelope("futures.pong", "", result=None)]
        if channel == CHANNEL and event == "subscribe":
            payload = [str(p) for p in msg["payload"]]
            client.subscriptions.update(payload)
            if ALL in payload and client.path.rstrip("/").endswith("/usdt"):
                client.subscriptions.update(c.name for c in CONTRACTS.values())  # all USDT-settled
            return [_envelope(CHANNEL, "subscribe", payload=payload, result={"status": "success"})]
        raise ValueError(f"unknown request {channel!r}/{event!r}")

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        request = request_of(message)
        return _envelope(str(request.get("channel", "")), str(request.get("event", "")),
                         error={"code": 2, "message": f"unknown channel {request.get('channel')}"},
                         result={"status": "failed"})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        """Sizes are decimal strings for a client that sent ``X-Gate-Size-Decimal: 1``, else
        whole numbers (Gate rounds fractional sizes then)."""
        decimal = client.headers.get(SIZE_DECIMAL_HEADER.lower()) == "1"
        by_contract: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            row = {**item.native, "size": str(item.native["size"])} if decimal else item.native
            by_contract.setdefault(item.topic, []).append(row)
        return [
            _envelope(CHANNEL, "update", result=rows[i : i + MAX_ROWS])
            for rows in by_contract.values()
            for i in range(0, len(rows), MAX_ROWS)
        ]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """The contracts answer: every simulated contract on ``usdt``, none on ``btc`` or ``usd1``."""
        if path == CONTRACTS_PATH.format(settle="usdt"):
            return json.dumps([_contract_row(c) for c in CONTRACTS.values()]).encode()
        empty = (CONTRACTS_PATH.format(settle="btc"), CONTRACTS_PATH.format(settle="usd1"))
        return b"[]" if path in empty else None

    def listed(self) -> list[Instrument]:
        return [
            Instrument(c.name, c.base, "USDT", "linear_perpetual", c.multiplier, c.base)
            for c in CONTRACTS.values()
        ]


def _contract_row(c: Contract) -> dict[str, Any]:
    """A USDT-settled perpetual as ``GET /api/v4/futures/usdt/contracts`` describes it."""
    return {
        "name": c.name, "type": "direct", "quanto_multiplier": wire(c.multiplier),
        "leverage_min": "1", "leverage_max": "100", "maintenance_rate": "0.005", "mark_type": "index",
        "order_price_round": "0.1", "mark_price_round": "0.01", "funding_rate": "0.0001",
        "funding_interval": 28800, "order_size_min": 1, "order_size_max": 1000000,
        "in_delisting": False, "status": "trading", "create_time": 1574035200,
    }  # fmt: skip


SIM = GateSim()
