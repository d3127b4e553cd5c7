"""Python client of ``tests/pglite/run.mjs``: one in-process PGlite + TimescaleDB (WASM) in Node.

The harness speaks JSON lines over the child's stdin/stdout. Values travel as PostgreSQL's text
form both ways (``None`` is NULL), so results are compared as strings or converted in SQL.

PGlite has exactly one session, so this client is strictly sequential. It has no COPY …
FROM STDIN; :func:`copy_rows` runs the writer's COPY statements on ``'/dev/blob'`` instead (PGlite's
stand-in), with the rows encoded by psycopg's own binary COPY formatter, the bytes the writer's
``cursor.copy`` sends.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from psycopg import adapt, postgres, pq
from psycopg._copy_base import BinaryFormatter  # the encoder behind psycopg's Copy.write_row

HARNESS_DIR = Path(__file__).resolve().parents[1] / "pglite"
RUN_MJS = HARNESS_DIR / "run.mjs"
INSTALL_SH = HARNESS_DIR / "install.sh"
PACKAGE_JSON = HARNESS_DIR / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
START_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 60.0

Row = tuple[str | None, ...]


class HarnessError(RuntimeError):
    """The harness could not start, died, or answered something unexpected."""


class PGliteError(RuntimeError):
    """A statement failed inside PGlite (``code`` is the SQLSTATE when PGlite gave one)."""

    def __init__(self, message: str, code: str | None, sql: str) -> None:
        super().__init__(f"{message} (SQLSTATE {code or '?'})\n--- statement:\n{sql.strip()[:2000]}")
        self.code = code
        self.sql = sql


@dataclass(frozen=True)
class Result:
    """One statement's result: column names, rows in text form, rows affected."""

    fields: tuple[str, ...]
    rows: tuple[Row, ...]
    affected: int


def to_text(value: object) -> str | None:
    """A Python value in PostgreSQL's text input syntax (``None`` stays NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int | Decimal | str):
        return str(value)
    if isinstance(value, list | tuple):
        return "{" + ",".join(_array_item(v) for v in value) + "}"
    raise TypeError(f"no text form for {type(value).__name__}")


def _array_item(value: object) -> str:
    text = to_text(value)
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def missing_install_message() -> str | None:
    """Why the harness cannot start (node or the npm package missing), or None."""
    if not PACKAGE_JSON.exists():
        return (f"the PGlite-TimescaleDB harness is not installed ({PACKAGE_JSON} is missing): "
                f"run `bash {INSTALL_SH.relative_to(HARNESS_DIR.parents[1])}` "
                "(scripts/bootstrap --test does; it needs node >= 18 and npm)")
    return None


class Harness:
    """A running ``node run.mjs``; use :meth:`start`, then :meth:`execute` / :meth:`query`."""

    def __init__(self, proc: subprocess.Popen[str], stderr: IO[str], ready: dict[str, Any]) -> None:
        self._proc = proc
        self._stderr = stderr
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._next_id = 0
        self.server_version = str(ready.get("version"))
        self.extversion = str(ready.get("timescaledb"))
        self.license = str(ready.get("license"))
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    @classmethod
    def start(cls, timeout: float = START_TIMEOUT_S) -> Harness:
        """Start node, wait for its ``ready`` line (PGlite created, TimescaleDB loaded)."""
        problem = missing_install_message()
        if problem:
            raise HarnessError(problem)
        stderr = tempfile.TemporaryFile("w+")
        try:
            proc = subprocess.Popen(
                ["node", str(RUN_MJS)], cwd=HARNESS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, text=True, encoding="utf-8", bufsize=1,
            )
        except FileNotFoundError as exc:
            raise HarnessError("node is not installed (scripts/bootstrap --test installs it)") from exc
        ready = _read_ready(proc, stderr, timeout)
        return cls(proc, stderr, ready)

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, chars: int = 4000) -> str:
        """The last characters node wrote to stderr (for failure messages)."""
        return _tail(self._stderr, chars)

    def execute(self, sql: str, params: Sequence[object] | None = None) -> list[Result]:
        """Run ``sql`` (several statements allowed without params); every statement's result."""
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "sql": sql}
        if params is not None:
            request["params"] = [to_text(p) for p in params]
        self._send(json.dumps(request))
        reply = self._receive(self._next_id)
        if not reply.get("ok"):
            raise PGliteError(str(reply.get("error")), reply.get("code"), sql)
        return [Result(tuple(r["fields"]), tuple(tuple(row) for row in r["rows"]), int(r["affected"]))
                for r in reply["results"]]

    def copy(self, sql: str, data: bytes) -> int:
        """Run ``COPY … FROM '/dev/blob'`` with ``data`` as its input; the rows copied."""
        self._next_id += 1
        self._send(json.dumps({"id": self._next_id, "sql": sql, "blob": base64.b64encode(data).decode()}))
        reply = self._receive(self._next_id)
        if not reply.get("ok"):
            raise PGliteError(str(reply.get("error")), reply.get("code"), sql)
        return int(reply["results"][-1]["affected"])

    def query(self, sql: str, params: Sequence[object] | None = None) -> list[Row]:
        """The rows of the last statement of ``sql``."""
        results = self.execute(sql, params)
        return list(results[-1].rows) if results else []

    def scalar(self, sql: str, params: Sequence[object] | None = None) -> str | None:
        """The first column of the first row (None when there is no row)."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Harness]:
        """``BEGIN`` … ``COMMIT``, or ``ROLLBACK`` when the block raises."""
        self.execute("BEGIN")
        try:
            yield self
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def _send(self, line: str) -> None:
        if self._proc.poll() is not None or self._proc.stdin is None:
            raise HarnessError(f"the harness exited ({self._proc.returncode}):\n{self.stderr_tail()}")
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def _receive(self, request_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise HarnessError(f"no answer within {QUERY_TIMEOUT_S:.0f} s") from exc
            if line is None:
                raise HarnessError(f"the harness exited ({self._proc.wait()}):\n{self.stderr_tail()}")
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == request_id:
                return reply

    def close(self) -> None:
        """Close stdin (the harness then closes PGlite and exits); kill it if it hangs."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._pump_thread.join(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def _tail(stream: IO[str], chars: int) -> str:
    stream.flush()
    stream.seek(0)
    return stream.read()[-chars:]


def _read_ready(proc: subprocess.Popen[str], stderr: IO[str], timeout: float) -> dict[str, Any]:
    """The harness's first line, or a :class:`HarnessError` with node's stderr."""
    assert proc.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout)
    line = box[0] if box else ""
    try:
        ready: dict[str, Any] = json.loads(line) if line else {}
    except json.JSONDecodeError:
        ready = {}
    if not ready.get("ready"):
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        log = _tail(stderr, 4000)
        stderr.close()
        raise HarnessError(f"the PGlite harness did not start within {timeout:.0f} s "
                           f"(first line {line[:200]!r}):\n{log}")
    return ready


def copy_rows(h: Harness, copy_from_stdin: str, types: Sequence[str],
              rows: Sequence[Sequence[object]]) -> int:
    """Run the writer's ``COPY … FROM STDIN (FORMAT BINARY)`` statement on ``rows`` (typed as
    ``types``, as the writer's ``copy.set_types``); the rows copied."""
    transformer = adapt.Transformer()
    oids = [postgres.types.get_oid(name) for name in types]
    transformer.set_dumper_types(oids, pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    data = b"".join(bytes(formatter.write_row(row)) for row in rows) + bytes(formatter.end())
    return h.copy(copy_from_stdin.replace("FROM STDIN", "FROM '/dev/blob'"), data)
