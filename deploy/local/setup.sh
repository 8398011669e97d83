#!/usr/bin/env bash
# Install what the local Kafka broker, redis-server and the Prometheus test need, then
# resolve the Kafka jars.
# Idempotent: does nothing that is already done. Debian/Ubuntu (apt-get) only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)  # the scrape test (Debian's build)
if ((${#need[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "setup.sh: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [[ -z $java_major || $java_major -lt 17 ]]; then
  echo "setup.sh: Kafka 4 needs Java 17 or newer, found '${java_major:-none}'" >&2
  exit 1
fi
bash "$HERE/kafka.sh" fetch
