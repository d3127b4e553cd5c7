"""Files the processes hand to readers (``up.json``, ``servers.env``, the simulator's ports, a
venue's instruments cache): written whole, so a reader gets the old file or the new one."""

from __future__ import annotations

import os
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it over ``path``: a reader (``liq status``,
    honcho, ``liq up``, a collector starting) never sees half of it, and a write that fails
    leaves neither the old file damaged nor its temporary file behind."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
