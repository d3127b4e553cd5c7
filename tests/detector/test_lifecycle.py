"""The cascade lifecycle through the pure engine: start, members, escalate, end, dedup, sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from detector.config import DetectorSettings
from detector.engine import WATERMARK_LEAD_MS, Engine
from detector.lifecycle import NEVER, Output, SavedCascade, SavedStatus, Unreadable, read_status
from shared.models import CascadeEvent, CascadeMember, Liquidation
from tests.detector.helpers import T0, ev


def phases(out: Sequence[Output]) -> list[str]:
    return [o.phase if isinstance(o, CascadeEvent) else "member" for o in out]


def feed_all(engine: Engine, events: Sequence[Liquidation]) -> list[Output]:
    return [o for e in events for o in engine.feed(e)]


def test_starts_once_at_fifth_event_with_members() -> None:
    engine = Engine()
    events = [ev(k * 10, venue="bybit" if k % 2 else "okx") for k in range(5)]  # 5 × $25K over 40 s
    assert feed_all(engine, events[:4]) == []
    out = list(engine.feed(events[4]))
    assert phases(out) == ["start"] + ["member"] * 5
    start = out[0]
    assert isinstance(start, CascadeEvent)
    assert (start.cascade_id, start.start_ms, start.end_ms, start.published_ms) == (
        f"BTCUSDT-{T0}", T0, T0 + 40_000, T0 + 40_000)
    assert (start.count, start.total_notional_usd, start.long_notional_usd) == (5, 125_000.0, 125_000.0)
    assert start.venues == ["bybit", "okx"] and start.cross_exchange is True
    members = [o for o in out if isinstance(o, CascadeMember)]
    assert [m.liquidation.event_id for m in members] == [e.event_id for e in events]
    assert {m.cascade_id for m in members} == {start.cascade_id}
    sixth = list(engine.feed(ev(41)))
    assert phases(sixth) == ["member"] and engine.active["BTCUSDT"].cascade is not None
    assert engine.active["BTCUSDT"].cascade.count == 6


def test_rule_needs_both_count_and_notional_within_the_window() -> None:
    engine = Engine()
    assert feed_all(engine, [ev(k, 19_000.0) for k in range(5)]) == []  # 5 events, $95K
    assert phases(engine.feed(ev(5, 5_000.0))) == ["start"] + ["member"] * 6  # $100K at the 6th
    late_start = Engine()
    outs = feed_all(late_start, [ev(0, 30_000.0), ev(20, 30_000.0), ev(40, 30_000.0), ev(55, 30_000.0),
                                 ev(60, 30_000.0)])
    assert outs == []  # at 60 s the event at 0 s is out ((newest - 60 s, newest] is open on the left)
    assert phases(late_start.feed(ev(61, 30_000.0))) == ["start"] + ["member"] * 5


def test_one_venue_is_not_cross_exchange() -> None:
    out = feed_all(Engine(), [ev(k) for k in range(5)])
    start = out[0]
    assert isinstance(start, CascadeEvent) and start.cross_exchange is False and start.venues == ["bybit"]
    assert start.factors.cross_exchange == 0.0 and start.factors.side_imbalance == 1.0


VOLUME_ONLY = DetectorSettings(weights={"volume_concentration": 1.0, **{n: 0.0 for n in (
    "time_compression", "price_clustering", "side_imbalance", "institutional_ratio", "cross_exchange")}},
    band_edges=[0.35, 0.45, 0.55])
"""score = volume_concentration only, bands at 0.35 / 0.45 / 0.55 (log10(total / $10K) / 3)"""


def test_escalates_once_per_band_rise() -> None:
    engine = Engine(VOLUME_ONLY)
    out = feed_all(engine, [ev(k) for k in range(5)])  # $125K → 0.3656, moderate
    assert isinstance(out[0], CascadeEvent) and out[0].band == "moderate"
    assert phases(engine.feed(ev(5))) == ["member"]  # $150K → 0.392, still moderate
    out = list(engine.feed(ev(6, 200_000.0)))  # $350K → 0.5147, high
    assert phases(out) == ["member", "escalate"]
    assert isinstance(out[1], CascadeEvent) and (out[1].band, out[1].count) == ("high", 7)
    assert phases(engine.feed(ev(7, 10_000.0))) == ["member"]  # still high: not announced again
    out = list(engine.feed(ev(8, 1_000_000.0)))  # $1.36M → 0.711, extreme
    assert phases(out) == ["member", "escalate"] and out[1].band == "extreme"  # type: ignore[union-attr]
    assert phases(engine.feed(ev(9, 1.0))) == ["member"]


def test_ends_after_the_quiet_period_by_event_time() -> None:
    engine = Engine()
    feed_all(engine, [ev(k) for k in range(5)])  # rule last holds at 4 s
    assert engine.tick(T0 + 33_999) == []
    assert phases(engine.feed(ev(20, symbol="ETHUSDT"))) == []
    end = engine.feed(ev(34, 1_000.0, symbol="ETHUSDT"))  # another symbol moves event time to 34 s
    assert phases(end) == ["end"]
    msg = end[0]
    assert isinstance(msg, CascadeEvent)
    assert (msg.cascade_id, msg.start_ms, msg.end_ms, msg.count) == (f"BTCUSDT-{T0}", T0, T0 + 4000, 5)
    assert (msg.total_notional_usd, msg.published_ms) == (125_000.0, T0 + 34_000)
    assert msg.band == "moderate" and msg.peak_risk_score >= msg.risk_score
    assert "BTCUSDT" not in engine.active and len(engine.symbols["BTCUSDT"].ring) == 0
    # the ended cascade's events can never start another one
    assert phases(feed_all(engine, [ev(35), ev(36), ev(37), ev(38)])) == []


def test_an_end_due_when_the_next_event_fails_is_carried_not_lost() -> None:
    """The feed ends the cascades due at the event's time before it takes the event; if taking it
    fails (a bug this event triggers; the loop dead-letters it), the end goes out next time."""
    class Broken:
        cascade = None
        duplicates = 0

        def on_event(self, liq: Liquidation, venue: int) -> Sequence[Output]:
            raise KeyError("a bug")

    engine = Engine()
    feed_all(engine, [ev(k) for k in range(5)])
    engine.symbols["ETHUSDT"] = Broken()  # type: ignore[assignment]
    with pytest.raises(KeyError):
        engine.feed(ev(34, 1_000.0, symbol="ETHUSDT"))
    assert "BTCUSDT" not in engine.active
    assert [(o.phase, o.symbol) for o in engine.tick(T0 + 34_000) if isinstance(o, CascadeEvent)] == [
        ("end", "BTCUSDT")]
    assert engine.tick(T0 + 35_000) == [], "once"


def test_a_cascade_started_by_a_late_event_lives_from_the_windows_time() -> None:
    """The fifth liquidation arrives late (another venue's copy, stamped 45 s earlier): the
    cascade is detected now, and its quiet period runs from now, not from that stamp."""
    engine = Engine()
    feed_all(engine, [ev(s) for s in (50, 51, 52, 53)])
    (start,) = [o for o in engine.feed(ev(5, venue="okx")) if isinstance(o, CascadeEvent)]
    assert start.phase == "start" and start.published_ms == T0 + 53_000
    assert engine.tick(T0 + 54_000) == [], "not ended at once: quiet only since 53 s"
    assert phases(engine.feed(ev(55))) == ["member"]


def test_late_copies_of_an_ended_burst_start_no_second_cascade() -> None:
    """Another venue's copy of a burst, delivered after the burst's cascade ended, would start a
    cascade with the same id (same symbol, same first event time)."""
    engine = Engine()
    out = feed_all(engine, [ev(s) for s in range(5)])
    out += list(engine.feed(ev(40, 1_000.0, symbol="ETHUSDT")))  # event time passes the quiet period
    out += feed_all(engine, [ev(s, venue="okx") for s in range(5)])
    out += engine.flush()
    assert [(o.phase, o.symbol, o.count) for o in out if isinstance(o, CascadeEvent)] == [
        ("start", "BTCUSDT", 5), ("end", "BTCUSDT", 5)]
    assert engine.symbols["BTCUSDT"].late == 5


def test_an_event_from_a_clock_far_ahead_is_dropped_not_allowed_to_end_every_cascade() -> None:
    """Event time is shared by all symbols: one venue stamping an hour ahead would end every
    active cascade at once and make its symbol's good events look late."""
    engine = Engine()
    feed_all(engine, [ev(k, received_ms=T0 + k * 1000 + 50) for k in range(5)])
    ahead = ev(3600, symbol="SOLUSDT", venue="badclock", received_ms=T0 + 6_000)
    assert engine.feed(ahead) == () and engine.from_future == 1
    assert "BTCUSDT" in engine.active and engine.watermark == T0 + 4_000
    assert phases(engine.feed(ev(6, received_ms=T0 + 6_100))) == ["member"]
    assert engine.feed(ev(7, symbol="SOLUSDT", received_ms=0)) == (), "no receipt time: not judged"
    assert engine.from_future == 1


def test_an_event_two_minutes_ahead_counts_but_does_not_end_other_symbols_cascades() -> None:
    """Within the tolerance, an event ahead of its receipt moves its lane's time at most
    WATERMARK_LEAD_MS past that receipt: the ETH cascade in the same lane keeps going."""
    engine = Engine()
    eth = [ev(k * 5, 30_000.0, symbol="ETHUSDT", venue="bybit" if k % 2 else "okx",
              received_ms=T0 + k * 5_000 + 100) for k in range(5)]
    assert phases(feed_all(engine, eth)) == ["start", *["member"] * 5]
    ahead = ev(141, symbol="BTCUSDT", venue="gate", received_ms=T0 + 21_000)  # 2 min ahead
    assert engine.feed(ahead) == () and engine.from_future == 0
    assert engine.watermark == T0 + 21_000 + WATERMARK_LEAD_MS and "ETHUSDT" in engine.active
    after = ev(25, 30_000.0, symbol="ETHUSDT", venue="okx", received_ms=T0 + 25_100)
    assert phases(engine.feed(after)) == ["member"]


def test_late_events_that_left_the_window_start_nothing() -> None:
    engine = Engine()
    feed_all(engine, [ev(59, 1_000.0), *(ev(s, 30_000.0, venue="okx") for s in (0, 1, 2))])
    assert phases(engine.feed(ev(115, 20_000.0))) == [], "the window (55, 115] holds 2 events and $21K"


def test_one_lanes_event_time_never_ends_another_lanes_cascade() -> None:
    """Shard 0 is catching up on a backlog while shard 1 is at the present: shard 1's time must
    not end (and so chop into pieces) the cascades shard 0 is replaying."""
    engine = Engine()
    feed_all(engine, [ev(k) for k in range(5)])  # lane 0: BTC cascade, last event at 4 s
    assert phases(engine.feed(ev(3600, 1_000.0, symbol="ETHUSDT"), lane=1)) == []
    assert "BTCUSDT" in engine.active, "an hour later in lane 1 is nothing to lane 0"
    assert phases(engine.feed(ev(20))) == ["member"], "the backlog goes on in the same cascade"
    assert engine.tick(T0 + 3_700_000, lane=1) == []
    (end,) = engine.tick(T0 + 50_000, lane=0)
    assert isinstance(end, CascadeEvent) and (end.phase, end.count) == ("end", 6)
    assert engine.watermark == T0 + 3_700_000 and engine.lane(0).watermark == T0 + 50_000


def test_tick_ends_a_cascade_that_simply_stops_and_flush_ends_the_rest() -> None:
    engine = Engine()
    feed_all(engine, [ev(k) for k in range(5)])
    feed_all(engine, [ev(k, symbol="ETHUSDT") for k in range(10, 15)])
    out = engine.tick(T0 + 34_000)
    assert [(o.phase, o.symbol) for o in out if isinstance(o, CascadeEvent)] == [("end", "BTCUSDT")]
    flushed = engine.flush()
    assert [(o.phase, o.symbol, o.end_ms) for o in flushed if isinstance(o, CascadeEvent)] == [
        ("end", "ETHUSDT", T0 + 14_000)]
    assert engine.active == {}


def test_duplicates_and_late_events_are_ignored() -> None:
    engine = Engine()
    events = [ev(60 + k) for k in range(4)]
    feed_all(engine, events)
    det = engine.symbols["BTCUSDT"]
    assert engine.feed(events[1]) == () and det.duplicates == 1
    assert engine.feed(ev(3)) == () and det.late == 1  # 60 s before the newest (63 s): out
    assert len(det.ring) == 4
    out = list(engine.feed(ev(64)))
    assert phases(out) == ["start"] + ["member"] * 5
    assert engine.feed(events[0]) == () and det.duplicates == 2  # already a member
    end = engine.tick(T0 + 200_000)
    assert phases(end) == ["end"] and end[0].count == 5  # type: ignore[union-attr]
    assert engine.feed(events[2]) == () and det.duplicates == 3  # redelivered after the end


def scoring_fails_while_in_window(monkeypatch: pytest.MonkeyPatch, bad: Liquidation) -> list[bool]:
    """Scoring raises ValueError while ``bad`` is in the window, until the returned list is
    cleared."""
    from detector.lifecycle import SymbolDetector

    failing = [True]
    real_score = SymbolDetector.score_window

    def score_window(self: SymbolDetector) -> Any:
        if failing and bad.event_id in self.ring:
            raise ValueError("a scoring bug")
        return real_score(self)
    monkeypatch.setattr(SymbolDetector, "score_window", score_window)
    return failing


def test_events_counts_each_distinct_event_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event whose feed raised (twice) and then went through counts once; a duplicate, of
    an event in the window or of one cleared by an end, counts none; late ones count."""
    bad = ev(21, venue="okx")
    failing = scoring_fails_while_in_window(monkeypatch, bad)
    engine = Engine()
    events = [ev(k * 5) for k in range(5)]
    feed_all(engine, events)
    for _ in range(2):
        with pytest.raises(ValueError, match="a scoring bug"):
            engine.feed(bad)
    failing.clear()
    feed_all(engine, [bad, events[0], bad])
    engine.tick(T0 + 200_000)
    feed_all(engine, [events[1], ev(-100)])  # cleared by the end; late
    assert (engine.events, engine.symbols["BTCUSDT"].duplicates) == (7, 3)


def test_a_redelivered_event_the_full_ring_overwrote_is_still_a_duplicate() -> None:
    """A ring of 16: the 17th event overwrites the first, whose redelivery (inside the window)
    is refused as a duplicate, not counted again; once its time has left the window it is late."""
    engine = Engine(DetectorSettings(ring_capacity=16))
    events = [ev(k, 1_000.0) for k in range(17)]
    feed_all(engine, events)
    det = engine.symbols["BTCUSDT"]
    assert (det.ring.overflowed, len(det.ring), engine.events) == (1, 16, 17)
    assert engine.feed(events[0]) == () and (det.duplicates, det.ring.count, engine.events) == (1, 16.0, 17)
    feed_all(engine, [ev(60, 1_000.0), events[0]])  # the window is now (0 s, 60 s]: second 0 left it
    assert (det.duplicates, det.late, engine.events) == (1, 1, 19)


def test_sampled_feed_counts_double_when_the_cap_binds() -> None:
    engine = Engine()
    binance = [ev(k, 40_000.0, venue="binance_usdm", sampled=True) for k in range(3)]  # 1 s apart
    out = feed_all(engine, binance)
    assert engine.symbols["BTCUSDT"].ring.count == 5.0  # 1 + 2 + 2
    assert phases(out) == ["start"] + ["member"] * 3
    assert out[0].count == 3  # type: ignore[union-attr]  # the count reported is what was seen
    spaced = Engine()
    assert feed_all(spaced, [ev(2 * k, 40_000.0, venue="binance_usdm", sampled=True) for k in range(4)]) == []
    assert spaced.symbols["BTCUSDT"].ring.count == 4.0  # 2 s gaps: the cap did not bind


def test_bitgets_cap_is_per_side_binances_per_symbol() -> None:
    """Bitget sends a long and a short per symbol per second: a long and a short a few ms apart
    each count 1, a second long within the gap 2. Binance's cap binds whatever the side."""
    engine = Engine()
    feed_all(engine, [ev(0, venue="bitget", side="long", sampled=True),
                      ev(0.005, venue="bitget", side="short", sampled=True)])
    assert engine.symbols["BTCUSDT"].ring.count == 2.0
    feed_all(engine, [ev(1, venue="bitget", side="long", sampled=True)])
    assert engine.symbols["BTCUSDT"].ring.count == 4.0  # 1 + 1 + 2
    binance = Engine()
    feed_all(binance, [ev(0, venue="binance_usdm", side="long", sampled=True),
                       ev(0.005, venue="binance_usdm", side="short", sampled=True)])
    assert binance.symbols["BTCUSDT"].ring.count == 3.0  # 1 + 2


def test_a_withdrawn_sampled_event_puts_back_its_own_sides_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Bitget long whose scoring fails is taken back: its redelivery weighs as if it had never
    come (1: no long before it), not by the failed attempt's time nor by the short's."""
    from detector.lifecycle import SymbolDetector

    bad = ev(0.5, venue="bitget", side="long", sampled=True)
    failing = scoring_fails_while_in_window(monkeypatch, bad)
    monkeypatch.setattr(SymbolDetector, "holds", lambda self: True)  # scored from the first event
    engine = Engine()
    feed_all(engine, [ev(0, 200_000.0, venue="bitget", side="short", sampled=True)])
    with pytest.raises(ValueError, match="a scoring bug"):
        engine.feed(bad)
    failing.clear()
    engine.feed(bad)
    assert engine.symbols["BTCUSDT"].ring.count == 2.0  # 1 + 1


def test_a_late_member_older_than_the_start_is_inside_the_published_span() -> None:
    """Another venue's event stamped before the start, still in the window, joins the cascade:
    the span the messages publish includes it; the id keeps the start it was named by."""
    engine = Engine()
    feed_all(engine, [ev(s) for s in (10, 11, 12, 13, 14)])
    late = ev(2, venue="okx")
    assert phases(engine.feed(late))[0] == "member"
    (end,) = engine.flush()
    assert isinstance(end, CascadeEvent) and end.count == 6
    assert (end.start_ms, end.end_ms, end.cascade_id) == (T0 + 2_000, T0 + 14_000, f"BTCUSDT-{T0 + 10_000}")




def test_the_quiet_period_runs_from_the_last_time_the_rule_held_and_the_end_shows_the_peak_band() -> None:
    """Members keep coming after the window has thinned out below the rule: they are members, but
    the quiet period runs from the last time the rule held (56 s), and the end message carries
    the last score with the band of the peak. A member of unknown notional adds no dollars."""
    engine = Engine(VOLUME_ONLY)  # score = log10(window USD / $10K) / 3; bands at 0.35 / 0.45 / 0.55
    feed_all(engine, [ev(s) for s in (0, 1, 2, 3)])
    assert phases(engine.feed(ev(55))) == ["start"] + ["member"] * 5  # $125K: moderate
    unknown = msgspec.structs.replace(ev(56, 1_000_000.0), notional_known=False)
    assert phases(engine.feed(unknown)) == ["member"]  # six events, $125K: the rule holds at 56 s
    assert phases(engine.feed(ev(62, 1_000.0))) == ["member"]  # 0, 1, 2 leave: 4 events, $51K
    assert engine.tick(T0 + 85_999) == []
    (end,) = engine.tick(T0 + 86_000)
    assert isinstance(end, CascadeEvent) and end.phase == "end"
    assert (end.count, end.total_notional_usd, end.long_notional_usd, end.end_ms) == (
        7, 126_000.0, 126_000.0, T0 + 62_000)
    assert end.risk_score == round(math.log10(5.1) / 3, 4)  # low (scores are rounded to 4 places)
    assert end.peak_risk_score == round(math.log10(12.5) / 3, 4)
    assert end.band == "moderate"


def test_a_cascade_started_later_does_not_delay_the_end_of_an_earlier_one() -> None:
    """BTC is due to end at 34 s; ETH and ADA, started after it, at 54 s and 59 s: an event at
    35 s ends BTC (not only one at 54 s). ``flush`` then ends the rest in symbol order."""
    engine = Engine()
    feed_all(engine, [ev(k) for k in range(5)])  # BTC: the rule last holds at 4 s
    feed_all(engine, [ev(20 + k, symbol="ETHUSDT") for k in range(5)])  # ETH: at 24 s
    feed_all(engine, [ev(25 + k, symbol="ADAUSDT") for k in range(5)])  # ADA: at 29 s
    ended = engine.feed(ev(35, 1_000.0, symbol="XRPUSDT"))
    assert [(o.phase, o.symbol) for o in ended if isinstance(o, CascadeEvent)] == [("end", "BTCUSDT")]
    flushed = [(o.phase, o.symbol) for o in engine.flush() if isinstance(o, CascadeEvent)]
    assert flushed == [("end", "ADAUSDT"), ("end", "ETHUSDT")]


def active_status() -> dict[str, str]:
    """The status hash of an active BTCUSDT cascade, as the service writes it."""
    engine = Engine()
    feed_all(engine, [ev(k * 5, venue="bybit" if k % 2 else "okx") for k in range(5)])
    return {**engine.status("BTCUSDT", T0 + 30_000), "entry_id": "1700000020000-3"}


def test_a_status_hash_reads_back_as_the_warm_start_continues_it() -> None:
    fields = {**active_status(), "ended_through_ms": str(T0 - 1)}
    assert read_status(fields) == SavedStatus(
        cascade_id="BTCUSDT-1700000000000", ended_through_ms=T0 - 1, entry_id="1700000020000-3",
        entry=(1700000020000, 3), active=SavedCascade(
            cascade_id="BTCUSDT-1700000000000", start_ms=T0, detected_ms=T0 + 20_000,
            last_event_ms=T0 + 20_000, count=5, total_usd=125_000.0, long_usd=125_000.0, short_usd=0.0,
            venues=frozenset({"bybit", "okx"}), score=1.0095, peak=1.0095, band_rank=2))  # high
    assert read_status({"state": "idle", "count": "many"}) == SavedStatus(
        cascade_id="", ended_through_ms=NEVER, entry_id="", entry=None, active=None)  # count unused


@pytest.mark.parametrize(("name", "value"), [
    ("ended_through_ms", "soon"), ("entry_id", "x-1"), ("count", "many"), ("total_usd", "$1M"),
    ("last_event_ms", "1.5e12"), ("start_ms", "12:00"), ("peak_risk_score", "high")])
def test_a_status_field_another_program_wrote_is_named_not_raised(name: str, value: str) -> None:
    assert read_status({**active_status(), name: value}) == Unreadable(name, value)
