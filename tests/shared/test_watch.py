"""``liq watch`` against a real Redis, and its webhook against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import msgspec
import pytest
import redis as syncredis
from click.testing import CliRunner

from shared import codec, keys
from shared.backoff import Backoff
from shared.cli import cli
from shared.models import CascadeEvent, FactorScores, RiskBand
from shared.watch import Alert, BandFilter, Watch, cascade_line, liquidation_line, watch
from shared.webhook import WebhookSender
from tests.factories import liq

T0 = 1_764_554_767_000  # 2025-12-01 02:06:07 UTC


def cascade(phase: str, band: RiskBand = "high", cascade_id: str = "BTCUSDT-1", **over: Any) -> CascadeEvent:
    fields: dict[str, Any] = {
        "cascade_id": cascade_id, "symbol": "BTCUSDT", "phase": phase, "start_ms": T0,
        "end_ms": T0 + 42_000, "venues": ["bybit", "okx"], "count": 5, "total_notional_usd": 125_000.0,
        "long_notional_usd": 93_750.0,
        "short_notional_usd": 31_250.0, "risk_score": 1.234, "peak_risk_score": 1.3, "band": band,
        "factors": FactorScores(), "cross_exchange": True, "published_ms": T0 + 123}
    return CascadeEvent(**{**fields, **over})


def test_lines_say_what_happened() -> None:
    assert cascade_line(cascade("start")) == (
        "2025-12-01 02:06:07.123Z  CASCADE START     BTCUSDT      high     1.23  5 liq  $125,000 long 75%  "
        "bybit,okx (cross-exchange)  [BTCUSDT-1]")
    end = cascade_line(cascade("end", cross_exchange=False, venues=["okx"], risk_score=0.77))
    assert end == ("2025-12-01 02:06:07.123Z  CASCADE END       BTCUSDT      high     1.30 peak  5 liq  "
                   "$125,000 long 75%  okx (single venue)  lasted 42s  [BTCUSDT-1]"), "the band is the peak's"
    big = liq(exchange="binance_usdm", price=67_210.5, quantity=20.0, timestamp_ms=T0)
    assert liquidation_line(big) == (
        "2025-12-01 02:06:07.000Z  LIQUIDATION       BTCUSDT      long  $1,344,210 @ 67210.5  binance_usdm")
    unknown = msgspec.structs.replace(big, notional_known=False, quantity_unit="contracts")
    assert "20 contracts @ 67210.5" in liquidation_line(unknown)


def test_a_cascade_shown_is_followed_to_its_end_whatever_its_band() -> None:
    bands = BandFilter("high")
    assert not bands.admits(cascade("start", "moderate", "a"))
    assert not bands.admits(cascade("end", "moderate", "a")), "never shown: its end is not either"
    assert bands.admits(cascade("start", "high", "b"))
    assert bands.admits(cascade("escalate", "moderate", "b")), "it fell back, but it is being followed"
    assert bands.admits(cascade("end", "low", "b"))
    assert bands.shown == set()


def _add(r: syncredis.Redis, stream: str, message: msgspec.Struct) -> None:
    r.xadd(stream, {codec.PAYLOAD_FIELD: codec.encode(message)})


@pytest.mark.integration
def test_history_then_new_messages_then_idle(r: syncredis.Redis) -> None:
    _add(r, keys.CASCADE_STREAM, cascade("start", "moderate", "old"))
    _add(r, keys.CASCADE_STREAM, cascade("start", "high", "a"))
    small, big = liq(quantity=0.1), liq(quantity=20.0, exchange="okx")
    stream = keys.event_stream(keys.shard_of("BTCUSDT", 4))
    _add(r, stream, big)  # before the watcher started: not shown (it is not a cascade)
    seen: list[Alert] = []
    spec = Watch(shards=4, min_band="high", big_usd=1_000_000)

    assert watch(r, spec, seen.append, last=5, follow=False) == 1
    assert [a.line for a in seen] == [cascade_line(cascade("start", "high", "a"))]
    _add(r, stream, small)
    _add(r, stream, big)
    r.xadd(stream, {codec.PAYLOAD_FIELD: b"not json"})
    _add(r, keys.CASCADE_STREAM, cascade("end", "low", "a"))
    seen.clear()
    assert watch(r, spec, seen.append, follow=False) == 0, "a new watcher starts at the newest entries"
    spec_follow = Watch(shards=4, min_band="high", big_usd=1_000_000)
    spec_follow.bands.shown.add("a")
    stop, started = threading.Event(), threading.Event()
    alerts: queue.Queue[Alert] = queue.Queue()

    def follow() -> None:
        watch(r, spec_follow, alerts.put, stop=stop, on_start=started.set)

    worker = threading.Thread(target=follow)
    worker.start()
    try:
        assert started.wait(timeout=10), "the watcher fixed where it starts"
        _add(r, stream, small)
        _add(r, stream, big)
        _add(r, keys.CASCADE_STREAM, cascade("end", "low", "a"))
        got = [alerts.get(timeout=10), alerts.get(timeout=10)]
    finally:
        stop.set()
        worker.join(timeout=10)
    assert sorted(a.kind for a in got) == ["cascade", "liquidation"]
    assert {a.line for a in got} == {liquidation_line(big), cascade_line(cascade("end", "low", "a"))}
    assert alerts.empty(), "the small liquidation and the bad entry make no alert"


@pytest.mark.integration
def test_the_command_prints_json_lines(redis_url: str, r: syncredis.Redis) -> None:
    _add(r, keys.CASCADE_STREAM, cascade("start"))
    result = CliRunner().invoke(cli, ["watch", "--last", "3", "--no-follow", "--json"],
                                env={"LIQ_REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    body = json.loads(line)
    assert (body["kind"], body["phase"], body["cascade_id"], body["text"]) == (
        "cascade", "start", "BTCUSDT-1", cascade_line(cascade("start")))


@pytest.mark.integration
def test_the_last_history_is_shown_but_not_posted_again_to_the_webhook(redis_url: str,
                                                                        r: syncredis.Redis) -> None:
    """Every start of a watcher with --last would otherwise post old alerts to the chat again."""
    _add(r, keys.CASCADE_STREAM, cascade("start"))
    endpoint = Endpoint([])
    try:
        result = CliRunner().invoke(cli, ["watch", "--last", "3", "--no-follow", "--webhook", endpoint.url],
                                    env={"LIQ_REDIS_URL": redis_url})
    finally:
        endpoint.close()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == cascade_line(cascade("start"))
    assert endpoint.bodies.empty()


class Endpoint:
    """An HTTP server on 127.0.0.1 that answers with the given statuses in turn (then 200) and
    queues every body it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.statuses = statuses
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                key = self.headers["Idempotency-Key"]
                endpoint.bodies.put({"status": status, "idempotency_key": key, **body})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_delivers_each_alert_and_retries_a_failing_endpoint() -> None:
    endpoint = Endpoint([503, 500])
    sender = WebhookSender(endpoint.url, backoff=Backoff(base_s=0.001, cap_s=0.01))
    try:
        alert = Alert("cascade", cascade_line(cascade("start")), cascade("start"))
        sender.send(alert.as_json())
        received = [endpoint.bodies.get(timeout=10) for _ in range(3)]
    finally:
        sender.close()
        endpoint.close()
    assert [b["status"] for b in received] == [503, 500, 200]
    assert len({b["idempotency_key"] for b in received}) == 1, "a retry repeats the alert's key"
    body = received[-1]
    assert body["text"] == body["content"] == alert.line
    assert (body["kind"], body["cascade_id"], body["total_notional_usd"]) == (
        "cascade", "BTCUSDT-1", 125_000.0)
    assert (sender.delivered, sender.failed) == (1, 0)


def test_webhook_gives_up_on_a_request_the_endpoint_refuses() -> None:
    endpoint = Endpoint([400])
    sender = WebhookSender(endpoint.url, backoff=Backoff(base_s=0.001, cap_s=0.01))
    try:
        sender.send({"text": "x"})
        sender.send({"text": "y"})
        received = [endpoint.bodies.get(timeout=10) for _ in range(2)]
    finally:
        sender.close()
        endpoint.close()
    assert [(b["status"], b["text"]) for b in received] == [(400, "x"), (200, "y")], "a 400 is not retried"
    assert received[0]["idempotency_key"] != received[1]["idempotency_key"]
    assert (sender.delivered, sender.failed) == (1, 1)
    with pytest.raises(ValueError, match="http"):
        WebhookSender("ftp://example.org")


def test_webhook_unreachable_is_retried_then_given_up_without_blocking(
        caplog: pytest.LogCaptureFixture) -> None:
    sender = WebhookSender("http://127.0.0.1:9/hook", attempts=3, backoff=Backoff(base_s=0.001, cap_s=0.01))
    sender.send({"text": "x"})  # returns at once
    sender.close(wait_s=30)
    assert (sender.delivered, sender.failed) == (0, 1)
    assert "gave up on an alert after 3 attempt(s): URLError" in caplog.text


@pytest.mark.integration
def test_history_does_not_repeat_what_follows_and_replays_are_not_alerted_again(r: syncredis.Redis) -> None:
    _add(r, keys.CASCADE_STREAM, cascade("start", cascade_id="a"))
    seen: list[Alert] = []

    def meanwhile() -> None:  # between fixing the start and reading the history
        _add(r, keys.CASCADE_STREAM, cascade("start", cascade_id="b"))
        r.xadd(keys.CASCADE_STREAM, {codec.PAYLOAD_FIELD: codec.encode(cascade("start", cascade_id="a")),
                                     codec.TARGET_GROUP_FIELD: b"writer"})  # liq dlq replay --group writer

    assert watch(r, Watch(shards=4), seen.append, last=5, follow=False, on_start=meanwhile) == 2
    assert [cast(CascadeEvent, a.message).cascade_id for a in seen] == ["a", "b"], (
        "a once, b once, the replay not at all")


def test_a_redis_outage_is_waited_out_while_following(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import watch as watch_module

    monkeypatch.setattr(watch_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.001))
    failures = [syncredis.ConnectionError("down"), syncredis.ConnectionError("down")]

    def read() -> str:
        if failures:
            raise failures.pop()
        return "read"

    assert watch_module._retrying(read, True, threading.Event()) == "read"
    failures.append(syncredis.ConnectionError("down"))
    with pytest.raises(syncredis.ConnectionError):
        watch_module._retrying(read, False, None)
    stopped = threading.Event()
    stopped.set()
    failures.append(syncredis.ConnectionError("down"))
    assert watch_module._retrying(read, True, stopped) is None


def test_a_redis_outage_while_following_is_one_line_when_it_begins_and_one_when_it_ends(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shared import watch as watch_module

    monkeypatch.setattr(watch_module, "Backoff", lambda **_: Backoff(base_s=0.001, cap_s=0.001))
    failures = [syncredis.ConnectionError("Connection refused")] * 5

    def read() -> str:
        if failures:
            raise failures.pop()
        return "read"

    assert watch_module._retrying(read, True, threading.Event()) == "read"
    assert capsys.readouterr().err.splitlines() == [
        "redis unavailable (Connection refused); retrying with backoff",
        "redis available again after 5 failed tries",
    ]


def test_webhook_survives_a_bad_status_line_and_any_failure_nobody_foresaw() -> None:
    import socketserver

    class BadStatus(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")

    server = socketserver.TCPServer(("127.0.0.1", 0), BadStatus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sender = WebhookSender(f"http://127.0.0.1:{server.server_address[1]}/", attempts=1,
                           backoff=Backoff(base_s=0.001, cap_s=0.001))
    try:
        problem = sender._post(b"{}", "key")
        assert problem is not None and problem.startswith("BadStatusLine"), problem
        calls: list[int] = []

        def flaky(data: bytes, key: str) -> str | None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a failure nobody foresaw")
            return None

        sender._post = flaky  # type: ignore[method-assign]
        sender.send({"text": "first"})
        sender.send({"text": "second"})
    finally:
        sender.close(wait_s=30)
        server.shutdown()
        server.server_close()
    assert (sender.failed, sender.delivered) == (1, 1), "the thread lived on to send the second"
