"""The built-in rule pack: it loads, covers the whole behaviour catalogue, every rule fires on
its match examples and not on its no_match ones, the simulator's benign traffic raises no
high or critical alert, and every attack scenario of the simulator is detected."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubetrail.detect import load_rules
from kubetrail.detect.examples import run_examples
from kubetrail.detect.run import detect_paths
from kubetrail.simulate import SCENARIOS, write_simulation

PACK = load_rules()
CATALOGUE = [f"B{n}" for n in range(1, 77)]
SEVERE = ("high", "critical")


def test_every_behaviour_of_the_catalogue_is_covered() -> None:
    covered = {b for r in PACK.rules for b in r.behaviours}
    assert [b for b in CATALOGUE if b not in covered] == []


def test_every_rule_is_documented_and_has_both_kinds_of_example() -> None:
    for r in PACK.rules:
        assert r.title and r.description, r.id
        assert r.behaviours, r.id
        assert r.examples.get("match") and r.examples.get("no_match"), r.id


@pytest.mark.parametrize("rule_id", [r.id for r in PACK.rules])
def test_rule_examples(rule_id: str) -> None:
    failures = [r for r in run_examples(PACK, [PACK.get(rule_id)]) if not r.ok]
    assert failures == [], [(f.kind, f.index, f.detail) for f in failures]


def _alerts(paths: list[Path]) -> list[Any]:
    alerts: list[Any] = []
    report = detect_paths([str(p) for p in paths], PACK, alerts.append)
    assert report.exit_code == 0, report.rejects
    return alerts


@pytest.mark.parametrize(("fmt", "kw"), [
    ("jsonl", {"duration_hours": 12, "seed": 1, "nodes": 3}),
    ("jsonl", {"duration_hours": 6, "seed": 2, "nodes": 10, "clusters": 2}),
    ("eks", {"duration_hours": 4, "seed": 3, "nodes": 3}),
    ("gke", {"duration_hours": 4, "seed": 4, "nodes": 3}),
    ("aks", {"duration_hours": 4, "seed": 5, "nodes": 3}),
])
def test_benign_traffic_raises_no_high_or_critical_alert(tmp_path: Path, fmt: str,
                                                          kw: dict[str, Any]) -> None:
    path = tmp_path / f"benign.{fmt}"
    hours = kw.pop("duration_hours")
    summary = write_simulation(path, duration=timedelta(hours=hours), fmt=fmt, **kw)
    alerts = _alerts(list(summary.files))
    severe = Counter(a.rule for a in alerts if a.severity in SEVERE)
    assert severe == Counter(), severe
    assert len(alerts) < 200, Counter(a.rule for a in alerts).most_common(5)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_attack_scenario_is_detected(tmp_path: Path, scenario: str) -> None:
    path = tmp_path / f"{scenario}.log"
    summary = write_simulation(path, duration=timedelta(hours=3), seed=7, nodes=3,
                               scenarios=(scenario,))
    severe = [a for a in _alerts(list(summary.files)) if a.severity in SEVERE]
    assert severe, f"{scenario}: no high or critical alert"
