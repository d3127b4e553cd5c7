"""``liq status``: one screen (or JSON document) describing a running system.

Streams (length, consumer groups with pending, lag, and whether any consumer still reads),
venues (connection state, reason, last-event age), ``liq:*`` keys by kind, cascade states, and
the database (row counts of the main tables and the storage mode report of
``liq_storage_status()``).

Where to look: ``LIQ_REDIS_URL`` / ``LIQ_PG_DSN`` when set, otherwise the URLs that ``liq up``
wrote to ``<data_dir>/up.json`` (``shared.discovery``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import click
import redis
from redis.exceptions import RedisError

from shared import dlq as dead_letters
from shared import keys
from shared.discovery import discover
from shared.redisconn import entry_key, hash_text, make_sync_redis, reply_text, wrong_type
from shared.settings import CommonSettings, check_dsn, load
from shared.streams import RedisFailureKind, redis_failure
from shared.venue_health import STOPPED_REASON, int_field, venue_health, venue_row
from shared.venues import VENUE_NAMES

TABLES = ("liquidations_significant", "cascade_events", "liquidations_hourly", "liquidation_heatmap",
          "exchange_comparison", "liquidation_cascades")
STALE_CONSUMER_MS = 60_000
"""A live consumer reads what waits for its group within a second, and retries an outage every
30 s at most: entries waiting while none has read for this long means none is running (or it is
stuck). Before Redis 7.2 a read that finds nothing does not reset a consumer's idle time, so a
dead consumer's entries waiting to be claimed (up to ``claim_every_s``) on a quiet stream can
show the group as stalled for that long."""


REDIS_FAILURES: dict[RedisFailureKind, tuple[str, str]] = {
    "unreachable": ("redis_error", "REDIS UNREACHABLE"),
    "loading": ("redis_loading", "REDIS LOADING"),
    "error": ("redis_failed", "REDIS ERROR"),
}
"""Each kind of Redis failure (``shared.streams.redis_failure``): its key in the report, and the
heading ``liq status`` shows it under."""


def collect_status(redis_url: str | None, pg_dsn: str | None, shards: int) -> dict[str, Any]:
    report: dict[str, Any] = {"redis_url": redis_url, "pg_dsn": pg_dsn}
    if redis_url:
        report.update(_redis_report(redis_url, shards))
    if pg_dsn:
        report["database"] = database_status(pg_dsn)
    return report


def _redis_report(redis_url: str, shards: int) -> dict[str, Any]:
    """:func:`redis_status`, or why there is none under the key :data:`REDIS_FAILURES` gives its
    kind: ``redis_error`` when Redis does not answer, ``redis_loading`` while it loads its data,
    ``redis_failed`` when it answers with an error (a ``liq:*`` key of another type, say)."""
    client = make_sync_redis(redis_url)
    try:
        return redis_status(client, shards)
    except (RedisError, OSError) as exc:
        failure = redis_failure(exc)
        return {REDIS_FAILURES[failure.kind][0]: failure.text}
    finally:
        client.close()


R = TypeVar("R")


def _present(found: list[R | None]) -> list[R]:
    return [x for x in found if x]


class _Misplaced(list[dict[str, str]]):
    """The ``liq:*`` keys a report found holding another type than the project writes there
    (another program, a hand edit): each is named, and the rest of the report still shown."""

    def read(self, client: redis.Redis, key: str, expected: str, read: Callable[[], R]) -> R | None:
        """``read()`` of ``key``, or None (the key noted here) when it holds another type."""
        try:
            return read()
        except redis.ResponseError as exc:
            if not wrong_type(exc):
                raise
        self.append({"key": key, "type": reply_text(client.type(key)), "expected": expected})
        return None


def redis_status(client: redis.Redis, shards: int) -> dict[str, Any]:
    now_ms = time.time_ns() // 1_000_000
    streams = keys.all_streams(shards)
    misplaced = _Misplaced()
    dead = [misplaced.read(client, keys.dead_letter_stream(s), "stream", partial(_dead_letters, client, s))
            for s in streams]
    stray = [misplaced.read(client, s, "stream", partial(_stray, client, s))
             for s in _stray_stream_keys(client, shards)]
    report = {
        "streams": _present([misplaced.read(client, s, "stream", partial(_stream_info, client, s))
                             for s in streams]),
        "dead_letters": _present(dead),
        "venues": _venues(client, now_ms, misplaced),
        "keys": {kind: _count_keys(client, pattern) for kind, pattern in keys.KEY_KINDS.items()},
        "cascades": _cascade_states(client, _detected_shards(client), shards, misplaced),
        "shards": shards,
        "stray_streams": _present(stray),
        "memory_bytes": int(client.info("memory")["used_memory"]),
    }
    return {**report, "misplaced": list(misplaced)}


def _stray_stream_keys(client: redis.Redis, shards: int) -> list[str]:
    """Event streams beyond ``shards``: written by a process run with a larger LIQ_SHARDS, read
    by no consumer of this one."""
    known = set(keys.event_streams(shards))
    found = {reply_text(k) for k in client.scan_iter(match=keys.EVENT_STREAM_PATTERN, count=1000)}
    return sorted(found - known)


def _stray(client: redis.Redis, stream: str) -> dict[str, Any]:
    return {"stream": stream, "length": int(client.xlen(stream))}



def _stream_info(client: redis.Redis, stream: str) -> dict[str, Any]:
    info: dict[str, Any] = {"stream": stream, "length": int(client.xlen(stream)), "groups": []}
    if not client.exists(stream):
        return info
    groups: list[dict[Any, Any]] = client.xinfo_groups(stream)
    # the newest entry tells whether entries wait only where Redis cannot count a group's lag
    newest: Any = client.xrevrange(stream, count=1) if any(g.get("lag") is None for g in groups) else []
    for group in groups:
        name, pending, lag = reply_text(group["name"]), int(group["pending"]), group.get("lag")
        lag = None if lag is None else int(lag)
        idle_ms = _least_idle_ms(client, stream, name)
        unread = bool(newest) and entry_key(newest[0][0]) > entry_key(group["last-delivered-id"])
        info["groups"].append({
            "group": name, "consumers": int(group["consumers"]), "pending": pending, "lag": lag,
            "idle_s": None if idle_ms is None else round(idle_ms / 1000, 1),
            "stalled": group_stalled(pending, lag, idle_ms, unread),
        })
    return info


def _least_idle_ms(client: redis.Redis, stream: str, group: str) -> int | None:
    """How long ago the group's most recent reader read (None: it has no consumer)."""
    consumers: Any = client.xinfo_consumers(stream, group)
    return min((int(c["idle"]) for c in consumers), default=None)


def group_stalled(pending: int, lag: int | None, idle_ms: int | None, unread: bool = False) -> bool:
    """Entries wait for the group (delivered and not acked, or not delivered yet) and none of
    its consumers has read for :data:`STALE_CONSUMER_MS`, or it has none: nothing takes them.
    ``unread``: the stream holds an entry after the group's last delivered one, which says
    whether entries wait when Redis cannot count the lag (Redis 6.2, an entry deleted)."""
    waiting = pending > 0 or (lag > 0 if lag is not None else unread)
    return waiting and (idle_ms is None or idle_ms > STALE_CONSUMER_MS)


def _dead_letters(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    """The dead-letter stream of ``stream`` when it holds entries: its length and the newest
    entry's group, stage (``decode`` or ``handle``) and reason."""
    dlq = keys.dead_letter_stream(stream)
    length = int(client.xlen(dlq))
    if not length:
        return None
    newest: Any = client.xrevrange(dlq, count=1)
    last = dead_letters.parse(dlq, reply_text(newest[0][0]), newest[0][1]) if newest else None
    return {"stream": dlq, "length": length, "last_id": last.id if last else None,
            "last_group": last.group if last else "", "last_stage": last.stage if last else "decode",
            "last_reason": last.reason if last else ""}


def _venues(client: redis.Redis, now_ms: int, misplaced: _Misplaced) -> list[dict[str, Any]]:
    rows = []
    for name in VENUE_NAMES:
        h = misplaced.read(client, keys.venue_health(name), "hash", partial(venue_health, client, name))
        if not h:
            continue
        rows.append({
            "venue": name, **venue_row(h, now_ms), "connections": h.get("connections", ""),
            "parse_errors": int_field(h, "parse_errors"),
            "duplicates": int_field(h, "duplicates"),
            "reconnects": int_field(h, "reconnects"),
        })
    return rows


def _count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


NO_DETECTOR = "no detector runs on its shard: as the last one left it"


def _detected_shards(client: redis.Redis) -> set[int]:
    """The shards a running detector consumes, from the detectors' heartbeats (``liq:proc:detect-*``,
    gone 15 s after the process stops)."""
    shards: set[int] = set()
    for key in client.scan_iter(match=keys.process_heartbeat("detect-*"), count=1000):
        listed = reply_text(client.hget(key, "shards") or b"")
        shards.update(int(k) for k in listed.split(",") if k.strip().isdigit())
    return shards


def _cascade_states(client: redis.Redis, detected: set[int], shards: int,
                    misplaced: _Misplaced) -> list[dict[str, Any]]:
    """Each symbol's status hash, and whether a detector runs on its shard now: with none, the
    hash is what the last one left (``active`` included) until one starts and carries on."""
    out: list[dict[str, Any]] = []
    for raw_key in client.scan_iter(match=keys.KEY_KINDS["cascade_status"], count=1000):
        key = reply_text(raw_key)
        raw: Any = misplaced.read(client, key, "hash", partial(client.hgetall, key))
        if raw is None:
            continue
        fields = hash_text(raw)
        symbol = keys.status_symbol(key)
        running = keys.shard_of(symbol, shards) in detected
        out.append({"symbol": symbol, **fields, "detector_running": running})
    return sorted(out, key=lambda r: str(r["symbol"]))


def database_status(pg_dsn: str) -> dict[str, Any]:
    import psycopg  # here, not at the top: only a report with a database needs it

    try:
        with psycopg.connect(pg_dsn, connect_timeout=5, autocommit=True) as conn:
            storage = {}
            has_fn = conn.execute("SELECT to_regprocedure('liq_storage_status()') IS NOT NULL").fetchone()
            if has_fn and has_fn[0]:
                storage = {str(k): str(v) for k, v in conn.execute("SELECT * FROM liq_storage_status()")}
            counted = {k.removeprefix("rows."): int(v) for k, v in storage.items() if k.startswith("rows.")}
            counts = {}
            for table in TABLES:  # in display order; each table counted once
                if table in counted:
                    counts[table] = counted[table]
                    continue
                row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if row and row[0]:
                    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                    counts[table] = int(count[0]) if count else 0
            facts = {k: v for k, v in storage.items() if not k.startswith("rows.")}
            return {"rows": counts, "storage": facts}
    except psycopg.Error as exc:
        return {"error": str(exc).strip()}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True,
              help="Exit 1 when something needs someone (listed on stderr): a group no consumer "
                   "reads, dead letters, a venue down or degraded, stray streams.")
def status(as_json: bool, check: bool) -> None:
    """Streams, consumer groups, venues, keys and table counts of a running system."""
    settings = load(CommonSettings)
    check_dsn(settings.pg_dsn)
    found = discover(settings, dict(os.environ))
    if not found.redis_url and not found.pg_dsn:
        raise click.ClickException(found.not_found("LIQ_REDIS_URL and LIQ_PG_DSN are"))
    report = collect_status(found.redis_url, found.pg_dsn, found.shards)
    report["problems"] = problems(report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render(report))
    if check:  # a server that does not answer is one of them
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
    no_redis_report = any(key in report for key, _ in REDIS_FAILURES.values())  # silent, loading, failing
    if no_redis_report or "error" in report.get("database", {}) or (check and report["problems"]):
        sys.exit(1)


def problems(report: dict[str, Any]) -> list[str]:
    """What in a status report needs someone: a server that does not answer, a group no consumer
    reads, dead letters, a venue down or degraded, or whose collector died (not one whose
    collector was asked to stop), a venue two collectors publish, event
    streams outside ``LIQ_SHARDS``. A quiet (``suspect``) venue is not one: markets go quiet."""
    found = [f"redis: {report[key]}" for key, _ in REDIS_FAILURES.values() if key in report]
    if "error" in report.get("database", {}):
        found.append(f"database: {report['database']['error']}")
    for stream in report.get("streams", []):
        found += [f"{stream['stream']} {g['group']}: no consumer reading (pending={g['pending']} "
                  f"lag={'n/a' if g['lag'] is None else g['lag']})" for g in stream["groups"] if g["stalled"]]
    found += [f"{d['stream']}: {d['length']} dead letters ({d['last_reason']})"
              for d in report.get("dead_letters", [])]
    found += [f"venue {v['venue']}: {v['state']} ({v['reason'] or 'no reason given'})"
              for v in report.get("venues", [])
              if v["state"] in ("down", "degraded", "stopped") and v["reason"] != STOPPED_REASON]
    found += [f"venue {v['venue']}: two collectors publish it ({' and '.join(v['collectors'])}): the "
              "aggregator counts what both receive twice" for v in report.get("venues", [])
              if len(v.get("collectors", ())) > 1]
    found += [f"{s['stream']}: {s['length']} entries outside LIQ_SHARDS={report['shards']}"
              for s in report.get("stray_streams", [])]
    found += [_misplaced_text(m) for m in report.get("misplaced", [])]
    return found


def _misplaced_text(key: dict[str, str]) -> str:
    return (f"{key['key']} holds a {key['type']}, not a {key['expected']}: not readable by liq (another "
            "program's key?); delete or rename it")


def _group_text(group: dict[str, Any]) -> str:
    lag = "n/a" if group["lag"] is None else group["lag"]
    text = f"{group['group']}: pending={group['pending']} lag={lag} consumers={group['consumers']}"
    if group["stalled"]:
        idle = "" if group["idle_s"] is None else f" for {group['idle_s']:.0f}s"
        text += f"  NO CONSUMER READING{idle}"
    return text


def render(report: dict[str, Any]) -> str:
    lines = [f"redis: {report.get('redis_url')}   postgres: {report.get('pg_dsn')}"]
    lines += [f"{heading}: {report[key]}" for key, heading in REDIS_FAILURES.values() if key in report]
    if "streams" in report:  # Redis answered: its sections, none over nothing when it did not
        lines += _redis_lines(report)
    db = report.get("database")
    if db is not None:
        lines += _database_lines(db)
    return "\n".join(lines)


def _redis_lines(report: dict[str, Any]) -> list[str]:
    memory = report.get("memory_bytes")
    lines = ["\nSTREAMS" + ("" if memory is None else f" (Redis memory {memory / 1e6:,.1f} MB)")]
    for s in report["streams"]:
        groups = "  ".join(_group_text(g) for g in s["groups"]) or "(no groups)"
        lines.append(f"  {s['stream']:<24} len={s['length']:<8} {groups}")
    stray = report.get("stray_streams", [])
    if stray:
        listed = ", ".join(f"{x['stream']} ({x['length']} entries)" for x in stray)
        lines.append(f"\nSHARDS: {listed} are outside LIQ_SHARDS={report['shards']}: no consumer reads them; "
                     "a process runs with another LIQ_SHARDS")
    misplaced = report.get("misplaced", [])
    if misplaced:
        lines.append("\nKEYS OF ANOTHER TYPE (left out of this report)")
        lines += [f"  {_misplaced_text(m)}" for m in misplaced]
    dead = report.get("dead_letters", [])
    if dead:
        lines.append("\nDEAD LETTERS (entries set aside: liq dlq list, liq dlq replay, liq dlq drop)")
    for d in dead:
        lines.append(f"  {d['stream']:<24} len={d['length']:<8} last: {d['last_group'] or '?'} "
                     f"{d['last_stage']}: {d['last_reason'][:120]}")
    lines.append("\nVENUES")
    for v in report.get("venues", []):
        age = "-" if v["last_event_age_s"] is None else f"{v['last_event_age_s']}s"
        reason = f"  reason: {v['reason']}" if v["reason"] else ""
        lines.append(f"  {v['venue']:<15} {v['state']:<11} conn={v['connections']:<5} events={v['events']:<7}"
                     f" last={age:<8} parse_errors={v['parse_errors']} dups={v['duplicates']}"
                     f" reconnects={v['reconnects']}{reason}{_twin_text(v)}")
    lines.append("\nKEYS  " + "  ".join(f"{k}={n}" for k, n in report.get("keys", {}).items()))
    lines.append("\nCASCADES")
    for c in report.get("cascades", []):
        shown = " ".join(f"{k}={v}" for k, v in c.items() if k not in ("symbol", "detector_running"))
        stale = "" if c.get("detector_running", True) else f"  ({NO_DETECTOR})"
        lines.append(f"  {c['symbol']:<12} {shown}{stale}")
    return lines


def _twin_text(venue: dict[str, Any]) -> str:
    collectors = venue.get("collectors", ())
    return f"  TWO COLLECTORS: {' and '.join(collectors)}" if len(collectors) > 1 else ""


def _database_lines(db: dict[str, Any]) -> list[str]:
    lines = ["\nDATABASE"]
    if "error" in db:
        lines.append(f"  UNREACHABLE: {db['error']}")
    for table, n in db.get("rows", {}).items():
        lines.append(f"  {table:<26} {n} rows")
    for k, v in db.get("storage", {}).items():
        lines.append(f"  {k}: {v}")
    return lines
