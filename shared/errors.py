"""The project's exception tree.

::

    LiqError
    ├── ConfigError        a setting is missing or malformed (names the variable)
    ├── ParseError         a venue frame could not be decoded (counted and skipped)
    ├── ServerError        an embedded Redis/PostgreSQL server could not be started
    ├── ReplayRefused      (``shared.dlq``) a dead-letter replay met a key of another type
    ├── DeadLettersUnreadable (``shared.dlq``) a dead-letter stream's key holds another type
    └── MigrationError     (``writer.migrate``) the schema cannot be migrated as asked

A consumer's handler signals a transient failure of its side effect with
:class:`shared.streams.SinkRetry`: the batch is retried with backoff, never dead-lettered.
"""

from __future__ import annotations

EX_CONFIG = 78
"""Exit code of a command that refused its settings (``sysexits.h``): starting it again with the
same environment cannot help, so ``liq up`` does not restart it."""


class LiqError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(LiqError):
    def __init__(self, variable: str, expected: str, got: str | None = None) -> None:
        self.variable = variable
        self.expected = expected
        self.got = got
        detail = f" (got {got!r})" if got is not None else ""
        super().__init__(f"{variable}: expected {expected}{detail}")


class ParseError(LiqError):
    """A frame that is not valid for its venue; carries a truncated sample for the log."""

    def __init__(self, venue: str, reason: str, sample: bytes | str = b"") -> None:
        self.venue = venue
        self.reason = reason
        text = sample.decode("utf-8", "replace") if isinstance(sample, bytes) else sample
        self.sample = text[:200]
        super().__init__(f"{venue}: {reason}: {self.sample!r}")


class ServerError(LiqError):
    """An embedded server did not start."""
