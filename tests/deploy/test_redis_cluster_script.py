"""deploy/local/redis-cluster.sh: a real three-master, three-replica Redis Cluster on loopback
ports, as the tests use it (started through local_infra, like the session fixture), a master
failed over by SIGKILL, and nothing left running after stop."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from streamrec.stream.cli.local_infra import LocalService, start_redis_cluster
from tests import redis_cluster
from tests.redis_cluster import SCRIPT, SLOTS

pytestmark = pytest.mark.integration

URL = re.compile(r"redis\+cluster://(?:127\.0\.0\.1:\d+,){5}127\.0\.0\.1:\d+")
#: The node timeout is 2 s; the failover election follows within about a second.
FAILOVER_TIMEOUT = 10.0


def script(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def node_pids(state_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(state_dir.glob("node-*/redis.pid"))]


def running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def servers_on(ports: list[int]) -> list[str]:
    """Command lines of redis-server processes serving any of these ports."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in words and any(f":{port} " in f"{words} " for port in ports):
            found.append(words.strip())
    return found


def replication(url: str, port: int) -> dict:
    client = redis_cluster.node_client(url, port)
    try:
        return client.info("replication")
    finally:
        client.close()


def cluster_client(url: str, port: int | None = None) -> RedisCluster:
    port = port if port is not None else redis_cluster.nodes(url)[0][1]
    return RedisCluster(
        host="127.0.0.1", port=port, password=redis_cluster.password(url), decode_responses=True
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    service = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster-script"))
    yield service
    service.stop()


def test_start_prints_a_url_naming_all_six_nodes(cluster: LocalService):
    assert URL.fullmatch(cluster.address), cluster.address
    ports = [port for _, port in redis_cluster.nodes(cluster.address)]
    assert len(set(ports)) == 6
    assert (cluster.state_dir / "url").read_text().strip() == cluster.address
    # idempotent while running; status names the url
    again = script("start", cluster.state_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [cluster.address]
    status = script("status", cluster.state_dir)
    assert (status.returncode, status.stdout.strip()) == (0, f"running {cluster.address}")


def test_three_masters_each_with_one_replica_serve_every_slot(cluster: LocalService):
    url = cluster.address
    masters = redis_cluster.masters(url)
    assert len(masters) == 3
    assert script("masters", cluster.state_dir).stdout.split() == [str(p) for p in masters]
    replicas_of: dict[int, list[int]] = {m: [] for m in masters}
    for _, port in redis_cluster.nodes(url):
        info = replication(url, port)
        if port in masters:
            assert info["role"] == "master"
        else:
            assert info["role"] == "slave"
            assert info["master_link_status"] == "up"
            replicas_of[info["master_port"]].append(port)
    assert all(len(replicas) == 1 for replicas in replicas_of.values()), replicas_of
    client = redis_cluster.node_client(url, masters[0])
    try:
        info = client.cluster("info")
    finally:
        client.close()
    assert info["cluster_state"] == "ok"
    assert int(info["cluster_slots_assigned"]) == SLOTS
    assert int(info["cluster_slots_ok"]) == SLOTS
    assert int(info["cluster_known_nodes"]) == 6


def test_a_key_set_through_the_first_node_is_readable(cluster: LocalService):
    first = redis_cluster.nodes(cluster.address)[0][1]
    with cluster_client(cluster.address, first) as client:
        client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
    with cluster_client(cluster.address, redis_cluster.nodes(cluster.address)[-1][1]) as other:
        assert other.get("greeting") == "hello"


def test_a_replica_takes_over_a_killed_master(cluster: LocalService):
    url = cluster.address
    masters = redis_cluster.masters(url)
    victim = masters[0]
    (replica,) = [
        port
        for _, port in redis_cluster.nodes(url)
        if port not in masters and replication(url, port)["master_port"] == victim
    ]
    # a key in one of the victim's slots, written and replicated before the kill
    with cluster_client(url) as client:
        key = next(k for k in (f"key-{i}" for i in range(10_000)) if _owner(client, k) == victim)
    direct = redis_cluster.node_client(url, victim)
    try:
        direct.set(key, "survives")
        assert direct.wait(1, 2000) == 1
    finally:
        direct.close()

    redis_cluster.kill_master(cluster, victim)
    new_masters = redis_cluster.wait_cluster_ok(url, FAILOVER_TIMEOUT, not_master=[victim])
    assert replica in new_masters
    direct = redis_cluster.node_client(url, replica)
    try:
        assert direct.get(key) == "survives"
    finally:
        direct.close()
    with cluster_client(url, replica) as client:
        assert client.get(key) == "survives"

    # the old master comes back as the new master's replica
    redis_cluster.restart_node(cluster, victim)
    assert redis_cluster.wait_cluster_ok(url, FAILOVER_TIMEOUT) == new_masters
    info = replication(url, victim)
    assert (info["role"], info["master_port"]) == ("slave", replica)


def _owner(client: RedisCluster, key: str) -> int:
    return int(client.get_node_from_key(key).port)


def test_stop_leaves_no_process(cluster: LocalService):
    pids = node_pids(cluster.state_dir)
    ports = [port for _, port in redis_cluster.nodes(cluster.address)]
    assert len(pids) == 6
    assert all(running(pid) for pid in pids)
    cluster.stop()
    assert not any(running(pid) for pid in pids)
    assert servers_on(ports) == []
    status = script("status", cluster.state_dir)
    assert (status.returncode, status.stdout.strip()) == (1, "stopped")
    cluster.stop()  # idempotent


def test_a_password_protects_every_node(tmp_path: Path):
    secret = 'p@ss "w\\rd:/,x'
    service = start_redis_cluster(tmp_path / "cluster", env={"REDIS_PASSWORD": secret})
    try:
        url = service.address
        assert url.startswith("redis+cluster://:p%40ss%20%22w%5Crd%3A%2F%2Cx@127.0.0.1:")
        assert url.count("@") == 1
        assert redis_cluster.password(url) == secret
        assert oct((service.state_dir / "url").stat().st_mode & 0o777) == "0o600"
        port = redis_cluster.nodes(url)[0][1]
        anonymous = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
        try:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        finally:
            anonymous.close()
        with cluster_client(url) as client:
            client.set("k", "v")
            assert client.get("k") == "v"
        # the script finds the password itself (no REDIS_PASSWORD in its environment)
        assert script("masters", service.state_dir).stdout.split() == [
            str(p) for p in redis_cluster.masters(url)
        ]
    finally:
        service.stop()
    assert servers_on([port for _, port in redis_cluster.nodes(url)]) == []
