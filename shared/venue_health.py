"""The venues' health as their collectors report it in ``liq:venue:*``: reading it, and the rule
that turns it into a state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from shared import keys
from shared.redisconn import hash_text
from shared.venues import VENUE_NAMES

STALE_HEALTH_MS = 10_000


STOPPED_REASON = "collector stopped"
"""The reason a venue is down once its collector was asked to stop (not a failure)."""


def int_field(health: Mapping[str, str], name: str) -> int:
    """A number field of a health hash; 0 when absent or not an integer (another tool wrote
    the hash: the collector's next write puts it right, and liq status must not fail meanwhile)."""
    try:
        return int(health.get(name, "0") or 0)
    except ValueError:
        return 0


def venue_state(health: Mapping[str, str], now_ms: int) -> str:
    """A venue's state from its ``liq:venue:*`` hash: ``stopped`` when its collector has not
    written it for :data:`STALE_HEALTH_MS` (killed, or gone without a word)."""
    if not health:
        return "not running"
    if now_ms - int_field(health, "updated_ms") > STALE_HEALTH_MS:
        return "stopped"
    return health.get("state", "?")


def venue_healths(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Each venue's ``liq:venue:*`` health hash, as text, for the venues that have one."""
    out = {}
    for name in VENUE_NAMES:
        health = venue_health(client, name)
        if health:
            out[name] = health
    return out


def venue_health(client: redis.Redis, venue: str) -> dict[str, str]:
    """``venue``'s ``liq:venue:*`` health hash, as text (empty when it has none)."""
    raw: Any = client.hgetall(keys.venue_health(venue))
    return hash_text(raw)


def venue_row(health: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """What ``liq status`` and ``liq venues`` show of a venue's health: its state, the reason,
    the events it published, the age of its last liquidation in seconds (None: none yet; never
    negative, whatever the skew between the collector's clock and this one), and the collectors
    writing it (two: both publish into this Redis, see ``collectors.health.TwinWatch``)."""
    last = int_field(health, "last_liquidation_received_ms")
    twin_seen = int_field(health, "twin_seen_ms")
    twin = health.get("twin", "") if now_ms - twin_seen <= STALE_HEALTH_MS else ""
    return {
        "state": venue_state(health, now_ms), "reason": health.get("reason", ""),
        "events": int_field(health, "events"),
        "last_event_age_s": round(max(0, now_ms - last) / 1000, 1) if last else None,
        "collectors": [c for c in (health.get("collector", ""), twin) if c],
    }
