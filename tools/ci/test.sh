#!/usr/bin/env bash
# Test driver: lint, start the services tests need (see tools/ci/services.d/), run pytest, tear down.
set -uo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
export AGENTKD_CACHE=${AGENTKD_CACHE:-$HOME/.cache/agentkd}

ruff check agentkd tools tests || exit 1

# Each services.d/NAME.sh may start a service and print lines `export VAR=value` for the tests;
# it is called again with `stop` at the end.
svc_env=$(mktemp)
for s in tools/ci/services.d/*.sh; do
  [ -e "$s" ] || continue
  bash "$s" start >>"$svc_env" || echo "[test] service $s failed to start; its tests will report why" >&2
done
# shellcheck disable=SC1090
. "$svc_env"
cleanup() { for s in tools/ci/services.d/*.sh; do [ -e "$s" ] && bash "$s" stop || true; done; rm -f "$svc_env"; }
trap cleanup EXIT

python -m pytest -q -rs --durations=15 "$@"
rc=$?
exit $rc
