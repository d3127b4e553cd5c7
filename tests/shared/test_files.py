"""Files handed to readers are written whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.files import write_whole


def test_a_file_is_replaced_whole_and_no_temporary_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    write_whole(path, "old")
    write_whole(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["up.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "up.json"
    write_whole(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_whole(path, "\udcff")  # a lone surrogate: no encoding writes it
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["up.json"]
