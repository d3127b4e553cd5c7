"""The ``liq`` command: one click group whose subcommands live in the components.

Subcommands are named by string and imported only when invoked, so a collector never imports
numpy or psycopg, and ``shared`` never imports a component at module load.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import EX_CONFIG, ConfigError, ServerError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("shared.up", "up"),
    "status": ("shared.status", "status"),
    "bench": ("shared.bench", "bench"),
    "dlq": ("shared.dlq", "dlq"),
    "watch": ("shared.watch", "watch_command"),
    "collect": ("collectors.cli", "collect"),
    "venues": ("collectors.cli", "venues"),
    "parse": ("collectors.cli", "parse"),
    "replay": ("collectors.cli", "replay"),
    "simulate": ("collectors.sim.cli", "simulate"),
    "detect": ("detector.cli", "detect"),
    "evaluate": ("detector.cli", "evaluate"),
    "aggregate": ("aggregator.cli", "aggregate"),
    "write": ("writer.cli", "write"),
    "migrate": ("writer.cli", "migrate"),
}

HELP: dict[str, str] = {
    "up": "Start servers (embedded unless LIQ_REDIS_URL/LIQ_PG_DSN), migrate, run every process.",
    "status": "Streams, consumer groups, venues, keys and table counts of a running system.",
    "watch": "Print cascades (and big liquidations) as they happen; optionally to a webhook.",
    "dlq": "Dead letters: list them, replay them to the group that set them aside, or drop them.",
    "bench": "Measure throughput and latency of each stage against a bare baseline.",
    "collect": "Run one venue's collector.",
    "venues": "List every venue: endpoint, markets, feed semantics, health.",
    "parse": "Normalize raw frames (JSON lines on stdin) to liquidations (JSON lines).",
    "replay": "Feed a recorded frame file back through the parsers into the pipeline.",
    "simulate": "Run the local exchange simulator (WebSocket servers on 127.0.0.1).",
    "detect": "Run the cascade detector (or --replay a file offline).",
    "evaluate": "Score the detector on labelled scenarios: precision, recall, delay.",
    "aggregate": "Run the price-level / time-bucket aggregator.",
    "write": "Run the database writer.",
    "migrate": "Apply SQL migrations (TimescaleDB or plain PostgreSQL).",
}


class SettingsRefused(click.ClickException):
    """A :class:`ConfigError` on the command line: its one line, and exit code :data:`EX_CONFIG`."""

    exit_code = EX_CONFIG


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        if ctx.resilient_parsing or "--help" in sys.argv[1:2]:
            return click.Command(cmd_name, help=HELP[cmd_name], callback=lambda: None)
        module = importlib.import_module(target[0])
        command = getattr(module, target[1])
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise SettingsRefused(str(exc)) from exc
        except ServerError as exc:
            raise click.ClickException(str(exc)) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:  # a one-shot tool meeting no Redis
            raise click.ClickException(redis_failure_line(exc)) from exc
        except BrokenPipeError:  # the reader left (`liq parse … | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush fails too
            raise SystemExit(0) from None


def redis_failure_line(exc: BaseException) -> str:
    """A one-shot tool's line for a Redis failure, read as ``liq status`` reads it
    (``shared.streams.redis_failure``): a refused password or a Redis loading its data is a
    redis-py ConnectionError too, but that Redis answered."""
    from shared.streams import redis_failure  # the stream machinery only when a command met one

    failure = redis_failure(exc)
    if failure.kind == "unreachable":
        return f"Redis does not answer: {failure.text}"
    if failure.kind == "loading":
        return f"Redis is loading its data (it answers once done; try again): {failure.text}"
    return f"Redis refused the request: {failure.text}"


@click.group(cls=LazyGroup)
def cli() -> None:
    """Multi-exchange crypto liquidation aggregator."""
