"""The venue row ``liq status`` and ``liq venues`` share: state, reason, events, last-event age."""

from __future__ import annotations

import redis

from shared import keys
from shared.venue_health import STALE_HEALTH_MS, venue_healths, venue_row

NOW = 1_700_000_000_000


def test_a_venue_without_health_is_not_running_and_has_no_age() -> None:
    assert venue_row({}, NOW) == {"state": "not running", "reason": "", "events": 0, "last_event_age_s": None,
                                  "collectors": []}


def test_the_row_reads_the_hash_and_rounds_the_age_to_a_tenth() -> None:
    health = {"state": "up", "reason": "r", "events": "7", "updated_ms": str(NOW),
              "last_liquidation_received_ms": str(NOW - 12_345), "collector": "h:1:aa"}
    assert venue_row(health, NOW) == {"state": "up", "reason": "r", "events": 7, "last_event_age_s": 12.3,
                                      "collectors": ["h:1:aa"]}


def test_a_stale_hash_is_stopped_and_an_age_from_a_clock_ahead_is_zero() -> None:
    health = {"state": "up", "updated_ms": str(NOW - STALE_HEALTH_MS - 1),
              "last_liquidation_received_ms": str(NOW + 5_000)}
    row = venue_row(health, NOW)
    assert (row["state"], row["last_event_age_s"]) == ("stopped", 0.0)


def test_a_twin_is_listed_while_it_was_seen_lately() -> None:
    health = {"state": "up", "updated_ms": str(NOW), "collector": "h:1:aa", "twin": "h:2:bb",
              "twin_seen_ms": str(NOW - STALE_HEALTH_MS)}
    assert venue_row(health, NOW)["collectors"] == ["h:1:aa", "h:2:bb"]
    assert venue_row(health, NOW + 1)["collectors"] == ["h:1:aa"]


def test_a_hash_another_tool_wrote_badly_reads_as_stopped_with_no_numbers_instead_of_failing() -> None:
    """``liq status`` must still print the rest when a ``liq:venue:*`` field holds no integer
    (a collector puts it right with its next write; a stopped one never would)."""
    health = {"state": "up", "updated_ms": "soon", "events": "12.5", "last_liquidation_received_ms": "",
              "twin_seen_ms": "x", "twin": "h:2:bb", "collector": "h:1:aa"}
    assert venue_row(health, NOW) == {"state": "stopped", "reason": "", "events": 0, "last_event_age_s": None,
                                      "collectors": ["h:1:aa"]}


def test_a_hash_another_tool_wrote_in_bytes_that_are_not_text_reads_as_stopped_too(r: redis.Redis) -> None:
    """The same with values that are not UTF-8 (the collector reads those in its health loop
    too): ``liq status`` and ``liq venues`` read the hash, and the venue shows as stopped."""
    r.hset(keys.venue_health("okx"), mapping={"state": "up", "updated_ms": b"\xff", "collector": b"h:\xfe",
                                              "reason": b"\xff\xfe"})
    health = venue_healths(r)["okx"]
    assert venue_row(health, NOW) == {"state": "stopped", "reason": "\ufffd\ufffd", "events": 0,
                                      "last_event_age_s": None, "collectors": ["h:\ufffd"]}
