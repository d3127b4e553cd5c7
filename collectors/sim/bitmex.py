"""Simulated BitMEX: the ``liquidation`` table (XBTUSD, quanto ETHUSD/SOLUSD), insert then delete per order.

Wire: a welcome ``info`` frame on connect; ``{"op":"subscribe","args":["liquidation"]}`` →
``{"success":true,"subscribe":"liquidation",…}`` followed by a ``partial`` holding the recent
orders (which a collector must not count); each push is an ``insert`` of the new orders and a
``delete`` of the same orderIDs (filled). The text ``ping`` is answered ``pong``.

Contracts (``CONTRACTS``): XBTUSD, inverse, 1 USD per contract, price tick 0.5 (other
contracts: 0.001); ``NEWCOINUSD``, a made-up inverse 1 USD listing absent from the shipped
fallback table (only a collector that refreshed its instruments sizes it); ETHUSD and SOLUSD,
quanto contracts whose USD value a collector cannot know. Other bases are not simulated.
Inverse: contracts = round(notional), ≥ 1; expected ``side`` is the order side (Buy = short
liquidated), quantity = leavesQty / price, notional = leavesQty, event_id = orderID. Quanto:
contracts = round(notional / 10), expected quantity in contracts with the notional unknown.
The message carries no time: the expected ``timestamp_ms`` is the market event's time with
``timestamp_source="receive"``, so a comparison must allow for the collector's receive time.

REST: ``GET /api/v1/instrument/active`` lists exactly these contracts in BitMEX's format
(``listed()`` is what a correct parser reads from it: sizes for the inverse ones only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from collectors.instruments import Instrument
from collectors.sim._numbers import tick
from collectors.sim.protocol import Outgoing, SimClient, SimItem, request_of
from shared.market import MarketEvent
from shared.models import Liquidation

TOPIC = "liquidation"
INSTRUMENTS_PATH = "/api/v1/instrument/active"
XBT_UNITS = 100_000_000  # XBt (satoshi) per XBT


@dataclass(frozen=True)
class Contract:
    symbol: str
    underlying: str
    inverse: bool
    """Inverse, 1 USD per contract; otherwise quanto (10 USD of notional per simulated contract)."""


CONTRACTS = {
    "BTC": Contract("XBTUSD", "XBT", True),
    "ETH": Contract("ETHUSD", "ETH", False),
    "SOL": Contract("SOLUSD", "SOL", False),
    "NEWCOIN": Contract("NEWCOINUSD", "NEWCOIN", True),
}


class BitmexSim:
    name = "bitmex"
    gzip = False
    heartbeat_s = 0.0

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        c = CONTRACTS.get(event.base)
        if c is None:
            return None
        price = round(event.price * 2) / 2 if event.base == "BTC" else tick(event.price)
        order_id = str(uuid.UUID(int=seq))
        side = "Sell" if event.side == "long" else "Buy"
        contracts = max(1, round(event.notional_usd / (1 if c.inverse else 10)))
        native = {
            "orderID": order_id, "symbol": c.symbol, "side": side, "price": price, "leavesQty": contracts
        }  # fmt: skip
        common = Liquidation(
            exchange=self.name, symbol=f"{event.base}USD", symbol_native=c.symbol, base=event.base,
            quote="USD", market_type="linear_perpetual", side=event.side, price=price,
            quantity=float(contracts), notional_usd=0.0, timestamp_ms=event.timestamp_ms,
            event_id=order_id, side_raw=side, quantity_unit="contracts",
            quantity_native=float(contracts), quantity_native_unit="contracts", notional_known=False,
            timestamp_source="receive", extra={"exchange_id": order_id},
        )  # fmt: skip
        expected = _inverse(common, contracts * 1.0 / price) if c.inverse else common
        return SimItem(native=native, expected=[expected], topic=TOPIC)

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        welcome = {
            "info": "Welcome to the BitMEX Realtime API.",
            "version": "sim",
            "limit": {"remaining": 39},
        }
        return [json.dumps(welcome)]

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        if message in ("ping", b"ping"):
            return ["pong"]
        request = json.loads(message)
        op, args = request["op"], request["args"]
        if op not in ("subscribe", "unsubscribe"):
            raise ValueError(f"unknown op {op!r}")
        unknown = [arg for arg in args if arg.split(":")[0] != TOPIC]
        if unknown:
            raise ValueError(f"Unknown table: {unknown[0].split(':')[0]}")
        topics = {TOPIC for arg in args}
        if op == "subscribe":
            client.subscriptions.update(topics)
        else:
            client.subscriptions.difference_update(topics)
        return [json.dumps({"success": True, op: arg, "request": request}) for arg in args]

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"status": 400, "error": reason.strip("'\""), "meta": {},
                           "request": request_of(message)})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        if not items:
            return []
        inserted = [item.native for item in items]
        deleted = [{"orderID": row["orderID"], "symbol": row["symbol"]} for row in inserted]
        return [_table("insert", inserted), _table("delete", deleted)]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return [_table("partial", [item.native for item in recent], keys=["orderID"])]

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """The ``instrument/active`` answer: every simulated contract as a perpetual."""
        if path != INSTRUMENTS_PATH:
            return None
        return json.dumps([_instrument_row(c) for c in CONTRACTS.values()]).encode()

    def listed(self) -> list[Instrument]:
        return [
            Instrument(c.symbol, c.underlying, "USD", "inverse_perpetual", 1.0, "USD")
            if c.inverse
            else Instrument(c.symbol, c.underlying, "USD", "linear_perpetual")
            for c in CONTRACTS.values()
        ]


def _instrument_row(c: Contract) -> dict[str, Any]:
    """A perpetual as ``GET /api/v1/instrument/active`` describes it (inverse or quanto)."""
    row: dict[str, Any] = {
        "symbol": c.symbol, "rootSymbol": c.underlying, "state": "Open", "typ": "FFWCSX",
        "listing": "2016-05-13T12:00:00.000Z", "front": "2016-05-13T12:00:00.000Z", "expiry": None,
        "settle": None, "underlying": c.underlying, "quoteCurrency": "USD",
        "underlyingSymbol": f"{c.underlying}=", "reference": "BMEX", "lotSize": 100, "tickSize": 0.5,
        "isQuanto": not c.inverse, "isInverse": c.inverse,
    }  # fmt: skip
    if c.inverse:
        row.update(multiplier=-XBT_UNITS, underlyingToSettleMultiplier=-XBT_UNITS,
                   quoteToSettleMultiplier=None, positionCurrency="USD", settlCurrency="XBt")
    else:
        row.update(multiplier=100, underlyingToSettleMultiplier=None, quoteToSettleMultiplier=XBT_UNITS,
                   positionCurrency="", settlCurrency="XBt")
    return row


def _inverse(liq: Liquidation, quantity: float) -> Liquidation:
    """XBTUSD: 1 USD per contract, so the notional is the contract count."""
    return msgspec.structs.replace(
        liq, market_type="inverse_perpetual", quantity=quantity, quantity_unit="base",
        notional_usd=liq.quantity_native, notional_known=True, contract_value=1.0,
        contract_value_unit="USD",
    )  # fmt: skip


def _table(action: str, data: list[dict[str, object]], keys: list[str] | None = None) -> str:
    frame: dict[str, object] = {"table": TOPIC, "action": action, "data": data}
    if keys is not None:
        frame["keys"] = keys
    return json.dumps(frame)


SIM = BitmexSim()
