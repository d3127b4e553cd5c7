"""Simulated Bitget v3: the all-symbol ``liquidation`` topic of ``usdt-futures``, text ``ping``/``pong``.

Symbols: ``<BASE>USDT`` for BTC, ETH, SOL, XRP, DOGE, ADA, SUI. ``side`` is the position side (``buy`` = long
liquidated) and ``amount`` is the USDT value rounded to 0.0001, so the expected quantity is
amount / price and the notional is amount. Every expected event is ``sampled`` (the real feed
is aggregated per symbol per second). All items of one emit share one frame, as Bitget batches
symbols. event_id = the digest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import msgspec

from collectors.sim._numbers import lots, tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

INST_TYPE = "usdt-futures"
TOPIC = "liquidation"
KEY = f"{INST_TYPE}:{TOPIC}"
SYMBOLS = {base: f"{base}USDT" for base in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "SUI")}
AMOUNT_STEP = 0.0001


class BitgetSim:
    """Bitget rows carry no id (collectors digest them), so a symbol's rows get distinct ``ts``:
    a row that would repeat one is moved 1 ms later."""

    name = "bitget"
    gzip = False
    heartbeat_s = 0.0
    idle_close_s = 120.0
    """Bitget drops a connection that has not pinged for 2 minutes."""

    def __init__(self) -> None:
        self._last_ms: dict[str, int] = {}

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        symbol = SYMBOLS.get(event.base)
        if symbol is None:
            return None
        ms = max(event.timestamp_ms, self._last_ms.get(event.base, 0) + 1)
        self._last_ms[event.base] = ms
        event = msgspec.structs.replace(event, timestamp_ms=ms)
        price, amount = tick(event.price), lots(event.notional_usd, AMOUNT_STEP)
        side_raw = "buy" if event.side == "long" else "sell"
        native = {"symbol": symbol, "side": side_raw, "price": wire(price), "amount": wire(amount),
                  "ts": str(event.timestamp_ms)}
        expected = Liquidation(
            exchange="bitget",
            symbol=symbol,
            symbol_native=symbol,
            base=event.base,
            quote="USDT",
            market_type="linear_perpetual",
            side=event.side,
            price=price,
            quantity=amount / price,
            notional_usd=amount,
            timestamp_ms=event.timestamp_ms,
            event_id=event_digest(symbol, event.timestamp_ms, event.side, price, amount),
            side_raw=side_raw,
            quantity_native=amount,
            quantity_native_unit="USDT",
            sampled=True,
        )
        return SimItem(native=native, expected=[expected], topic=KEY)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        text = message.decode() if isinstance(message, bytes) else message
        if text == "ping":
            return ["pong"]
        msg = json.loads(text)
        if msg.get("op") != "subscribe":
            raise ValueError(f"unknown op {msg.get('op')!r}")
        replies: list[Outgoing] = []
        for arg in msg["args"]:
            if arg["topic"] != TOPIC:
                raise ValueError(f"instType:{arg['instType']},topic:{arg['topic']} doesn't exist")
        for arg in msg["args"]:
            client.subscriptions.add(f"{arg['instType']}:{arg['topic']}")
            replies.append(json.dumps({"event": "subscribe", "arg": arg}))
        return replies

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"event": "error", "code": 30001, "msg": reason.strip("'\"")})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        arg = {"instType": INST_TYPE, "topic": TOPIC}
        data = [item.native for item in items]
        return [json.dumps({"action": "update", "arg": arg, "data": data, "ts": int(time.time() * 1000)})]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return []

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None


SIM = BitgetSim()
