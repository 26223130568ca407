#!/usr/bin/env bash
# Run a command against a Docker engine (what `make test-containers` does):
#
#   scripts/with-docker-engine.sh CMD [ARGS...]
#
# With DOCKER_HOST set, that engine is used as it is. Otherwise
# scripts/docker-engine.sh starts the project's private one (installing
# docker.io first if needed) and, if this script started it, stops it when CMD
# ends, however CMD ends. When no engine answers, it prints one loud line that
# says why and exits 0 without running CMD (exit 1 with KTC_REQUIRE_CONTAINERS=1).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"

skip() {
  echo "!!! SKIPPED: no Docker engine here ($1); the images and the chart's pods were NOT tested in containers !!!" >&2
  if [[ "${KTC_REQUIRE_CONTAINERS:-}" == 1 ]]; then exit 1; fi
  exit 0
}

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi
if [[ -n "${DOCKER_HOST:-}" ]]; then
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || skip "DOCKER_HOST=$DOCKER_HOST does not answer"
  exec "$@"
fi
log="$(mktemp)"
if ! host="$("$here/docker-engine.sh" start 2>"$log")"; then
  cat "$log" >&2
  reason="$(tail -n 1 "$log")"
  rm -f "$log"
  skip "${reason#docker-engine: }"
fi
cat "$log" >&2
if grep -q "started dockerd" "$log"; then
  trap '"$here/docker-engine.sh" stop' EXIT
  trap 'exit 130' INT TERM
fi
rm -f "$log"
DOCKER_HOST="$host" "$@"
