#!/usr/bin/env bash
# Test service: a private Docker engine (Debian's docker.io) plus the agentkd sandbox image, so the Docker
# backend's tests run against a real daemon. `start` prints `export AGENTKD_DOCKER_HOST=...` on stdout;
# `stop` kills the daemon by its pid. Any failure prints a warning and exits 0: the tests then skip,
# saying why (see the log under $BASE).
set -uo pipefail
cd "$(dirname "$0")/../../.."
BASE=${AGENTKD_DOCKERD_DIR:-/tmp/agentkd-dockerd}
SOCK=$BASE/docker.sock
PIDFILE=$BASE/dockerd.pid
LOG=$BASE/dockerd.log
log() { echo "[services/docker] $*" >&2; }

up() { docker -H "unix://$SOCK" version >/dev/null 2>&1; }

start() {
  if [ "$(id -u)" != 0 ]; then log "not root: no private dockerd (Docker backend tests will skip)"; return 0; fi
  if ! command -v dockerd >/dev/null; then log "dockerd not installed (apt-get install docker.io)"; return 0; fi
  mkdir -p "$BASE"
  if ! { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && up; }; then
    rm -f "$PIDFILE" "$SOCK"
    dockerd --data-root "$BASE/data" --exec-root "$BASE/exec" -H "unix://$SOCK" --pidfile "$PIDFILE" \
      --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
      --exec-opt native.cgroupdriver=cgroupfs >"$LOG" 2>&1 &
    for _ in $(seq 1 60); do up && break; sleep 0.5; done
    if ! up; then
      log "WARNING: dockerd did not come up (see $LOG); Docker backend tests will skip"
      tail -n 5 "$LOG" >&2 || true
      return 0
    fi
  fi
  if ! bash agentkd/sandbox/image/build-image.sh --docker-host "unix://$SOCK" >&2; then
    log "WARNING: could not build the sandbox image; Docker backend tests will skip"
  fi
  echo "export AGENTKD_DOCKER_HOST=unix://$SOCK"
}

stop() {
  [ -s "$PIDFILE" ] || return 0
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
exit 0
