"""``liq detect --replay`` end to end through click, and ``liq evaluate`` on a few seeds."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from detector.cli import detect, evaluate
from tests.detector.helpers import T0


def row(second: float, exchange: str, usd: float, symbol: str = "BTCUSDT", side: str = "long",
        **extra: object) -> str:
    return json.dumps({"exchange": exchange, "symbol": symbol, "symbol_native": symbol.lower(), "side": side,
                       "price": 50_000.0, "quantity": usd / 50_000.0, "notional_usd": usd,
                       "timestamp_ms": T0 + int(second * 1000), **extra})


LINES = [
    row(0, "bybit", 30_000), row(2, "okx", 20_000), row(4, "bybit", 30_000),
    "this is not json",
    row(6, "binance_usdm", 10_000), row(8, "okx", 15_000),  # BTC: 5 events, $105K, 3 venues
    '{"exchange": "okx", "symbol": "BTCUSDT"}',  # missing side, price, time
    row(9, "okx", 5_000, side="buy"),  # not a position side
    "",
    row(10, "bybit", 1_000, symbol="SOLUSDT"),  # alone: never a cascade
    row(20, "okx", 40_000, symbol="ETHUSDT", event_id="e1"),
    row(21, "okx", 40_000, symbol="ETHUSDT", event_id="e1"),  # duplicate id: ignored
    row(22, "okx", 40_000, symbol="ETHUSDT", event_id="e2"),
    json.dumps({"exchange": "okx", "symbol": "ETHUSDT", "side": "SHORT", "price": "2500",
                "quantity": 8, "timestamp_ms": str(T0 + 23_000)}),  # lenient: strings, case, notional
    row(24, "okx", 20_000, symbol="ETHUSDT", event_id="e4"),
    row(39, "okx", 20_000, symbol="ETHUSDT", event_id="e5"),  # ETH holds at 39 s; BTC quiet since 8 s
]


def test_replay_writes_exact_cascades_and_reports_bad_lines(tmp_path: Path) -> None:
    src, out = tmp_path / "events.jsonl", tmp_path / "cascades.jsonl"
    src.write_text("\n".join(LINES) + "\n")
    result = CliRunner().invoke(detect, ["--replay", str(src), "--out", str(out)], env={})
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["symbol"], r["ended"]) for r in rows] == [("BTCUSDT", "quiet"), ("ETHUSDT", "eof")]
    btc, eth = rows
    assert (btc["cascade_id"], btc["start_ms"], btc["end_ms"], btc["detected_ms"]) == (
        f"BTCUSDT-{T0}", T0, T0 + 8000, T0 + 8000)
    assert (btc["count"], btc["total_notional_usd"]) == (5, 105_000.0)
    assert btc["venues"] == ["binance_usdm", "bybit", "okx"]
    assert btc["cross_exchange"] is True and btc["band"] in {"low", "moderate", "high", "extreme"}
    assert set(btc["factors"]) == {"volume_concentration", "time_compression", "price_clustering",
                                   "side_imbalance", "institutional_ratio", "cross_exchange"}
    assert btc["peak_risk_score"] == max(btc["peak_risk_score"], btc["risk_score"])
    assert (eth["start_ms"], eth["end_ms"], eth["count"]) == (T0 + 20_000, T0 + 39_000, 5)
    assert eth["venues"] == ["okx"]
    assert (eth["total_notional_usd"], eth["long_notional_usd"], eth["short_notional_usd"]) == (
        140_000.0, 120_000.0, 20_000.0)
    assert eth["cross_exchange"] is False
    assert "replay: 15 lines, 12 events, 3 bad lines, 2 cascades" in result.stderr
    assert "bad line 4: JSON is malformed" in result.stderr
    assert "bad line 7: Object missing required field `side`" in result.stderr
    assert "bad line 8: side must be long or short, got 'buy'" in result.stderr


def test_replay_refuses_amounts_the_live_decoder_refuses() -> None:
    """A NaN would poison the window's running sums until the window empties."""
    from detector.replay import ReplayStats, replay

    stats = ReplayStats()
    lines = [row(0, "okx", 30_000, notional_usd="nan"), row(1, "okx", -500_000),
             row(2, "okx", 30_000, timestamp_ms=-5), row(3, "okx", 30_000, price="2e15")]
    assert list(replay(lines, stats=stats)) == []
    assert (stats.events, stats.bad_lines) == (0, 4)
    assert [reason for _, reason in stats.bad_samples] == [
        "notional_usd must be a number in [0, 1e15), got nan",
        "quantity must be a number in [0, 1e15), got -10.0",
        "timestamp_ms must be epoch milliseconds, got -5",
        "price must be a number in [0, 1e15), got 2000000000000000.0"]


def test_replay_to_stdout_and_an_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(LINES[:3] + LINES[4:6]) + "\n")
    result = CliRunner().invoke(detect, ["--replay", str(src)], env={})
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["count"], r["total_notional_usd"], r["ended"]) for r in rows] == [(5, 105_000.0, "eof")]
    (tmp_path / "empty.jsonl").write_bytes(b"\xff\xfe\n\n")
    result = CliRunner().invoke(detect, ["--replay", str(tmp_path / "empty.jsonl")], env={})
    assert result.exit_code == 0 and result.stdout == ""
    assert "replay: 1 lines, 0 events, 1 bad lines, 0 cascades" in result.stderr


def test_detect_rejects_bad_shards() -> None:
    result = CliRunner().invoke(detect, ["--shards", "0,9"], env={"LIQ_SHARDS": "4"})
    assert result.exit_code != 0 and "--shards: expected comma-separated shard numbers in 0..3" in str(
        result.exception)


def test_evaluate_meets_the_targets_on_a_few_seeds() -> None:
    result = CliRunner().invoke(evaluate, ["--seeds", "6", "--quiet-hours", "4", "--json"], env={})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    overall = report["overall"]
    assert report["ok"] is True and all(report["passed"].values())
    assert overall["precision"] >= 0.9 and overall["recall"] >= 0.9
    assert overall["median_delay_after_fifth_s"] <= 2.0
    assert overall["quiet_false_alarms_per_hour"] < 1.0
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert kinds["slow_grind"]["detections"] == 0 and kinds["whale_alone"]["detections"] == 0
    assert kinds["single_venue_burst"]["recall"] == 1.0 and kinds["quiet"]["hours"] == 4.0


def test_evaluate_busy_scores_on_the_endless_markets_background_where_the_rule_alone_fires() -> None:
    """The same four quiet hours: nothing on the calm background, seven windows of the endless
    market's background that meet the rule alone, each announced (and no label's)."""
    def quiet_false_alarms(*flags: str) -> int:
        args = ["--seeds", "1", "--quiet-hours", "4", "--json", *flags]
        result = CliRunner().invoke(evaluate, args, env={})
        kinds = {k["kind"]: k for k in json.loads(result.stdout)["kinds"]}
        return int(kinds["quiet"]["false_alarms"])

    assert (quiet_false_alarms(), quiet_false_alarms("--busy")) == (0, 7)


def test_a_cascade_detected_in_two_pieces_counts_a_fragment_against_precision() -> None:
    from detector.evaluate import Detection, KindResult, score_scenario
    from shared.scenarios import CascadeLabel, Scenario

    label = CascadeLabel(cascade_id="c", symbol="BTCUSDT", venues=("okx",), start_ms=T0, end_ms=T0 + 60_000,
                         first_ms=T0, fifth_ms=T0 + 4_000, count=20, published=20, notional_usd=1e6)
    halves = [Detection(f"BTCUSDT-{start}", "BTCUSDT", start, start + 20_000, start + 4_000, ("okx",), 5,
                        1.0, "high") for start in (T0, T0 + 35_000)]
    result = KindResult("cross_venue_cascade")
    score_scenario(Scenario("cross_venue_cascade", 1, T0, 3_600_000, [], [label]), halves, result)
    summary = result.summary()
    assert (summary["fragments"], summary["false_alarms"], summary["precision"], summary["recall"]) == (
        1, 0, 0.5, 1.0)


def test_a_second_detection_of_a_label_is_a_fragment_when_another_detection_spans_two_labels() -> None:
    """D1 spans L1 and L2, D2 matches L2 only: D2 is L2's second detection, a fragment."""
    from detector.evaluate import Detection, KindResult, score_scenario
    from shared.scenarios import CascadeLabel, Scenario

    def label(name: str, start: int) -> CascadeLabel:
        return CascadeLabel(cascade_id=name, symbol="BTCUSDT", venues=("okx",), start_ms=start,
                            end_ms=start + 60_000, first_ms=start, fifth_ms=start + 4_000, count=20,
                            published=20, notional_usd=1e6)

    spans_both = Detection("BTCUSDT-a", "BTCUSDT", T0, T0 + 110_000, T0 + 4_000, ("okx",), 30, 1.0, "high")
    second = Detection("BTCUSDT-b", "BTCUSDT", T0 + 140_000, T0 + 160_000, T0 + 144_000, ("okx",), 5, 1.0,
                       "high")
    result = KindResult("cross_venue_cascade")
    labels = [label("l1", T0), label("l2", T0 + 100_000)]
    scenario = Scenario("cross_venue_cascade", 1, T0, 3_600_000, [], labels)
    score_scenario(scenario, [spans_both, second], result)
    summary = result.summary()
    assert (summary["fragments"], summary["precision"], summary["recall"]) == (1, 0.5, 1.0)
