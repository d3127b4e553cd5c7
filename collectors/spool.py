"""A collector's disk spool: liquidations a venue sent while Redis could not take them.

A venue cannot resend what it pushed, so while Redis is unreachable a collector appends what it
receives to ``<data_dir>/spool/<venue>.jsonl`` (one ``Liquidation`` per line, the stream
payload's JSON) instead of holding it in memory. Once Redis answers, the spool is published first,
in order, then the collector goes back to its in-memory queue. A collector stopped or killed
meanwhile finds the spool at its next start.

Reading never consumes: :meth:`Spool.peek` returns the next lines after the committed offset and
:meth:`Spool.commit` moves that offset (kept beside the file in ``<venue>.offset``) once the
batch is in Redis. A crash between the two publishes that batch again (at least once); when
everything is committed both files are removed. A line that does not decode (a write cut short
by a crash) is counted and skipped.

One process at a time: a spool holds an exclusive lock (``<directory>/../locks/spool-<venue>.lock``,
released when the process ends), so a second collector of the venue on the same data directory
gets :class:`SpoolBusy` instead of publishing and committing the same lines.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from shared import codec
from shared.models import Liquidation

logger = logging.getLogger(__name__)

TAIL_CHUNK = 64 * 1024


class SpoolBusy(OSError):
    """Another process holds this venue's spool."""


_HELD: dict[Path, int] = {}
"""Lock files this process holds (a collector restarted in the same process takes its own again)."""


def _lock(path: Path) -> int:
    """An exclusive lock on ``path`` held until the process ends (its descriptor stays open)."""
    path = path.resolve()
    if path in _HELD:
        return _HELD[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SpoolBusy(f"{path} is held by another process") from exc
    _HELD[path] = fd
    return fd


class Spool:
    def __init__(self, directory: Path, venue: str) -> None:
        self._lock_fd = _lock(directory.parent / "locks" / f"spool-{venue}.lock")
        self.path = directory / f"{venue}.jsonl"
        self.offset_path = directory / f"{venue}.offset"
        self.skipped = 0
        """Lines that did not decode, or were cut short by a crash."""
        self._drop_partial_tail()
        self.offset = self._read_offset()
        self.pending = self._count_pending()
        """Lines written and not yet committed."""
        self._peeked_end = self.offset
        self._peeked_lines = 0

    def append(self, liquidations: Sequence[Liquidation]) -> None:
        """Write ``liquidations`` at the end of the spool, whole lines in one write. They are
        safe from a crash of the process at once, and from one of the machine after :meth:`sync`
        (not per append: an fsync per frame would stall the WebSocket loop). A write the disk
        refuses is taken back whole: none of them is on disk when this raises."""
        if not liquidations:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(codec.encode(liq) + b"\n" for liq in liquidations)
        with self.path.open("ab") as handle:
            start = handle.seek(0, os.SEEK_END)
            try:
                handle.write(data)
                handle.flush()
            except OSError:  # a full disk: take back the part written, the caller keeps them all
                with contextlib.suppress(OSError):
                    handle.truncate(start)
                raise
        self.pending += len(liquidations)

    def sync(self) -> None:
        """Flush the spool to the disk (the collector calls it once per publish retry)."""
        if self.pending and self.path.exists():
            with self.path.open("rb") as handle:
                os.fsync(handle.fileno())

    def peek(self, limit: int) -> list[Liquidation]:
        """Up to ``limit`` liquidations after the committed offset, without consuming them."""
        if not self.pending or not self.path.exists():
            self.pending = 0
            return []
        out: list[Liquidation] = []
        end, lines = self.offset, 0
        for size, liq in self._lines():
            end += size
            lines += 1
            if liq is None:
                self.skipped += 1
                logger.error("spool %s: skipped an unreadable line at byte %d", self.path, end - size)
                continue
            out.append(liq)
            if len(out) >= limit:
                break
        self._peeked_end, self._peeked_lines = end, lines
        if not lines:
            self.pending = 0  # nothing after the offset after all
        return out

    def waiting(self) -> list[Liquidation]:
        """Every readable liquidation after the committed offset, without consuming them."""
        if not self.pending or not self.path.exists():
            return []
        return [liq for _, liq in self._lines() if liq is not None]

    def _lines(self) -> Iterator[tuple[int, Liquidation | None]]:
        """Each line after the committed offset: its size, and its liquidation (None: unreadable)."""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            for line in handle:
                try:
                    yield len(line), codec.decode_liquidation(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    yield len(line), None

    def commit(self) -> None:
        """The last :meth:`peek` is in Redis: move past it (remove the spool once all is).

        The position moves in memory first, so this process never publishes the batch again;
        the offset file is then replaced atomically (written, fsynced, renamed). If the disk
        refuses that, the error is logged, and only a restart before the next commit would
        publish the batch again."""
        self.offset = self._peeked_end
        self.pending = max(0, self.pending - self._peeked_lines)
        try:
            if not self.path.exists() or self.offset >= self.path.stat().st_size:
                self.path.unlink(missing_ok=True)
                self.offset_path.unlink(missing_ok=True)
                self.offset = self._peeked_end = 0
                self.pending = 0
                return
            temporary = self.offset_path.with_suffix(".offset.tmp")
            with temporary.open("w") as handle:
                handle.write(str(self.offset))
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.offset_path)
        except OSError as exc:
            logger.error("spool %s: cannot record the published position (%s)", self.path, exc)

    def _drop_partial_tail(self) -> None:
        """A line without its newline was cut short by a crash: cut it off (every append
        writes whole lines)."""
        try:
            handle = self.path.open("r+b")
        except FileNotFoundError:
            return
        with handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            keep = size
            while keep > 0:  # back to the last newline, a chunk at a time
                start = max(0, keep - TAIL_CHUNK)
                handle.seek(start)
                chunk = handle.read(keep - start)
                if keep == size and chunk.endswith(b"\n"):
                    return
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            handle.truncate(keep)
        self.skipped += 1
        logger.error("spool %s: dropped a line cut short by a crash (%d bytes)", self.path, size - keep)

    def _read_offset(self) -> int:
        """The committed position, at most the file's size: a crash of the machine can leave an
        offset past the end of a spool whose unsynced tail it lost (all of which was published);
        new lines then start at the end, and must not be skipped."""
        if not self.path.exists():
            self.offset_path.unlink(missing_ok=True)
            return 0
        try:
            offset = int(self.offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0
        size = self.path.stat().st_size
        if offset > size:
            logger.warning("spool %s: offset %d past the end (%d bytes), kept at the end", self.path,
                           offset, size)
            return size
        return offset

    def _count_pending(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                return sum(1 for _ in handle)
        except FileNotFoundError:
            return 0
