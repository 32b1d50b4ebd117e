#!/usr/bin/env bash
# Build the agentkd sandbox image without a registry: debootstrap a minimal Debian bookworm rootfs with
# python3, numpy and sympy from the machine's Debian mirror, then `docker import` it.
# The rootfs tarball is cached under $AGENTKD_CACHE (default ~/.cache/agentkd), so only the first build
# pays for debootstrap. Needs root (debootstrap) and a reachable Docker daemon.
#   usage: agentkd sandbox build-image [...], or bash agentkd/sandbox/image/build-image.sh [--docker-host unix:///path.sock] [--image NAME] [--force]
set -euo pipefail
IMAGE=${AGENTKD_SANDBOX_IMAGE:-agentkd-sandbox:latest}
HOST=${AGENTKD_DOCKER_HOST:-${DOCKER_HOST:-}}
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --docker-host) HOST=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PACKAGES=python3,python3-numpy,python3-sympy
SUITE=bookworm
CACHE=${AGENTKD_CACHE:-$HOME/.cache/agentkd}
TARBALL=$CACHE/sandbox-rootfs-$SUITE-$(echo "$PACKAGES" | sha256sum | cut -c1-8).tar.gz
log() { echo "[build-image] $*" >&2; }
docker_() { if [ -n "$HOST" ]; then docker -H "$HOST" "$@"; else docker "$@"; fi; }

mirror() {  # the first Debian mirror apt is configured with, else deb.debian.org
  local m
  m=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
      | grep -v security | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | head -n1)
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

if [ "$FORCE" = 0 ] && docker_ image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already present"; exit 0
fi
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  mkdir -p "$CACHE"
  root=$(mktemp -d /tmp/agentkd-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE from $(mirror) (~1 min, cached afterwards in $TARBALL)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
  mkdir -p "$root/work"
  chmod 1777 "$root/work"
  tar -C "$root" --numeric-owner -czf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
log "docker import $TARBALL -> $IMAGE"
docker_ import -c 'USER 65534:65534' -c 'WORKDIR /work' -c 'CMD ["python3"]' "$TARBALL" "$IMAGE" >/dev/null
log "built $IMAGE"
