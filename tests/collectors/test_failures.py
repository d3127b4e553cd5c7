"""How a collector names a connection failure: the kind of cause its outage log says once each."""

from __future__ import annotations

import logging

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from collectors.base import failure_kind
from shared.backoff import Outage
from shared.clock import FakeClock


def test_a_new_close_code_within_an_outage_is_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    """A dropped connection (no close frame: 1006) that the venue then closes with 1008 (policy,
    e.g. an IP ban) says so; the two taking turns are still a line each."""
    dropped = ConnectionClosedError(None, None)
    banned = ConnectionClosedError(Close(1008, "policy violation"), None)
    outage = Outage("okx[public]", logging.getLogger("test.failures"), monotonic=FakeClock().monotonic)
    with caplog.at_level(logging.INFO, logger="test.failures"):
        for failure in (dropped, banned, dropped, banned, "closed by server (1000 bye)"):
            outage.down(failure, 1.0, failure_kind(failure))
    again = "; retrying with backoff (first in 1.0s), logged again when it works"
    assert [r.getMessage().removesuffix(again) for r in caplog.records] == [
        "okx[public]: unavailable (ConnectionClosedError: no close frame received or sent)",
        "okx[public]: unavailable (ConnectionClosedError: received 1008 (policy violation) policy violation; "
        "no close frame sent)",
        "okx[public]: unavailable (closed by server (1000 bye))",
    ]
    kinds = (failure_kind(dropped), failure_kind(banned))
    assert kinds == ("ConnectionClosedError 1006", "ConnectionClosedError 1008")
