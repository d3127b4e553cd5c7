"""Simulated Binance USDⓈ-M: ``forceOrder`` events on path-subscribed streams.

Wire: one event per frame, wrapped as ``{"stream": ..., "data": ...}`` when the client used the
combined ``/market/stream?streams=`` path, bare on ``/market/ws/<stream>``. Subscriptions come
from the URL path (``on_connect``) or a ``SUBSCRIBE`` request (ack ``{"result":null,"id":N}``).
Like the live venue since 2026-04-23, only paths under ``/market`` deliver: the legacy ``/ws``
and ``/stream`` paths accept the handshake and ack SUBSCRIBE but never push an event (COIN-M on
``dstream`` keeps the plain paths). Items go to the all-market stream ``!forceOrder@arr``
(per-symbol stream clients get nothing here).

Expected Liquidation (documented rules, computed here, not by the parser): ``S`` = SELL for a
long; price = ``p``; quantity = ``z`` (base, lot-rounded); notional = price × quantity;
timestamp = ``T``; ``sampled=True``; event_id = digest of (symbol, T, side, p, z). The simulator
does not drop same-second events the way Binance does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from collectors.sim._numbers import base_step, lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

ALL_STREAM = "!forceOrder@arr"
MARKET_PREFIX = "/market"


def streams_from_path(path: str) -> set[str]:
    """``/stream?streams=a/b`` or ``/ws/a`` (any prefix) → the stream names."""
    parts = urlsplit(path)
    names = parse_qs(parts.query).get("streams", [])
    found = {s for joined in names for s in joined.split("/") if s}
    if "/ws/" in parts.path:
        found.add(parts.path.rsplit("/ws/", 1)[1])
    return found


class BinanceSimBase:
    """Binance futures protocol shared by USD-M and COIN-M (they differ in ``materialize``)."""

    name = "binance"
    gzip = False
    heartbeat_s = 0.0
    max_lifetime_s = 24 * 3600.0
    """Binance ends each connection after 24 h ("only valid for 24 hours")."""

    def delivers(self, client: SimClient) -> bool:
        """Whether streams on this client's path carry data (USD-M: only under ``/market``)."""
        return True

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        if self.delivers(client):
            client.subscriptions.update(streams_from_path(client.path))
        return []

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        request = json.loads(message)
        method, params, req_id = request["method"], request.get("params", []), request["id"]
        if method == "SUBSCRIBE":
            client.subscriptions.update(params if self.delivers(client) else ())
        elif method == "UNSUBSCRIBE":
            client.subscriptions.difference_update(params)
        elif method == "LIST_SUBSCRIPTIONS":
            return [json.dumps({"result": sorted(client.subscriptions), "id": req_id})]
        else:
            raise ValueError(f"unknown method {method!r}")
        return [json.dumps({"result": None, "id": req_id})]

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        combined = "/stream" in urlsplit(client.path).path
        return [
            json.dumps({"stream": item.topic, "data": item.native} if combined else item.native)
            for item in items
        ]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None


def force_order(symbol: str, event: MarketEvent, price: float, qty: float) -> dict[str, Any]:
    """The forceOrder event of a fully filled liquidation order (``ap`` = ``p``)."""
    order = {
        "s": symbol, "S": "SELL" if event.side == "long" else "BUY", "o": "LIMIT", "f": "IOC",
        "q": wire(qty), "p": wire(price), "ap": wire(price), "X": "FILLED",
        "l": wire(qty), "z": wire(qty), "T": event.timestamp_ms,
    }  # fmt: skip
    return {"e": "forceOrder", "E": event.timestamp_ms + 5, "o": order}


class UsdmSim(BinanceSimBase):
    name = "binance_usdm"

    def delivers(self, client: SimClient) -> bool:
        """``forceOrder`` lives on ``/market`` only; legacy ``/ws`` and ``/stream`` ack but stay silent."""
        return urlsplit(client.path).path.startswith(MARKET_PREFIX + "/")

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        symbol, price = f"{event.base}USDT", tick(event.price)
        qty = lots(event.notional_usd / price, base_step(price))
        native = force_order(symbol, event, price, qty)
        expected = Liquidation(
            exchange=self.name, symbol=symbol, symbol_native=symbol, base=event.base, quote="USDT",
            market_type="linear_perpetual", side=event.side, price=price, quantity=qty,
            notional_usd=qty * price, timestamp_ms=event.timestamp_ms,
            event_id=event_digest(symbol, event.timestamp_ms, event.side, price, qty),
            side_raw=native["o"]["S"], quantity_native=qty, sampled=True,
            extra={
                "price_avg": price, "quantity_original": qty, "quantity_last_fill": qty,
                "order_status": "FILLED", "notional_usd_at_price_avg": qty * price,
            },
        )  # fmt: skip
        return SimItem(native=native, expected=[expected], topic=ALL_STREAM)


SIM = UsdmSim()
