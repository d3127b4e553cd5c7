"""Decoded stream payloads → staging rows for one database batch (pure).

Rules applied here, besides significance (``shared.significance``):

- a liquidation whose UTC day lies entirely before ``now - retention_days`` is not stored: its
  partition/chunk is (or is about to be) dropped by retention, and re-creating it would resurrect
  data the rollups already forgot; the same cutoff applies to cascades by their start time;
- rows with a non-finite or absurd price, quantity or notional, or an event time more than a day
  ahead of ``now`` (a clock or unit error: it would create partitions for the future), are
  skipped (they would abort the whole COPY or pollute it), and NUL characters are removed from
  text (PostgreSQL text cannot hold them);
- of several messages about one cascade in a batch, only the furthest along (phase, then
  ``published_ms``, then stream order) is kept;
- of several rows with one natural key ``(time, exchange, event_id)`` in a batch (the plain event
  and its cascade-member copy), one is kept: a member before a plain event, then the higher risk
  score, then the first; so the batch can be COPied straight into the table;
- the cascade-member copy of a significant liquidation goes to ``Batch.merges``: the event stream
  may have stored its plain copy first, so it is merged (inserted if absent, else upgraded)
  instead of making the whole batch's COPY fail on the key; the other way round, a plain event
  whose member row the writer committed before goes there too (``Batch.merge_stored``);
- the price level is computed here (``shared.levels``, the aggregator's rule and sizes), not
  in SQL: one rule for Redis and the database, and no per-row SQL function on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from shared.errors import ConfigError
from shared.levels import DEFAULT_LEVEL_SIZES, level_of
from shared.models import MAX_AMOUNT, CascadeEvent, CascadeMember, Liquidation
from shared.significance import Insignificant, SignificanceRules

Payload = Liquidation | Insignificant | CascadeEvent | CascadeMember

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PHASE_RANK = {"start": 1, "escalate": 2, "end": 3}

EVENT_COLUMNS = (
    "time", "exchange", "symbol", "symbol_native", "base", "market_type", "side", "price",
    "quantity", "value_usd", "notional_known", "is_cascade", "risk_score", "cascade_id",
    "event_id", "sampled", "received_at", "price_level",
)
EVENT_TYPES = (
    "timestamptz", "text", "text", "text", "text", "text", "text", "float8",
    "float8", "float8", "bool", "bool", "float8", "text",
    "text", "bool", "timestamptz", "float8",
)
CASCADE_COLUMNS = (
    "cascade_id", "symbol", "start_time", "end_time", "venues", "event_count", "total_value_usd",
    "long_value_usd", "short_value_usd", "risk_score", "peak_risk_score", "band",
    "volume_concentration", "time_compression", "price_clustering", "side_imbalance",
    "institutional_ratio", "cross_exchange_correlation", "cross_exchange", "phase", "published_at",
)
CASCADE_TYPES = (
    "text", "text", "timestamptz", "timestamptz", "text[]", "int4", "float8",
    "float8", "float8", "float8", "float8", "text",
    "float8", "float8", "float8", "float8",
    "float8", "float8", "bool", "text", "timestamptz",
)

EventRow = tuple[object, ...]
CascadeRow = tuple[object, ...]


@dataclass
class Batch:
    """Everything one transaction writes, plus what was left out and why."""

    events: list[EventRow] = field(default_factory=list)
    """Rows not stored yet, as far as the batch can tell: COPied straight into the table."""
    merges: list[EventRow] = field(default_factory=list)
    """Cascade-member rows of significant liquidations: the event stream may have stored their
    plain copy already, so they are inserted if absent, else that row is upgraded to a member."""
    cascades: list[CascadeRow] = field(default_factory=list)
    days: set[date] = field(default_factory=set)
    insignificant: int = 0
    expired: int = 0
    invalid: int = 0

    @property
    def empty(self) -> bool:
        return not self.events and not self.merges and not self.cascades

    @property
    def members(self) -> int:
        """Rows of cascade members (the sink then upgrades stored rows they name)."""
        return sum(1 for row in (*self.events, *self.merges) if row[_IS_CASCADE])

    def member_keys(self) -> list[tuple[object, ...]]:
        """The natural keys of the batch's cascade-member rows."""
        return [natural_key(row) for row in (*self.events, *self.merges) if row[_IS_CASCADE]]

    def merge_stored(self, stored: Container[tuple[object, ...]]) -> None:
        """Move to ``merges`` the events whose natural key is in ``stored`` (member rows
        committed by earlier batches): their COPY would fail on the key (the member copy of a
        liquidation is often read before its plain event), costing a rolled-back COPY and an
        ERROR in the server's log; merged, they insert nothing."""
        known = [row for row in self.events if natural_key(row) in stored]
        if known:
            self.events = [row for row in self.events if natural_key(row) not in stored]
            self.merges = [*self.merges, *known]

    def split(self, max_rows: int) -> list[Batch]:
        """This batch as transactions of at most ``max_rows`` rows each: events, then merges,
        then cascades, in order. The skip counts stay with the first part; every part keeps
        the days (partitions are ensured once per day anyway)."""
        rows = [*((0, r) for r in self.events), *((1, r) for r in self.merges),
                *((2, r) for r in self.cascades)]
        if len(rows) <= max_rows:
            return [self]
        parts: list[Batch] = []
        for start in range(0, len(rows), max_rows):
            part = Batch(days=self.days)
            lists = (part.events, part.merges, part.cascades)
            for kind, row in rows[start:start + max_rows]:
                lists[kind].append(row)
            parts.append(part)
        first = parts[0]
        first.insignificant, first.expired, first.invalid = self.insignificant, self.expired, self.invalid
        return parts


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def utc_day(ms: int) -> date:
    return ms_to_datetime(ms - ms % DAY_MS).date()


TIMESCALE_MIN_RETENTION_DAYS = 3
"""Below it, the whole days the writer stores (at least one, plus today) would reach past the
rollups' refresh window (:func:`timescale_retention_error`)."""


def stored_days(retention_days: int, mode: str | None, refresh_window_days: float | None = None) -> int:
    """How many days back the writer stores rows (whole UTC days, see :func:`expired`).

    Native mode: the retention; its rollups follow every insert. TimescaleDB mode: inside the
    continuous aggregates' refresh window, ``refresh_window_days`` as the database has it (by
    default ``retention - 2 h``, narrower after a raised retention, sql/011): a row older than
    the window's start would be stored but never reach the rollups. With the default window
    that is the retention less two days."""
    if mode != "timescale":
        return retention_days
    window = retention_days - 2 / 24 if refresh_window_days is None else refresh_window_days
    # A kept row is up to one day older than the cutoff's day; 2 hours more keep it inside a
    # window that starts on an hour and moves at each refresh run (a whole-day window too).
    return max(1, min(retention_days, math.floor(window - 2 / 24)) - 1)


def timescale_retention_error(retention_days: int) -> ConfigError | None:
    """What is wrong with ``retention_days`` in TimescaleDB mode: below 3 days, the whole days
    the writer stores (at least one, plus today) reach past the rollups' refresh window."""
    if retention_days >= TIMESCALE_MIN_RETENTION_DAYS:
        return None
    return ConfigError("LIQ_RETENTION_DAYS",
                       f"at least {TIMESCALE_MIN_RETENTION_DAYS} days in TimescaleDB mode (its rollups "
                       "refresh up to the retention less 2 hours)", str(retention_days))


def expired(ts_ms: int, now_ms: int, retention_days: int) -> bool:
    """True when the UTC day of ``ts_ms`` ends at or before ``now - retention``."""
    day_end = ts_ms - ts_ms % DAY_MS + DAY_MS
    return day_end <= now_ms - retention_days * DAY_MS


def _text(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) and abs(v) < MAX_AMOUNT for v in values)


def _score(value: float) -> float | None:
    return value if math.isfinite(value) else None


def event_row(liq: Liquidation, member: CascadeMember | None = None,
              level_sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> EventRow:
    value = liq.notional_usd if liq.notional_known else 0.0
    return (
        ms_to_datetime(liq.timestamp_ms), _text(liq.exchange), _text(liq.symbol),
        _text(liq.symbol_native), _text(liq.base), liq.market_type, liq.side, liq.price,
        liq.quantity, value, liq.notional_known, member is not None,
        _score(member.risk_score) if member else None, _text(member.cascade_id) if member else None,
        _text(liq.event_id), liq.sampled, ms_to_datetime(liq.received_ms) if liq.received_ms > 0 else None,
        level_of(liq.base, liq.price, level_sizes),
    )


def cascade_row(ev: CascadeEvent) -> CascadeRow:
    f = ev.factors
    return (
        _text(ev.cascade_id), _text(ev.symbol), ms_to_datetime(ev.start_ms),
        ms_to_datetime(max(ev.end_ms, ev.start_ms)), [_text(v) for v in ev.venues], ev.count,
        ev.total_notional_usd, ev.long_notional_usd, ev.short_notional_usd, ev.risk_score,
        ev.peak_risk_score, ev.band, f.volume_concentration, f.time_compression,
        f.price_clustering, f.side_imbalance, f.institutional_ratio, f.cross_exchange,
        ev.cross_exchange, ev.phase, ms_to_datetime(ev.published_ms) if ev.published_ms > 0 else None,
    )


def latest_cascades(events: Iterable[CascadeEvent]) -> list[CascadeEvent]:
    """One message per cascade id: the furthest phase, then the latest published, then the last."""
    best: dict[str, CascadeEvent] = {}
    for ev in events:
        stored_id = _text(ev.cascade_id)  # the id as stored: ids differing by a NUL are one
        held = best.get(stored_id)
        rank = (PHASE_RANK[ev.phase], ev.published_ms)
        if held is None or rank >= (PHASE_RANK[held.phase], held.published_ms):
            best[stored_id] = ev
    return list(best.values())


def _valid_cascade(ev: CascadeEvent) -> bool:
    f = ev.factors
    return _finite(ev.total_notional_usd, ev.long_notional_usd, ev.short_notional_usd, ev.risk_score,
                   ev.peak_risk_score, f.volume_concentration, f.time_compression, f.price_clustering,
                   f.side_imbalance, f.institutional_ratio, f.cross_exchange) and 0 <= ev.count < 2**31


def build_batch(payloads: Sequence[Payload], rules: SignificanceRules, now_ms: int,
                retention_days: int, level_sizes: Mapping[str, float] = DEFAULT_LEVEL_SIZES) -> Batch:
    batch = Batch()
    cascades: list[CascadeEvent] = []
    rows: dict[tuple[object, ...], EventRow] = {}
    stored_maybe: set[tuple[object, ...]] = set()
    for payload in payloads:
        if isinstance(payload, CascadeEvent):
            if expired(payload.start_ms, now_ms, retention_days):
                batch.expired += 1
            elif not _valid_cascade(payload) or payload.start_ms > now_ms + DAY_MS:
                batch.invalid += 1
            else:
                cascades.append(payload)
            continue
        if isinstance(payload, Insignificant):  # decoded as such: only its significance read
            batch.insignificant += 1
            continue
        member = payload if isinstance(payload, CascadeMember) else None
        liq = payload.liquidation if isinstance(payload, CascadeMember) else payload
        if member is None and not rules.is_significant(liq):
            batch.insignificant += 1
        elif expired(liq.timestamp_ms, now_ms, retention_days):
            batch.expired += 1
        elif not _finite(liq.price, liq.quantity, liq.notional_usd) or liq.timestamp_ms > now_ms + DAY_MS:
            batch.invalid += 1
        else:
            row = event_row(liq, member, level_sizes)
            _keep_best(rows, row)
            if member is not None and rules.is_significant(liq):
                stored_maybe.add(natural_key(row))
            batch.days.add(utc_day(liq.timestamp_ms))
    for key, row in rows.items():
        (batch.merges if row[_IS_CASCADE] and key in stored_maybe else batch.events).append(row)
    batch.cascades = [cascade_row(ev) for ev in latest_cascades(cascades)]
    return batch


_TIME, _EXCHANGE, _IS_CASCADE, _RISK, _EVENT_ID = (
    EVENT_COLUMNS.index(c) for c in ("time", "exchange", "is_cascade", "risk_score", "event_id"))


def natural_key(row: EventRow) -> tuple[object, ...]:
    """The primary key of ``liquidations_significant``: (time, exchange, event_id)."""
    return row[_TIME], row[_EXCHANGE], row[_EVENT_ID]


def _rank(row: EventRow) -> tuple[bool, float]:
    risk = row[_RISK]
    return bool(row[_IS_CASCADE]), risk if isinstance(risk, float) else -math.inf


def _keep_best(rows: dict[tuple[object, ...], EventRow], row: EventRow) -> None:
    """Keep one row per natural key: a cascade member's, then the higher risk score, then the first."""
    key = natural_key(row)
    held = rows.get(key)
    if held is None or _rank(row) > _rank(held):
        rows[key] = row
