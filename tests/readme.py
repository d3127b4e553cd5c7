"""What the two READMEs show their users, read from the files: SQL queries and redis-cli commands.

Our ``README.md`` and the original system's (``../shared/original-system/README.md``) each show
database queries and a redis-cli session. The tests that run them take them from here, so a
README edit that breaks one fails a test instead of drifting from what the code provides.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = REPO / "README.md"
ORIGINAL = REPO.parent / "shared" / "original-system" / "README.md"

FENCE = re.compile(r"^```[a-z]*\n(.*?)^```$", re.M | re.S)


def block_after(path: Path, marker: str) -> str:
    """The first fenced block after the first line containing ``marker``."""
    text = path.read_text()
    at = text.find(marker)
    if at < 0:
        raise AssertionError(f"{path}: no {marker!r}")
    found = FENCE.search(text, text.index("\n", at))
    if found is None:
        raise AssertionError(f"{path}: no fenced block after {marker!r}")
    return found.group(1)


def inline_code(path: Path, prefix: str) -> str:
    """The first inline code span (`` `…` ``) of ``path`` that starts with ``prefix``."""
    found = re.search("`(" + re.escape(prefix) + "[^`]*)`", path.read_text())
    if found is None:
        raise AssertionError(f"{path}: no `{prefix}…`")
    return found.group(1)


def sql_statements(block: str) -> list[str]:
    """The statements of a block, whitespace collapsed: ``--`` comments, shell comments (``#``)
    and the ``psql`` command line left out."""
    lines = [line.split("--", 1)[0] for line in block.splitlines()
             if not line.lstrip().startswith(("#", "psql"))]
    statements = (" ".join(part.split()) for part in "\n".join(lines).split(";"))
    return [s for s in statements if s]


def original_queries() -> list[str]:
    """The original README's "Direct Database Queries"."""
    return sql_statements(block_after(ORIGINAL, "Option 3: Direct Database Queries"))


def our_queries() -> list[str]:
    """Our README's queries of the original system."""
    return sql_statements(block_after(OURS, "The queries of the original system work as written"))


def redis_commands(block: str, prompt: str = "") -> list[list[str]]:
    """The redis-cli commands of a block, each as its arguments: lines starting with ``prompt``
    (the prompt removed), shell comments and the line that starts redis-cli left out."""
    commands = []
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith(prompt) or line.startswith(("#", "redis-cli", "psql")):
            continue
        args = shlex.split(line.removeprefix(prompt), comments=True)
        if args:
            commands.append(args)
    return commands


def our_redis_session() -> tuple[list[list[str]], list[list[str]]]:
    """Our README's redis-cli session: its shell command lines that run redis-cli (the last one
    opens the session), each as its arguments, and the commands typed at the ``>`` prompt."""
    block = block_after(OURS, "`liq status` (or `liq status --json`)")
    shell = [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("redis-cli")]
    return shell, redis_commands(block, "> ")


def original_redis_commands() -> list[list[str]]:
    """The original README's "Redis Inspection" commands."""
    return redis_commands(block_after(ORIGINAL, "Option 3: Redis Inspection"))
