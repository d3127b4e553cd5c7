"""The collector's disk spool: order, offsets kept across restarts, damage from a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collectors import spool as spool_module
from collectors.spool import Spool
from shared.models import Liquidation
from tests.factories import liq


def _liqs(n: int, start: int = 0) -> list[Liquidation]:
    return [liq(quantity=1 + i, timestamp_ms=1_767_225_600_000 + i) for i in range(start, start + n)]


def test_liquidations_come_back_in_order_and_the_files_go_once_all_are_committed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "bybit")
    spool.append(_liqs(5))
    spool.append(_liqs(2, start=5))
    assert spool.pending == 7
    first = spool.peek(4)
    assert first == spool.peek(4) == _liqs(4)  # peeking consumes nothing
    spool.commit()
    assert spool.pending == 3 and (tmp_path / "bybit.offset").exists()
    assert spool.peek(10) == _liqs(3, start=4)
    spool.commit()
    assert spool.pending == 0 and sorted(p.name for p in tmp_path.iterdir()) == []
    spool.append(_liqs(1, start=9))
    assert spool.peek(10) == _liqs(1, start=9)


def test_a_new_process_resumes_after_the_committed_offset(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "okx")
    spool.append(_liqs(6))
    spool.peek(2)
    spool.commit()
    spool.peek(2)  # published, then the process died before committing
    again = Spool(tmp_path, "okx")
    assert again.pending == 4
    assert again.peek(100) == _liqs(4, start=2)


def test_a_line_cut_short_by_a_crash_and_an_unreadable_line_are_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "gate")
    spool.append(_liqs(2))
    with spool.path.open("ab") as handle:
        handle.write(b'{"not a liquidation": 1}\n')
        handle.write(b'{"exchange":"gate","sym')  # the write a crash cut short
    again = Spool(tmp_path, "gate")
    assert again.pending == 3 and again.skipped == 1
    assert again.peek(100) == _liqs(2)
    assert again.skipped == 2
    again.commit()
    assert again.pending == 0 and not again.path.exists()


def test_a_stale_offset_without_its_spool_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "htx.offset").write_text("12345")
    spool = Spool(tmp_path, "htx")
    assert (spool.offset, spool.pending) == (0, 0) and not (tmp_path / "htx.offset").exists()
    spool.append(_liqs(1))
    assert spool.peek(5) == _liqs(1)


@pytest.mark.parametrize("chunk", [8, 64 * 1024])
def test_the_cut_line_is_found_however_far_back_its_start_is(tmp_path: Path, chunk: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "TAIL_CHUNK", chunk)
    spool = Spool(tmp_path, "bitmex")
    spool.append(_liqs(3))
    whole = spool.path.stat().st_size
    with spool.path.open("ab") as handle:
        handle.write(b'{"exchange":"bitmex",' + b" " * 300)
    again = Spool(tmp_path, "bitmex")
    assert again.path.stat().st_size == whole and again.skipped == 1
    assert again.peek(10) == _liqs(3)


def test_an_empty_or_whole_spool_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "dydx.jsonl").write_bytes(b"")
    assert Spool(tmp_path, "dydx").skipped == 0
    spool = Spool(tmp_path, "dydx")
    spool.append(_liqs(2))
    spool.sync()
    assert Spool(tmp_path, "dydx").skipped == 0 and Spool(tmp_path, "dydx").pending == 2


def test_an_offset_past_the_end_is_kept_at_the_end_so_new_lines_are_not_skipped(tmp_path: Path) -> None:
    """A machine crash lost the spool's unsynced tail but not the offset file: everything up to
    the offset was published; what is appended after the restart must still be."""
    spool = Spool(tmp_path, "okx")
    spool.append(_liqs(4))
    spool.peek(3)
    spool.commit()
    with spool.path.open("r+b") as handle:  # the crash: the last lines never reached the disk
        handle.truncate(spool.offset - 10)
    again = Spool(tmp_path, "okx")
    assert again.pending == 0
    again.append(_liqs(2, start=10))
    assert again.peek(10) == _liqs(2, start=10)


def test_a_commit_survives_a_deleted_spool_and_a_disk_that_refuses_the_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, "gate")
    spool.append(_liqs(5))
    assert len(spool.peek(2)) == 2

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", full)  # type: ignore[attr-defined]  # the os spool calls
    spool.commit()
    assert "cannot record the published position" in caplog.text
    assert spool.pending == 3 and spool.peek(10) == _liqs(3, start=2), "this process moves on"
    monkeypatch.undo()
    spool.path.unlink()
    spool.commit()  # the file went away under it: nothing to remove, no error
    assert spool.pending == 0 and spool.peek(10) == []


def test_a_write_the_disk_refuses_halfway_leaves_nothing_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller keeps the whole batch in memory: a half written on disk would be published twice."""
    spool = Spool(tmp_path, "okx")
    spool.append(_liqs(2))
    real_open = Path.open

    class HalfFull:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> HalfFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def seek(self, *args: Any) -> int:
            return int(self.handle.seek(*args))

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            self.handle.flush()

        def truncate(self, size: int) -> int:
            return int(self.handle.truncate(size))

    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: (
        HalfFull(real_open(self, mode, *a, **k)) if mode == "ab" else real_open(self, mode, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        spool.append(_liqs(3, start=2))
    monkeypatch.undo()
    assert spool.pending == 2 and Spool(tmp_path, "okx").peek(10) == _liqs(2)


def test_a_spool_another_process_holds_is_refused(tmp_path: Path) -> None:
    """Two collectors of one venue on one data directory must not publish and commit the same
    lines: the second gets SpoolBusy (and runs with its queue in memory)."""
    import subprocess
    import sys

    from collectors.spool import SpoolBusy

    code = ("import sys; from pathlib import Path; from collectors.spool import Spool; "
            "Spool(Path(sys.argv[1]), 'okx'); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spool")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SpoolBusy, match="spool-okx.lock is held by another process"):
            Spool(tmp_path / "spool", "okx")
        Spool(tmp_path / "spool", "bybit")  # another venue's spool is its own
    finally:
        holder.communicate("", timeout=10)
    assert holder.returncode == 0
