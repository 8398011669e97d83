"""The local Redis Cluster of deploy/local/redis-cluster.sh, for tests: its nodes and current
masters, read from a node, and a node killed and started again through the script.

The URL reads ``redis+cluster://[:PASSWORD@]127.0.0.1:P1,...,127.0.0.1:P6`` (all six nodes,
the password percent-encoded).
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from collections.abc import Collection

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamrec.stream.cli.local_infra import SCRIPTS, LocalService

SCRIPT = SCRIPTS / "redis-cluster.sh"
SCHEME = "redis+cluster://"
SLOTS = 16384
MASTERS = 3
#: CLUSTER NODES flags of a node that does not count as serving: failed or suspected
#: (fail, fail?), still joining (handshake) or without an address (noaddr).
NOT_SERVING = {"fail", "fail?", "handshake", "noaddr"}


def nodes(url: str) -> list[tuple[str, int]]:
    """Every node's (host, port), in the URL's order."""
    assert url.startswith(SCHEME), url
    hosts = url.removeprefix(SCHEME).rpartition("@")[2]
    pairs = [h.rpartition(":") for h in hosts.split(",")]
    return [(host, int(port)) for host, _, port in pairs]


def password(url: str) -> str | None:
    """The password the URL carries, if any."""
    userinfo, at, _ = url.removeprefix(SCHEME).rpartition("@")
    if not at:
        return None
    return urllib.parse.unquote(userinfo.partition(":")[2])


def node_client(url: str, port: int) -> redis.Redis:
    """A plain (non-cluster) client to the node on ``port``. It does not retry: redis-py's
    default retries a refused connection (a killed node) with backoff, for seconds."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password(url),
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _raw(client: redis.Redis, *command: str) -> str:
    """A command's reply as the server sent it (bypassing redis-py's parsing)."""
    reply = client.execute_command(*command, NEVER_DECODE=True)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _masters_seen_by(url: str, port: int) -> list[int]:
    client = node_client(url, port)
    try:
        lines = _raw(client, "CLUSTER", "NODES").splitlines()
    finally:
        client.close()
    found = []
    for line in lines:
        # <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>
        fields = line.split()
        flags = set(fields[2].split(","))
        if "master" in flags and not flags & NOT_SERVING:
            found.append(int(fields[1].split("@")[0].rpartition(":")[2]))
    return sorted(found)


def masters(url: str) -> list[int]:
    """The ports of the current masters as the first node that answers sees them (nodes
    flagged failed are left out)."""
    errors = []
    for _, port in nodes(url):
        try:
            return _masters_seen_by(url, port)
        except redis.ConnectionError as exc:
            errors.append(f"{port}: {exc}")
    msg = f"no node of {url} answers: {errors}"
    raise AssertionError(msg)


def _state(url: str) -> dict[int, str]:
    """Per answering node: "ok", or what is wrong from its point of view."""
    states = {}
    for _, port in nodes(url):
        client = node_client(url, port)
        try:
            info = dict(
                line.split(":", 1)
                for line in _raw(client, "CLUSTER", "INFO").splitlines()
                if ":" in line
            )
        except redis.ConnectionError:
            continue
        finally:
            client.close()
        if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
            states[port] = f"state {info.get('cluster_state')}, {info.get('cluster_slots_ok')} ok"
        else:
            states[port] = "ok"
    return states


def wait_cluster_ok(
    url: str, timeout: float = 10.0, *, not_master: Collection[int] = ()
) -> list[int]:
    """Wait until every node that answers reports ``cluster_state:ok`` with all 16384 slots
    served and they all see the same three masters, none of them in ``not_master`` (a node
    just killed: the others go on listing it as a master until they flag it failed).
    Returns the masters' ports."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        states = _state(url)
        views = {}
        for port, state in states.items():
            if state == "ok":
                try:
                    views[port] = _masters_seen_by(url, port)
                except redis.ConnectionError:
                    continue
        agreed = {tuple(v) for v in views.values()}
        if states and len(views) == len(states) and len(agreed) == 1:
            found = list(agreed.pop())
            if len(found) == MASTERS and not set(found) & set(not_master):
                return found
        last = {"states": states, "masters": views}
        if time.monotonic() >= deadline:
            msg = f"cluster {url} not ok within {timeout} s: {last}"
            raise AssertionError(msg)
        time.sleep(0.1)


def flush_masters(url: str) -> None:
    """FLUSHALL on every master (replicas follow)."""
    for port in masters(url):
        client = node_client(url, port)
        try:
            client.flushall()
        finally:
            client.close()


def _script(service: LocalService, action: str, port: int) -> str:
    proc = subprocess.run(
        ["bash", str(SCRIPT), action, str(service.state_dir), str(port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"redis-cluster.sh {action} {port}: {proc.stderr[-3000:]}"
    return proc.stdout


def kill_master(service: LocalService, port: int) -> None:
    """SIGKILL the node on ``port`` (a replica takes over its slots after
    cluster-node-timeout: wait with ``wait_cluster_ok(url, not_master=[port])``)."""
    _script(service, "kill-master", port)


def restart_node(service: LocalService, port: int) -> None:
    """Start the node on ``port`` again from its config; a killed master rejoins as a
    replica. Wait for the failover first (see the script)."""
    _script(service, "restart-node", port)


def sync_client(url: str) -> redis.Redis | redis.RedisCluster:
    """A plain client for any URL the worker takes: a cluster client for
    ``redis+cluster://`` URLs (the first node as startup node), else ``Redis.from_url``."""
    if not url.startswith(SCHEME):
        return redis.Redis.from_url(url)
    from redis.cluster import ClusterNode

    # Every node as a startup node: the first one may be a master a test has just killed.
    startup = [ClusterNode(host, port) for host, port in nodes(url)]
    return redis.RedisCluster(startup_nodes=startup, password=password(url))
