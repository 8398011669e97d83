#!/usr/bin/env bash
# Throw-away redis-server on a loopback port for tests, the demo and CI (no persistence).
# Installs Debian's redis-server package when redis-server is not on PATH.
#
# usage:
#   redis.sh start STATE_DIR     prints "redis://127.0.0.1:PORT/0" (the only stdout line),
#                                also written to STATE_DIR/url
#   redis.sh stop STATE_DIR      SIGTERM, up to 10 s, then SIGKILL; idempotent
#   redis.sh status STATE_DIR    prints "running PID URL" (exit 0) or "stopped" (exit 1)
#
# env: REDIS_PORT (default: a free loopback port), REDIS_PASSWORD (sets requirepass; the URL
#      then reads redis://:PASSWORD@127.0.0.1:PORT/0, password percent-encoded),
#      REDIS_START_TIMEOUT (20 s).
# STATE_DIR gets redis.conf (mode 0600), redis.pid, redis.log, redis.out and url.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "redis.sh: $*" >&2; exit 1; }

# shellcheck source=deploy/local/redis-common.sh
source "$HERE/redis-common.sh"



live_pid() {
  local pid
  pid=$(cat "$1/redis.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'redis-server' && echo "$pid"
}

# PING over TCP: redis-cli when present, else bash's /dev/tcp (in a subshell: a failed
# `exec` redirection would end this script)
ping_ok() {
  local port=$1 reply
  if command -v redis-cli >/dev/null; then
    reply=$(env ${REDIS_PASSWORD:+REDISCLI_AUTH="$REDIS_PASSWORD"} \
      timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) || return 1
  else
    reply=$(
      exec 2>/dev/null 8<>"/dev/tcp/127.0.0.1/$port" || exit 1
      if [[ -n ${REDIS_PASSWORD:-} ]]; then
        local LC_ALL=C  # ${#...} in bytes, for the RESP bulk-string length
        # shellcheck disable=SC2016
        printf '*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n' "${#REDIS_PASSWORD}" "$REDIS_PASSWORD" >&8
        read -r -t 2 _ <&8
      fi
      printf 'PING\r\n' >&8 && read -r -t 2 r <&8 && echo "${r#+}"  # RESP: "+PONG"
    ) || return 1
  fi
  [[ ${reply%$'\r'} == PONG ]]
}

start() {
  local dir pid port url
  mkdir -p "$1" && dir=$(cd "$1" && pwd)
  if pid=$(live_pid "$dir"); then  # already running: idempotent
    cat "$dir/url"; return 0
  fi
  ensure_redis redis.sh
  port=${REDIS_PORT:-$(python3 "$HERE/freeport.py")}
  rm -f "$dir/redis.log" "$dir/redis.pid" "$dir/url"
  # Settings go to a 0600 config file rather than argv, so a password doesn't show in ps.
  (
    umask 077
    cat >"$dir/redis.conf" <<EOF
port $port
bind 127.0.0.1
save ""
appendonly no
daemonize no
dir $dir
pidfile $dir/redis.pid
logfile $dir/redis.log
EOF
    if [[ -n ${REDIS_PASSWORD:-} ]]; then
      local pw=${REDIS_PASSWORD//\\/\\\\}
      echo "requirepass \"${pw//\"/\\\"}\"" >>"$dir/redis.conf"
    fi
  )
  url="redis://127.0.0.1:$port/0"
  if [[ -n ${REDIS_PASSWORD:-} ]]; then
    url="redis://:$(python3 -c 'import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=""))' \
      "$REDIS_PASSWORD")@127.0.0.1:$port/0"
  fi
  # setsid: keep it out of the caller's process group (Ctrl-C, SIGHUP); stop kills it.
  setsid redis-server "$dir/redis.conf" >"$dir/redis.out" 2>&1 </dev/null &

  local deadline=$((SECONDS + ${REDIS_START_TIMEOUT:-20}))
  until [[ -s $dir/redis.pid ]] && ping_ok "$port"; do
    if ((SECONDS >= deadline)); then
      echo "redis.sh: redis-server not answering PING on $port; log tail:" >&2
      tail -n 30 "$dir/redis.log" >&2 2>/dev/null || true
      stop "$dir" || true
      exit 1
    fi
    sleep 0.1
  done
  echo "$url" >"$dir/url"
  echo "$url"
}

stop() {
  local dir=$1 pid i
  if pid=$(live_pid "$dir"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$dir/redis.pid"
}

status() {
  local pid
  if pid=$(live_pid "$1"); then
    echo "running $pid $(cat "$1/url" 2>/dev/null || echo starting)"
  else
    echo stopped; return 1
  fi
}

cmd=${1:-}
case $cmd in
  start | stop | status)
    [[ $# -eq 2 ]] || die "usage: redis.sh $cmd STATE_DIR"
    "$cmd" "$2" ;;
  *) die "usage: redis.sh start STATE_DIR | stop STATE_DIR | status STATE_DIR" ;;
esac
