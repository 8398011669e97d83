"""Specification of the Grafana dashboard deploy/grafana/dashboards/streamrec.json.

Every PromQL expression may only use metrics the worker or the reason writer (``streamrec
reasons upgrade``) exports, every panel queries the provisioned Prometheus datasource, and
every exported metric is charted somewhere.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamrec.stream.worker.metrics import Metrics
from streamrec.stream.worker.reason_writer import WriterMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "streamrec.json"
DATASOURCES_FILE = (
    REPO_ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
)
DATASOURCE_UID = "prometheus"


def exported_families(
    *builders: Callable[[CollectorRegistry], object],
) -> tuple[frozenset[str], frozenset[str]]:
    """(every family, the histogram families) the metric classes register, as
    prometheus_client names them in `# TYPE` lines (counters end in _total)."""
    registry = CollectorRegistry()
    for build in builders:
        build(registry)
    names, histograms = set(), set()
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names.add(name)
        if family.type == "histogram":
            histograms.add(name)
    return frozenset(names), frozenset(histograms)


def writer_families() -> frozenset[str]:
    """The families only the reason writer exports (counters named as in `# TYPE`)."""
    return exported_families(WriterMetrics)[0]


# The integration suite checks the same names against a running worker's /metrics and a
# running reason writer's.
EXPECTED_METRICS, HISTOGRAM_METRICS = exported_families(Metrics, WriterMetrics)
HISTOGRAM_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"\bstreamrec_[a-z_]+")


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def _iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from _iter_panels(panel.get("panels") or [])


@pytest.fixture(scope="module")
def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_iter_panels(dashboard["panels"]))


@pytest.fixture(scope="module")
def query_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels that show data (rows are only containers)."""
    return [panel for panel in panels if panel.get("type") != "row"]


def _expressions(panels: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in panels
        for target in panel.get("targets") or []
        if "expr" in target
    ]


def metric_family(series_name: str) -> str:
    """The exported family a series belongs to: histogram series map to their base name."""
    for suffix in HISTOGRAM_SERIES_SUFFIXES:
        base = series_name.removesuffix(suffix)
        if base != series_name and base in HISTOGRAM_METRICS:
            return base
    return series_name


def _series_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


# --- the helper itself ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "family"),
    [
        ("streamrec_retrieval_seconds_bucket", "streamrec_retrieval_seconds"),
        ("streamrec_batch_size_sum", "streamrec_batch_size"),
        ("streamrec_event_to_publish_seconds_count", "streamrec_event_to_publish_seconds"),
        ("streamrec_events_consumed_total", "streamrec_events_consumed_total"),
        ("streamrec_index_items_count", "streamrec_index_items_count"),
    ],
)
def test_metric_family_strips_suffixes_of_histograms_only(series: str, family: str) -> None:
    assert metric_family(series) == family


# --- dashboard identity -------------------------------------------------------------------


def test_dashboard_has_a_stable_uid_and_title(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "streamrec"
    assert dashboard["title"] == "streamrec"


def test_dashboard_schema_version_is_recent(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41


def test_dashboard_has_panels(query_panels: list[dict[str, Any]]) -> None:
    assert query_panels


# --- panels -----------------------------------------------------------------------------


def test_panel_ids_are_unique(panels: list[dict[str, Any]]) -> None:
    duplicates = [pid for pid, n in Counter(p.get("id") for p in panels).items() if n > 1]
    assert all("id" in panel for panel in panels)
    assert duplicates == []


def test_every_panel_has_a_title(panels: list[dict[str, Any]]) -> None:
    untitled = [panel.get("id") for panel in panels if not str(panel.get("title", "")).strip()]
    assert untitled == []


def test_every_panel_uses_the_prometheus_datasource(query_panels: list[dict[str, Any]]) -> None:
    wrong = [
        panel["title"]
        for panel in query_panels
        if (panel.get("datasource") or {}).get("uid") != DATASOURCE_UID
    ]
    assert wrong == []


def test_every_panel_target_uses_the_prometheus_datasource(
    query_panels: list[dict[str, Any]],
) -> None:
    wrong = [
        (panel["title"], target.get("refId"))
        for panel in query_panels
        for target in panel.get("targets") or []
        if (target.get("datasource") or panel["datasource"]).get("uid") != DATASOURCE_UID
    ]
    assert wrong == []


def test_every_panel_has_at_least_one_query(query_panels: list[dict[str, Any]]) -> None:
    empty = [panel["title"] for panel in query_panels if not _expressions([panel])]
    assert empty == []


def test_target_ref_ids_are_unique_within_each_panel(query_panels: list[dict[str, Any]]) -> None:
    for panel in query_panels:
        ref_ids = [target.get("refId") for target in panel.get("targets") or []]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panels_use_the_datasource_uid_that_grafana_provisions() -> None:
    provisioned = {ds["uid"] for ds in yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]}
    assert DATASOURCE_UID in provisioned


# --- metric names -------------------------------------------------------------------------


def test_every_expression_references_a_streamrec_metric(
    query_panels: list[dict[str, Any]],
) -> None:
    without_metric = [
        (title, expr) for title, expr in _expressions(query_panels) if not _series_names(expr)
    ]
    assert without_metric == []


def test_every_queried_metric_is_exported_by_the_worker_or_the_reason_writer(
    query_panels: list[dict[str, Any]],
) -> None:
    unknown = sorted(
        {
            (title, name)
            for title, expr in _expressions(query_panels)
            for name in _series_names(expr)
            if metric_family(name) not in EXPECTED_METRICS
        }
    )
    assert unknown == []


def test_histograms_are_queried_through_their_series_not_their_base_name(
    query_panels: list[dict[str, Any]],
) -> None:
    bare = sorted(
        {
            (title, name)
            for title, expr in _expressions(query_panels)
            for name in _series_names(expr)
            if name in HISTOGRAM_METRICS
        }
    )
    assert bare == []


BUCKET_SELECTOR = re.compile(r"streamrec_[a-z_]+_bucket(\{[^}]*\})?")


def test_histogram_buckets_are_read_by_quantile_or_as_one_named_bucket(
    query_panels: list[dict[str, Any]],
) -> None:
    """Buckets are cumulative: summed over ``le`` they mean nothing. A panel reads them
    through histogram_quantile, or one bucket by its bound (e.g. the share within 5 s,
    ``le="5.0"`` as prometheus_client writes the bound)."""
    misused = [
        (title, expr)
        for title, expr in _expressions(query_panels)
        for match in BUCKET_SELECTOR.finditer(expr)
        if "histogram_quantile(" not in expr
        and not re.search(r'le="\d+\.\d+"', match.group(1) or "")
    ]
    assert misused == []


def test_every_exported_metric_is_charted(query_panels: list[dict[str, Any]]) -> None:
    charted = {
        metric_family(name)
        for _, expr in _expressions(query_panels)
        for name in _series_names(expr)
    }
    assert sorted(EXPECTED_METRICS - charted) == []
