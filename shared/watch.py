"""``liq watch``: the terminal alarm. Cascades as the detector publishes them, and, on request,
every single liquidation above a size, one line each (or one JSON object each), optionally
forwarded to a webhook (``shared.webhook``).

A watcher reads with plain XREAD, not in a consumer group: it takes nothing from the
detector, aggregator or writer, and any number of watchers see everything. It starts at the
newest entry of each stream (after printing the last ``--last`` cascade messages), remembers
the last id it printed per stream, so no entry is missed or shown twice between reads.

The formatting and the band filter are pure (:func:`cascade_line`, :func:`liquidation_line`,
:class:`BandFilter`); :func:`watch` is the reading loop.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec
import redis
from redis.exceptions import RedisError

from shared import codec, keys
from shared.backoff import Backoff
from shared.discovery import discover, require_redis
from shared.models import CascadeEvent, Liquidation, RiskBand
from shared.redisconn import make_sync_redis, reply_text, stream_entries
from shared.settings import CommonSettings, load

BANDS: tuple[RiskBand, ...] = ("low", "moderate", "high", "extreme")
READ_COUNT = 500
BLOCK_MS = 1000


@dataclass(frozen=True)
class Alert:
    """One thing to show: its line, and the message it was made from (for JSON and webhooks)."""

    kind: str
    """``cascade`` or ``liquidation``."""
    line: str
    message: CascadeEvent | Liquidation

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.line, **msgspec.to_builtins(self.message)}


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def cascade_line(ev: CascadeEvent) -> str:
    """``2026-12-01 02:06:07.123Z  CASCADE START     BTCUSDT  high 1.23  5 liq  $125,000 …``; an end
    shows the peak score, which its band describes (``high 1.30 peak``)."""
    total = ev.total_notional_usd
    score = f"{ev.peak_risk_score:.2f} peak" if ev.phase == "end" else f"{ev.risk_score:.2f}"
    long_share = f" long {ev.long_notional_usd / total:.0%}" if total > 0 else ""
    scope = "cross-exchange" if ev.cross_exchange else "single venue"
    lasted = f"  lasted {(ev.end_ms - ev.start_ms) / 1000:.0f}s" if ev.phase == "end" else ""
    return (f"{_clock(ev.published_ms or ev.end_ms)}  CASCADE {ev.phase.upper():<9} {ev.symbol:<12} "
            f"{ev.band:<8} {score}  {ev.count} liq  ${total:,.0f}{long_share}  "
            f"{','.join(ev.venues)} ({scope}){lasted}  [{ev.cascade_id}]")


def liquidation_line(liq: Liquidation) -> str:
    """``2026-12-01 02:06:07.123Z  LIQUIDATION       BTCUSDT      long  $1,234,567 @ 67210.5 …``"""
    value = f"${liq.notional_usd:,.0f}" if liq.notional_known else f"{liq.quantity:g} {liq.quantity_unit}"
    return (f"{_clock(liq.timestamp_ms)}  LIQUIDATION       {liq.symbol:<12} {liq.side:<5} {value} "
            f"@ {liq.price:g}  {liq.exchange}")


@dataclass
class BandFilter:
    """Cascade messages at ``min_band`` or above; a cascade once shown is followed to its end,
    even when its band falls back below."""

    min_band: RiskBand = "low"
    shown: set[str] = field(default_factory=set)

    def admits(self, ev: CascadeEvent) -> bool:
        if ev.cascade_id in self.shown:
            if ev.phase == "end":
                self.shown.discard(ev.cascade_id)
            return True
        if BANDS.index(ev.band) < BANDS.index(self.min_band):
            return False
        if ev.phase != "end":
            self.shown.add(ev.cascade_id)
        return True


@dataclass
class Watch:
    """What to show: cascades at ``min_band`` or above, and liquidations of ``big_usd`` or more
    (0: none)."""

    shards: int
    min_band: RiskBand = "low"
    big_usd: float = 0.0
    bands: BandFilter = field(init=False)

    def __post_init__(self) -> None:
        self.bands = BandFilter(self.min_band)

    def streams(self) -> list[str]:
        return [keys.CASCADE_STREAM, *(keys.event_streams(self.shards) if self.big_usd > 0 else [])]

    def alert(self, stream: str, payload: bytes) -> Alert | None:
        """The alert an entry makes, if any (undecodable entries make none)."""
        try:
            if stream == keys.CASCADE_STREAM:
                ev = codec.decode_cascade(payload)
                return Alert("cascade", cascade_line(ev), ev) if self.bands.admits(ev) else None
            liq = codec.decode_liquidation(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if liq.notional_known and liq.notional_usd >= self.big_usd:
            return Alert("liquidation", liquidation_line(liq), liq)
        return None


def _newest_ids(client: redis.Redis, streams: Sequence[str]) -> dict[str, str]:
    out = {}
    for stream in streams:
        newest: Any = client.xrevrange(stream, count=1)
        out[stream] = reply_text(newest[0][0]) if newest else "0-0"
    return out


WATCHER = "liq-watch"
"""Not a consumer group: a name no ``for`` field names, so entries replayed from a dead-letter
stream (``liq dlq replay``) are not alerted a second time."""


def history(client: redis.Redis, spec: Watch, last: int, until: str = "+") -> list[Alert]:
    """The alerts of the last ``last`` cascade messages up to ``until``, oldest first."""
    if last <= 0:
        return []
    newest: Any = client.xrevrange(keys.CASCADE_STREAM, max=until, count=last)
    return [a for _, fields in reversed(newest) if (a := _alert(spec, keys.CASCADE_STREAM, fields))]


def _alert(spec: Watch, stream: str, fields: Any) -> Alert | None:
    try:
        payload = codec.payload_for(fields, WATCHER)
    except ValueError:
        return None
    return None if payload is None else spec.alert(stream, payload)


def watch(client: redis.Redis, spec: Watch, emit: Callable[[Alert], None], *, last: int = 0,
          follow: bool = True, stop: threading.Event | None = None,
          on_start: Callable[[], None] | None = None,
          emit_history: Callable[[Alert], None] | None = None) -> int:
    """Emit the history (through ``emit_history`` when given), then every new alert until
    ``stop`` (``follow``) or until the streams have nothing new (not ``follow``); returns how
    many alerts were emitted. ``on_start`` is called once the starting point is fixed: every
    entry added after it will be seen."""
    positions = _retrying(lambda: _newest_ids(client, spec.streams()), follow, stop)
    if positions is None:
        return 0
    if on_start is not None:
        on_start()
    emitted = 0
    for alert in history(client, spec, last, until=positions[keys.CASCADE_STREAM]):
        (emit_history or emit)(alert)
        emitted += 1
    while stop is None or not stop.is_set():
        reply = _retrying(lambda: client.xread(
            dict(positions), count=READ_COUNT,  # type: ignore[arg-type]  # str ids are fine
            block=BLOCK_MS if follow else None), follow, stop)
        entries = stream_entries(reply)
        if not entries and not follow:
            return emitted
        for stream, entry_id, fields in entries:
            positions[stream] = entry_id
            found = _alert(spec, stream, fields)
            if found is not None:
                emit(found)
                emitted += 1
    return emitted


R = TypeVar("R")


def _retrying(read: Callable[[], R], follow: bool, stop: threading.Event | None) -> R | None:
    """``read()``; while following, a Redis outage is waited out (with backoff; a line on
    stderr when it begins, one when it ends) instead of ending the watch. None when ``stop``
    was set meanwhile."""
    backoff = Backoff(base_s=0.5, cap_s=10.0)
    while True:
        try:
            value = read()
        except (RedisError, OSError) as exc:
            if not follow:
                raise
            if not backoff.attempts:
                click.echo(f"redis unavailable ({exc}); retrying with backoff", err=True)
            if (stop or threading.Event()).wait(backoff.next_delay()):  # a pause, cut short by a stop
                return None
            continue
        if backoff.attempts:
            click.echo(f"redis available again after {backoff.attempts} failed tries", err=True)
        return value


# -- command line ---------------------------------------------------------------------------------

def _webhook_url(url: str | None) -> str | None:
    from shared.webhook import check_url

    try:
        return None if url is None else check_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.option("--min-band", type=click.Choice(BANDS), default="low", show_default=True,
              help="Only cascades that reach this band (a cascade shown is followed to its end).")
@click.option("--big", "big_usd", type=click.FloatRange(min=0), default=0.0,
              help="Also every single liquidation of at least this many USD (0: none).")
@click.option("--last", type=click.IntRange(min=0), default=0, help="First show the last N cascade messages.")
@click.option("--no-follow", is_flag=True, help="Show what is there and exit (like tail without -f).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--webhook", callback=lambda _c, _p, url: _webhook_url(url),
              help="Also POST each alert as JSON to this URL (Slack/Discord-style {text, content} "
                   "plus the message).")
def watch_command(min_band: RiskBand, big_usd: float, last: int, no_follow: bool, as_json: bool,
                  webhook: str | None) -> None:
    """Print cascades (and big liquidations) as they happen; Ctrl-C to stop."""
    from shared.webhook import WebhookSender

    found = discover(load(CommonSettings), dict(os.environ))
    redis_url = require_redis(found)
    sender = WebhookSender(webhook) if webhook else None

    def show(alert: Alert) -> None:
        click.echo(json.dumps(alert.as_json()) if as_json else alert.line)

    def emit(alert: Alert) -> None:  # a new alert; the --last history is only shown
        show(alert)
        if sender is not None:
            sender.send(alert.as_json())

    client = make_sync_redis(redis_url)
    spec = Watch(found.shards, min_band, big_usd)
    what = f"cascades ({min_band} and above)"
    if big_usd:
        what += f" and liquidations of ${big_usd:,.0f} or more"

    def started() -> None:
        if not no_follow:
            click.echo(f"watching {what} on {redis_url}; Ctrl-C to stop", err=True)

    try:
        watch(client, spec, emit, last=last, follow=not no_follow, on_start=started, emit_history=show)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        if sender is not None:
            if sender.waiting:
                click.echo(f"delivering {sender.waiting} alert(s) to the webhook (at most 10 s)", err=True)
            sender.close()
