"""Instrument metadata: canonical symbols, market types and contract sizes per venue.

Three layers, later ones win:

1. the shipped fallback table ``collectors/data/instruments_<venue>.json`` (main contracts,
   so the collectors work offline);
2. the on-disk cache ``<data_dir>/instruments/<venue>.json`` written by the last refresh;
3. a refresh from the venue's public instruments endpoint (``refresh``), run periodically.

A contract whose size is unknown is reported as unknown (``Instrument`` absent or
``contract_value`` None): the parser then keeps the quantity in contracts and marks the
notional unknown. Nothing is guessed.

Canonical names: ``XBT`` → ``BTC``, Bitfinex ``UST`` → ``USDT``; symbol = BASE + QUOTE.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import msgspec

from shared.files import write_whole
from shared.models import MarketType

logger = logging.getLogger(__name__)

ASSET_ALIASES = {"XBT": "BTC", "UST": "USDT", "USTF0": "USDT"}
USD_QUOTES = frozenset({"USD", "USDT", "USDC", "UST", "FDUSD", "USD1", "DAI", "BUSD"})


def canonical_asset(code: str) -> str:
    """Canonical asset code: upper case, XBT → BTC, UST → USDT."""
    upper = code.upper()
    return ASSET_ALIASES.get(upper, upper)


def canonical_symbol(base: str, quote: str) -> str:
    return canonical_asset(base) + canonical_asset(quote)


@dataclass(frozen=True)
class Instrument:
    """One contract's facts. ``contract_value_unit`` is ``"base"``, ``"USD"`` or a quote code."""

    symbol_native: str
    base: str
    quote: str
    market_type: MarketType
    contract_value: float | None = None
    contract_value_unit: str | None = None
    expiry: str | None = None

    @property
    def symbol(self) -> str:
        return canonical_symbol(self.base, self.quote)


class InstrumentTable:
    """Instruments of one venue keyed by native symbol, with fallback and disk cache."""

    def __init__(self, venue: str, instruments: dict[str, Instrument] | None = None) -> None:
        self.venue = venue
        self._by_native: dict[str, Instrument] = dict(instruments or {})

    def get(self, symbol_native: str) -> Instrument | None:
        return self._by_native.get(symbol_native)

    def __len__(self) -> int:
        return len(self._by_native)

    def natives(self) -> list[str]:
        """Every native symbol the table knows (a copy: refreshes may add to it meanwhile)."""
        return list(self._by_native)

    def update(self, instruments: list[Instrument]) -> None:
        for inst in instruments:
            self._by_native[inst.symbol_native] = inst

    def save(self, cache_dir: Path) -> Path:
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"{self.venue}.json"
        write_whole(path, json.dumps([asdict(i) for i in self._by_native.values()], indent=0))
        return path

    def load_cache(self, cache_dir: Path) -> bool:
        """Overlay the disk cache written by the last refresh; False when there is none (or bad)."""
        path = cache_dir / f"{self.venue}.json"
        if not path.exists():
            return False
        try:
            self.update(_from_rows(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("ignoring unreadable instrument cache %s: %s", path, exc)
            return False
        return True

    @classmethod
    def load(cls, venue: str, cache_dir: Path | None = None) -> InstrumentTable:
        """Shipped fallback table overlaid with the disk cache, when there is one."""
        table = cls(venue, {i.symbol_native: i for i in _shipped(venue)})
        if cache_dir is not None:
            table.load_cache(cache_dir)
        return table


def _from_rows(rows: object) -> list[Instrument]:
    """Rows as :meth:`InstrumentTable.save` writes them; ``msgspec.ValidationError`` (a
    ValueError) for one that is not an Instrument, e.g. an unknown market type."""
    return msgspec.convert(rows, list[Instrument])


def _shipped(venue: str) -> list[Instrument]:
    resource = resources.files("collectors") / "data" / f"instruments_{venue}.json"
    if not resource.is_file():
        return []
    return _from_rows(json.loads(resource.read_text()))
