"""A known set of liquidations and cascades, at times relative to the database's ``now()``.

Every batch goes through the writer's own ``build_batch`` (significance, retention cutoff, row
shapes), so the tests store exactly what the writer would. :class:`Expected` holds what the
stored rows must be, computed here in Python, independently of the SQL under test.

Recent (built with the real now):
- BTCUSDT: binance long $201 703.50 (-10 min), bybit short $134 580 (-20 min), okx long
  $107 440 (-30 min), bybit short $264 000 (-30 h), a $33 500 one that is not significant, and
  binance long $167 375 (-2 h 1 min) that a later batch names as a cascade member;
- ETHUSDT: binance short $140 492 (-15 min), binance long $170 000 (-3 h).
Cascades: ``c-btc`` (members: the $167 375 event plus $40 152 and $50 160 ones; its start and end
messages in one batch, a stale escalate later), ``c-eth`` (its start moves 10 s earlier).
Old: two BTCUSDT events 10 days ago (compressed by the policy); one event and one cascade 100
days ago (dropped by retention; built as a writer running back then would have).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared.models import CascadeEvent, CascadeMember, FactorScores, Liquidation
from shared.significance import SignificanceRules
from tests.factories import liq
from writer.rows import Batch, Payload, build_batch, ms_to_datetime

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
RETENTION_DAYS = 90
RULES = SignificanceRules()
FACTORS = FactorScores(volume_concentration=0.7, time_compression=0.8, price_clustering=0.6,
                       side_imbalance=0.9, institutional_ratio=0.5, cross_exchange=0.4)


def usd(liquidation: Liquidation) -> float:
    """The value the table stores (double precision: the collector's float, unrounded)."""
    return liquidation.notional_usd


def hour_of(ms: int) -> datetime:
    """``time_bucket('1 hour', t)`` in Python."""
    return ms_to_datetime(ms - ms % HOUR)


def cascade(cascade_id: str, symbol: str, phase: str, start_ms: int, members: list[Liquidation],
            published_ms: int, cross_exchange: bool = False) -> CascadeEvent:
    """A detector message summing ``members``."""
    long_usd = sum(m.notional_usd for m in members if m.side == "long")
    short_usd = sum(m.notional_usd for m in members if m.side == "short")
    return CascadeEvent(
        cascade_id=cascade_id, symbol=symbol, phase=phase,  # type: ignore[arg-type]
        start_ms=start_ms, end_ms=max(m.timestamp_ms for m in members),
        venues=sorted({m.exchange for m in members}), count=len(members),
        total_notional_usd=long_usd + short_usd, long_notional_usd=long_usd,
        short_notional_usd=short_usd, risk_score=0.55 + 0.1 * len(members),
        peak_risk_score=0.6 + 0.1 * len(members), band="high", factors=FACTORS,
        cross_exchange=cross_exchange, published_ms=published_ms,
    )


@dataclass
class Scenario:
    """The batches, in the order the writer receives them, and what they must store."""

    now_ms: int
    recent: Batch
    members: Batch
    stale: Batch
    old10: Batch
    old100: Batch
    stored: list[Liquidation] = field(default_factory=list)
    cascade_member_ids: set[str] = field(default_factory=set)
    cascades: dict[str, CascadeEvent] = field(default_factory=dict)

    @property
    def batches(self) -> list[Batch]:
        return [self.old100, self.old10, self.recent, self.members, self.stale]


def build(now_ms: int) -> Scenario:
    """Every batch of the scenario for a database whose ``now()`` is ``now_ms``."""
    t = now_ms
    big_btc = liq(exchange="binance", side="long", price=67234.5, quantity=3, timestamp_ms=t - 10 * MIN)
    btc_short = liq(exchange="bybit", side="short", price=67290, quantity=2, timestamp_ms=t - 20 * MIN)
    btc_okx = liq(exchange="okx", side="long", price=67150, quantity=1.6, timestamp_ms=t - 30 * MIN)
    small = liq(exchange="bybit", side="long", price=67000, quantity=0.5, timestamp_ms=t - 12 * MIN)
    day_old = liq(exchange="bybit", side="short", price=66000, quantity=4, timestamp_ms=t - 30 * HOUR)
    upgraded = liq(exchange="binance", side="long", price=66950, quantity=2.5, timestamp_ms=t - 121 * MIN)
    eth_short = liq(exchange="binance", symbol="ETHUSDT", side="short", price=3512.3, quantity=40,
                    timestamp_ms=t - 15 * MIN)
    eth_long = liq(exchange="binance", symbol="ETHUSDT", side="long", price=3400, quantity=50,
                   timestamp_ms=t - 3 * HOUR)
    m2 = liq(exchange="bybit", side="long", price=66920, quantity=0.6, timestamp_ms=t - 120 * MIN)
    m3 = liq(exchange="okx", side="long", price=66880, quantity=0.75, timestamp_ms=t - 120 * MIN + 30_000)
    old10 = [liq(exchange="binance", side="long", price=60000, quantity=2, timestamp_ms=t - 10 * DAY),
             liq(exchange="bybit", side="short", price=60100, quantity=3, timestamp_ms=t - 10 * DAY + HOUR)]
    old100 = liq(exchange="binance", side="long", price=50000, quantity=3, timestamp_ms=t - 100 * DAY)

    btc_members = [upgraded, m2, m3]
    c_btc_start = cascade("c-btc", "BTCUSDT", "start", upgraded.timestamp_ms, btc_members[:2], t - 119 * MIN)
    c_btc_end = cascade("c-btc", "BTCUSDT", "end", upgraded.timestamp_ms, btc_members, t - 118 * MIN)
    c_btc_stale = cascade("c-btc", "BTCUSDT", "escalate", upgraded.timestamp_ms, btc_members[:2],
                          t - 118 * MIN - 30_000)
    c_eth_start = cascade("c-eth", "ETHUSDT", "start", eth_long.timestamp_ms, [eth_long], t - 179 * MIN,
                          cross_exchange=True)
    c_eth_moved = cascade("c-eth", "ETHUSDT", "escalate", eth_long.timestamp_ms - 10_000, [eth_long],
                          t - 178 * MIN, cross_exchange=True)
    c_old = cascade("c-old", "BTCUSDT", "end", old100.timestamp_ms, [old100], old100.timestamp_ms + MIN)

    def batch(payloads: Sequence[Payload], at_ms: int = t) -> Batch:
        return build_batch(payloads, RULES, at_ms, RETENTION_DAYS)

    scenario = Scenario(
        now_ms=t,
        recent=batch([big_btc, btc_short, btc_okx, small, day_old, upgraded, eth_short, eth_long,
                      c_eth_start]),
        members=batch([CascadeMember(cascade_id="c-btc", risk_score=0.82, liquidation=m)
                       for m in btc_members] + [c_btc_start, c_btc_end, c_eth_moved]),
        stale=batch([c_btc_stale]),
        old10=batch(list(old10)),
        old100=batch([old100, c_old], at_ms=old100.timestamp_ms + HOUR),
    )
    scenario.stored = [big_btc, btc_short, btc_okx, day_old, upgraded, eth_short, eth_long, m2, m3,
                       *old10, old100]
    scenario.cascade_member_ids = {m.event_id for m in btc_members}
    scenario.cascades = {"c-btc": c_btc_end, "c-eth": c_eth_moved, "c-old": c_old}
    return scenario


@dataclass(frozen=True)
class HourlyRow:
    """One expected ``liquidations_hourly`` row."""

    event_count: int
    total_value_usd: float
    cascade_event_count: int
    cascade_value_usd: float


HourKey = tuple[datetime, str, str, str]


def expected_hourly(s: Scenario, since_ms: int | None = None) -> dict[HourKey, HourlyRow]:
    """``liquidations_hourly`` computed in Python from what must be stored."""
    groups: dict[HourKey, list[Liquidation]] = defaultdict(list)
    for event in s.stored:
        if since_ms is None or hour_of(event.timestamp_ms) >= ms_to_datetime(since_ms):
            groups[(hour_of(event.timestamp_ms), event.exchange, event.symbol, event.side)].append(event)
    out = {}
    for key, events in groups.items():
        members = [e for e in events if e.event_id in s.cascade_member_ids]
        out[key] = HourlyRow(len(events), sum(usd(e) for e in events),
                             len(members), sum(usd(e) for e in members))
    return out
