"""Simulated Deribit: liquidation trades of BTC/ETH inverse and USDC linear perpetuals (trades feed).

Wire (JSON-RPC 2.0): ``public/subscribe`` → result = the channels; ``public/set_heartbeat`` →
``"ok"`` and from then on the server heartbeat is ``{"method":"heartbeat","params":{"type":
"test_request"}}``, and a client that has not answered one with ``public/test`` by the next
is disconnected; ``public/test`` → a version result. Pushes are
``{"method":"subscription","params":{"channel":"trades.future.BTC.100ms","data":[trade,…]}}``.

Each liquidation is one trade with flag ``T`` (odd seq: taker liquidated, direction = order
side) or ``M`` (even seq: maker liquidated, direction = the opposite); every 5th trade is flagged
``MT`` (both sides liquidated: two expected events, long and short, each of ``amount``, ids
``trade_id:long`` / ``trade_id:short``). BTC and ETH trade on
``BTC-PERPETUAL`` / ``ETH-PERPETUAL`` (ticks 0.5 / 0.05): ``amount`` is USD, a multiple of 10
(≥ 10); expected quantity = amount / price, notional = amount, ``quantity_native_unit="USD"``.
SOL, XRP, DOGE and ADA trade on ``<BASE>_USDC-PERPETUAL`` (channel ``trades.future.USDC.100ms``;
no SUI perpetual on Deribit could be confirmed, so SUI is not simulated):
``amount`` is base in lots of 0.1; quantity = amount, notional = amount × price, symbol
``<BASE>USDC``. event_id = ``trade_id``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from collectors.sim._numbers import lots, tick
from collectors.sim.protocol import Outgoing, SimClient, SimItem, request_of
from shared.market import MarketEvent
from shared.models import Liquidation, Side

INVERSE_TICK = {"BTC": 0.5, "ETH": 0.05}
LINEAR_BASES = frozenset({"SOL", "XRP", "DOGE", "ADA"})
LINEAR_LOT = 0.1
TEST_REQUEST = json.dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})


class DeribitSim:
    name = "deribit"
    gzip = False
    heartbeat_s = 10.0
    max_unanswered = 1
    """An unanswered ``test_request``: "the API server will immediately close the connection"."""

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        if event.base not in INVERSE_TICK and event.base not in LINEAR_BASES:
            return None
        flag = _flag(seq)
        order_side = "sell" if event.side == "long" else "buy"
        direction = order_side if flag != "M" else ("buy" if order_side == "sell" else "sell")
        trade_id = f"SIM-{seq}"
        inverse = event.base in INVERSE_TICK
        liq = _inverse(event) if inverse else _linear(event)
        trade = {
            "trade_seq": seq, "trade_id": trade_id, "timestamp": event.timestamp_ms, "tick_direction": 0,
            "price": liq.price, "mark_price": liq.price, "index_price": liq.price,
            "instrument_name": liq.symbol_native, "direction": direction,
            "amount": liq.quantity_native, "liquidation": flag,
        }  # fmt: skip
        extra = {"exchange_id": trade_id, "liquidation_flag": flag, "trade_direction": direction,
                 "mark_price": liq.price}  # fmt: skip
        sides: list[Side] = ["long", "short"] if flag == "MT" else [event.side]
        expected = [
            msgspec.structs.replace(liq, side=side, event_id=_event_id(trade_id, flag, side),
                                    side_raw=f"{flag}:{direction}", extra=extra)  # fmt: skip
            for side in sides
        ]
        topic = f"trades.future.{event.base if inverse else 'USDC'}.100ms"
        return SimItem(native=trade, expected=expected, topic=topic)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        request = json.loads(message)
        method, params = request["method"], request.get("params", {})
        result: Any
        if method == "public/set_heartbeat":
            client.state["heartbeat"] = True
            result = "ok"
        elif method == "public/subscribe":
            client.subscriptions.update(params["channels"])
            result = params["channels"]
        elif method == "public/unsubscribe":
            client.subscriptions.difference_update(params["channels"])
            result = params["channels"]
        elif method == "public/test":
            client.unanswered = 0
            result = {"version": "sim"}
        else:
            raise ValueError(f"unknown method {method!r}")
        return [json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": result})]

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"jsonrpc": "2.0", "id": request_of(message).get("id"),
                           "error": {"message": "Method not found", "code": -32601}})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_channel.setdefault(item.topic, []).append(item.native)
        return [
            json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": ch, "data": data}})
            for ch, data in by_channel.items()
        ]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        if not client.state.get("heartbeat"):
            return None
        client.unanswered += 1
        return TEST_REQUEST


def _event_id(trade_id: str, flag: str, side: Side) -> str:
    return f"{trade_id}:{side}" if flag == "MT" else trade_id


def _flag(seq: int) -> str:
    """``MT`` every 5th trade (both sides liquidated), else ``T`` on odd and ``M`` on even seq."""
    if seq % 5 == 0:
        return "MT"
    return "T" if seq % 2 else "M"


def _inverse(event: MarketEvent) -> Liquidation:
    """``<BASE>-PERPETUAL``: amount in USD (multiples of 10), quantity = amount / price."""
    step = INVERSE_TICK[event.base]
    price = round(round(event.price / step) * step, 2)
    amount = float(max(1, round(event.notional_usd / 10)) * 10)
    return Liquidation(
        exchange="deribit", symbol=f"{event.base}USD", symbol_native=f"{event.base}-PERPETUAL",
        base=event.base, quote="USD", market_type="inverse_perpetual", side=event.side, price=price,
        quantity=amount / price, notional_usd=amount, timestamp_ms=event.timestamp_ms, event_id="",
        quantity_native=amount, quantity_native_unit="USD",
    )  # fmt: skip


def _linear(event: MarketEvent) -> Liquidation:
    """``<BASE>_USDC-PERPETUAL``: amount in base (lots of 0.1), notional = amount × price."""
    price = tick(event.price)
    amount = lots(event.notional_usd / price, LINEAR_LOT)
    return Liquidation(
        exchange="deribit", symbol=f"{event.base}USDC", symbol_native=f"{event.base}_USDC-PERPETUAL",
        base=event.base, quote="USDC", market_type="linear_perpetual", side=event.side, price=price,
        quantity=amount, notional_usd=amount * price, timestamp_ms=event.timestamp_ms, event_id="",
        quantity_native=amount,
    )  # fmt: skip


SIM = DeribitSim()
