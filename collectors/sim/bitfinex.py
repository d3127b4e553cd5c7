"""Simulated Bitfinex: ``status``/``liq:global`` rows for ``t<BASE>F0:USTF0`` perpetuals.

Bases: BTC, ETH, SOL, XRP, DOGE, ADA (``BASES``; no SUI perpetual on Bitfinex could be confirmed).

Wire: an ``info`` event on connect; subscribing gives ``{"event":"subscribed","channel":"status",
"chanId":N,"key":"liq:global"}`` and then array frames ``[N, [[row], …]]``. Every liquidation is
pushed as its initial trigger row (IS_MATCH 0) followed, in a second frame, by its market
execution row (IS_MATCH 1) that a collector must not count. On subscribe the most recent row is
replayed (Bitfinex sends an old row); the heartbeat is ``[N, "hb"]``; ``{"event":"ping"}`` →
``pong``.

Row: ``["pos", POS_ID, MTS, null, SYMBOL, AMOUNT, BASE_PRICE, null, IS_MATCH, 1, null,
PRICE_ACQUIRED]`` with AMOUNT > 0 for a long. Expected Liquidation: price = BASE_PRICE,
quantity = |AMOUNT| (base, lot rounded), notional = quantity × price, timestamp = MTS,
event_id = ``POS_ID-MTS``, ``price_acquired`` / ``is_market_sold`` in extra.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from collectors.sim._numbers import base_step, lots, tick
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from shared.market import MarketEvent
from shared.models import Liquidation

KEY = "liq:global"
BASES = frozenset({"BTC", "ETH", "SOL", "XRP", "DOGE", "ADA"})
POS_ID_BASE = 150_000_000


class BitfinexSim:
    name = "bitfinex"
    gzip = False
    heartbeat_s = 15.0

    def __init__(self) -> None:
        self._chan_ids = itertools.count(200_001)

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        if event.base not in BASES:
            return None
        symbol, price = f"t{event.base}F0:USTF0", tick(event.price)
        qty = lots(event.notional_usd / price, base_step(price))
        amount = qty if event.side == "long" else -qty
        pos_id = POS_ID_BASE + seq
        row = ["pos", pos_id, event.timestamp_ms, None, symbol, amount, price, None, 0, 1, None, price]
        expected = Liquidation(
            exchange=self.name, symbol=f"{event.base}USDT", symbol_native=symbol, base=event.base,
            quote="USDT", market_type="linear_perpetual", side=event.side, price=price,
            quantity=qty, notional_usd=qty * price, timestamp_ms=event.timestamp_ms,
            event_id=f"{pos_id}-{event.timestamp_ms}", side_raw=repr(amount), quantity_native=qty,
            extra={"exchange_id": str(pos_id), "price_acquired": price, "is_market_sold": 1},
        )  # fmt: skip
        return SimItem(native={"row": row}, expected=[expected], topic=KEY)

    def on_connect(self, client: SimClient) -> list[Outgoing]:
        return [json.dumps({"event": "info", "version": 2, "serverId": "sim", "platform": {"status": 1}})]

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        request = json.loads(message)
        event = request["event"]
        if event == "ping":
            return [json.dumps({"event": "pong", "ts": 0, "cid": request.get("cid")})]
        if event == "conf":
            return [json.dumps({"event": "conf", "status": "OK", "flags": request.get("flags", 0)})]
        if event == "subscribe" and request.get("channel") == "status" and request.get("key") == KEY:
            client.state["chan_id"] = next(self._chan_ids)
            client.subscriptions.add(KEY)
            ack = {"event": "subscribed", "channel": "status", "chanId": client.state["chan_id"], "key": KEY}
            return [json.dumps(ack)]
        if event == "unsubscribe":
            client.subscriptions.discard(KEY)
            return [json.dumps({"event": "unsubscribed", "status": "OK", "chanId": request.get("chanId")})]
        raise ValueError(f"unsupported request {request!r}")

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"event": "error", "msg": "subscribe: invalid", "code": 10300})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        if not items:
            return []
        chan_id = client.state["chan_id"]
        triggers = [item.native["row"] for item in items]
        matches = [_as_match(row) for row in triggers]
        return [json.dumps([chan_id, triggers]), json.dumps([chan_id, matches])]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        if not recent:
            return []
        return [json.dumps([client.state["chan_id"], [recent[-1].native["row"]]])]

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        chan_id = client.state.get("chan_id")
        return json.dumps([chan_id, "hb"]) if chan_id is not None else None


def _as_match(row: list[Any]) -> list[Any]:
    """The market-execution row of a trigger: IS_MATCH = 1, a few ms later."""
    match = list(row)
    match[2] = row[2] + 7
    match[8] = 1
    return match


SIM = BitfinexSim()
