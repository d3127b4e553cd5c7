"""Simulated Binance COIN-M: ``forceOrder`` events for ``<BASE>USD_PERP`` in whole USD contracts.

Same protocol as :mod:`collectors.sim.binance_usdm`. Contract sizes (``CONTRACT_SIZE``, USD): 100
for BTC, 10 for ETH, SOL, XRP, DOGE, ADA and SUI, and 50 for ``NEWCOINUSD_PERP``, a made-up
listing absent from the shipped fallback table whose size differs from the 100/10 rule, so only a
collector that refreshed its instruments sizes it right; other bases are not simulated. contracts
= round(notional / size), at least 1. Expected Liquidation: notional = contracts × size, base
quantity = notional / ``p``, ``quantity_native`` in contracts,
``contract_value``/``contract_value_unit`` = size/``USD``, ``sampled=True``.

REST: ``GET /dapi/v1/exchangeInfo`` lists exactly these perpetuals in Binance's format
(``listed()`` is what a correct parser reads from it).
"""

from __future__ import annotations

import json
from typing import Any

from collectors.instruments import Instrument
from collectors.sim._numbers import tick
from collectors.sim.binance_usdm import ALL_STREAM, BinanceSimBase, force_order
from collectors.sim.protocol import SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation

CONTRACT_SIZE = {
    "BTC": 100.0, "ETH": 10.0, "SOL": 10.0, "XRP": 10.0, "DOGE": 10.0, "ADA": 10.0, "SUI": 10.0,
    "NEWCOIN": 50.0,
}
EXCHANGE_INFO_PATH = "/dapi/v1/exchangeInfo"
PERPETUAL_DELIVERY_MS = 4133404800000  # 2100-12-25, what Binance gives perpetuals


class CoinmSim(BinanceSimBase):
    name = "binance_coinm"

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        size = CONTRACT_SIZE.get(event.base)
        if size is None:
            return None
        symbol, price = f"{event.base}USD_PERP", tick(event.price)
        contracts = float(max(1, round(event.notional_usd / size)))
        native = force_order(symbol, event, price, contracts)
        native["o"]["ps"] = f"{event.base}USD"
        value = contracts * size
        expected = Liquidation(
            exchange=self.name, symbol=f"{event.base}USD", symbol_native=symbol, base=event.base,
            quote="USD", market_type="inverse_perpetual", side=event.side, price=price,
            quantity=value / price, notional_usd=value, timestamp_ms=event.timestamp_ms,
            event_id=event_digest(symbol, event.timestamp_ms, event.side, price, contracts),
            side_raw=native["o"]["S"], quantity_native=contracts, quantity_native_unit="contracts",
            contract_value=size, contract_value_unit="USD", sampled=True,
            extra={
                "price_avg": price, "quantity_original": contracts,
                "quantity_last_fill": contracts, "order_status": "FILLED",
                "notional_usd_at_price_avg": value,  # an inverse contract's face, at any price
            },
        )  # fmt: skip
        return SimItem(native=native, expected=[expected], topic=ALL_STREAM)

    def rest(self, path: str, body: bytes | None) -> bytes | None:
        """The exchangeInfo answer: every simulated perpetual."""
        if path != EXCHANGE_INFO_PATH:
            return None
        symbols = [_symbol_row(base, size) for base, size in CONTRACT_SIZE.items()]
        info = {"timezone": "UTC", "serverTime": 1781000000000, "rateLimits": [], "exchangeFilters": [],
                "symbols": symbols}
        return json.dumps(info).encode()

    def listed(self) -> list[Instrument]:
        return [
            Instrument(f"{base}USD_PERP", base, "USD", "inverse_perpetual", size, "USD")
            for base, size in CONTRACT_SIZE.items()
        ]


def _symbol_row(base: str, size: float) -> dict[str, Any]:
    """A COIN-M perpetual as ``GET /dapi/v1/exchangeInfo`` describes it."""
    return {
        "symbol": f"{base}USD_PERP", "pair": f"{base}USD", "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_MS, "onboardDate": 1597042800000,
        "contractStatus": "TRADING", "contractSize": int(size), "marginAsset": base,
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": base,
        "quoteAsset": "USD", "pricePrecision": 1, "quantityPrecision": 0, "baseAssetPrecision": 8,
        "quotePrecision": 8, "equalQtyPrecision": 4, "underlyingType": "COIN",
        "underlyingSubType": [], "triggerProtect": "0.0500", "filters": [], "orderTypes": ["LIMIT"],
        "timeInForce": ["GTC"], "liquidationFee": "0.015000", "marketTakeBound": "0.05",
    }  # fmt: skip


SIM = CoinmSim()
