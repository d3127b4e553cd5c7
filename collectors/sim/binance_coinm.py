"""Simulated Binance COIN-M: ``forceOrder`` events for ``<BASE>USD_PERP`` in whole USD contracts.

Same protocol as :mod:`collectors.sim.binance_usdm`. Contract size: 100 USD for BTC, 10 USD for
the other coins; contracts = round(notional / size), at least 1. Expected Liquidation: notional
= contracts × size, base quantity = notional / ``p``, ``quantity_native`` in contracts,
``contract_value``/``contract_value_unit`` = size/``USD``, ``sampled=True``.
"""

from __future__ import annotations

from collectors.sim.binance_usdm import ALL_STREAM, BinanceSimBase, force_order, tick
from collectors.sim.protocol import SimItem
from collectors.venues._common import event_digest
from shared.market import MarketEvent
from shared.models import Liquidation


class CoinmSim(BinanceSimBase):
    name = "binance_coinm"

    def materialize(self, event: MarketEvent, seq: int) -> SimItem | None:
        symbol, price = f"{event.base}USD_PERP", tick(event.price)
        size = 100.0 if event.base == "BTC" else 10.0
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
            },
        )  # fmt: skip
        return SimItem(native=native, expected=[expected], topic=ALL_STREAM)


SIM = CoinmSim()
