"""The simulated venues hang up on clients that break their heartbeat rules, as the venues do.

Over real sockets on 127.0.0.1, with the venues' timings shortened: HTX and Deribit close a
connection whose client leaves their pings unanswered (or answers them wrongly); OKX,
Hyperliquid, Bitget and Lighter close one they hear nothing from. A client that follows the
rule (the collector's own session answering) stays connected.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from collectors import load_venue
from collectors.sim.protocol import LIVENESS_CLOSE
from collectors.sim.server import ExchangeSimulator, load_sim

TIMEOUT = 10.0
BEAT_S = 0.02


class Shortened:
    """A venue's simulator with its heartbeat and idle timings replaced."""

    def __init__(self, name: str, heartbeat_s: float | None = None, idle_close_s: float = 0.0) -> None:
        self.inner = load_sim(name)
        self.heartbeat_s = self.inner.heartbeat_s if heartbeat_s is None else heartbeat_s
        self.idle_close_s = idle_close_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _json(raw: str | bytes) -> Any:
    return json.loads(gzip.decompress(raw) if isinstance(raw, bytes) else raw)


async def _open(exchange: ExchangeSimulator, venue: str) -> ClientConnection:
    """A raw client that sends the collector's subscribe frames, and nothing after."""
    plan = load_venue(venue).plans(exchange.urls[venue], list(load_venue(venue).default_symbols))[0]
    ws = await connect(plan.url)
    for frame in plan.new_session().on_open():
        await ws.send(frame)
    return ws


async def _pings_until_closed(ws: ClientConnection, is_ping: Any) -> int:
    """Read (never answering) until the venue hangs up; how many pings came; the close is checked."""
    pings = 0
    with pytest.raises(ConnectionClosedError) as closed:
        while True:
            pings += bool(is_ping(_json(await ws.recv())))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == LIVENESS_CLOSE
    return pings


def _htx_ping(frame: Any) -> bool:
    return bool(frame.get("op") == "ping")


def _deribit_ping(frame: Any) -> bool:
    return bool(frame.get("method") == "heartbeat")


@pytest.mark.parametrize(("venue", "is_ping", "allowed"),
                         [("htx", _htx_ping, 2), ("deribit", _deribit_ping, 1)])
def test_a_client_that_leaves_pings_unanswered_is_disconnected(venue: str, is_ping: Any,
                                                               allowed: int) -> None:
    async def run() -> int:
        async with ExchangeSimulator([Shortened(venue, BEAT_S)]) as exchange:
            ws = await _open(exchange, venue)
            async with asyncio.timeout(TIMEOUT):
                return await _pings_until_closed(ws, is_ping)

    assert asyncio.run(run()) == allowed


@pytest.mark.parametrize("venue", ["htx", "deribit"])
def test_a_client_answering_as_documented_stays_until_it_stops(venue: str) -> None:
    """The collector's session answers 10 pings and the connection stays; HTX then gets a pong
    with the wrong ts (not an answer), Deribit gets nothing, and the venue hangs up."""
    is_ping = _htx_ping if venue == "htx" else _deribit_ping

    async def run() -> int:
        async with ExchangeSimulator([Shortened(venue, BEAT_S)]) as exchange:
            ws = await _open(exchange, venue)
            session = load_venue(venue).new_parser()
            answered = 0
            async with asyncio.timeout(TIMEOUT):
                while answered < 10:
                    raw = await ws.recv()
                    for reply in session.on_message(raw, 0).replies:
                        await ws.send(reply)
                    answered += bool(is_ping(_json(raw)))
                if venue == "htx":
                    await ws.send(json.dumps({"op": "pong", "ts": 1}))
                return await _pings_until_closed(ws, is_ping)

    assert asyncio.run(run()) == (2 if venue == "htx" else 1)


@pytest.mark.parametrize("venue", ["okx", "hyperliquid", "bitget", "lighter"])
def test_a_client_that_goes_quiet_is_disconnected(venue: str) -> None:
    async def run() -> None:
        async with ExchangeSimulator([Shortened(venue, idle_close_s=0.1)]) as exchange:
            ws = await _open(exchange, venue)
            async with asyncio.timeout(TIMEOUT):
                assert await _pings_until_closed(ws, lambda frame: False) == 0

    asyncio.run(run())
