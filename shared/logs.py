"""Logging set-up: the only place handlers and formats are configured (one line per state change)."""

from __future__ import annotations

import logging
import sys


def configure(level: str = "INFO", process: str = "liq") -> None:
    """Log to stderr as ``time level process logger: message``; idempotent."""
    root = logging.getLogger()
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    if any(getattr(h, "_liq", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {process} %(name)s: %(message)s")
    )
    handler._liq = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    for noisy in ("websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
