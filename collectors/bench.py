"""Parser throughput per venue: frames/s of ``session.on_message`` on single-event frames.

Each venue's frame is rendered by that venue's simulator module from one market event, so the
benchmark measures the same parser code the collectors run, on the venue's real frame format.
HTX frames are measured including gzip decompression, as the collector receives them.
"""

from __future__ import annotations

import copy
import importlib
import logging
import time
from typing import Any

from collectors import VENUES, load_venue
from collectors.sim.protocol import SimClient
from collectors.venues._common import inflate
from shared.market import MarketEvent

EVENT = MarketEvent(venue="", base="BTC", side="long", price=67234.5, notional_usd=250_000.0,
                    timestamp_ms=1_700_000_000_000)


def prepared(venue: str) -> tuple[Any, str | bytes]:
    """A subscribed parser session of ``venue`` and one single-liquidation frame for it.

    The session sends its subscriptions to the venue's simulator and reads the replies (acks,
    Bitfinex chanIds), then the first rendered frame that yields a liquidation is chosen, so
    no venue is timed on a frame that produces nothing (a BitMEX ``delete``, say).
    """
    sim = importlib.import_module(f"collectors.sim.{venue}").SIM
    item = sim.materialize(MarketEvent(**{**_event_fields(), "venue": venue}), 1)
    if item is None:
        raise ValueError(f"{venue}: the simulator has no BTC contract")
    client = SimClient(path="/", subscriptions={item.topic})
    session = load_venue(venue).new_parser()
    # The default subscriptions of every endpoint go through one client here: the simulator
    # refuses some (Bybit's other category), as expected, and the venue would log each refusal.
    venues_log = logging.getLogger("collectors.venues")
    level = venues_log.level
    venues_log.setLevel(logging.ERROR)
    try:
        for message in session.on_open():
            for reply in sim.on_client_message(client, message):
                _parse(session, reply)
    finally:
        venues_log.setLevel(level)
    for frame in sim.frames([item], client):
        if _parse(copy.deepcopy(session), frame):  # a copy: choosing leaves no state behind
            return session, frame
    raise ValueError(f"{venue}: no rendered frame yields a liquidation")


def _event_fields() -> dict[str, Any]:
    return {f: getattr(EVENT, f) for f in EVENT.__struct_fields__}


def measure(venue: str, seconds: float = 0.3) -> dict[str, Any]:
    session, frame = prepared(venue)
    produced = len(_parse(session, frame))
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            _parse(session, frame)
        count += 1000
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    return {"venue": venue, "frames_per_s": round(count / elapsed), "liquidations_per_frame": produced,
            "frame_bytes": len(frame)}


def _parse(session: Any, frame: str | bytes) -> list[Any]:
    return list(session.on_message(inflate(frame, "bench"), 1_700_000_000_000).liquidations)


def run(seconds: float = 0.3) -> list[dict[str, Any]]:
    return [measure(v, seconds) for v in VENUES]
