"""Structural specification of the Kubernetes manifests (no cluster needed): every object
parses and has the fields its kind requires, selectors match their pods, every container
has resource requests and probes on ports it declares, runs as non-root, runs a real
streamrec command, and is configured only with settings streamrec knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.stream.cli.main import build_parser
from streamrec.stream.settings import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "streamrec.yaml"
REQUIRED = {
    ("v1", "ConfigMap"): {"data"},
    ("apps/v1", "Deployment"): {"spec"},
    ("policy/v1", "PodDisruptionBudget"): {"spec"},
    ("v1", "Service"): {"spec"},
}


def _objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in _objects() if o["kind"] == kind]


def test_every_object_is_a_known_kind_with_a_unique_name():
    seen = set()
    for obj in _objects():
        assert (obj["apiVersion"], obj["kind"]) in REQUIRED, obj["kind"]
        assert REQUIRED[(obj["apiVersion"], obj["kind"])] <= obj.keys()
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen
        seen.add(key)
    assert {k for k, _ in seen} == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service"}


@pytest.mark.parametrize("deployment", _by_kind("Deployment"), ids=lambda d: d["metadata"]["name"])
def test_deployments_are_probed_bounded_non_root_and_run_streamrec(deployment):
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for container in pod["containers"]:
        assert container["args"][0] in commands
        build_parser().parse_args(container["args"])  # the arguments are valid
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys()
        assert {"cpu", "memory"} <= resources["limits"].keys()
        ports = {p["name"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, probe
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        volumes = {v["name"] for v in pod.get("volumes", [])}
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes


def test_each_deployment_has_a_disruption_budget_and_the_api_a_service():
    deployments = {d["metadata"]["name"]: d for d in _by_kind("Deployment")}
    budgets = _by_kind("PodDisruptionBudget")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, name
    [service] = _by_kind("Service")
    api = deployments["streamrec-api"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= api["metadata"]["labels"].items()
    port_names = {p["name"] for p in api["spec"]["containers"][0]["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])


def test_the_configuration_uses_only_real_settings_and_keeps_secrets_out():
    [config] = _by_kind("ConfigMap")
    known = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    assert set(config["data"]) <= known
    secret_fields = {
        "STREAMREC_REDIS_URL",
        "STREAMREC_KAFKA_SASL_PASSWORD",
        "STREAMREC_USER_ID_HMAC_KEY",
    }
    assert not secret_fields & set(config["data"])
    partitions = int(config["data"]["STREAMREC_TOPIC_PARTITIONS"])
    worker = next(d for d in _by_kind("Deployment") if d["metadata"]["name"] == "streamrec-worker")
    assert worker["spec"]["replicas"] <= partitions  # more workers than partitions idle


@pytest.mark.parametrize("variable", ["STREAMREC_METRICS_HOST", "STREAMREC_API_HOST"])
def test_pods_listen_on_their_interfaces_for_probes_prometheus_and_the_service(variable):
    """The settings default to 127.0.0.1, where a probe or a Service would find nothing."""
    [config] = _by_kind("ConfigMap")
    assert config["data"][variable] == "0.0.0.0"  # noqa: S104 - what a pod must listen on
    for deployment in _by_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            sources = {
                s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s
            }
            assert config["metadata"]["name"] in sources
            assert "--host" not in container["args"]  # the setting decides, not a flag
