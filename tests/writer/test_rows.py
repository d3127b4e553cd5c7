"""The writer's pure cores: significance, batch building, batching by size and age, janitor plan."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import cast

import msgspec
import pytest

from shared import codec
from shared.clock import FakeClock
from shared.errors import ConfigError
from shared.models import CascadeEvent, CascadeMember, FactorScores
from shared.settings import load
from shared.significance import Insignificant, SignificanceRules
from tests.factories import liq
from writer.batcher import Batcher
from writer.config import WriterSettings
from writer.janitor import plan_run
from writer.rows import DAY_MS, EVENT_COLUMNS, build_batch, expired, latest_cascades, stored_days, utc_day

NOW = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def cascade(phase: str, published: int, start: int = NOW - 60_000) -> CascadeEvent:
    return CascadeEvent(cascade_id="c1", symbol="BTCUSDT", phase=phase, start_ms=start,  # type: ignore[arg-type]
                        end_ms=start + 1_000, venues=["bybit"], count=5, total_notional_usd=5e5,
                        long_notional_usd=5e5, short_notional_usd=0.0, risk_score=1.0, peak_risk_score=1.0,
                        band="high", factors=FactorScores(), published_ms=published)


def test_significance_threshold_default_and_per_symbol() -> None:
    rules = SignificanceRules.from_settings(load(WriterSettings, {
        "LIQ_SIGNIFICANT_USD": "100000", "LIQ_SIGNIFICANT_USD_BY_SYMBOL": "btcusdt=250000"}))
    assert rules.threshold("BTCUSDT") == 250_000 and rules.threshold("ETHUSDT") == 100_000
    assert rules.is_significant(liq(symbol="ETHUSDT", price=1000.0, quantity=100.0))
    assert not rules.is_significant(liq(symbol="ETHUSDT", price=1000.0, quantity=99.99))
    assert not rules.is_significant(liq(symbol="BTCUSDT", price=100_000.0, quantity=2.0))
    unknown = msgspec.structs.replace(liq(price=1e6, quantity=1.0), notional_known=False)
    assert not rules.is_significant(unknown), "an unknown notional is never significant by size"


def test_an_event_is_decoded_whole_only_when_it_is_to_be_stored() -> None:
    settings = load(WriterSettings, {"LIQ_SIGNIFICANT_USD_BY_SYMBOL": "BTCUSDT=250000"})
    rules = SignificanceRules.from_settings(settings)
    big = liq(symbol="ETHUSDT", price=1000.0, quantity=100.0, event_id="big")
    assert rules.decode_event(codec.encode(big)) == big, "significant: the whole liquidation"
    small = liq(symbol="BTCUSDT", price=100_000.0, quantity=2.0)  # under BTCUSDT's own threshold
    assert rules.decode_event(codec.encode(small)) == Insignificant(symbol="BTCUSDT", notional_usd=200_000.0)
    unknown = msgspec.structs.replace(liq(price=1e6, quantity=1.0), notional_known=False)
    assert isinstance(rules.decode_event(codec.encode(unknown)), Insignificant)
    # What decides is checked as strictly as in the whole decode: such an entry is dead-lettered.
    for bad in (b'{"symbol":"BTCUSDT","notional_usd":-1.0}', b'{"notional_usd":5e5}', b"[1]"):
        with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
            rules.decode_event(bad)
    # A field it does not read is not checked: the entry is skipped, not dead-lettered.
    broken_rest = codec.encode(small).replace(b'"side":"long"', b'"side":"sideways"')
    assert isinstance(rules.decode_event(broken_rest), Insignificant)
    with pytest.raises(msgspec.ValidationError):
        rules.decode_event(codec.encode(big).replace(b'"side":"long"', b'"side":"sideways"'))
    batch = build_batch([rules.decode_event(codec.encode(e)) for e in (big, small, unknown)], rules, NOW, 90)
    assert (batch.insignificant, batch.expired) == (2, 1), "the significant one is read whole, then too old"


def test_bad_writer_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="LIQ_BATCH_SIZE"):
        load(WriterSettings, {"LIQ_BATCH_SIZE": "0"})
    with pytest.raises(ConfigError, match="LIQ_SIGNIFICANT_USD_BY_SYMBOL"):
        load(WriterSettings, {"LIQ_SIGNIFICANT_USD_BY_SYMBOL": "BTCUSDT"})
    with pytest.raises(ConfigError, match="LIQ_STORAGE_MODE"):
        load(WriterSettings, {"LIQ_STORAGE_MODE": "mongo"})
    with pytest.raises(ConfigError, match=r"LIQ_ROLLUP_RETENTION_DAYS.*>= LIQ_RETENTION_DAYS \(90\)"):
        load(WriterSettings, {"LIQ_ROLLUP_RETENTION_DAYS": "30"})


def test_build_batch_sorts_payloads_into_rows() -> None:
    small = liq(price=100.0, quantity=1.0, timestamp_ms=NOW - 1000, event_id="small")
    big = liq(price=100_000.0, quantity=2.0, timestamp_ms=NOW - 2000, event_id="big")
    member = CascadeMember(cascade_id="c1", risk_score=1.25, liquidation=small)
    too_old = liq(price=100_000.0, quantity=2.0, timestamp_ms=NOW - 91 * DAY_MS, event_id="old")
    broken = liq(price=100.0, quantity=float("inf"), timestamp_ms=NOW, event_id="inf")
    ahead = liq(price=100_000.0, quantity=2.0, timestamp_ms=NOW + DAY_MS + 1, event_id="ahead")
    batch = build_batch([small, big, member, too_old, broken, ahead, cascade("start", 1), cascade("end", 2),
                         cascade("start", 1, start=NOW + 2 * DAY_MS)], SignificanceRules(), NOW, 90)
    assert (batch.insignificant, batch.expired, batch.invalid, batch.members) == (1, 1, 3, 1)
    rows = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in batch.events]
    assert [(r["event_id"], r["is_cascade"], r["risk_score"], r["cascade_id"]) for r in rows] == [
        ("big", False, None, None), ("small", True, 1.25, "c1")]
    assert rows[0]["value_usd"] == 200_000.0
    assert rows[0]["time"] == datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC)
    assert batch.days == {date(2025, 12, 31)}
    assert [c[19] for c in batch.cascades] == ["end"], "one row per cascade: the furthest phase"


def test_one_row_per_natural_key_a_member_and_then_the_higher_risk_wins() -> None:
    big = liq(price=100_000.0, quantity=2.0, timestamp_ms=NOW - 2000, event_id="big")
    other = liq(price=100_000.0, quantity=3.0, timestamp_ms=NOW - 1000, event_id="other")
    low = CascadeMember(cascade_id="c1", risk_score=0.5, liquidation=big)
    high = CascadeMember(cascade_id="c2", risk_score=1.5, liquidation=big)
    batch = build_batch([big, other, low, high, big, low], SignificanceRules(), NOW, 90)
    rows = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in [*batch.merges, *batch.events]]
    assert [(r["event_id"], r["is_cascade"], r["cascade_id"], r["risk_score"]) for r in rows] == [
        ("big", True, "c2", 1.5), ("other", False, None, None)], "one row per key, the best version"
    assert batch.members == 1
    assert len(batch.merges) == 1, "a significant liquidation's member copy may find its plain copy stored"
    same_id_other_venue = liq(exchange="okx", price=100_000.0, quantity=2.0, timestamp_ms=NOW - 2000,
                              event_id="big")
    assert len(build_batch([big, same_id_other_venue], SignificanceRules(), NOW, 90).events) == 2


def test_a_batch_splits_into_transactions_of_at_most_batch_size_rows() -> None:
    plain = [liq(price=100_000.0, quantity=2.0, timestamp_ms=NOW - k, event_id=f"p{k}") for k in range(1, 5)]
    small = liq(price=100.0, quantity=1.0, timestamp_ms=NOW - 10, event_id="small")
    members = [CascadeMember(cascade_id="c1", risk_score=1.0, liquidation=small),
               CascadeMember(cascade_id="c1", risk_score=1.0, liquidation=plain[0])]
    batch = build_batch([*plain, liq(price=1.0, quantity=1.0), *members, cascade("start", 1)],
                        SignificanceRules(), NOW, 90)
    assert (len(batch.events), len(batch.merges), len(batch.cascades), batch.members) == (4, 1, 1, 2)
    assert batch.split(6) == [batch], "a batch that fits is not copied"
    parts = batch.split(2)
    assert [(len(p.events), len(p.merges), len(p.cascades), p.members) for p in parts] == [
        (2, 0, 0, 0), (2, 0, 0, 1), (0, 1, 1, 1)], "every row once, in order, members counted per part"
    assert [r for p in parts for r in p.events] == batch.events
    assert [p.insignificant for p in parts] == [1, 0, 0], "skip counts stay with the first part"
    assert all(p.days == batch.days for p in parts)


def test_latest_cascades_keeps_the_furthest_phase_then_the_latest() -> None:
    events = [cascade("escalate", 5), cascade("start", 9), cascade("escalate", 7)]
    assert [(e.phase, e.published_ms) for e in latest_cascades(events)] == [("escalate", 7)]
    nul = msgspec.structs.replace(cascade("end", 8), cascade_id="c\x001")
    assert [(e.phase, e.cascade_id) for e in latest_cascades([*events, nul])] == [("end", "c\x001")], (
        "ids that are one once stored are one here, or the upsert would touch a row twice")


def test_latest_cascades_keeps_the_last_of_equal_messages() -> None:
    """Same phase, same publication time (a detector's clock that stood still): stream order."""
    first, last = cascade("escalate", 7), msgspec.structs.replace(cascade("escalate", 7), count=6)
    assert [e.count for e in latest_cascades([first, last])] == [6]


def test_a_member_of_unknown_notional_is_stored_with_no_dollars() -> None:
    """Contracts of unknown size: the row keeps the quantity, but its value is 0 (not the
    parser's placeholder), so no rollup adds dollars nobody knows."""
    sized = liq(price=60_000.0, quantity=7.0, timestamp_ms=NOW - 1000, event_id="u")
    unknown = msgspec.structs.replace(sized, notional_known=False, quantity_unit="contracts")
    batch = build_batch([CascadeMember(cascade_id="c1", risk_score=1.0, liquidation=unknown)],
                        SignificanceRules(), NOW, 90)
    (row,) = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in batch.events]
    assert (row["value_usd"], row["notional_known"], row["quantity"], row["is_cascade"]) == (
        0.0, False, 7.0, True)


def test_a_cascade_count_beyond_int4_is_invalid_not_wrapped() -> None:
    huge = msgspec.structs.replace(cascade("start", 1), count=2**31)
    assert build_batch([huge], SignificanceRules(), NOW, 90).invalid == 1


def test_timescale_mode_stores_only_rows_its_continuous_aggregates_will_refresh() -> None:
    """The caggs refresh from retention - 2 h back: older rows would be stored but never rolled up."""
    old = NOW - 89 * DAY_MS - DAY_MS // 2  # 89.5 days ago
    assert not expired(old, NOW, stored_days(90, "native"))
    assert expired(old, NOW, stored_days(90, "timescale"))
    assert not expired(NOW - 87 * DAY_MS, NOW, stored_days(90, "timescale"))
    assert stored_days(90, None) == 90 and stored_days(2, "timescale") == 1
    assert stored_days(180, "timescale", 90 - 2 / 24) == 88, "the database's window, not the setting"
    assert stored_days(180, "timescale") == 178 and stored_days(30, "timescale", 200.0) == 29
    assert stored_days(180, "timescale", 95.0) == 93, "a whole-day window keeps the 2-hour margin"


@pytest.mark.parametrize("window", [95.0, 95 + 1 / 24, 95.5, 95 + 23 / 24, 89 + 22 / 24])
def test_every_row_the_writer_stores_stays_inside_the_refresh_window_at_the_next_run(window: float) -> None:
    """At any time of day, the oldest row kept is younger than the window's start, rounded down
    to the hour, a refresh interval (5 minutes) later."""
    days = stored_days(180, "timescale", window)
    for minute in range(0, 24 * 60, 7):
        now = NOW + minute * 60_000
        oldest_kept = now - now % DAY_MS - days * DAY_MS  # the start of the oldest day kept
        assert not expired(oldest_kept, now, days)
        window_start = now + 5 * 60_000 - int(window * DAY_MS)
        assert oldest_kept > window_start - window_start % 3_600_000


def test_retention_cutoff_is_whole_utc_days() -> None:
    assert utc_day(NOW - 1) == date(2025, 12, 31)
    assert expired(NOW - 90 * DAY_MS - 1, NOW, 90)  # its day ended exactly at the cutoff
    assert not expired(NOW - 90 * DAY_MS, NOW, 90)


def test_batcher_waits_out_the_age_after_a_read_that_was_not_full() -> None:
    clock = FakeClock()
    batcher = Batcher(max_age_ms=100, clock=clock)
    batcher.read_started()
    clock.advance(0.03)
    assert batcher.pause_after(2, read_count=3) == pytest.approx(0.07)
    assert batcher.pause_after(3, read_count=3) == 0.0, "a full read never waits"
    clock.advance(0.2)
    assert batcher.pause_after(1, read_count=3) == 0.0
    with pytest.raises(ValueError):
        Batcher(max_age_ms=-1, clock=clock)


def test_janitor_plan() -> None:
    settings = WriterSettings(partitions_ahead_days=2, retention_days=90, rollup_retention_days=365)
    run = plan_run(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), settings)
    assert run.days_ahead == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert run.raw_cutoff == datetime(2025, 12, 1, 12, 0, tzinfo=UTC)
    assert run.rollup_cutoff == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert run.cascade_cutoff == datetime(2025, 12, 1, 0, 0, tzinfo=UTC), "whole days, as the writer refuses"
    equal = plan_run(datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
                     WriterSettings(retention_days=90, rollup_retention_days=90))
    assert equal.rollup_cutoff == equal.cascade_cutoff == datetime(2025, 12, 1, 0, 0, tzinfo=UTC), (
        "rollups outlive the raw rows' whole days")
    assert not expired(int(datetime(2025, 12, 1, 0, 30, tzinfo=UTC).timestamp() * 1000),
                       int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000), 90), (
        "a cascade the janitor keeps is one the writer still accepts, and the other way round")
    assert expired(int(datetime(2025, 11, 30, 23, 59, tzinfo=UTC).timestamp() * 1000),
                   int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000), 90)


@pytest.mark.parametrize("retention", [3, 4, 90])
def test_timescale_rows_stay_inside_the_rollups_refresh_window(retention: int) -> None:
    """Every row the writer stores in TimescaleDB mode is younger than the refresh window's start
    (the retention less 2 hours), at any time of day: otherwise it never reaches the rollups."""
    for hour in (0, 1, 12, 23):
        now = NOW + hour * 3_600_000 + 3_599_999
        rows_ = [liq(price=60_000.0, quantity=5.0, timestamp_ms=now - h * 3_600_000, event_id=str(h))
                 for h in range(24 * (retention + 1))]
        batch = build_batch(rows_, SignificanceRules(), now, stored_days(retention, "timescale"))
        oldest = max(now - int(cast(datetime, row[0]).timestamp() * 1000) for row in batch.events)
        assert oldest < retention * DAY_MS - 2 * 3_600_000


@pytest.mark.parametrize("retention", [1, 2])
def test_timescale_mode_refuses_a_retention_below_three_days(retention: int) -> None:
    from writer.migrate import PlanParams, plan

    with pytest.raises(ConfigError) as err:
        plan("timescale", "2.17.2", PlanParams(retention_days=retention))
    assert err.value.variable == "LIQ_RETENTION_DAYS" and "at least 3 days" in str(err.value)
    assert plan("native", None, PlanParams(retention_days=retention)), "native rollups follow every insert"
    assert plan("timescale", "2.17.2", PlanParams(retention_days=3))
