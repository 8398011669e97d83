#!/usr/bin/env bash
# Throw-away Redis Cluster on loopback ports for tests (3 masters, 3 replicas, no persistence).
# Installs Debian's redis-server package (redis-cli comes with it, in redis-tools) when
# redis-server or redis-cli is not on PATH.
#
# usage:
#   redis-cluster.sh start STATE_DIR      prints "redis+cluster://127.0.0.1:P1,...,127.0.0.1:P6"
#                                         (all six nodes, the first three the masters at
#                                         creation; the only stdout line), also written to
#                                         STATE_DIR/url. Returns once every node reports
#                                         cluster_state:ok with 16384 slots and every replica's
#                                         link to its master is up. Idempotent: with every node
#                                         running it prints the url; with some of them down it
#                                         starts those again from their config first (see
#                                         restart-node).
#   redis-cluster.sh stop STATE_DIR       SIGTERM to every node, up to 10 s, then SIGKILL;
#                                         idempotent
#   redis-cluster.sh status STATE_DIR     prints "running URL" (exit 0) while any node runs,
#                                         else "stopped" (exit 1)
#   redis-cluster.sh kill-master STATE_DIR PORT
#                                         SIGKILL the node on PORT (whatever its role), waits
#                                         until it is gone; a replica takes over its slots
#                                         after cluster-node-timeout and the failover election
#   redis-cluster.sh restart-node STATE_DIR PORT
#                                         starts the node on PORT again from its redis.conf and
#                                         nodes.conf, waits until it answers and sees
#                                         cluster_state:ok; a former master whose slots a
#                                         replica took over rejoins as that replica's replica.
#                                         Wait for the failover first: a master restarted
#                                         before it comes back empty (no persistence) and
#                                         keeps its slots, and its replica copies the empty set
#   redis-cluster.sh masters STATE_DIR    prints the ports of the current masters, one a line,
#                                         from CLUSTER NODES of a running node (nodes flagged
#                                         fail or fail? are left out)
#
# env: REDIS_PASSWORD (requirepass and masterauth on every node; the URL then reads
#      redis+cluster://:PASSWORD@127.0.0.1:P1,127.0.0.1:P2,..., password percent-encoded and
#      before the first host only), REDIS_CLUSTER_NODE_TIMEOUT (cluster-node-timeout, 2000 ms),
#      REDIS_CLUSTER_START_TIMEOUT (60 s: the whole start, or a restart-node).
# The ports are free random loopback ports, and each node's cluster bus gets a free random port
# of its own (cluster-port) rather than PORT+10000, which may be past 65535.
# STATE_DIR gets url (mode 0600), ports (the six client ports, in URL order), password
# (mode 0600, with REDIS_PASSWORD), create.log (redis-cli --cluster create's output) and one
# node-PORT/ per node with redis.conf (mode 0600), redis.pid, redis.log, redis.out and
# nodes.conf.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODES=6
SLOTS=16384

die() { echo "redis-cluster.sh: $*" >&2; exit 1; }

# shellcheck source=deploy/local/redis-common.sh
source "$HERE/redis-common.sh"



# live_pid NODE_DIR PORT: the pid of the redis-server serving PORT from NODE_DIR, if running
live_pid() {
  local pid
  pid=$(cat "$1/redis.pid" 2>/dev/null) || return 1
  # (redis-server sets its title to "redis-server 127.0.0.1:PORT [cluster]")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "redis-server .*:$2( |\$)" \
    && echo "$pid"
}

ports() { cat "$1/ports" 2>/dev/null; }

# rcli DIR PORT ARGS...: redis-cli against one node, with the cluster's password if it has one
rcli() {
  local dir=$1 port=$2 auth=""
  shift 2
  [[ -f $dir/password ]] && auth=$(<"$dir/password")
  env ${auth:+REDISCLI_AUTH="$auth"} timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

ping_ok() { [[ $(rcli "$1" "$2" ping) == PONG ]]; }

# node_ok DIR PORT: the node knows all six nodes and sees the cluster ok with every slot
# served; a replica's link to its master is up
node_ok() {
  local info
  info=$(rcli "$1" "$2" cluster info | tr -d '\r') || return 1
  grep -qx 'cluster_state:ok' <<<"$info" && grep -qx "cluster_slots_ok:$SLOTS" <<<"$info" \
    && grep -qx "cluster_known_nodes:$NODES" <<<"$info" || return 1
  info=$(rcli "$1" "$2" info replication | tr -d '\r') || return 1
  grep -qx 'role:master' <<<"$info" || grep -qx 'master_link_status:up' <<<"$info"
}

# cluster_ok DIR: every running node passes node_ok, and the first sees 3 masters
cluster_ok() {
  local dir=$1 port live=0
  for port in $(ports "$dir"); do
    live_pid "$dir/node-$port" "$port" >/dev/null || continue
    node_ok "$dir" "$port" || return 1
    live=$((live + 1))
  done
  ((live > 0)) || return 1
  [[ $(masters "$dir" | wc -l) -eq $((NODES / 2)) ]]
}

log_tails() {
  local dir=$1 port
  if [[ -s $dir/create.log ]]; then
    echo "--- redis-cli --cluster create:"
    tail -n 20 "$dir/create.log"
  fi
  for port in $(ports "$dir"); do
    echo "--- node $port (redis.log tail):"
    tail -n 15 "$dir/node-$port/redis.log" 2>/dev/null || true
    tail -n 5 "$dir/node-$port/redis.out" 2>/dev/null || true
  done
}

fail_start() {
  local dir=$1
  shift
  {
    echo "redis-cluster.sh: $*; log tails:"
    log_tails "$dir"
  } >&2
  stop "$dir" || true
  exit 1
}

# write_conf DIR PORT BUS_PORT
write_conf() {
  local node=$1/node-$2
  mkdir -p "$node"
  rm -f "$node/nodes.conf" "$node/redis.pid" "$node/redis.log" "$node/redis.out" "$node"/*.rdb
  # Settings go to a 0600 config file rather than argv, so a password doesn't show in ps.
  (
    umask 077
    cat >"$node/redis.conf" <<EOF
port $2
cluster-port $3
bind 127.0.0.1
save ""
appendonly no
daemonize no
dir $node
pidfile $node/redis.pid
logfile $node/redis.log
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout ${REDIS_CLUSTER_NODE_TIMEOUT:-2000}
cluster-replica-validity-factor 0
repl-diskless-sync-delay 0
EOF
    if [[ -n ${REDIS_PASSWORD:-} ]]; then
      local pw=${REDIS_PASSWORD//\\/\\\\}
      pw=${pw//\"/\\\"}
      printf 'requirepass "%s"\nmasterauth "%s"\n' "$pw" "$pw" >>"$node/redis.conf"
    fi
  )
}

declare -A LAUNCHED=()  # port -> pid of the redis-server this run started

# launch DIR PORT: start the node from its redis.conf (its nodes.conf, if any, rejoins it)
launch() {
  local node=$1/node-$2
  rm -f "$node/redis.pid"
  # setsid: keep it out of the caller's process group (Ctrl-C, SIGHUP); stop kills it.
  # (A background job of this non-interactive shell leads no process group, so setsid
  # execs redis-server in place and $! is its pid.)
  setsid redis-server "$node/redis.conf" >"$node/redis.out" 2>&1 </dev/null &
  LAUNCHED[$2]=$!
}

# wait_ping DIR DEADLINE PORT...: until every node answers PING; false past DEADLINE or
# as soon as one of them has exited (a config error, its port taken)
wait_ping() {
  local dir=$1 deadline=$2 port
  shift 2
  for port in "$@"; do
    until [[ -s $dir/node-$port/redis.pid ]] && ping_ok "$dir" "$port"; do
      ((SECONDS < deadline)) || return 1
      if [[ -n ${LAUNCHED[$port]:-} ]] && ! alive "${LAUNCHED[$port]}"; then
        echo "redis-cluster.sh: node $port exited" >&2
        return 1
      fi
      sleep 0.1
    done
  done
}

wait_cluster_ok() {
  local dir=$1 deadline=$2
  until cluster_ok "$dir"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

start() {
  local dir port live=() dead=() all=() buses=() url pw hosts
  mkdir -p "$1" && dir=$(cd "$1" && pwd)
  local deadline=$((SECONDS + ${REDIS_CLUSTER_START_TIMEOUT:-60}))
  for port in $(ports "$dir"); do
    if live_pid "$dir/node-$port" "$port" >/dev/null; then
      live+=("$port")
    else
      dead+=("$port")
    fi
  done
  if ((${#live[@]})) && [[ ! -s $dir/url ]]; then  # left by a start that did not finish
    stop "$dir"
    live=()
  fi
  if ((${#live[@]})); then  # already running: idempotent; start any node that is down again
    if ((${#dead[@]})); then
      ensure_redis redis-cluster.sh
      for port in "${dead[@]}"; do launch "$dir" "$port"; done
      wait_ping "$dir" "$deadline" "${dead[@]}" || die "node(s) ${dead[*]} not answering PING"
      wait_cluster_ok "$dir" "$deadline" || die "cluster not ok after restarting ${dead[*]}"
    fi
    cat "$dir/url"; return 0
  fi
  ensure_redis redis-cluster.sh
  rm -rf "$dir"/node-* "$dir/url" "$dir/ports" "$dir/password" "$dir/create.log"
  mapfile -t all < <(python3 "$HERE/freeport.py" $((2 * NODES)))
  ((${#all[@]} == 2 * NODES)) || die "freeport.py gave no ports"
  buses=("${all[@]:NODES}")
  all=("${all[@]:0:NODES}")
  printf '%s\n' "${all[@]}" >"$dir/ports"
  if [[ -n ${REDIS_PASSWORD:-} ]]; then
    (umask 077 && printf '%s' "$REDIS_PASSWORD" >"$dir/password")
  fi
  local i
  for ((i = 0; i < NODES; i++)); do
    write_conf "$dir" "${all[i]}" "${buses[i]}"
    launch "$dir" "${all[i]}"
  done
  wait_ping "$dir" "$deadline" "${all[@]}" || fail_start "$dir" "a node is not answering PING"

  hosts=("${all[@]/#/127.0.0.1:}")
  pw=""
  [[ -f $dir/password ]] && pw=$(<"$dir/password")
  env ${pw:+REDISCLI_AUTH="$pw"} timeout 60 redis-cli --cluster create "${hosts[@]}" \
    --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 </dev/null \
    || fail_start "$dir" "redis-cli --cluster create failed"
  wait_cluster_ok "$dir" "$deadline" \
    || fail_start "$dir" "cluster not ok within ${REDIS_CLUSTER_START_TIMEOUT:-60} s"

  url="redis+cluster://"
  if [[ -n $pw ]]; then
    url+=":$(python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' \
      "$pw")@"
  fi
  url+=$(IFS=,; echo "${hosts[*]}")
  (umask 077 && echo "$url" >"$dir/url")  # it may carry the password
  echo "$url"
}

# stop_pids PID...: SIGTERM, up to 10 s, then SIGKILL, up to 5 s
stop_pids() {
  local pid i left
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    left=0
    for pid in "$@"; do alive "$pid" && left=1; done
    ((left)) || return 0
    if ((i == 100)); then kill -KILL "$@" 2>/dev/null || true; fi
    sleep 0.1
  done
}

stop() {
  local dir=$1 port pid pids=()
  for port in $(ports "$dir"); do
    pid=$(live_pid "$dir/node-$port" "$port") && pids+=("$pid")
  done
  stop_pids "${pids[@]}"
  for port in $(ports "$dir"); do rm -f "$dir/node-$port/redis.pid"; done
}

status() {
  local port
  for port in $(ports "$1"); do
    if live_pid "$1/node-$port" "$port" >/dev/null; then
      echo "running $(cat "$1/url" 2>/dev/null || echo starting)"; return 0
    fi
  done
  echo stopped; return 1
}

known_port() { grep -qx "$2" "$1/ports" 2>/dev/null || die "no node on port $2 in $1"; }

kill-master() {
  local dir=$1 port=$2 pid i
  known_port "$dir" "$port"
  if pid=$(live_pid "$dir/node-$port" "$port"); then
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && die "node $port (pid $pid) survived SIGKILL"
  fi
  rm -f "$dir/node-$port/redis.pid"
}

restart-node() {
  local dir=$1 port=$2
  known_port "$dir" "$port"
  local deadline=$((SECONDS + ${REDIS_CLUSTER_START_TIMEOUT:-60}))
  live_pid "$dir/node-$port" "$port" >/dev/null && return 0
  ensure_redis redis-cluster.sh
  launch "$dir" "$port"
  wait_ping "$dir" "$deadline" "$port" || {
    tail -n 30 "$dir/node-$port/redis.log" >&2 2>/dev/null || true
    die "node $port not answering PING"
  }
  until node_ok "$dir" "$port"; do
    ((SECONDS < deadline)) || die "node $port does not see the cluster ok"
    sleep 0.2
  done
}

masters() {
  local dir=$1 port nodes
  for port in $(ports "$dir"); do
    live_pid "$dir/node-$port" "$port" >/dev/null || continue
    nodes=$(rcli "$dir" "$port" cluster nodes | tr -d '\r') || continue
    [[ -n $nodes ]] || continue
    # <id> <ip:port@cport> <flags> ...: flags like "myself,master", "master,fail?"
    awk '$3 ~ /(^|,)master(,|$)/ && $3 !~ /(^|,)(fail\??|handshake|noaddr)(,|$)/ {
           split($2, a, "[:@]"); print a[2] }' <<<"$nodes" | sort -n
    return 0
  done
  echo "redis-cluster.sh: no node of $dir answers" >&2
  return 1
}

cmd=${1:-}
case $cmd in
  start | stop | status | masters)
    [[ $# -eq 2 ]] || die "usage: redis-cluster.sh $cmd STATE_DIR"
    "$cmd" "$2" ;;
  kill-master | restart-node)
    [[ $# -eq 3 && $3 =~ ^[0-9]+$ ]] || die "usage: redis-cluster.sh $cmd STATE_DIR PORT"
    dir=$(cd "$2" 2>/dev/null && pwd) || die "no state directory $2"
    "$cmd" "$dir" "$3" ;;
  *) die "usage: redis-cluster.sh start|stop|status|masters STATE_DIR" \
    "| kill-master|restart-node STATE_DIR PORT" ;;
esac
