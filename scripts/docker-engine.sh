#!/usr/bin/env bash
# A private Docker engine for the container tests (and for `tunectl images` on
# a machine with no running Docker service).
#
#   scripts/docker-engine.sh install   install Debian's docker.io if dockerd is missing (root, apt-get)
#   scripts/docker-engine.sh start     install if needed, start dockerd, wait until it answers
#   scripts/docker-engine.sh stop      stop the dockerd that `start` started, by its pid
#   scripts/docker-engine.sh status    exit 0 and print DOCKER_HOST when it answers, else exit 1
#   scripts/docker-engine.sh host      print the DOCKER_HOST value of this engine
#   scripts/docker-engine.sh env       print `export DOCKER_HOST=...` for eval
#   scripts/docker-engine.sh purge     stop it and delete its data root (every image in it)
#
# `eval "$(scripts/docker-engine.sh env)"` points docker, `tunectl images` and
# `tunectl doctor` at it.
#
# The engine is ours alone: its own data root, exec root, pid file and socket,
# no iptables rules and no bridge (containers use the host network). The data
# root lives outside the clone, in the user's cache folder, so a second run
# reuses the base image and the pip layers of the images:
#   KTC_ENGINE_HOME  default ${XDG_CACHE_HOME:-~/.cache}/keras-tuner-cluster/engine
#                    (data/ is the data root; engine.log is dockerd's log)
#   KTC_ENGINE_RUN   default /run/keras-tuner-cluster (exec root, pid file,
#                    socket; short, because unix socket paths are limited to
#                    108 bytes, and on a tmpfs that a reboot clears)
# Storage: overlay2, or vfs where overlay2 does not work (slower, bigger).
set -euo pipefail

ENGINE_HOME="${KTC_ENGINE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/keras-tuner-cluster/engine}"
ENGINE_RUN="${KTC_ENGINE_RUN:-/run/keras-tuner-cluster}"
START_TIMEOUT="${KTC_ENGINE_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KTC_ENGINE_STOP_TIMEOUT:-60}"
DATA_ROOT="$ENGINE_HOME/data"
LOG="$ENGINE_HOME/engine.log"
PIDFILE="$ENGINE_RUN/dockerd.pid"
SOCKET="$ENGINE_RUN/docker.sock"
HOST="unix://$SOCKET"

say() { echo "docker-engine: $*" >&2; }
die() {
  say "$*"
  exit 1
}

usage() {
  echo "usage: $0 install|start|stop|status|host|env|purge" >&2
  exit 2
}

# Debian packages, installed without starting their services: a policy-rc.d
# that says no (exit 101) keeps docker.io's postinst from starting a system
# dockerd on /var/run/docker.sock.
apt_install() {
  [[ "$(id -u)" -eq 0 ]] || die "$* not installed, and installing it needs root: sudo apt-get install $*"
  command -v apt-get >/dev/null || die "$* not installed, and this machine has no apt-get: install $* yourself"
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  say "installing $* (apt-get)"
  local rc=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  } || rc=$?
  if [[ -n "$made_policy" ]]; then rm -f "$policy"; fi
  [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

install() {
  if command -v dockerd >/dev/null && command -v docker >/dev/null; then
    return 0
  fi
  apt_install docker.io
  command -v dockerd >/dev/null || die "docker.io installed but dockerd is not on PATH"
}

pid_alive() {
  [[ -s "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
  DOCKER_HOST="$HOST" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Start dockerd with storage driver $1; 0 once it answers, 1 if it died first.
launch() {
  local driver="$1"
  mkdir -p "$DATA_ROOT" "$ENGINE_RUN"
  chmod 700 "$ENGINE_RUN"
  echo "=== $(date -u +%FT%TZ) dockerd --storage-driver $driver" >>"$LOG"
  # setsid: the engine outlives the shell (and the make or pytest) that started it,
  # and a Ctrl-C in that terminal does not reach it; `stop` ends it by its pid.
  # 9>&-: the start lock is released when `start` returns, not held by dockerd.
  setsid dockerd \
    --data-root "$DATA_ROOT" \
    --exec-root "$ENGINE_RUN/exec" \
    --pidfile "$PIDFILE" \
    --host "$HOST" \
    --iptables=false \
    --ip-masq=false \
    --bridge=none \
    --storage-driver "$driver" \
    >>"$LOG" 2>&1 </dev/null 9>&- &
  local pid=$! waited=0
  while ((waited < START_TIMEOUT * 5)); do
    if answers; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  say "dockerd did not answer within ${START_TIMEOUT}s; stopping it (log: $LOG)"
  kill "$pid" 2>/dev/null || true
  return 1
}

start() {
  install
  mkdir -p "$ENGINE_HOME"
  # One start at a time: two make runs must not start two engines on one data root.
  exec 9>"$ENGINE_HOME/lock"
  flock --timeout "$START_TIMEOUT" 9 || die "another start holds $ENGINE_HOME/lock"
  if pid_alive && answers; then
    say "already running (pid $(cat "$PIDFILE")), $HOST"
    echo "$HOST"
    return 0
  fi
  if pid_alive; then
    die "dockerd (pid $(cat "$PIDFILE")) runs but does not answer on $SOCKET; see $LOG, or stop it: $0 stop"
  fi
  rm -f "$PIDFILE" "$SOCKET"
  local drivers=(overlay2 vfs)
  # A data root keeps its driver: reusing it keeps its images.
  if [[ -d "$DATA_ROOT/vfs" && ! -d "$DATA_ROOT/overlay2" ]]; then drivers=(vfs); fi
  local driver
  for driver in "${drivers[@]}"; do
    if launch "$driver"; then
      say "started dockerd (pid $(cat "$PIDFILE"), storage $driver), data root $DATA_ROOT"
      echo "$HOST"
      return 0
    fi
    say "dockerd with $driver storage did not start: $(grep -v '^===' "$LOG" | tail -n 1)"
  done
  die "cannot start dockerd (log: $LOG)"
}

stop() {
  if ! pid_alive; then
    say "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  local pid waited=0
  pid="$(cat "$PIDFILE")"
  # SIGTERM: dockerd stops its containers (each gets its stop timeout), then exits.
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT * 5)); do
    sleep 0.2
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "dockerd (pid $pid) still runs after ${STOP_TIMEOUT}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$SOCKET"
  # dockerd leaves the host network's namespace mounted under its exec root
  # (after a --network host container); nothing else uses it once dockerd is gone.
  local netns
  for netns in "$ENGINE_RUN"/exec/netns/*; do
    if mountpoint -q "$netns"; then umount "$netns" 2>/dev/null || true; fi
  done
  say "stopped dockerd (pid $pid)"
}

purge() {
  stop
  case "$ENGINE_HOME" in
    / | "$HOME" | "$HOME/" | "") die "refusing to delete KTC_ENGINE_HOME=$ENGINE_HOME" ;;
  esac
  if [[ -d "$ENGINE_HOME" ]]; then
    rm -rf --one-file-system "$ENGINE_HOME"
    say "deleted $ENGINE_HOME"
  fi
}

status() {
  if pid_alive && answers; then
    echo "$HOST"
    return 0
  fi
  say "not running ($HOST)"
  return 1
}

[[ $# -eq 1 ]] || usage
case "$1" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  host) echo "$HOST" ;;
  env) echo "export DOCKER_HOST=$HOST" ;;
  purge) purge ;;
  *) usage ;;
esac
