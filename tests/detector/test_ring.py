"""The ring buffer: push, evict, wraparound, overflow; running sums equal the numpy recomputation."""

from __future__ import annotations

import random

import msgspec
import pytest

from detector.ring import Ring, stats_from_columns
from detector.scoring import WindowStats
from tests.detector.helpers import T0, ev


def assert_same(a: WindowStats, b: WindowStats) -> None:
    assert (a.size, a.count, a.long_count, a.span_ms) == (b.size, b.count, b.long_count, b.span_ms)
    for name in ("total_usd", "long_usd", "short_usd", "inst_usd", "price_rel_std"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9, abs=1e-9), name
    assert sorted(a.venue_times) == pytest.approx(sorted(b.venue_times))


def test_push_and_evict_in_arrival_order() -> None:
    ring = Ring(16, 4, 100_000.0)
    for k in range(5):
        ring.push(ev(k, 10_000.0 * (k + 1)), venue=k % 2, weight=1.0)
    assert len(ring) == 5 and ring.total_usd == pytest.approx(150_000.0)
    assert ring.evict(T0 + 1000) == 2  # times <= cutoff leave: seconds 0 and 1
    assert len(ring) == 3 and ring.oldest_ms() == T0 + 2000
    assert ring.total_usd == pytest.approx(120_000.0)
    assert [x.timestamp_ms for x in ring.live_items()] == [T0 + 2000, T0 + 3000, T0 + 4000]
    assert ring.evict(T0 + 10_000) == 3
    assert (len(ring), ring.count, ring.total_usd, ring.venues_live) == (0, 0.0, 0.0, set())
    assert stats_from_columns(ring) == WindowStats() and ring.stats().size == 0


def test_wraparound_overflow_keeps_newest_and_sums_match_columns() -> None:
    ring = Ring(16, 4, 100_000.0)
    events = [ev(k, 150_000.0 if k % 5 == 0 else 20_000.0 + 1_000.0 * k, side="long" if k % 3 else "short",
                 price=50_000.0 + 10 * k) for k in range(23)]
    for k, e in enumerate(events):
        ring.push(e, venue=k % 3, weight=2.0 if k % 4 == 0 else 1.0)
    assert ring.overflowed == 7 and len(ring) == 16 and ring.tail == 7
    assert [x.timestamp_ms for x in ring.live_items()] == [T0 + 1000 * k for k in range(7, 23)]
    column = ring.column(ring.ts)
    assert column.tolist() == [T0 + 1000 * k for k in range(7, 23)]  # wrapped: a concatenated copy
    assert events[6].event_id in ring and events[7].event_id in ring  # overwritten id kept in the window
    stats = ring.stats()
    assert stats.count == sum(2.0 if k % 4 == 0 else 1.0 for k in range(7, 23)) == 20.0
    assert stats.span_ms == 15_000
    assert_same(stats, stats_from_columns(ring))
    ring.evict(T0 + 12_000)  # evictions across the wrap point
    assert len(ring) == 10
    assert events[6].event_id not in ring, "an overwritten id is forgotten once its time left the window"
    assert_same(ring.stats(), stats_from_columns(ring))


def test_running_sums_return_to_exact_zero_and_restart_cleanly() -> None:
    ring = Ring(16, 2, 100_000.0)
    for k in range(10):
        ring.push(ev(k, 12_345.678 * (k + 1), price=50_000.0 + k), venue=k % 2, weight=1.0)
    ring.evict(T0 + 100_000)
    assert (ring.total_usd, ring.long_usd, ring.inst_usd, ring.count) == (0.0, 0.0, 0.0, 0.0)
    ring.push(ev(200, 30_000.0, price=60_000.0), venue=1, weight=1.0)
    stats = ring.stats()
    assert (stats.size, stats.total_usd, stats.span_ms, stats.price_rel_std) == (1, 30_000.0, 0, 0.0)
    assert stats.venue_times == [T0 + 200_000]
    assert_same(stats, stats_from_columns(ring))


def test_clear_forgets_ids_but_keeps_newest_time() -> None:
    ring = Ring(16, 2, 100_000.0)
    first = ev(5)
    ring.push(first, venue=0, weight=1.0)
    ring.clear()
    assert first.event_id not in ring and len(ring) == 0 and ring.newest_ms == T0 + 5000
    ring.push(ev(3), venue=0, weight=1.0)  # late but in the window: span from live events only
    assert ring.stats().span_ms == 0 and stats_from_columns(ring).span_ms == 0


def test_a_window_of_prices_of_zero_has_no_spread_rather_than_a_division_by_zero() -> None:
    """A venue may send a liquidation without a price (0): the score must still be computed."""
    ring = Ring(16, 4, 100_000.0)
    for k in range(3):
        ring.push(msgspec.structs.replace(ev(k), price=0.0, notional_usd=0.0), venue=0, weight=1.0)
    assert ring.stats().price_rel_std == 0.0
    assert_same(ring.stats(), stats_from_columns(ring))
    ring.push(ev(3, 50_000.0), venue=1, weight=1.0)
    assert ring.stats().price_rel_std > 0
    assert_same(ring.stats(), stats_from_columns(ring))


def test_a_late_event_leaves_the_window_on_time_though_a_newer_one_is_ahead_of_it() -> None:
    ring = Ring(16, 4, 100_000.0)
    ring.push(ev(59, 1_000.0), venue=0, weight=1.0)
    for s in (0, 1, 2):  # late, but inside the window (59 - 60, 59]
        ring.push(ev(s, 30_000.0, venue="okx"), venue=1, weight=1.0)
    ring.push(ev(115, 20_000.0), venue=0, weight=1.0)
    assert ring.evict(T0 + 55_000) == 3, "the late ones left with their time, behind the 59 s event"
    assert [int(t - T0) // 1000 for t in ring.column(ring.ts)] == [59, 115]
    assert (ring.count, ring.total_usd) == (2.0, 21_000.0)
    assert_same(ring.stats(), stats_from_columns(ring))


def test_a_ring_starts_small_and_grows_to_its_capacity_keeping_order_and_sums() -> None:
    """Thousands of quiet symbols must not each hold a full-capacity window."""
    ring = Ring(256, 4, 100_000.0)
    assert ring.ts.nbytes == 64 * 8, "a few KiB until the window fills"
    pushed = [ev(k * 0.1, 1_000.0 + k, venue="okx" if k % 3 else "bybit") for k in range(100)]
    for k, item in enumerate(pushed[:60]):
        ring.push(item, venue=k % 2, weight=1.0)
    assert ring.evict(pushed[39].timestamp_ms) == 40  # the tail moves: the live part wraps later
    for k, item in enumerate(pushed[60:], start=60):
        ring.push(item, venue=k % 2, weight=1.0)
    assert ring.ts.nbytes == 64 * 8 and len(ring) == 60
    more = [ev(10 + k * 0.1, 2_000.0) for k in range(150)]
    for item in more:
        ring.push(item, venue=0, weight=1.0)
    assert ring.ts.nbytes == 256 * 8 and ring.overflowed == 0
    assert ring.live_items() == [*pushed[40:], *more]
    assert_same(ring.stats(), stats_from_columns(ring))
    for item in [ev(30 + k * 0.1, 3_000.0) for k in range(100)]:  # past capacity: oldest overwritten
        ring.push(item, venue=0, weight=1.0)
    assert len(ring) == 256 and ring.overflowed == 54
    assert_same(ring.stats(), stats_from_columns(ring))


def test_capacity_below_two_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Ring(1, 1, 100_000.0)


class ColumnRing(Ring):
    """The ring as it was before ``_parts``: an eviction reads the event's contribution back from
    the columns (the reference the per-slot tuples must match exactly)."""

    __slots__ = ()

    def _drop_tail(self, forget: bool = True) -> None:
        i = self.tail  # the part the eviction takes back, read from the columns first
        self._parts[i] = (float(self.notional[i]), float(self.price[i]), bool(self.is_long[i]),
                          int(self.venue[i]), float(self.weight[i]), int(self.ts[i]))
        super()._drop_tail(forget)


@pytest.mark.parametrize("seed", range(8))
def test_random_pushes_evictions_clears_and_overflows_keep_each_slots_part_its_columns(seed: int) -> None:
    """Property: whatever the order of pushes (late ones too), evictions, clears, growth,
    wraparound and overflow, each live slot's part is what its columns hold, the running sums
    are to the bit those of a ring reading the columns back, and they match the columns
    recomputed (the price spread to float noise: running sums of squares cancel)."""
    rng = random.Random(seed)
    capacity = rng.choice([2, 5, 64, 100, 300])
    ring, reference = Ring(capacity, 4, 100_000.0), ColumnRing(capacity, 4, 100_000.0)
    newest = 0.0
    for k in range(1500):
        action = rng.random()
        if action < 0.75:
            newest += rng.choice([0.0, 0.1, 1.0, 3.0])
            second = newest - (rng.uniform(0, 20) if rng.random() < 0.1 else 0.0)  # some late
            usd = rng.choice([0.0, 50.0, 20_000.0, 150_000.0, rng.uniform(1, 300_000)])
            event = ev(second, usd, price=rng.choice([50_000.0, rng.uniform(49_000, 51_000)]),
                       side=rng.choice(["long", "short"]), event_id=f"e{k}")
            venue, weight = rng.randrange(4), rng.choice([1.0, 1.0, 2.5])
            ring.push(event, venue=venue, weight=weight)
            reference.push(event, venue=venue, weight=weight)
        elif action < 0.97:
            cutoff = T0 + int((newest - rng.uniform(0, 60)) * 1000)
            assert ring.evict(cutoff) == reference.evict(cutoff)
        else:
            ring.clear()
            reference.clear()
        live = [(ring.tail + j) % len(ring.ts) for j in range(len(ring))]
        assert [ring._parts[i] for i in live] == [
            (float(ring.notional[i]), float(ring.price[i]), bool(ring.is_long[i]), int(ring.venue[i]),
             float(ring.weight[i]), int(ring.ts[i])) for i in live]
        stats, columns = ring.stats(), stats_from_columns(ring)
        assert stats == reference.stats()
        assert (stats.size, stats.count, stats.long_count) == (
            columns.size, columns.count, columns.long_count)
        for name in ("total_usd", "long_usd", "short_usd", "inst_usd"):
            assert getattr(stats, name) == pytest.approx(getattr(columns, name), rel=1e-9, abs=1e-6), name
        assert stats.price_rel_std == pytest.approx(columns.price_rel_std, abs=1e-6)
        assert sorted(stats.venue_times) == pytest.approx(sorted(columns.venue_times))
