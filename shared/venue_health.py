"""The venues' health as their collectors report it in ``liq:venue:*``: reading it, and the rule
that turns it into a state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from shared import keys
from shared.redisconn import reply_text
from shared.venues import VENUE_NAMES

STALE_HEALTH_MS = 10_000


STOPPED_REASON = "collector stopped"
"""The reason a venue is down once its collector was asked to stop (not a failure)."""


def venue_state(health: Mapping[str, str], now_ms: int) -> str:
    """A venue's state from its ``liq:venue:*`` hash: ``stopped`` when its collector has not
    written it for :data:`STALE_HEALTH_MS` (killed, or gone without a word)."""
    if not health:
        return "not running"
    if now_ms - int(health.get("updated_ms", "0") or 0) > STALE_HEALTH_MS:
        return "stopped"
    return health.get("state", "?")


def venue_healths(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Each venue's ``liq:venue:*`` health hash, as text, for the venues that have one."""
    out = {}
    for name in VENUE_NAMES:
        raw: Any = client.hgetall(keys.venue_health(name))
        if raw:
            out[name] = {reply_text(k): reply_text(v) for k, v in raw.items()}
    return out


def venue_row(health: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """What ``liq status`` and ``liq venues`` show of a venue's health: its state, the reason,
    the events it published, the age of its last liquidation in seconds (None: none yet; never
    negative, whatever the skew between the collector's clock and this one), and the collectors
    writing it (two: both publish into this Redis, see ``collectors.health.TwinWatch``)."""
    last = int(health.get("last_liquidation_received_ms", "0") or 0)
    twin_seen = int(health.get("twin_seen_ms", "0") or 0)
    twin = health.get("twin", "") if now_ms - twin_seen <= STALE_HEALTH_MS else ""
    return {
        "state": venue_state(health, now_ms), "reason": health.get("reason", ""),
        "events": int(health.get("events", "0") or 0),
        "last_event_age_s": round(max(0, now_ms - last) / 1000, 1) if last else None,
        "collectors": [c for c in (health.get("collector", ""), twin) if c],
    }
