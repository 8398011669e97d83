#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for tests, the demo and CI.
# No Docker: the broker jars come from Maven Central (deploy/local/kafka/pom.xml) and run on
# the local JDK (17+).
#
# usage:
#   kafka.sh fetch               resolve the jars into the cache (once; ~/.m2 is reused)
#   kafka.sh libs                fetch, then print the jar folder (the Java clients' classpath)
#   kafka.sh start STATE_DIR     start a fresh broker; prints "127.0.0.1:PORT" (the only stdout line)
#   kafka.sh stop STATE_DIR      SIGTERM, up to 30 s, then SIGKILL; idempotent
#   kafka.sh resume STATE_DIR    start a stopped broker again with its data and ports (a restart)
#   kafka.sh status STATE_DIR    prints "running PID 127.0.0.1:PORT" (exit 0) or "stopped" (exit 1)
#
# env: KAFKA_PORT, KAFKA_CONTROLLER_PORT (default: free loopback ports), KAFKA_START_TIMEOUT (90),
#      KAFKA_HEAP_OPTS ("-Xms256m -Xmx512m"), KAFKA_JVM_OPTS (extra JVM flags), KAFKA_CDS (1; 0 = no
#      class-data-sharing archive),
#      XDG_CACHE_HOME (jars go to ${XDG_CACHE_HOME:-~/.cache}/streamrec/kafka-VERSION/libs),
#      KAFKA_SASL_USERS ("name:password ..."; adds a SASL_PLAINTEXT listener with SCRAM-SHA-512
#      for these users, its host:port written to STATE_DIR/bootstrap_sasl).
# STATE_DIR gets server.properties, log4j2.properties, data/ (wiped on every start), kafka.log,
# kafka.out (JVM stdout/stderr), kafka.pid and bootstrap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM=$HERE/kafka/pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/streamrec/kafka-$KAFKA_VERSION
LIBS=$CACHE/libs

die() { echo "kafka.sh: $*" >&2; exit 1; }

# AppCDS archive of the classes a broker loads, keyed to this java binary (see start/stop)
jsa_path() {
  local j
  j=$(readlink -f "$(command -v java)") || return 1
  echo "$LIBS/cds-$({ stat -Lc %Y "$j"; echo "$j"; } | cksum | cut -d' ' -f1).jsa"
}

fetch() {
  local stamp
  stamp=$(sha256sum "$POM" | cut -c1-64)
  [[ -f $LIBS/.complete && $(cat "$LIBS/.complete") == "$stamp" ]] && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9  # concurrent starts: one fetches, the others wait and then see the marker
  if ! [[ -f $LIBS/.complete && $(cat "$LIBS/.complete") == "$stamp" ]]; then
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    echo "kafka.sh: resolving kafka $KAFKA_VERSION jars into $LIBS" >&2
    rm -rf "$LIBS.tmp"
    # mvn prints (colour codes) on stdout even with -q: keep our stdout clean.
    mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >&2 || die "mvn failed"
    [[ -f $LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "kafka jar missing after mvn"
    echo "$stamp" >"$LIBS.tmp/.complete"
    rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS"
  fi
  exec 9>&-
}

# alive and not a zombie (an unreaped zombie still answers kill -0)
alive() { grep -q '^State:[[:space:]]*[^Z]' "/proc/$1/status" 2>/dev/null; }

# pid from STATE_DIR/kafka.pid if that process is alive and is our broker
live_pid() {
  local pid
  pid=$(cat "$1/kafka.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' && echo "$pid"
}

# ApiVersions v0 round trip: proves the broker speaks the Kafka protocol on host:port
api_versions_ok() {
  python3 - "$1" <<'EOF'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
cid = b"kafka.sh"
req = struct.pack(">hhih", 18, 0, 7, len(cid)) + cid
try:
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        buf = b""
        while len(buf) < 10:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(1)
            buf += chunk
    size, corr, err = struct.unpack(">iih", buf[:10])
    sys.exit(0 if corr == 7 and err == 0 else 1)
except OSError:
    sys.exit(1)
EOF
}

start() {
  local dir pid port cport
  mkdir -p "$1" && dir=$(cd "$1" && pwd)
  if pid=$(live_pid "$dir"); then  # already running: idempotent
    cat "$dir/bootstrap"; return 0
  fi
  command -v java >/dev/null || die "java not found (need JDK 17+)"
  fetch
  local p1 p2 p3
  { read -r p1; read -r p2; read -r p3; } < <(python3 "$HERE/freeport.py" 3)
  port=${KAFKA_PORT:-$p1}
  cport=${KAFKA_CONTROLLER_PORT:-$p2}
  [[ $cport != "$port" ]] || cport=$p1
  rm -rf "$dir/data" "$dir/kafka.log" "$dir/kafka.out" "$dir/kafka.pid" "$dir/bootstrap" \
    "$dir/bootstrap_sasl"
  # Optional SCRAM-SHA-512 listener: users are created when the storage is formatted.
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  local sasl_conf="" scram=() user
  if [[ -n ${KAFKA_SASL_USERS:-} ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$p3"
    advertised+=",SASL_PLAINTEXT://127.0.0.1:$p3"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    sasl_conf="sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    for user in $KAFKA_SASL_USERS; do
      [[ $user == *:* ]] || die "KAFKA_SASL_USERS entries are name:password, got '${user%%:*}:...'"
      scram+=(--add-scram "SCRAM-SHA-512=[name=${user%%:*},password=${user#*:}]")
    done
  fi

  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
$sasl_conf
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=127.0.0.1:$cport
log.dirs=$dir/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.segment.bytes=16777216
log.retention.hours=2
log.retention.bytes=268435456
log.retention.check.interval.ms=60000
log.cleaner.dedupe.buffer.size=16777216
EOF

  cat >"$dir/log4j2.properties" <<EOF
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.akafka.name = org.apache.kafka
logger.akafka.level = INFO
logger.network.name = kafka.network.RequestChannel\$
logger.network.level = WARN
logger.reqlog.name = kafka.request.logger
logger.reqlog.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.cfg.name = org.apache.kafka.common.config
logger.cfg.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.zstd.name = com.github.luben
logger.zstd.level = WARN
EOF

  jvm_command "$dir"
  # Cluster ids are 16 random bytes, base64url without padding (not starting with '-').
  local cluster_id
  cluster_id=$(python3 -c 'import base64,uuid
while (u := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(u)')
  # In 4.x the formatter is still kafka.tools.StorageTool (in kafka_2.13.jar); --standalone
  # writes the initial one-voter set that controller.quorum.bootstrap.servers needs.
  # C1 only for this short-lived tool: ~0.5 s less, no throughput to lose.
  "${JVM[@]}" "${CDS[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    "${scram[@]}" -c "$dir/server.properties" >"$dir/format.out" 2>&1 \
    || { cat "$dir/format.out" >&2; die "storage format failed"; }
  [[ -z ${KAFKA_SASL_USERS:-} ]] || echo "127.0.0.1:$p3" >"$dir/bootstrap_sasl"
  launch "$dir" "$port"
}

# JVM and CDS flags for a broker in STATE_DIR $1 (sets JVM, CDS and RECORD)
jvm_command() {
  local dir=$1 heap extra JSA
  JSA=$(jsa_path)
  # Small heap, serial GC (one test broker on a 2-core box: no concurrent GC threads to feed).
  read -ra heap <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  read -ra extra <<<"${KAFKA_JVM_OPTS:-}"
  JVM=(java "${heap[@]}" -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties"
    "${extra[@]}" -cp "$LIBS/*")
  # AppCDS (KAFKA_CDS=0 disables): the first broker records the classes it loaded into
  # $dir/kafka.jsa when it exits (stop moves that into the cache); later JVMs map the
  # archive and start ~1.5 s faster. A stale or broken archive is silently ignored.
  CDS=() RECORD=()
  if [[ ${KAFKA_CDS:-1} == 1 ]]; then
    if [[ -s $JSA ]]; then CDS=(-XX:SharedArchiveFile="$JSA" '-Xlog:cds*=off')
    else rm -f "$dir/kafka.jsa"; RECORD=(-XX:ArchiveClassesAtExit="$dir/kafka.jsa" '-Xlog:cds*=off'); fi
  fi
}

# start the broker of a formatted STATE_DIR $1 and wait until it answers on port $2
launch() {
  local dir=$1 port=$2
  # setsid: own session and process group, so Ctrl-C / SIGHUP aimed at the caller
  # don't reach the broker; the child writes its own pid, then execs java.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1/kafka.pid"; shift; exec "$@"' _ "$dir" \
    "${JVM[@]}" "${CDS[@]}" "${RECORD[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.out" 2>&1 </dev/null &

  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  while :; do
    if ((SECONDS >= deadline)); then
      fail_start "$dir" "broker not ready after ${KAFKA_START_TIMEOUT:-90} s"
    fi
    sleep 0.25
    [[ -s $dir/kafka.pid ]] || continue
    live_pid "$dir" >/dev/null || fail_start "$dir" "broker exited during startup"
    grep -q 'Kafka Server started' "$dir/kafka.log" 2>/dev/null || continue
    api_versions_ok "127.0.0.1:$port" && break
  done
  echo "127.0.0.1:$port" >"$dir/bootstrap"
  echo "127.0.0.1:$port"
}

# start a stopped broker again on its data and ports
resume() {
  local dir port
  [[ -d $1 ]] && dir=$(cd "$1" && pwd) || die "no broker state in $1"
  if live_pid "$dir" >/dev/null; then cat "$dir/bootstrap"; return 0; fi
  [[ -f $dir/server.properties && -d $dir/data ]] || die "no broker state in $dir: start it first"
  port=$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\).*|\1|p' "$dir/server.properties")
  [[ -n $port ]] || die "cannot read the port from $dir/server.properties"
  : >"$dir/kafka.log"  # launch waits for this run's 'Kafka Server started'
  jvm_command "$dir"
  launch "$dir" "$port"
}

fail_start() {
  echo "kafka.sh: $2; first errors and log tail ($1/kafka.log):" >&2
  grep -E -A1 '^\[[^]]*\] (ERROR|FATAL) ' "$1/kafka.log" 2>/dev/null | head -n 8 >&2 || true
  echo "..." >&2
  tail -n 30 "$1/kafka.log" >&2 2>/dev/null || true
  tail -n 20 "$1/kafka.out" >&2 2>/dev/null || true
  stop "$1" >/dev/null 2>&1 || true
  exit 1
}

stop() {
  local dir=$1 pid i jsa
  if pid=$(live_pid "$dir"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
      alive "$pid" || break
      sleep 0.25
    done
    if alive "$pid"; then
      echo "kafka.sh: broker $pid ignored SIGTERM for 30 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
      rm -f "$dir/kafka.jsa"  # possibly half-written
    fi
  fi
  # keep the CDS archive the broker recorded at exit (first run only)
  if [[ -s $dir/kafka.jsa && -d $LIBS ]] && jsa=$(jsa_path) && [[ ! -e $jsa ]]; then
    if ! { cp "$dir/kafka.jsa" "$jsa.$$" && mv "$jsa.$$" "$jsa"; }; then rm -f "$jsa.$$"; fi
  fi
  rm -f "$dir/kafka.pid" "$dir/kafka.jsa"
}

status() {
  local pid
  if pid=$(live_pid "$1"); then
    echo "running $pid $(cat "$1/bootstrap" 2>/dev/null || echo starting)"
  else
    echo stopped; return 1
  fi
}

cmd=${1:-}
case $cmd in
  fetch) fetch ;;
  libs) fetch && echo "$LIBS" ;;
  start | stop | status | resume)
    [[ $# -eq 2 ]] || die "usage: kafka.sh $cmd STATE_DIR"
    "$cmd" "$2" ;;
  *) die "usage: kafka.sh fetch | libs | start STATE_DIR | stop STATE_DIR | resume STATE_DIR | status STATE_DIR" ;;
esac
