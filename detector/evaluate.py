"""Scores the detector on labelled market-model scenarios: precision, recall, delay, false alarms.

The detector sees only what a collector would publish (``shared.market_model.to_liquidation``
of each published event, in time order, through the same :class:`~detector.engine.Engine`
as live); it never reads the labels. Afterwards, per scenario:

- a detection *matches* a label when both are on the same symbol and the detection's span
  ``[start_ms, end_ms]`` overlaps the label's ``[start_ms, end_ms]``;
- **recall** = labels with at least one matching detection / labels;
- **precision** = detections that are a label's first match / detections: a detection in a
  kind without cascades (e.g. ``quiet``) is a false alarm, and a second detection of one label
  (the cascade split in two) is a *fragment*, counted against precision too;
- **delay** of a detected label, from its earliest matching detection (exchange time of the
  event that triggered the start): from the first published cascade liquidation, and from
  the fifth (what the rule needs at the very least);
- **false alarms per hour** of the ``quiet`` kind (simulated hours of background only).

Seeds are fixed: kind number ``k`` (in ``SCENARIO_KINDS`` order) uses seeds
``10_000 * k + i`` for ``i < seeds``, so each kind and each run sees the same markets.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from detector.config import DetectorSettings
from detector.engine import Engine
from detector.lifecycle import ended_cascades
from shared.market_model import DEFAULT_PARAMS, to_liquidation
from shared.scenarios import SCENARIO_KINDS, SCENARIO_PARAMS, CascadeLabel, Scenario, scenario

TARGETS = {"precision": 0.9, "recall": 0.9, "median_delay_after_fifth_s": 2.0,
           "quiet_false_alarms_per_hour": 1.0}


@dataclass(frozen=True)
class Detection:
    cascade_id: str
    symbol: str
    start_ms: int
    end_ms: int
    detected_ms: int
    venues: tuple[str, ...]
    count: int
    peak_risk_score: float
    band: str


@dataclass
class KindResult:
    kind: str
    scenarios: int = 0
    hours: float = 0.0
    labelled: int = 0
    detected_labels: int = 0
    detections: int = 0
    matched_detections: int = 0
    fragments: int = 0
    false_alarms: int = 0
    delays_first_s: list[float] = field(default_factory=list)
    delays_fifth_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "scenarios": self.scenarios, "hours": round(self.hours, 2),
            "labelled": self.labelled, "detected_labels": self.detected_labels,
            "detections": self.detections, "false_alarms": self.false_alarms, "fragments": self.fragments,
            "precision": _ratio(self.matched_detections - self.fragments, self.detections),
            "recall": _ratio(self.detected_labels, self.labelled),
            "median_delay_from_first_s": _median(self.delays_first_s),
            "median_delay_after_fifth_s": _median(self.delays_fifth_s),
            "p90_delay_after_fifth_s": _quantile(self.delays_fifth_s, 0.9),
            "false_alarms_per_hour": round(self.false_alarms / self.hours, 3) if self.hours else None,
        }


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def detect(sc: Scenario, settings: DetectorSettings) -> list[Detection]:
    """Run a fresh engine over the scenario's published events; one Detection per cascade."""
    engine = Engine(settings)
    outputs = [o for e in sc.events for o in engine.feed(to_liquidation(e))]
    outputs += engine.flush()
    return [Detection(end.cascade_id, end.symbol, end.start_ms, end.end_ms, (start or end).published_ms,
                      tuple(end.venues), end.count, end.peak_risk_score, end.band)
            for end, start in ended_cascades(outputs, {})]


def _matches(d: Detection, label: CascadeLabel) -> bool:
    return d.symbol == label.symbol and d.start_ms <= label.end_ms and d.end_ms >= label.start_ms


def score_scenario(sc: Scenario, found: list[Detection], result: KindResult) -> None:
    result.scenarios += 1
    result.hours += sc.duration_ms / 3_600_000
    result.labelled += len(sc.cascades)
    result.detections += len(found)
    for label in sc.cascades:
        hits = [d for d in found if _matches(d, label)]
        if hits:
            result.detected_labels += 1
            when = min(d.detected_ms for d in hits)
            result.delays_first_s.append((when - label.first_ms) / 1000)
            result.delays_fifth_s.append((when - label.fifth_ms) / 1000)
    matched = sum(1 for d in found if any(_matches(d, label) for label in sc.cascades))
    result.matched_detections += matched
    result.false_alarms += len(found) - matched
    # A matched detection that is no label's first is a fragment, even when another detection
    # spans two labels (counting the labels hit would let that one hide it).
    firsts = {min((k for k, d in enumerate(found) if _matches(d, label)),
                  key=lambda k: (found[k].detected_ms, found[k].start_ms))
              for label in sc.cascades if any(_matches(d, label) for d in found)}
    result.fragments += matched - len(firsts)


def evaluate(settings: DetectorSettings | None = None, seeds: int = 40, quiet_hours: int = 24,
             kinds: tuple[str, ...] = SCENARIO_KINDS, busy: bool = False) -> dict[str, Any]:
    """Run every kind over its fixed seeds; return the per-kind table and the overall figures.

    ``busy``: on the endless market's background rates (``DEFAULT_PARAMS``, six times the
    scenarios' own), where the background alone meets the rule now and then: the detector
    announces those windows too, and they count as false alarms (no label has them)."""
    settings = settings or DetectorSettings()
    params = DEFAULT_PARAMS if busy else SCENARIO_PARAMS
    results: list[KindResult] = []
    for k, kind in enumerate(SCENARIO_KINDS):
        if kind not in kinds:
            continue
        result = KindResult(kind)
        for i in range(quiet_hours if kind == "quiet" else seeds):
            sc = scenario(kind, 10_000 * k + i, params=params)
            score_scenario(sc, detect(sc, settings), result)
        results.append(result)
    return _report(results)


def _report(results: list[KindResult]) -> dict[str, Any]:
    total = KindResult("all")
    for r in results:
        for name in ("scenarios", "labelled", "detected_labels", "detections", "matched_detections",
                     "fragments", "false_alarms"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.hours += r.hours
        total.delays_first_s += r.delays_first_s
        total.delays_fifth_s += r.delays_fifth_s
    quiet = next((r for r in results if r.kind == "quiet"), None)
    overall = total.summary()
    overall["quiet_false_alarms_per_hour"] = quiet.summary()["false_alarms_per_hour"] if quiet else None
    checks = {
        "precision": (overall["precision"] or 0) >= TARGETS["precision"],
        "recall": (overall["recall"] or 0) >= TARGETS["recall"],
        "median_delay_after_fifth_s": (overall["median_delay_after_fifth_s"] or 0)
        <= TARGETS["median_delay_after_fifth_s"],
        "quiet_false_alarms_per_hour": quiet is None
        or (overall["quiet_false_alarms_per_hour"] or 0) < TARGETS["quiet_false_alarms_per_hour"],
    }
    return {"kinds": [r.summary() for r in results], "overall": overall, "targets": TARGETS,
            "passed": checks, "ok": all(checks.values())}


def render(report: dict[str, Any]) -> str:
    """A fixed-width table of ``evaluate``'s report."""
    head = (f"{'kind':<20} {'scen':>5} {'hours':>6} {'labels':>6} {'found':>6} {'FA':>4} {'frag':>4} "
            f"{'prec':>6} "
            f"{'recall':>6} {'d_first':>8} {'d_5th':>6} {'p90_5th':>7} {'FA/h':>6}")
    lines = [head, "-" * len(head)]
    for row in [*report["kinds"], {**report["overall"], "kind": "all"}]:
        lines.append(
            f"{row['kind']:<20} {row['scenarios']:>5} {row['hours']:>6} {row['labelled']:>6} "
            f"{row['detections']:>6} {row['false_alarms']:>4} {row['fragments']:>4} "
            f"{_fmt(row['precision']):>6} "
            f"{_fmt(row['recall']):>6} {_fmt(row['median_delay_from_first_s']):>8} "
            f"{_fmt(row['median_delay_after_fifth_s']):>6} {_fmt(row['p90_delay_after_fifth_s']):>7} "
            f"{_fmt(row['false_alarms_per_hour']):>6}")
    overall = report["overall"]
    lines.append("")
    lines.append(
        f"precision {_fmt(overall['precision'])} (target >= {TARGETS['precision']}), "
        f"recall {_fmt(overall['recall'])} (>= {TARGETS['recall']}), "
        f"median delay after 5th {_fmt(overall['median_delay_after_fifth_s'])} s "
        f"(<= {TARGETS['median_delay_after_fifth_s']}), quiet false alarms/h "
        f"{_fmt(overall['quiet_false_alarms_per_hour'])} (< {TARGETS['quiet_false_alarms_per_hour']}): "
        + ("all targets met" if report["ok"] else "NOT MET: " + ", ".join(
            k for k, ok in report["passed"].items() if not ok)))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
