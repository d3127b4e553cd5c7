"""Fixtures of the TimescaleDB tests: ONE PGlite + TimescaleDB harness per test session.

Starting the WASM database costs seconds and about 460 MB, so it is started once
(``harness``), migrated once with the full TimescaleDB plan (``migrated``), and every test gets
it back emptied (``ts``). Nothing here skips: a missing node/npm install fails with the command
that fixes it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.timescale.harness import Harness, HarnessError, missing_install_message
from tests.timescale.replay import PlanRun, apply_plan, prepare_session, reset
from writer.migrate import plan


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    """The session's one running harness."""
    problem = missing_install_message()
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        h = Harness.start()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="session")
def migrated(harness: Harness) -> PlanRun:
    """The full TimescaleDB plan for the harness's extversion, applied like ``migrate`` does."""
    run = apply_plan(harness, plan("timescale", harness.extversion), harness.extversion)
    prepare_session(harness)
    return run


@pytest.fixture
def ts(harness: Harness, migrated: PlanRun) -> Harness:
    """The migrated harness with no data in it."""
    reset(harness, plan("timescale", harness.extversion))
    return harness

