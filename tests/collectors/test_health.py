"""A venue's health record: states and reasons, per connection (pure)."""

from __future__ import annotations

from collectors.health import VenueHealth


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
