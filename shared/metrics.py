"""Every Prometheus metric, defined once (prefix ``liq_``), and the per-process HTTP endpoint."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

EVENTS_IN = Counter("liq_events_in", "Entries or frames received", ["component", "source"])
EVENTS_OUT = Counter("liq_events_out", "Items emitted (XADDed, written, flagged)", ["component", "sink"])
ERRORS = Counter("liq_errors", "Errors by kind", ["component", "kind"])
DROPPED = Counter("liq_events_dropped", "Entries read and deliberately not used, by reason",
                  ["component", "reason"])
PARSE_ERRORS = Counter("liq_parse_errors", "Malformed venue frames (or rows of a frame) skipped", ["venue"])
DUPLICATES = Counter("liq_duplicates_dropped", "Replayed liquidations dropped", ["venue"])
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SECONDS = Histogram(
    "liq_batch_seconds", "Time to handle one batch, side effect included", ["component"],
    buckets=LATENCY_BUCKETS,
)
PUBLISH_SECONDS = Histogram(
    "liq_collector_publish_seconds", "Time for a collector to publish one batch to Redis (one script run)",
    ["venue"], buckets=LATENCY_BUCKETS,
)
VENUE_CONNECTED = Gauge("liq_venue_connected", "1 when the venue connection is up", ["venue", "conn"])
VENUE_LAST_EVENT_MS = Gauge("liq_venue_last_event_ms", "Exchange time of the last liquidation", ["venue"])
RECONNECTS = Counter("liq_reconnects", "WebSocket reconnects", ["venue"])
SPOOLED = Gauge("liq_collector_spooled", "Liquidations waiting on disk while Redis is unreachable", ["venue"])
DEAD_LETTERS = Counter("liq_dead_letters", "Entries moved to a dead-letter stream", ["component"])
CASCADES = Counter("liq_cascades", "Cascade lifecycle messages published", ["phase"])
ALERT_SECONDS = Histogram(
    "liq_cascade_alert_seconds",
    "From a collector receiving the liquidation that starts a cascade to the start being published",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DETECT_TIMED_EVERY = 8
"""One event in this many is timed into ``liq_detect_event_seconds``: observing every one cost
about 6 % of the detector's hot path, and a sample shows the same distribution."""
DETECT_SECONDS = Histogram(
    "liq_detect_event_seconds",
    f"Detector hot-path time per event (one event in {DETECT_TIMED_EVERY} is timed)",
    buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3),
)


SPARE_PORTS = 9
"""A consumer's default port is followed by this many spares, for more of it on one host."""


def start_metrics_server(host: str, port: int | None, spare: int = 0, then_any: bool = False) -> int | None:
    """Serve /metrics on ``host:port``, else on the first free of the ``spare`` ports after it,
    else (``then_any``) on any free port; returns the bound port (logged), or None when none
    could be bound.

    A busy port is logged and skipped: metrics must never stop a collector or consumer.
    """
    if port is None:
        return None
    candidates = list(range(port, port + spare + 1)) if port else [0]
    if then_any and port:
        candidates.append(0)
    for candidate in candidates:
        try:
            server, _thread = start_http_server(candidate, addr=host)
        except OSError as exc:
            failure = exc
            continue
        bound = int(server.server_address[1])
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound
    ports = f"{port}-{port + spare}" if spare else str(port)
    logger.warning("metrics disabled: cannot bind %s:%s (%s)", host, ports, failure)
    return None


def serve_collector_metrics(host: str, configured: int | None, default: int) -> int | None:
    """A collector's endpoint: ``LIQ_METRICS_PORT`` exactly when set; otherwise its default
    port, or any free port when that is taken (a second ``liq up`` on the host: the collectors'
    defaults are consecutive, so there is no spare after each)."""
    if configured is not None:
        return start_metrics_server(host, configured)
    return start_metrics_server(host, default, then_any=True)


def serve_consumer_metrics(host: str, configured: int | None, default: int) -> int | None:
    """A consumer's endpoint: ``LIQ_METRICS_PORT`` exactly when set; otherwise its default port
    or one of the :data:`SPARE_PORTS` after it, so that several aggregators, writers or
    detectors (``--shards``) on one host each get theirs, in start order."""
    if configured is not None:
        return start_metrics_server(host, configured)
    return start_metrics_server(host, default, SPARE_PORTS)
