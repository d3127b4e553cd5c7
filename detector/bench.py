"""Hot-path benchmark of the pure engine: per-event latency p50/p99 (µs) and events/s.

The workload is the market model with a busy market (45 liquidations a minute and 120 cascades an
hour across 14 venues on BTC, ETH and SOL, as in earlier runs; not the same events: Gate no longer
trades SOL and the cascade bases are drawn from the seven-base weights), so a good share of
events lands in an active cascade, where each one is scored. Called by ``liq bench``
(``shared.bench``) as ``run(events)``.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from detector.engine import Engine
from shared.market_model import MarketModel, ModelParams, to_liquidation
from shared.models import CascadeEvent, Liquidation

BENCH_BASES = ("BTC", "ETH", "SOL")
BUSY = ModelParams(quiet_per_min=(("BTC", 20.0), ("ETH", 15.0), ("SOL", 10.0)), cascades_per_hour=120.0)


def workload(events: int, seed: int = 1) -> list[Liquidation]:
    stream = MarketModel(seed=seed, bases=BENCH_BASES, params=BUSY).stream()
    return [to_liquidation(e) for e in itertools.islice(stream, events)]


def run(events: int = 100_000) -> dict[str, Any]:
    """Feed ``events`` liquidations through a fresh engine twice: timed per event, then in bulk."""
    liqs = workload(events)
    n = len(liqs)
    engine = Engine()
    clock = time.perf_counter_ns
    timings = np.empty(n, dtype=np.int64)
    starts = members = 0
    for i, liq in enumerate(liqs):
        t0 = clock()
        out = engine.feed(liq)
        timings[i] = clock() - t0
        if out:
            members += sum(1 for o in out if not isinstance(o, CascadeEvent))
            starts += sum(1 for o in out if isinstance(o, CascadeEvent) and o.phase == "start")
    bulk = Engine()
    bulk_started = time.perf_counter()
    for liq in liqs:
        bulk.feed(liq)
    elapsed = time.perf_counter() - bulk_started
    us = timings / 1000.0
    return {
        "events": n,
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "max_us": round(float(us.max()), 1),
        "events_per_s": round(n / elapsed),
        "cascades": starts,
        "member_share": round(members / n, 3) if n else 0.0,
    }
