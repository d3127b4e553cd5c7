"""The payloads that cross process boundaries: normalized liquidations and cascade messages.

Every process reads and writes these Structs through ``shared.codec``; nothing else may put a
payload on a stream.

Schema-evolution rules (several processes are restarted independently and share streams):

1. A new field always has a default and goes at the end of its Struct.
2. Never rename a field, never change its type, never reorder fields.
3. Old readers ignore unknown fields; new readers fill in defaults for missing ones.

Field meanings follow ``../shared/peer-corpus/README.md``:

- ``side`` is the liquidated POSITION (``long``/``short``), never the order side;
  ``side_raw`` keeps the exchange's own string (or sign/flag) for audits.
- ``quantity`` is in base units when ``quantity_unit == "base"``; it is ``"contracts"`` only
  when the contract size is unknown, and then ``notional_usd`` is ``nan``-free 0.0 and
  ``notional_known`` is False. Contract sizes are never guessed.
- ``timestamp_ms`` is the exchange's event time; ``timestamp_source`` says ``"receive"`` when
  the venue sends no time (BitMEX) and the receive time was used instead.
- ``event_id`` is the natural key that makes storage idempotent: the venue's own trade/order id
  where it has one, otherwise a digest of (symbol, time, side, price, quantity).
- Every epoch-millisecond field lies in ``[0, 2100-01-01)`` and every price, quantity and USD
  amount in ``[0, 1e15)``: a payload outside (say, microseconds read as milliseconds, or an
  overflowing notional) fails to decode, so every consumer dead-letters it with the reason
  instead of choking on it (the writer cannot store a year-55000 date; Redis refuses to add
  up to infinity). Collectors refuse such a frame before it is published.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
EpochMs = Annotated[int, msgspec.Meta(ge=0, lt=MAX_EPOCH_MS)]
MAX_AMOUNT = 1e15
Amount = Annotated[float, msgspec.Meta(ge=0, lt=MAX_AMOUNT)]


def plausible_epoch_ms(value: int) -> bool:
    """``value`` fits :data:`EpochMs` (epoch milliseconds before 2100)."""
    return 0 <= value < MAX_EPOCH_MS


def plausible_amount(value: float) -> bool:
    """``value`` fits :data:`Amount` (finite, non-negative, below 1e15)."""
    return 0 <= value < MAX_AMOUNT

Side = Literal["long", "short"]
MarketType = Literal[
    "linear_perpetual", "inverse_perpetual", "linear_future", "inverse_future", "spot_margin"
]
QuantityUnit = Literal["base", "contracts"]
TimestampSource = Literal["exchange", "receive"]
CascadePhase = Literal["start", "escalate", "end"]
RiskBand = Literal["low", "moderate", "high", "extreme"]


class Liquidation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One forced liquidation, normalized. Produced by collectors, read by every consumer."""

    exchange: str
    symbol: str
    symbol_native: str
    base: str
    quote: str
    market_type: MarketType
    side: Side
    price: Amount
    quantity: Amount
    notional_usd: Amount
    timestamp_ms: EpochMs
    event_id: str
    side_raw: str = ""
    quantity_unit: QuantityUnit = "base"
    quantity_native: Amount = 0.0
    quantity_native_unit: str = "base"
    contract_value: float | None = None
    contract_value_unit: str | None = None
    notional_known: bool = True
    expiry: str | None = None
    timestamp_source: TimestampSource = "exchange"
    received_ms: EpochMs = 0
    sampled: bool = False
    extra: dict[str, str | float | int | None] = {}


class FactorScores(msgspec.Struct, frozen=True, kw_only=True):
    """The six normalized risk factors (each in [0, 1]) behind one risk score."""

    volume_concentration: float = 0.0
    time_compression: float = 0.0
    price_clustering: float = 0.0
    side_imbalance: float = 0.0
    institutional_ratio: float = 0.0
    cross_exchange: float = 0.0


class CascadeEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A cascade lifecycle message (start, escalate, end) published by the detector."""

    cascade_id: str
    symbol: str
    phase: CascadePhase
    start_ms: EpochMs
    """The oldest member's time: a slower venue's late member moves it earlier (the writer then
    moves the stored row); ``cascade_id`` keeps the start it was named by."""
    end_ms: EpochMs
    """The newest member's time."""
    venues: list[str]
    count: int
    total_notional_usd: Amount
    long_notional_usd: Amount
    short_notional_usd: Amount
    risk_score: float
    peak_risk_score: float
    band: RiskBand
    factors: FactorScores
    cross_exchange: bool = False
    published_ms: EpochMs = 0


class CascadeMember(msgspec.Struct, frozen=True, kw_only=True):
    """A liquidation that belongs to a cascade; the writer stores it whatever its size."""

    cascade_id: str
    risk_score: float
    liquidation: Liquidation
