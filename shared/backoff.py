"""The one retry/reconnect policy: exponential delays with jitter and a cap, reset when healthy,
and :class:`Outage`, which logs a dependency going down and coming back once each, not once
per retry."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
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


@dataclass
class Outage:
    """What a retry loop logs about ``what`` (``"writer: liq:cascades"``): one warning when it
    fails first, one when it fails for a reason not seen yet in this outage (an exception of
    another class, or another ``kind`` the caller names: an HTTP status, a close code), one when
    it works again, and a reminder every ``remind_s`` while it lasts; the retries in between are
    logged at debug level only. Causes that take turns (the loops of a process sharing one
    outage, each seeing the dead server its own way) are one line each."""

    what: str
    log: logging.Logger
    since: float | None = None
    """When the outage began (monotonic); None while all is well."""
    causes: set[str] = field(default_factory=set)
    """The causes logged since the outage began."""
    failures: int = 0
    monotonic: Callable[[], float] = time.monotonic
    remind_s: float = 600.0
    _reminded: float = 0.0

    def down(self, exc: BaseException | str, delay: float, kind: str | None = None) -> None:
        """A try failed with ``exc`` (or for the reason given as text); the next one is in
        ``delay`` seconds. ``kind`` names the cause when its class (or text) is not enough."""
        cause = kind or (exc if isinstance(exc, str) else type(exc).__name__)
        said = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.failures += 1
        now = self.monotonic()
        if self.since is not None and cause in self.causes:
            if now - self._reminded >= self.remind_s:
                self._reminded = now
                self.log.warning("%s: still unavailable after %.0fs and %d failed tries (%s)", self.what,
                                 now - self.since, self.failures, said)
            else:
                self.log.debug("%s: still failing (%s); next try in %.1fs", self.what, exc, delay)
            return
        self.since = self.since if self.since is not None else now
        self._reminded = now
        self.causes.add(cause)
        self.log.warning("%s: unavailable (%s); retrying with backoff (first in %.1fs), logged "
                         "again when it works", self.what, said, delay)

    def up(self) -> None:
        """A try succeeded (cheap when there was no outage)."""
        if self.since is None:
            return
        self.log.info("%s: available again after %.0fs and %d failed tries", self.what,
                      self.monotonic() - self.since, self.failures)
        self.since, self.failures = None, 0
        self.causes.clear()
