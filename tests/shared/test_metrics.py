"""The Prometheus endpoints: several consumers of one kind on one host each get a port."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest

from shared.metrics import SPARE_PORTS, serve_collector_metrics, serve_consumer_metrics, start_metrics_server
from shared.servers import free_port_range


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_a_second_consumer_takes_the_next_spare_port() -> None:
    default = free_port_range(2)  # two consecutive free ports: the second consumer takes the next one
    first = serve_consumer_metrics("127.0.0.1", None, default)
    second = serve_consumer_metrics("127.0.0.1", None, default)
    assert (first, second) == (default, default + 1)
    assert all("liq_events_in" in _scrape(p) for p in (default, default + 1))


def test_a_configured_port_is_used_exactly_and_a_busy_one_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING):
            assert serve_consumer_metrics("127.0.0.1", busy, default=busy + 1) is None
    assert f"metrics disabled: cannot bind 127.0.0.1:{busy} (" in caplog.text


def test_no_metrics_without_a_port() -> None:
    assert start_metrics_server("127.0.0.1", None, SPARE_PORTS) is None


def test_a_collector_whose_default_port_is_taken_serves_on_a_free_port_and_says_which(
        caplog: pytest.LogCaptureFixture) -> None:
    """A second ``liq up`` on the host: collector k's default is taken (by the first one's), and
    k + 1 is the next venue's default, so the collector takes any free port, never none."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with caplog.at_level(logging.INFO):
            bound = serve_collector_metrics("127.0.0.1", None, busy)
            assert bound is not None and bound != busy
            assert "liq_events_in" in _scrape(bound)
            assert serve_collector_metrics("127.0.0.1", busy, busy + 1) is None  # configured: exactly
    assert f"metrics on http://127.0.0.1:{bound}/metrics" in caplog.text
    assert f"metrics disabled: cannot bind 127.0.0.1:{busy} (" in caplog.text
