"""The process lifecycle every ``liq <process>`` command runs under (``shared.runtime``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.runtime import GC_THRESHOLDS

REPO = Path(__file__).resolve().parents[2]

SERVICE = """
import asyncio, gc, json, sys
from shared import runtime

async def main(stop: asyncio.Event) -> None:
    print(json.dumps({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}), flush=True)

sys.exit(runtime.run_service("probe", main))
"""


def test_a_service_runs_with_its_start_up_heap_frozen_and_rarer_collections() -> None:
    """What ``main`` sees in a real process started as ``liq <process>`` starts: the modules
    loaded before it are out of the collector's walks (frozen), and the thresholds are ours."""
    result = subprocess.run([sys.executable, "-c", SERVICE], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=True)
    seen = json.loads(result.stdout.splitlines()[0])
    assert tuple(seen["thresholds"]) == GC_THRESHOLDS != (700, 10, 10)
    assert seen["frozen"] > 1000, "the interpreter and shared's modules hold thousands of objects"


def test_a_settled_stretch_leaves_the_collector_as_it_found_it() -> None:
    """``liq bench`` run inside a test session (or any process that goes on): the heap frozen and
    the thresholds ours only while it runs."""
    import gc

    from shared.runtime import settled_gc

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with settled_gc():
        assert gc.get_threshold() == GC_THRESHOLDS != before
        assert gc.get_freeze_count() > frozen
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)
