"""Structural specification of the Kubernetes manifests (no cluster needed): every object
parses and has the fields its kind requires, selectors match their pods, every container
has resource requests and probes on ports it declares, runs as non-root, runs a real
streamrec command, and is configured only with settings streamrec knows. The autoscalers of
deploy/k8s/autoscaling.yaml scale that worker Deployment on the lag of its own consumer
group and events topic, within the partitions, on a metric the worker exports, and scale
down slowly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamrec.stream.cli.main import build_parser
from streamrec.stream.settings import Settings
from streamrec.stream.worker.metrics import Metrics

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


def test_the_reason_writer_serves_its_metrics_on_the_port_it_declares():
    writer = next(
        d for d in _by_kind("Deployment") if d["metadata"]["name"] == "streamrec-reason-writer"
    )
    [container] = writer["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["reasons", "upgrade"]
    env = {e["name"]: e["value"] for e in container["env"]}
    known = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    assert {name for name in env if name.startswith("STREAMREC_")} <= known
    port = int(env["STREAMREC_REASON_WRITER_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    annotations = writer["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


# --- autoscaling on consumer lag (deploy/k8s/autoscaling.yaml) ---------------------------

AUTOSCALING = MANIFESTS.parent / "autoscaling.yaml"
OPTION_LABEL = "streamrec-autoscaler"
AUTOSCALERS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "hpa",
}
AUTOSCALING_KINDS = {*AUTOSCALERS, ("keda.sh/v1alpha1", "TriggerAuthentication")}
ADAPTER_RULES = re.compile(
    r"^# prometheus-adapter rules \(begin\)\n(.*?)^# prometheus-adapter rules \(end\)$",
    re.MULTILINE | re.DOTALL,
)
#: KEDA's kafka scaler's names for the worker's SASL mechanisms.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def _autoscaling() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(AUTOSCALING.read_text()) if d]


def _autoscaling_kind(kind: str) -> dict[str, Any]:
    [obj] = [o for o in _autoscaling() if o["kind"] == kind]
    return obj


def _worker() -> dict[str, Any]:
    [worker] = [d for d in _by_kind("Deployment") if d["metadata"]["name"] == "streamrec-worker"]
    return worker


def _worker_setting(field: str) -> str:
    """What the worker container runs with for a setting: its env, then the ConfigMaps of
    its envFrom, then the default of stream/settings.py."""
    variable = f"STREAMREC_{field.upper()}"
    [container] = _worker()["spec"]["template"]["spec"]["containers"]
    for entry in container.get("env", []):
        if entry["name"] == variable:
            return str(entry["value"])
    maps = {c["metadata"]["name"]: c["data"] for c in _by_kind("ConfigMap")}
    for source in container["envFrom"]:
        data = maps.get(source.get("configMapRef", {}).get("name"), {})
        if variable in data:
            return str(data[variable])
    return str(Settings.model_fields[field].default)


def _exported_metrics() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    return {family.name for family in registry.collect()}


def _kafka_trigger() -> dict[str, Any]:
    [trigger] = _autoscaling_kind("ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    return trigger


def test_the_autoscaling_file_holds_two_options_each_with_one_autoscaler():
    objects = _autoscaling()
    seen = set()
    for obj in objects:
        assert (obj["apiVersion"], obj["kind"]) in AUTOSCALING_KINDS, obj["kind"]
        assert (obj["kind"], obj["metadata"]["name"]) not in seen
        seen.add((obj["kind"], obj["metadata"]["name"]))
        assert obj["metadata"]["labels"][OPTION_LABEL] in set(AUTOSCALERS.values())
    # `kubectl apply -l streamrec-autoscaler=<option>` applies exactly one autoscaler.
    for (api_version, kind), option in AUTOSCALERS.items():
        chosen = [o for o in objects if o["metadata"]["labels"][OPTION_LABEL] == option]
        scalers = [o for o in chosen if (o["apiVersion"], o["kind"]) in AUTOSCALERS]
        assert [(o["apiVersion"], o["kind"]) for o in scalers] == [(api_version, kind)]
    # The recommended option (KEDA) comes first.
    assert objects[0]["metadata"]["labels"][OPTION_LABEL] == "keda"


@pytest.mark.parametrize("kind", ["ScaledObject", "HorizontalPodAutoscaler"])
def test_the_autoscalers_target_the_worker_deployment(kind: str):
    target = _autoscaling_kind(kind)["spec"]["scaleTargetRef"]
    worker = _worker()
    assert target["name"] == worker["metadata"]["name"]
    assert target.get("kind", "Deployment") == worker["kind"]
    assert target.get("apiVersion", "apps/v1") == worker["apiVersion"]


@pytest.mark.parametrize(
    ("kind", "low", "high"),
    [
        ("ScaledObject", "minReplicaCount", "maxReplicaCount"),
        ("HorizontalPodAutoscaler", "minReplicas", "maxReplicas"),
    ],
)
def test_the_autoscalers_keep_one_worker_and_no_more_than_partitions(kind, low, high):
    spec = _autoscaling_kind(kind)["spec"]
    partitions = int(_worker_setting("topic_partitions"))
    assert spec[low] == 1
    assert spec[low] <= spec[high] <= partitions  # more workers than partitions sit idle


def test_the_kafka_trigger_reads_the_workers_group_and_events_topic():
    metadata = _kafka_trigger()["metadata"]
    assert metadata["consumerGroup"] == _worker_setting("app_id")  # Faust's group id
    assert metadata["topic"] == _worker_setting("topic_events")
    assert metadata["bootstrapServers"] == _worker_setting("kafka_bootstrap")
    assert metadata["offsetResetPolicy"] == "earliest"  # as the worker's consumer
    assert metadata.get("allowIdleConsumers", "false") == "false"
    assert int(metadata["lagThreshold"]) > 0


def test_the_kafka_trigger_connects_as_the_worker_does():
    metadata = _kafka_trigger()["metadata"]
    protocol = _worker_setting("kafka_security_protocol")
    assert (metadata.get("tls", "disable") == "enable") is protocol.endswith("SSL")
    if protocol.startswith("SASL_"):
        assert metadata["sasl"] == KEDA_SASL[_worker_setting("kafka_sasl_mechanism")]
        auth = _autoscaling_kind("TriggerAuthentication")
        assert _kafka_trigger()["authenticationRef"]["name"] == auth["metadata"]["name"]
        # Credentials come from the worker container's own environment.
        containers = {c["name"] for c in _worker()["spec"]["template"]["spec"]["containers"]}
        known = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
        params = {}
        for entry in auth["spec"]["env"]:
            assert entry["containerName"] in containers
            assert entry["name"] in known
            params[entry["parameter"]] = entry["name"]
        assert params == {
            "username": "STREAMREC_KAFKA_SASL_USERNAME",
            "password": "STREAMREC_KAFKA_SASL_PASSWORD",
        }
    else:
        assert metadata.get("sasl", "none") == "none"


def test_the_hpa_scales_on_the_consumer_lag_the_worker_exports():
    spec = _autoscaling_kind("HorizontalPodAutoscaler")["spec"]
    names = set()
    for metric in spec["metrics"]:
        source = metric[metric["type"].lower()]  # External -> external, Pods -> pods
        names.add(source["metric"]["name"])
        assert source["target"]["type"] == "AverageValue"  # target lag per worker
    assert names == {"streamrec_consumer_lag"}
    assert names <= _exported_metrics()
    # Both options aim at the same lag per worker, as the file says.
    [metric] = spec["metrics"]
    target = metric[metric["type"].lower()]["target"]["averageValue"]
    assert int(target) == int(_kafka_trigger()["metadata"]["lagThreshold"])


def test_the_prometheus_adapter_rules_serve_the_hpas_metric_from_exported_series():
    found = ADAPTER_RULES.search(AUTOSCALING.read_text())
    assert found, "the prometheus-adapter rules comment is missing"
    lines = found.group(1).splitlines()
    assert all(line == "#" or line.startswith("# ") for line in lines)
    rules = yaml.safe_load("\n".join(line[2:] for line in lines))
    exported = _exported_metrics()
    served = {}
    for section in ("externalRules", "rules"):
        for rule in rules[section]:
            for query in (rule["seriesQuery"], rule["metricsQuery"]):
                assert set(re.findall(r"\bstreamrec_[a-z_]+", query)) <= exported, query
            assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"]
            served.setdefault(section, set()).add(rule["name"]["as"])
    [metric] = _autoscaling_kind("HorizontalPodAutoscaler")["spec"]["metrics"]
    section = {"External": "externalRules", "Pods": "rules"}[metric["type"]]
    assert metric[metric["type"].lower()]["metric"]["name"] in served[section]


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("HorizontalPodAutoscaler", ("spec", "behavior")),
        ("ScaledObject", ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior")),
    ],
)
def test_scale_down_is_slow_enough_to_avoid_a_rebalance_storm(kind, path):
    behavior = _autoscaling_kind(kind)
    for key in path:
        behavior = behavior[key]
    scale_down = behavior["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 60
    for policy in scale_down.get("policies", []):
        if policy["type"] == "Pods":
            assert policy["value"] == 1  # one worker (one rebalance) at a time
