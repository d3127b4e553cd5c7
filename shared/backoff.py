"""The one retry/reconnect delay policy: exponential growth, full jitter, a cap, reset when healthy."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``base * 2**n`` capped at ``cap``, with jitter in [50 %, 100 %] of that value.

    ``reset()`` after a healthy period (a successful subscribe, a committed batch).
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return float(ceiling * (0.5 + 0.5 * self.rng.random()))

    def reset(self) -> None:
        self.attempts = 0
