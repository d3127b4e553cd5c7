"""A venue's health record: states and reasons, per connection (pure)."""

from __future__ import annotations

from collectors.health import TwinWatch, VenueHealth
from shared.venue_health import STALE_HEALTH_MS


def test_one_connection_coming_back_keeps_the_reason_another_is_down_for() -> None:
    health = VenueHealth("bybit", usual_gap_s=10.0, connections_total=2)
    health.connected("a", 1_000)
    health.connected("b", 1_000)
    health.disconnected("a", "TimeoutError: no frame for 60s")
    health.disconnected("b", "closed by server")
    assert health.compute_state(2_000) == "down"
    health.connected("b", 3_000)
    assert health.compute_state(3_000) == "degraded"
    assert health.reason == "a: TimeoutError: no frame for 60s", "b is back; a still is not"
    health.connected("a", 4_000)
    assert (health.compute_state(4_000), health.reason) == ("up", "")


def test_a_single_connection_venue_gives_its_reason_as_it_is() -> None:
    health = VenueHealth("okx", usual_gap_s=10.0, connections_total=1)
    health.disconnected("okx:public", "ConnectionRefusedError: [Errno 111]")
    assert (health.compute_state(0), health.reason) == ("down", "ConnectionRefusedError: [Errno 111]")
    health.stopped()
    assert health.reason == "collector stopped"


def test_a_connection_the_venue_refused_something_degrades_the_venue_until_it_reopens() -> None:
    health = VenueHealth("bybit", usual_gap_s=10.0, connections_total=2)
    health.connected("a", 1_000)
    health.connected("b", 1_000)
    health.refused("b", "subscribe: error:handler not found,topic:allLiquidation.BTCUSD")
    assert health.compute_state(2_000) == "degraded"
    assert health.reason == "b: venue error: subscribe: error:handler not found,topic:allLiquidation.BTCUSD"
    health.disconnected("b", "closed by server")
    assert health.reason == "b: closed by server", "down is the worse news"
    health.connected("b", 3_000)
    assert (health.compute_state(3_000), health.reason, health.venue_errors) == ("up", "", 1)


def test_connecting_until_a_first_failure_then_down() -> None:
    health = VenueHealth("okx", usual_gap_s=10.0, connections_total=1)
    assert health.compute_state(0) == "connecting"
    health.disconnected("okx:public", "closed by server")
    assert health.compute_state(0) == "down"


def test_suspect_after_five_usual_gaps_without_a_liquidation_counted_from_the_later_of_up_and_last() -> None:
    """Usual gap 10 s: suspect once silent for more than 50 s, silence counted from the last
    liquidation or from when the venue came up, whichever is later; a second connection coming
    up does not restart the count."""
    health = VenueHealth("bybit", usual_gap_s=10.0, connections_total=2)
    health.connected("a", 100_000)
    health.connected("b", 120_000)
    assert health.up_since_ms == 100_000
    assert [health.compute_state(t) for t in (150_000, 150_001)] == ["up", "suspect"]
    health.last_liquidation_received_ms = 90_000  # before the connection: the silence runs from up
    assert health.compute_state(150_000) == "up"
    health.last_liquidation_received_ms = 130_000
    assert [health.compute_state(t) for t in (180_000, 180_001)] == ["up", "suspect"]


def test_another_writer_is_a_twin_once_its_writes_move_and_not_after_it_stops() -> None:
    health = VenueHealth("okx", 10.0, 1, collector_id="h:1:aa")
    watch = TwinWatch("h:1:aa")
    assert not watch.observe(health, "h:2:bb", 1_000, 1_500)  # seen once: maybe a restart's last write
    assert not watch.observe(health, "h:1:aa", 1_500, 2_000)  # its own write
    assert not watch.observe(health, "h:2:bb", 1_000, 2_500)  # the same write again: not moving
    assert watch.observe(health, "h:2:bb", 2_000, 3_000)  # moved: another collector writes
    assert (health.twin, health.twin_seen_ms) == ("h:2:bb", 3_000)
    assert not watch.observe(health, "h:2:bb", 3_000, 4_000)
    assert health.twin_seen_ms == 4_000
    assert not watch.observe(health, "h:1:aa", 4_000, 4_000 + STALE_HEALTH_MS)  # not seen: still kept
    assert watch.observe(health, "h:1:aa", 4_000, 4_001 + STALE_HEALTH_MS)  # gone
    assert health.twin == ""


def test_the_last_write_of_a_restarted_collector_never_makes_a_twin() -> None:
    health = VenueHealth("okx", 10.0, 1, collector_id="h:2:bb")
    watch = TwinWatch("h:2:bb")
    changes = [watch.observe(health, "h:1:aa", 1_000, 1_001)]  # the last write of the one it replaced
    changes += [watch.observe(health, "h:2:bb", k * 1_000, k * 1_000 + 1) for k in range(1, 20)]
    assert not any(changes) and health.twin == ""
    assert not watch.observe(health, "", 0, 30_000)  # a hash without a writer (an older collector)
