"""Size and age of the writer's database batches: pure, timed by an injected clock.

The stream consumer XACKs entries only after the handler returns, and the handler returns only
after COMMIT, so entries never wait in memory across reads. Batching by age therefore happens
in Redis:

- **size**: one read (up to ``count`` entries per stream) is split into chunks of at most
  ``max_rows`` entries, each committed in its own transaction before the handler returns;
- **age**: after a read that did not fill a batch, the writer pauses until ``max_age_ms`` has
  passed since that read started, so that the next read collects everything that arrived in the
  meantime. Under load (full batches) there is no pause; when quiet, at most one commit per
  ``max_age_ms``, and an entry waits at most about ``max_age_ms`` plus one commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from shared.clock import Clock

T = TypeVar("T")


class Batcher:
    def __init__(self, max_rows: int, max_age_ms: int, clock: Clock) -> None:
        if max_rows < 1 or max_age_ms < 0:
            raise ValueError("max_rows must be >= 1 and max_age_ms >= 0")
        self.max_rows = max_rows
        self.max_age_s = max_age_ms / 1000.0
        self.clock = clock
        self._read_started: float | None = None

    def read_started(self) -> None:
        """Mark the start of handling one read (call first thing in the handler)."""
        self._read_started = self.clock.monotonic()

    def split(self, items: Sequence[T]) -> list[list[T]]:
        """Chunks of at most ``max_rows``, in order."""
        return [list(items[i:i + self.max_rows]) for i in range(0, len(items), self.max_rows)]

    def pause_after(self, read_size: int) -> float:
        """Seconds to wait before the next read, given how many entries the last read held."""
        if self._read_started is None or read_size >= self.max_rows:
            return 0.0
        elapsed = self.clock.monotonic() - self._read_started
        return max(0.0, self.max_age_s - elapsed)
