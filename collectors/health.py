"""Venue health as a collector sees it, and the rules that turn it into a state.

States (one log line per change, stored in ``liq:venue:{VENUE}`` for ``liq status``):

- ``connecting``: no connection up yet and none failed: the start, before a first attempt ends;
- ``subscribing``: every connection is open and has sent its subscriptions, and the venue has
  not confirmed them all yet (its acks, ``SessionOutput.confirmed``);
- ``up``: every connection is open and the venue confirmed its subscriptions. A refusal makes
  it ``degraded`` (below), except one naming symbols of the connection (Bybit: one delisted
  since the listing), which are dropped while the others keep it up; and a venue that acks and
  then sends nothing (the failure mode that matters, see ``suspect``) looks ``up`` until then;
- ``degraded``: some connections of a sharded venue are up, some are not; or every one is open
  but the venue answered one with an error (a refused subscription), until that one reconnects;
  or it did not confirm one's subscriptions within ``confirm_timeout_s`` (reason "subscription
  not confirmed after N s"), until it does or that one reconnects;
- ``suspect``: connected, but no liquidation for longer than ``suspect_factor`` × the venue's
  usual gap. A venue that silently stopped delivering (Binance's 2026-04 endpoint move kept
  acking subscriptions and sent nothing) shows up here; ``liq status`` shows its last-event
  age beside the other venues';
- ``down``: nothing connected and a connection was lost or an attempt failed (it is retried
  with backoff meanwhile: reconnecting after a drop is ``down`` until a connection is up
  again, so ``liq status --check`` reports it), or the collector was stopped; ``reason`` says
  why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.venue_health import STALE_HEALTH_MS, STOPPED_REASON

SUSPECT_FACTOR = 5.0


@dataclass
class VenueHealth:
    venue: str
    usual_gap_s: float
    connections_total: int
    connections_up: set[str] = field(default_factory=set)
    state: str = "connecting"
    reason: str = ""
    started_ms: int = 0
    up_since_ms: int = 0
    last_message_ms: int = 0
    last_liquidation_received_ms: int = 0
    last_event_ms: int = 0
    events: int = 0
    parse_errors: int = 0
    duplicates: int = 0
    reconnects: int = 0
    venue_errors: int = 0
    """Error replies from the venue (refused subscriptions and the like) since the start."""
    last_error_sample: str = ""
    instruments_listed: int = 0
    """Instruments the venue's endpoint listed at the last good refresh (0: none yet)."""
    instruments_refreshed_ms: int = 0
    endpoint: str = ""
    """The URL the collector connects to (the live endpoint, or e.g. the simulator's)."""
    collector_id: str = ""
    """This collector process (``host:pid:nonce``), written beside its health."""
    twin: str = ""
    """Another collector of this venue writing the same health hash, so publishing into the same
    Redis ("" when none wrote lately): see :class:`TwinWatch`."""
    twin_seen_ms: int = 0

    down_reasons: dict[str, str] = field(default_factory=dict)
    """Why each connection that is down went down (one connection's recovery must not erase
    another's reason)."""
    refusals: dict[str, str] = field(default_factory=dict)
    """The last error reply each open connection got from the venue (cleared when it reopens)."""
    subscribing: set[str] = field(default_factory=set)
    """Open connections whose subscriptions the venue has not confirmed yet."""
    unconfirmed: dict[str, str] = field(default_factory=dict)
    """Open connections still unconfirmed past the bound, and the reason that says so."""

    def connected(self, label: str, now_ms: int) -> None:
        if not self.connections_up:
            self.up_since_ms = now_ms
        self.connections_up.add(label)
        self.down_reasons.pop(label, None)
        self._forget(label)
        self.reason = self._reason_text()

    def awaiting(self, label: str) -> None:
        """Connection ``label`` is open and sent its subscriptions: the venue's ack is awaited."""
        self.subscribing.add(label)
        self.reason = self._reason_text()

    def confirmed(self, label: str) -> None:
        """The venue confirmed every subscription of connection ``label``."""
        self.subscribing.discard(label)
        self.unconfirmed.pop(label, None)
        self.reason = self._reason_text()

    def not_confirmed(self, label: str, after_s: float) -> None:
        """Connection ``label`` is still unconfirmed ``after_s`` after it subscribed."""
        if label in self.subscribing:
            self.unconfirmed[label] = f"subscription not confirmed after {after_s:g} s"
            self.reason = self._reason_text()

    def refused(self, label: str, error: str) -> None:
        """The venue answered connection ``label`` with ``error``: it misses what it asked for."""
        self.venue_errors += 1
        self.refusals[label] = f"venue error: {error}"
        self.reason = self._reason_text()

    def retire(self, label: str, connections_total: int) -> None:
        """Connection ``label`` is closed for good (the venue refused all it asked for): the
        venue has ``connections_total`` connections now."""
        self.connections_total = connections_total
        self.connections_up.discard(label)
        self.down_reasons.pop(label, None)
        self._forget(label)
        self.reason = self._reason_text()

    def disconnected(self, label: str, reason: str) -> None:
        self.connections_up.discard(label)
        self._forget(label)
        self.down_reasons[label] = reason
        self.reason = self._reason_text()
        self.reconnects += 1

    def _forget(self, label: str) -> None:
        """Drop what connection ``label``'s last open connection got from the venue."""
        self.refusals.pop(label, None)
        self.subscribing.discard(label)
        self.unconfirmed.pop(label, None)

    def _reason_text(self) -> str:
        reasons = {**self.unconfirmed, **self.refusals, **self.down_reasons}
        if self.connections_total <= 1:
            return next(iter(reasons.values()), "")
        return "; ".join(f"{label}: {why}" for label, why in sorted(reasons.items()))

    def stopped(self, reason: str = STOPPED_REASON) -> None:
        """The collector is shutting down: nothing is connected any more, and that is why
        (asked to, unless ``reason`` says it failed)."""
        self.connections_up.clear()
        self.reason = reason

    def compute_state(self, now_ms: int) -> str:
        """The state this health record implies at ``now_ms``."""
        up = len(self.connections_up)
        if up == 0:
            return "down" if self.reason else "connecting"
        troubled = self.refusals.keys() | self.unconfirmed.keys()
        if up < self.connections_total or troubled & self.connections_up:
            return "degraded"
        if self.subscribing:
            return "subscribing"
        silent_since = max(self.last_liquidation_received_ms, self.up_since_ms)
        if now_ms - silent_since > SUSPECT_FACTOR * self.usual_gap_s * 1000:
            return "suspect"
        return "up"

    def as_fields(self, now_ms: int) -> dict[str, str]:
        """Flat string fields for the Redis hash (``HGETALL liq:venue:<venue>``)."""
        silent_since = max(self.last_liquidation_received_ms, self.up_since_ms)
        return {
            "state": self.state,
            "reason": self.reason,
            "connections": f"{len(self.connections_up)}/{self.connections_total}",
            "usual_gap_s": f"{self.usual_gap_s:g}",
            "silent_s": f"{max(0, now_ms - silent_since) / 1000:.1f}" if self.connections_up else "",
            "last_message_ms": str(self.last_message_ms),
            "last_event_ms": str(self.last_event_ms),
            "last_liquidation_received_ms": str(self.last_liquidation_received_ms),
            "events": str(self.events),
            "parse_errors": str(self.parse_errors),
            "duplicates": str(self.duplicates),
            "reconnects": str(self.reconnects),
            "venue_errors": str(self.venue_errors),
            "last_error_sample": self.last_error_sample,
            "instruments_listed": str(self.instruments_listed),
            "instruments_refreshed_ms": str(self.instruments_refreshed_ms),
            "endpoint": self.endpoint,
            "collector": self.collector_id,
            "twin": self.twin if now_ms - self.twin_seen_ms <= STALE_HEALTH_MS else "",
            "twin_seen_ms": str(self.twin_seen_ms),
            "updated_ms": str(now_ms),
        }


@dataclass
class TwinWatch:
    """Tells when another collector of the same venue publishes into the same Redis: both write
    the venue's health hash each second, so before each write this one reads who wrote last.

    A second collector makes the aggregator count every liquidation both receive twice (the
    detector and the writer drop repeated event ids). Another writer counts as a twin only once
    its ``updated_ms`` has moved between two sightings: the last write of a collector that was
    just restarted (a new pid) or stopped is seen, but never moves.
    """

    own_id: str
    last_seen: dict[str, int] = field(default_factory=dict)
    """Each other writer's ``updated_ms`` when last seen (a few entries: one per restart)."""

    def observe(self, health: VenueHealth, writer_id: str, writer_updated_ms: int, now_ms: int) -> bool:
        """Record who wrote the hash last; True when ``health.twin`` changed."""
        before = health.twin
        if writer_id and writer_id != self.own_id:
            previous = self.last_seen.get(writer_id)
            self.last_seen[writer_id] = writer_updated_ms
            if previous is not None and writer_updated_ms > previous:
                health.twin, health.twin_seen_ms = writer_id, now_ms
        if health.twin and now_ms - health.twin_seen_ms > STALE_HEALTH_MS:
            health.twin = ""
            self.last_seen = {}
        return health.twin != before
