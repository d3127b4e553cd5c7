"""Age of the writer's database batches: pure, timed by an injected clock.

The stream consumer XACKs entries only after the handler returns, and the handler returns only
after COMMIT, so entries never wait in memory across reads. Batching by age therefore happens
in Redis, and by size in the handler:

- **size**: the rows of one read are committed in transactions of at most ``batch_size`` rows
  (``writer.rows.Batch.split``); each stream is read ``batch_size`` entries at a time;
- **age**: after a read that was not full, the writer pauses until ``max_age_ms`` has passed
  since that read started, so that the next read collects everything that arrived in the
  meantime. Under load (full reads) there is no pause; when quiet, at most one commit per
  ``max_age_ms``, and an entry waits at most about ``max_age_ms`` plus one commit.
"""

from __future__ import annotations

from shared.clock import Clock


class Batcher:
    def __init__(self, max_age_ms: int, clock: Clock) -> None:
        if max_age_ms < 0:
            raise ValueError("max_age_ms must be >= 0")
        self.max_age_s = max_age_ms / 1000.0
        self.clock = clock
        self._read_started: float | None = None

    def read_started(self) -> None:
        """Mark the start of handling one read (call first thing in the handler)."""
        self._read_started = self.clock.monotonic()

    def pause_after(self, read_size: int, read_count: int) -> float:
        """Seconds to wait before the next read, given how many entries the last read held and
        how many it asked for."""
        if self._read_started is None or read_size >= read_count:
            return 0.0
        elapsed = self.clock.monotonic() - self._read_started
        return max(0.0, self.max_age_s - elapsed)
