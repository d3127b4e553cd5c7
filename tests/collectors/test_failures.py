"""How a collector names a connection failure: the kind of cause its outage log says once each."""

from __future__ import annotations

import logging

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from collectors.base import failure_kind, one_line
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


def test_a_body_excerpt_is_one_printable_line() -> None:
    """A venue's answer goes into a log line and ``liq status``: no line breaks, no terminal escapes."""
    page = b"<html>\r\n  <title>403\tForbidden</title>\x1b[2J\x00\n"
    assert one_line(page) == "<html> <title>403 Forbidden</title> [2J"
    assert one_line(b"\xffok") == "\ufffdok"
    assert (one_line(b"a" * 200), one_line(b"a" * 201)) == ("a" * 200, "a" * 199 + "…")
    assert one_line(b" \n ") == ""
