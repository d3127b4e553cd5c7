"""A collector's ``--record`` file: it owns the file and appends every raw frame to it, as received.

One JSON line per frame (:class:`FrameRecord`), read back by ``liq replay``. A frame that is not
UTF-8 text is recorded as hex (``binary``). A disk that refuses a write stops the recording,
said once, never the collecting.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

import msgspec

logger = logging.getLogger(__name__)


class FrameRecord(msgspec.Struct):
    """One line of a ``--record`` file."""

    venue: str
    conn: str
    received_ms: int
    frame: str
    binary: bool = False


class FrameRecorder:
    """The ``--record`` file of one venue's collector (none: ``path`` is None)."""

    def __init__(self, venue: str, path: Path | None) -> None:
        self.venue = venue
        self.path = path
        self._record: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._record = path.open("a", encoding="utf-8")

    def frame(self, label: str, now_ms: int, raw: str | bytes) -> None:
        """Append ``raw``, received on connection ``label`` at ``now_ms``."""
        if self._record is None:
            return
        if isinstance(raw, bytes):
            try:
                text, binary = raw.decode("utf-8"), False
            except UnicodeDecodeError:
                text, binary = raw.hex(), True
        else:
            text, binary = raw, False
        record = FrameRecord(self.venue, label, now_ms, text, binary)
        try:
            self._record.write(msgspec.json.encode(record).decode() + "\n")
        except OSError as exc:  # a full disk stops the recording, never the collecting
            logger.error("%s: recording to %s stopped: %s", self.venue, self.path, exc)
            self.close(loss_said=True)

    def close(self, loss_said: bool = False) -> None:
        """Close the ``--record`` file; what its buffer cannot write (a full disk) is lost, and
        said once, but never stops the collector."""
        record, self._record = self._record, None
        if record is None:
            return
        try:
            record.close()
        except OSError as exc:
            if loss_said:
                return
            logger.error("%s: the end of the recording to %s was lost: %s", self.venue, self.path, exc)
