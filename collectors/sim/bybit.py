"""Simulated Bybit v5: ``allLiquidation.<BASE>USDT`` topics on the linear endpoint, batched per topic.

Wire: ``{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":…,"data":[{"T","s","S","v","p"}]}``,
one frame per topic with every item of the push in ``data``. ``{"op":"subscribe"}`` gets the
v5 ack, ``{"op":"ping"}`` the linear/inverse pong. No replay, no server heartbeat. As on the
live venue, the path picks the category: a topic of the other endpoint (an inverse ``BTCUSD`` on
``/v5/public/linear``) is refused with ``handler not found``, and a subscription taking the
connection's ``args`` past 21,000 characters is refused whole (``success: false``). A
``BybitSim(delisted=…)`` refuses those topics too (a symbol delisted since the collector's listing),
in the same reply, and subscribes the request's other topics.

Expected Liquidation: ``S`` is the position side (Buy = long); quantity = ``v`` (base, lot
rounded); price = ``p``; notional = v × p; timestamp = ``T``; event_id = digest of
(symbol, T, side, p, v).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from collectors.sim._numbers import base_step, lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

ARGS_LIMIT = 21_000
"""Documented cap on the total length of one public connection's subscription ``args``."""


class BybitSim:
    name = "bybit"
    gzip = False
    heartbeat_s = 0.0

    def __init__(self, delisted: Iterable[str] = ()) -> None:
        self.delisted = frozenset(delisted)
        """Topics refused as Bybit refuses a symbol it no longer lists."""

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        symbol, price = f"{event.base}USDT", tick(event.price)
        qty = lots(event.notional_usd / price, base_step(price))
        side_raw = "Buy" if event.side == "long" else "Sell"
        native = {"T": event.timestamp_ms, "s": symbol, "S": side_raw, "v": wire(qty), "p": wire(price)}
        expected = Liquidation(
            exchange=self.name, symbol=symbol, symbol_native=symbol, base=event.base, quote="USDT",
            market_type="linear_perpetual", side=event.side, price=price, quantity=qty,
            notional_usd=qty * price, timestamp_ms=event.timestamp_ms,
            event_id=event_digest(symbol, event.timestamp_ms, event.side, price, qty),
            side_raw=side_raw, quantity_native=qty,
        )  # fmt: skip
        return SimItem(native=native, expected=[expected], topic=f"allLiquidation.{symbol}")

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        request = json.loads(message)
        op = request["op"]
        error = ""
        if op == "subscribe":
            error = _subscribe(client, request["args"], self.delisted)
        elif op == "unsubscribe":
            client.subscriptions.difference_update(request["args"])
        elif op != "ping":
            raise ValueError(f"unknown op {op!r}")
        reply = {
            "success": not error,
            "ret_msg": error or ("pong" if op == "ping" else ""),
            "conn_id": "sim",
            "req_id": request.get("req_id", ""),
            "op": op,
        }
        return [json.dumps(reply)]

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_topic: dict[str, list[SimItem]] = {}
        for item in items:
            by_topic.setdefault(item.topic, []).append(item)
        return [
            json.dumps(
                {
                    "topic": topic,
                    "type": "snapshot",
                    "ts": max(i.native["T"] for i in batch) + 200,
                    "data": [i.native for i in batch],
                }
            )
            for topic, batch in by_topic.items()
        ]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None


def endpoint_category(topic: str) -> str:
    """``linear`` for USDT/USDC perpetuals and futures, ``inverse`` for ``BTCUSD``/``BTCUSDH26``."""
    symbol = topic.rpartition(".")[2]
    linear = symbol.endswith(("USDT", "USDC", "PERP")) or "-" in symbol
    return "linear" if linear else "inverse"


def _subscribe(client: SimClient, args: list[str], delisted: frozenset[str]) -> str:
    """Subscribe ``args``; the error message when the request is refused (whole or in part)."""
    category = client.path.rstrip("/").rpartition("/")[2]
    total = sorted(client.subscriptions | set(args))
    if len(json.dumps(total)) > ARGS_LIMIT:
        return f"error:args size exceeds {ARGS_LIMIT} characters"
    wrong = [topic for topic in args
             if not topic.startswith("allLiquidation.") or endpoint_category(topic) != category
             or topic in delisted]
    client.subscriptions.update(topic for topic in args if topic not in wrong)
    return f"error:handler not found,topic:{','.join(wrong)}" if wrong else ""


SIM = BybitSim()
