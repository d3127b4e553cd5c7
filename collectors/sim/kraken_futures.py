"""Simulated Kraken Futures: one ``trade`` frame per liquidation, ``trade_snapshot`` on subscribe.

Products: BTC → ``PF_XBTUSD``, the others (ETH, SOL, XRP, DOGE, ADA, SUI) → ``PF_<BASE>USD``
(linear perpetuals, ``qty`` in base, whole lots of a few significant digits). ``side`` is the
taker side and the liquidated account is the taker, so a liquidated long is a taker ``sell``.
Expected: quantity = qty, notional = qty × price, event_id = ``uid``. Each connection is greeted
with ``{"event":"info","version":1}``; acks are ``{"event":"subscribed",…}``. The ``heartbeat``
feed, once subscribed, ticks every ``heartbeat_s``; the ``trade_snapshot`` replay of recent
trades must be skipped by collectors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from collectors.sim._numbers import base_step, lots, tick
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from shared.market import MarketEvent
from shared.models import Liquidation

PRODUCTS = {
    "BTC": "PF_XBTUSD", "ETH": "PF_ETHUSD", "SOL": "PF_SOLUSD", "XRP": "PF_XRPUSD", "DOGE": "PF_DOGEUSD",
    "ADA": "PF_ADAUSD", "SUI": "PF_SUIUSD",
}


def topic_of(product_id: str) -> str:
    return f"trade:{product_id}"


class KrakenFuturesSim:
    name = "kraken_futures"
    gzip = False
    heartbeat_s = 5.0

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        product_id = PRODUCTS.get(event.base)
        if product_id is None:
            return None
        price = tick(event.price)
        qty = lots(event.notional_usd / price, base_step(price))
        uid = f"{event.timestamp_ms:08x}-0000-4000-8000-{seq:012d}"
        side = "sell" if event.side == "long" else "buy"
        native = {"feed": "trade", "product_id": product_id, "uid": uid, "side": side,
                  "type": "liquidation", "seq": seq, "time": event.timestamp_ms, "qty": qty,
                  "price": price}
        expected = Liquidation(
            exchange="kraken_futures",
            symbol=event.base + "USD",
            symbol_native=product_id,
            base=event.base,
            quote="USD",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=qty,
            notional_usd=qty * price,
            timestamp_ms=event.timestamp_ms,
            event_id=uid,
            side_raw=side,
            quantity_native=qty,
            extra={"exchange_id": uid},
        )
        return SimItem(native=native, expected=[expected], topic=topic_of(product_id))

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        return [json.dumps({"event": "info", "version": 1})]

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        if msg.get("event") != "subscribe":
            raise ValueError(f"unknown event {msg.get('event')!r}")
        feed = msg["feed"]
        if feed == "heartbeat":
            client.state["heartbeat"] = True
            return [json.dumps({"event": "subscribed", "feed": "heartbeat"})]
        if feed != "trade":
            raise ValueError(f"unsimulated feed {feed!r}")
        products = [str(p) for p in msg["product_ids"]]
        client.subscriptions.update(topic_of(p) for p in products)
        return [json.dumps({"event": "subscribed", "feed": "trade", "product_ids": products})]

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"event": "error", "message": "Invalid feed"})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return [json.dumps(item.native) for item in items]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_product: dict[str, list[dict[str, Any]]] = {}
        for item in recent:
            by_product.setdefault(item.native["product_id"], []).append(item.native)
        return [
            json.dumps({"feed": "trade_snapshot", "product_id": pid, "trades": trades})
            for pid, trades in by_product.items()
        ]

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        if not client.state.get("heartbeat"):
            return None
        return json.dumps({"feed": "heartbeat", "time": int(time.time() * 1000)})


SIM = KrakenFuturesSim()
