"""Simulated OKX v5: ``liquidation-orders`` pushes for ``<BASE>-USDT-SWAP`` in whole contracts.

Wire: ``{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"instId",…,
"details":[{"bkLoss","bkPx","posSide","side","sz","ts"}]}]}``, one push per batch with the
details grouped by instrument. Subscribe acks are ``{"event":"subscribe","arg":…}``; the text
``ping`` is answered ``pong``. On subscribe the recent liquidations are replayed (OKX's first
push may carry recent history), so collectors must dedupe by event_id.

Contract values (``ctVal``, base per contract): BTC 0.01, ETH 0.1, SOL 1, XRP 100, DOGE 1000, ADA 100, SUI 1,
and ``NEWCOIN-USDT-SWAP`` (10 NEWCOIN), a made-up listing absent from the shipped fallback table
that only a collector that refreshed its instruments can size; other bases are not simulated.
REST: ``GET /api/v5/public/instruments?instType=SWAP`` lists exactly these contracts in OKX's
format (``listed()`` is what a correct parser reads from it); ``instType=FUTURES`` lists none.

Expected Liquidation: ``side`` is the order side (sell = long);
quantity = sz × ctVal; price = ``bkPx``; notional = quantity × price; timestamp = ``ts``;
event_id = digest of (instId, ts, side, bkPx, sz).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from collectors.instruments import Instrument
from collectors.sim._numbers import tick, wire
from collectors.sim.protocol import Outgoing, SimClient, SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

CT_VAL = {
    "BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "XRP": 100.0, "DOGE": 1000.0, "ADA": 100.0, "SUI": 1.0,
    "NEWCOIN": 10.0,
}
CHANNEL = "liquidation-orders"
INST_TYPE = "SWAP"
INST_TYPES = (INST_TYPE, "FUTURES")
INSTRUMENTS_PATH = "/api/v5/public/instruments"


class OkxSim:
    name = "okx"
    gzip = False
    heartbeat_s = 0.0
    idle_close_s = 30.0
    """OKX: "The connection will break automatically if ... data has not been pushed for more than
    30 seconds" (a ``ping`` gets a ``pong``, which keeps it open)."""

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        ct_val = CT_VAL.get(event.base)
        if ct_val is None:
            return None
        inst_id, price = f"{event.base}-USDT-SWAP", tick(event.price)
        contracts = float(max(1, round(event.notional_usd / (price * ct_val))))
        side = "sell" if event.side == "long" else "buy"
        detail = {
            "bkLoss": "0", "bkPx": wire(price), "ccy": "", "posSide": event.side, "side": side,
            "sz": wire(contracts), "ts": str(event.timestamp_ms),
        }  # fmt: skip
        qty = contracts * ct_val
        expected = Liquidation(
            exchange=self.name, symbol=f"{event.base}USDT", symbol_native=inst_id, base=event.base,
            quote="USDT", market_type="linear_perpetual", side=event.side, price=price,
            quantity=qty, notional_usd=qty * price, timestamp_ms=event.timestamp_ms,
            event_id=event_digest(inst_id, event.timestamp_ms, event.side, price, contracts),
            side_raw=side, quantity_native=contracts, quantity_native_unit="contracts",
            contract_value=ct_val, contract_value_unit=event.base,
            extra={"bankruptcy_loss": 0.0, "pos_side": event.side},
        )  # fmt: skip
        return SimItem(native={"instId": inst_id, "detail": detail}, expected=[expected], topic=INST_TYPE)

    def on_client_message(self, client: SimClient, message: str | bytes) -> list[Outgoing]:
        if message in ("ping", b"ping"):
            return ["pong"]
        request = json.loads(message)
        op, args = request["op"], request["args"]
        if op not in ("subscribe", "unsubscribe"):
            raise ValueError(f"unknown op {op!r}")
        replies: list[Outgoing] = []
        unknown = [arg["channel"] for arg in args if arg["channel"] != CHANNEL]
        if unknown:
            raise ValueError(f"{','.join(unknown)} doesn't exist")
        for arg in args:
            if arg["channel"] == CHANNEL:
                topics = {arg["instType"]}
                if op == "subscribe":
                    client.subscriptions.update(topics)
                else:
                    client.subscriptions.difference_update(topics)
            replies.append(
                json.dumps({"id": request.get("id", ""), "event": op, "arg": arg, "connId": "sim"})
            )
        return replies

    def refusal(self, client: SimClient, message: str | bytes, reason: str) -> Outgoing:
        return json.dumps({"event": "error", "code": "60018", "msg": f"Wrong URL or channel:{reason}",
                           "connId": "sim"})

    def frames(self, items: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        if not items:
            return []
        by_inst: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_inst.setdefault(item.native["instId"], []).append(item.native["detail"])
        data = [
            {"instId": i, "instType": INST_TYPE, "uly": _family(i), "instFamily": _family(i), "details": d}
            for i, d in by_inst.items()
        ]
        return [json.dumps({"arg": {"channel": CHANNEL, "instType": INST_TYPE}, "data": data})]

    def snapshot(self, recent: Sequence[SimItem], client: SimClient) -> list[Outgoing]:
        return self.frames(recent, client)

    def heartbeat(self, client: SimClient) -> Outgoing | None:
        return None

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """The instruments answer for ``instType=SWAP`` (every simulated contract) or ``FUTURES``."""
        parts = urlsplit(path)
        inst_type = parse_qs(parts.query).get("instType", [""])[0]
        if parts.path != INSTRUMENTS_PATH or inst_type not in INST_TYPES:
            return None
        swaps = CT_VAL.items() if inst_type == INST_TYPE else ()
        rows = [_instrument_row(base, ct_val) for base, ct_val in swaps]
        return json.dumps({"code": "0", "msg": "", "data": rows}).encode()

    def listed(self) -> list[Instrument]:
        return [
            Instrument(f"{base}-USDT-SWAP", base, "USDT", "linear_perpetual", ct_val, base)
            for base, ct_val in CT_VAL.items()
        ]


def _instrument_row(base: str, ct_val: float) -> dict[str, str]:
    """A linear USDT swap as ``GET /api/v5/public/instruments`` describes it."""
    family = f"{base}-USDT"
    return {
        "instType": INST_TYPE, "instId": f"{family}-SWAP", "uly": family, "instFamily": family,
        "baseCcy": "", "quoteCcy": "", "settleCcy": "USDT", "ctVal": wire(ct_val), "ctMult": "1",
        "ctValCcy": base, "ctType": "linear", "optType": "", "stk": "", "alias": "", "expTime": "",
        "listTime": "1611916828000", "lever": "50", "tickSz": "0.1", "lotSz": "1", "minSz": "1",
        "state": "live", "ruleType": "normal", "category": "1",
    }  # fmt: skip


def _family(inst_id: str) -> str:
    return inst_id.rsplit("-", 1)[0]


SIM = OkxSim()
