"""Simulated Hyperliquid: liquidation fills on the ``user`` channel of every subscribed account.

Hyperliquid has no public liquidation feed, so the simulator plays the only free view: a client
that subscribed ``userEvents`` for some address receives every simulated liquidation as a fill
of that address acting as the COUNTERPARTY (``liquidatedUser`` is another, synthetic account).
A liquidated long sold, so the watched account's fill side is ``B``; a liquidated short → ``A``.
Coins BTC, ETH, SOL, XRP, DOGE, ADA, SUI; ``sz`` in whole lots of a few significant digits.
Expected: quantity = sz, notional = sz × px, event_id = ``tid``, extra
``liquidated_user``/``mark_price``/method.
``{"method":"ping"}`` → ``{"channel":"pong"}``; subscriptions get a ``subscriptionResponse``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from collectors.sim._numbers import base_step, lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from shared.market import MarketEvent
from shared.models import Liquidation

TOPIC = "user"
COINS = frozenset({"BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "SUI"})
METHOD = "market"


class HyperliquidSim:
    name = "hyperliquid"
    gzip = False
    heartbeat_s = 0.0
    idle_close_s = 60.0
    """Hyperliquid closes idle connections after about 60 s (exact figure unconfirmed)."""

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        if event.base not in COINS:
            return None
        price = tick(event.price)
        size = lots(event.notional_usd / price, base_step(price))
        tid = event.timestamp_ms * 1000 + seq % 1000
        liquidated = f"0x{seq:040x}"
        fill_side = "B" if event.side == "long" else "A"
        native = {
            "coin": event.base, "px": wire(price), "sz": wire(size), "side": fill_side,
            "time": event.timestamp_ms, "startPosition": "0.0",
            "dir": "Open Long" if fill_side == "B" else "Open Short", "closedPnl": "0.0",
            "hash": f"0x{tid:064x}", "oid": tid, "crossed": False, "fee": "0.0", "tid": tid,
            "liquidation": {"liquidatedUser": liquidated, "markPx": wire(price), "method": METHOD},
            "feeToken": "USDC",
        }
        expected = Liquidation(
            exchange="hyperliquid",
            symbol=event.base + "USDC",
            symbol_native=event.base,
            base=event.base,
            quote="USDC",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=size,
            notional_usd=size * price,
            timestamp_ms=event.timestamp_ms,
            event_id=str(tid),
            side_raw=fill_side,
            quantity_native=size,
            extra={"exchange_id": str(tid), "liquidated_user": liquidated,
                   "liquidation_method": METHOD, "mark_price": price},
        )
        return SimItem(native=native, expected=[expected], topic=TOPIC)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        method = msg.get("method")
        if method == "ping":
            return [json.dumps({"channel": "pong"})]
        if method != "subscribe" or msg["subscription"].get("type") != "userEvents":
            raise ValueError(f"unsimulated request {method!r}")
        client.state["user"] = str(msg["subscription"]["user"])
        client.subscriptions.add(TOPIC)
        return [json.dumps({"channel": "subscriptionResponse", "data": msg})]

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        return json.dumps({"channel": "error",
                           "data": f"Error parsing JSON into valid websocket request: {text}"})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return [json.dumps({"channel": TOPIC, "data": {"fills": [item.native for item in items]}})]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None


SIM = HyperliquidSim()
