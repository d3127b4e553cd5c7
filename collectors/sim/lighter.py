"""Simulated Lighter: ``trade/{market_id}`` with ``liquidation_trades``, the skipped ``subscribed/trade``.

Markets: 1 = BTC, 0 = ETH, 2 = SOL, 3 = DOGE, 7 = XRP, 16 = SUI, 39 = ADA (USDC perpetuals, ids as
in the shipped table). The liquidated account is the taker: a liquidated long sold into a maker
bid (``is_maker_ask: false``), a liquidated short bought from a maker ask (``true``). ``size`` is
base in whole lots of a few significant digits and ``usd_amount`` = size × price to 6 decimals.
Expected: quantity = size, notional = size × price, event_id = ``trade_id``, extra ``usd_amount``.
On subscribe the ``subscribed/trade`` frame (the ack) replays recent liquidations, which
collectors must skip; ``{"type":"ping"}`` → pong. REST: ``GET /api/v1/orderBooks`` lists these
markets, ``NEWCOIN`` (a made-up listing absent
from the shipped table) and a spot book (``ETH/USDC``) that a correct parser leaves out;
``listed()`` is what it must read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from collectors.instruments import Instrument
from collectors.sim._numbers import base_step, lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from shared.market import MarketEvent
from shared.models import Liquidation

MARKET_IDS = {"ETH": 0, "BTC": 1, "SOL": 2, "DOGE": 3, "XRP": 7, "ADA": 39, "SUI": 16}
LISTED_ONLY = {"NEWCOIN": 9001}
"""Markets the orderBooks answer lists, but on which nothing is simulated."""
SPOT_BOOK = ("ETH/USDC", 2048)
ORDER_BOOKS_PATH = "/api/v1/orderBooks"


def channel_of(market_id: int | str) -> str:
    return f"trade:{market_id}"


def _frame(client: SimClient, kind: str, channel: str, liquidations: list[dict[str, Any]]) -> str:
    client.state["nonce"] = nonce = client.state.get("nonce", 0) + 1
    return json.dumps({"type": kind, "channel": channel, "nonce": nonce, "trades": [],
                       "liquidation_trades": liquidations})


class LighterSim:
    name = "lighter"
    gzip = False
    heartbeat_s = 0.0
    idle_close_s = 120.0
    """Lighter wants a ``ping`` at least every 2 minutes."""

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        market_id = MARKET_IDS.get(event.base)
        if market_id is None:
            return None
        price = tick(event.price)
        size = lots(event.notional_usd / price, base_step(price))
        usd_amount = f"{size * price:.6f}"
        trade_id = event.timestamp_ms * 1000 + seq % 1000
        maker_ask = event.side == "short"
        native = {"trade_id": trade_id, "trade_id_str": str(trade_id), "type": "liquidation",
                  "market_id": market_id, "size": wire(size), "price": wire(price),
                  "usd_amount": usd_amount,
                  "is_maker_ask": maker_ask, "timestamp": event.timestamp_ms}
        expected = Liquidation(
            exchange="lighter",
            symbol=event.base + "USDC",
            symbol_native=str(market_id),
            base=event.base,
            quote="USDC",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=size,
            notional_usd=size * price,
            timestamp_ms=event.timestamp_ms,
            event_id=str(trade_id),
            side_raw=f"is_maker_ask={str(maker_ask).lower()}",
            quantity_native=size,
            extra={"exchange_id": str(trade_id), "usd_amount": float(usd_amount)},
        )
        return SimItem(native=native, expected=[expected], topic=channel_of(market_id))

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "ping":
            return [json.dumps({"type": "pong"})]
        if kind == "pong":
            return []
        if kind != "subscribe" or not str(msg.get("channel", "")).startswith("trade/"):
            raise ValueError(f"unsimulated request {kind!r}/{msg.get('channel')!r}")
        channel = channel_of(str(msg["channel"]).removeprefix("trade/"))
        client.subscriptions.add(channel)
        client.state.setdefault("unacked", []).append(channel)
        return []  # the ack is the ``subscribed/trade`` snapshot, sent by ``snapshot``

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        return [json.dumps({"type": "connected", "session_id": "sim"})]

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"error": {"code": 30005, "message": f"Invalid Channel: {reason}"}})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_channel.setdefault(item.topic, []).append(item.native)
        return [_frame(client, "update/trade", ch, rows) for ch, rows in by_channel.items()]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        channels: list[str] = client.state.pop("unacked", [])
        return [
            _frame(client, "subscribed/trade", ch, [i.native for i in recent if i.topic == ch])
            for ch in channels
        ]

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """The orderBooks answer: every perpetual market and one spot book."""
        if path != ORDER_BOOKS_PATH:
            return None
        books = [*({**MARKET_IDS, **LISTED_ONLY}.items()), SPOT_BOOK]
        return json.dumps({"code": 200, "order_books": [_book(symbol, i) for symbol, i in books]}).encode()

    def listed(self) -> list[Instrument]:
        return [Instrument(str(i), base, "USDC", "linear_perpetual")
                for base, i in {**MARKET_IDS, **LISTED_ONLY}.items()]


def _book(symbol: str, market_id: int) -> dict[str, Any]:
    """A market as ``GET /api/v1/orderBooks`` describes it."""
    return {"symbol": symbol, "market_id": market_id, "status": "active", "taker_fee": "0.0000",
            "maker_fee": "0.0000", "liquidation_fee": "1.0000", "min_base_amount": "0.01",
            "min_quote_amount": "10.000000", "supported_size_decimals": 2,
            "supported_price_decimals": 2, "supported_quote_decimals": 6}


SIM = LighterSim()
