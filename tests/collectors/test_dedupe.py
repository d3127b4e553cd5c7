"""The collector's memory of recent event ids (``collectors.dedupe.RecentIds``): what a venue's
replay on resubscribe is recognized by, per venue, for the newest ``capacity`` ids."""

from __future__ import annotations

from collectors.dedupe import RecentIds
from tests.factories import liq


def test_an_id_seen_before_is_a_duplicate_only_on_the_same_venue() -> None:
    ids = RecentIds()
    first = [liq(exchange="okx", event_id="a"), liq(exchange="okx", event_id="b")]
    assert ids.fresh(first) == (first, 0)
    again = [liq(exchange="okx", event_id="b"), liq(exchange="bybit", event_id="b"),
             liq(exchange="okx", event_id="c")]
    assert ids.fresh(again) == (again[1:], 1), "bybit's b is not okx's b"
    assert len(ids) == 4


def test_the_oldest_id_is_forgotten_first_once_the_capacity_is_reached() -> None:
    ids = RecentIds(capacity=3)
    for name in "abcd":
        assert not ids.seen_before(liq(event_id=name))
    assert len(ids) == 3
    assert not ids.seen_before(liq(event_id="a")), "a was the oldest: forgotten"
    assert [ids.seen_before(liq(event_id=name)) for name in "cda"] == [True, True, True]
    assert not ids.seen_before(liq(event_id="b")), "b went when a came back"


def test_a_full_memory_holds_hashes_not_the_liquidations_ids() -> None:
    """Each of the 14 collectors keeps one: 50,000 ids by default, about 140 bytes each. Keeping
    the (exchange, event_id) pairs held on to every id string as well (about 260 bytes each)."""
    import tracemalloc

    ids = RecentIds()
    assert ids.capacity == 50_000
    tracemalloc.start()
    try:
        for i in range(ids.capacity + 10):
            ids.seen_before(liq(exchange="okx", event_id=f"okx-BTC-USDT-SWAP-1796172886727-{i:08d}-long"))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == 50_000
    assert held / 50_000 < 180
