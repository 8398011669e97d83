# Shared by redis.sh and redis-cluster.sh (sourced, not run): installing redis-server and
# telling a live process from a gone one. The sourcing script defines die().

# ensure_redis NAME: install Debian's redis-server package (redis-cli comes with it, in
# redis-tools) unless both are on PATH; NAME prefixes the message.
ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  echo "$1: installing Debian package redis-server" >&2
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  # (On a systemd host the package also starts a system redis on 6379; containers with
  # policy-rc.d=101 don't. Either way we never use that instance.)
  {
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq redis-server
  } >&2 || die "apt-get install redis-server failed"
}

# alive PID: the process exists and is no zombie ("State:<TAB>Z (zombie)" until reaped)
alive() { grep -q '^State:[[:space:]]*[^Z[:space:]]' "/proc/$1/status" 2>/dev/null; }
