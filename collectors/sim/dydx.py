"""Simulated dYdX v4 indexer: ``v4_trades`` per market, with the ``subscribed`` history snapshot.

Markets: ``<BASE>-USD`` for BTC, ETH, SOL, XRP, DOGE, ADA, SUI. Each liquidation is a ``LIQUIDATED`` trade
whose ``side`` is the taker's (the liquidated account's) order side: a liquidated long SELLs.
Expected: quantity = ``size`` (base, whole lots of a few significant digits), notional = size × price,
event_id = the trade ``id``. A ``connected`` frame greets each client. On subscribe, the
``subscribed`` reply (dYdX's ack) carries the recent trades of that market, old liquidations
included; collectors return them and drop them as duplicates. Pings are WebSocket-level.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from collectors.sim._numbers import base_step, lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from shared.market import MarketEvent
from shared.models import Liquidation

CHANNEL = "v4_trades"
CONNECTION_ID = "00000000-0000-4000-8000-000000000000"


MARKETS = {base: f"{base}-USD" for base in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "SUI")}


def topic_of(ticker: str) -> str:
    return f"{CHANNEL}:{ticker}"


def _iso(ms: int) -> str:
    """ms since epoch → ``2024-08-04T07:34:50.628Z`` (the indexer's ``createdAt``)."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _frame(client: SimClient, kind: str, ticker: str, trades: list[dict[str, Any]]) -> str:
    client.state["message_id"] = message_id = client.state.get("message_id", 0) + 1
    return json.dumps({"type": kind, "connection_id": CONNECTION_ID, "message_id": message_id,
                       "id": ticker, "channel": CHANNEL, "version": "2.1.0",
                       "contents": {"trades": trades}})


class DydxSim:
    name = "dydx"
    gzip = False
    heartbeat_s = 0.0

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        ticker = MARKETS.get(event.base)
        if ticker is None:
            return None
        price = tick(event.price)
        size = lots(event.notional_usd / price, base_step(price))
        trade_id = f"{event.timestamp_ms:012x}{seq:012x}"
        side = "SELL" if event.side == "long" else "BUY"
        native = {"id": trade_id, "side": side, "size": wire(size), "price": wire(price),
                  "type": "LIQUIDATED", "createdAt": _iso(event.timestamp_ms),
                  "createdAtHeight": str(seq)}
        expected = Liquidation(
            exchange="dydx",
            symbol=event.base + "USD",
            symbol_native=ticker,
            base=event.base,
            quote="USD",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=size,
            notional_usd=size * price,
            timestamp_ms=event.timestamp_ms,
            event_id=trade_id,
            side_raw=side,
            quantity_native=size,
            extra={"exchange_id": trade_id},
        )
        return SimItem(native=native, expected=[expected], topic=topic_of(ticker))

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        return [json.dumps({"type": "connected", "connection_id": CONNECTION_ID, "message_id": 0})]

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        if msg.get("type") != "subscribe" or msg.get("channel") != CHANNEL:
            raise ValueError(f"unsimulated request {msg.get('type')!r}/{msg.get('channel')!r}")
        ticker = str(msg["id"])
        client.subscriptions.add(topic_of(ticker))
        client.state.setdefault("unacked", []).append(ticker)
        return []  # the ack is the ``subscribed`` snapshot, sent by ``snapshot``

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        client.state["message_id"] = message_id = client.state.get("message_id", 0) + 1
        return json.dumps({"type": "error", "message": f"Invalid subscribe message: {reason}",
                           "connection_id": CONNECTION_ID, "message_id": message_id})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_ticker: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_ticker.setdefault(item.topic.removeprefix(CHANNEL + ":"), []).append(item.native)
        return [_frame(client, "channel_data", t, trades) for t, trades in by_ticker.items()]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        """One ``subscribed`` frame per newly subscribed market, newest trade first (as dYdX)."""
        tickers: list[str] = client.state.pop("unacked", [])
        return [
            _frame(client, "subscribed", t, [i.native for i in reversed(recent) if i.topic == topic_of(t)])
            for t in tickers
        ]

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None


SIM = DydxSim()
