"""Parser throughput per venue: frames/s of ``session.on_message`` on single-event frames.

Each venue's frame is rendered by that venue's simulator module from one market event, so the
benchmark measures the same parser code the collectors run, on the venue's real frame format.
HTX frames are measured including gzip decompression, as the collector receives them.
"""

from __future__ import annotations

import gzip
import importlib
import time
from typing import Any

from collectors import VENUES, load_venue
from collectors.base import GZIP_MAGIC
from collectors.sim.protocol import SimClient
from shared.market import MarketEvent

EVENT = MarketEvent(venue="", base="BTC", side="long", price=67234.5, notional_usd=250_000.0,
                    timestamp_ms=1_700_000_000_000)


def sample_frame(venue: str) -> str | bytes:
    """One single-liquidation frame of ``venue`` as its simulator renders it."""
    sim = importlib.import_module(f"collectors.sim.{venue}").SIM
    item = sim.materialize(MarketEvent(**{**_event_fields(), "venue": venue}), 1)
    if item is None:
        raise ValueError(f"{venue}: the simulator has no BTC contract")
    client = SimClient(path="/", subscriptions={item.topic})
    client.state.update(_subscribed_state(sim, client))
    frames: list[str | bytes] = sim.frames([item], client)
    return frames[-1]


def _event_fields() -> dict[str, Any]:
    return {f: getattr(EVENT, f) for f in EVENT.__struct_fields__}


def _subscribed_state(sim: Any, client: SimClient) -> dict[str, Any]:
    """Let the venue's simulator record a subscription (Bitfinex chanId, Deribit ids…)."""
    parser = load_venue(sim.name).new_parser()
    for message in parser.on_open():
        sim.on_client_message(client, message)
    return dict(client.state)


def measure(venue: str, seconds: float = 0.3) -> dict[str, Any]:
    frame = sample_frame(venue)
    session = load_venue(venue).new_parser()
    for message in session.on_open():
        del message
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
    if isinstance(frame, bytes) and frame[:2] == GZIP_MAGIC:
        frame = gzip.decompress(frame)
    return list(session.on_message(frame, 1_700_000_000_000).liquidations)


def run(seconds: float = 0.3) -> list[dict[str, Any]]:
    return [measure(v, seconds) for v in VENUES]
