"""The report's table and comparison lines, from counts as they come out of Redis: no
holdout row when there is no holdout, and a verdict that says when there is too little
data to decide."""

from __future__ import annotations

from streamrec.engine.serving.experiment_stats import compare
from streamrec.engine.serving.experiments import HOLDOUT, Experiment, Variant
from streamrec.stream.cli.experiment_report import ArmSummary, ExperimentReport
from streamrec.stream.redis_store import EXPERIMENT_PER_USER


def _arm(name: str, clicks: int, users: int) -> ArmSummary:
    """``users`` users with one list each; the first ``clicks`` of them clicked."""
    per_user: dict[str, dict[str, int]] = {what: {} for what in EXPERIMENT_PER_USER}
    per_user["lists"] = {f"{name}-u{n}": 1 for n in range(users)}
    per_user["click"] = {f"{name}-u{n}": 1 for n in range(clicks)}
    series = {1000: {"lists": users, "click": clicks}} if users else {}
    return ArmSummary(name, per_user, series, distinct_items=10 if users else 0)


def _report(holdout: float, held_users: int) -> ExperimentReport:
    experiment = Experiment("probe", (Variant("A", 0.5), Variant("B", 0.5)), holdout)
    arms = {"A": _arm("A", 3, 20), "B": _arm("B", 0, 23), HOLDOUT: _arm(HOLDOUT, 0, held_users)}
    report = ExperimentReport(experiment, arms, catalog_size=100)
    report.comparisons.append(
        compare("CTR", ("A", *arms["A"].arrays("click")), ("B", *arms["B"].arrays("click")))
    )
    return report


def _rows(report: ExperimentReport) -> dict[str, list[str]]:
    return {line.split(" | ")[0]: line.split(" | ") for line in report.lines() if " | " in line}


def test_without_a_holdout_there_is_no_holdout_row():
    rows = _rows(_report(0.0, 0))
    assert set(rows) == {"arm", "A", "B"}
    assert not any("nan" in line for line in _report(0.0, 0).lines())


def test_a_configured_holdout_keeps_its_row_even_before_it_has_users():
    rows = _rows(_report(0.1, 0))
    assert rows[HOLDOUT][1:4] == ["0", "0", "n/a"]  # users, lists, CTR
    assert _rows(_report(0.1, 5))[HOLDOUT][1:4] == ["5", "5", "0.0000"]


def test_three_clicks_against_none_on_twenty_lists_each_is_too_little_data_to_decide():
    """Reported from outside: "B lowers CTR by 100.0% ± 0.0% against A, significant."."""
    lines = _report(0.0, 0).lines()
    [stats] = [line for line in lines if line.startswith("CTR: ")]
    assert "exact p 0.0924 over lists (Fisher)" in stats
    assert "95% CI -100.0% .. -100.0%" not in stats
    verdict = lines[lines.index(stats) + 1].strip()
    assert verdict.startswith("Not enough data yet to decide on CTR: A 3/20, B 0/23")
    assert "significant" not in verdict
