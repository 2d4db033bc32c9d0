#!/usr/bin/env bash
# Set up, index the sample corpus in examples/ into a local LanceDB directory (under Prefect's own
# temporary server), run it again to show that nothing is re-encoded, train a re-ranker for it (offline,
# self-supervised, time-boxed), say what it gained on held-out queries, and answer a question.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.corpus_search/prefect}"
export PREFECT_LOGGING_LEVEL=${PREFECT_LOGGING_LEVEL:-WARNING}
mkdir -p "$PREFECT_HOME"
QUESTION=${1:-"How do glaciers form?"}

echo "== index examples/ (encodes what is new or changed: everything on the first run)"
corpus-search index examples/articles examples/notes examples/simplewiki-sample.jsonl --collection demo
echo "== index again (nothing changed: 0 re-encoded)"
corpus-search index examples/articles examples/notes examples/simplewiki-sample.jsonl --collection demo
echo "== train a re-ranker for this collection (no judgments needed: pseudo-queries from the articles; ~2-3 min on 2 CPU cores)"
TRAINED=$(corpus-search train-reranker --collection demo --self-supervised --time-budget "${TRAIN_BUDGET:-90}" --json)
python - "$TRAINED" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); d = r["dev"]
print(f"trained {r['id']} on {r['train_queries']} pseudo-queries ({r['pairs']} pairs, {r['train_seconds']:.0f} s)")
print(f"held-out queries ({d['queries']}): nDCG@10 retrieval alone {d['retrieval']['ndcg@10']:.3f}; "
      f"this re-ranker alone {d['candidate']['alone']:.3f}, fused with retrieval {d['candidate']['ndcg@10']:.3f} "
      f"(cross-validated; weight saved {r['alpha']})")
if not r["alpha"]:
    print("(weight 0.0: the fused ranking is retrieval's own; this re-ranker adds nothing on these queries)")
print(r["decision"])
PY
echo "== search: $QUESTION"
if [ "$(python -c 'import json,sys; print(json.loads(sys.argv[1])["promoted"])' "$TRAINED")" = "True" ]; then
  corpus-search search "$QUESTION" --collection demo -k 3
else
  echo "The trained re-ranker did not beat retrieval alone on held-out queries, so it was not promoted."
  echo "Searches answer with retrieval (or a cross-encoder you configure), marked as such:"
  corpus-search search "$QUESTION" --collection demo -k 3
  echo
  echo "For comparison only, the answer re-ranked by the model that was not promoted (its gate depth, 30):"
  corpus-search search "$QUESTION" --collection demo -k 3 --candidates 30 \
    --cross-encoder "$(python -c 'import json,sys; print(json.loads(sys.argv[1])["model"])' "$TRAINED")"
  # An unpromoted model is ~200 MB that no search uses: a demo run again must not pile them up.
  if [ -z "${KEEP_MODEL:-}" ]; then
    echo
    echo "== removing the unpromoted model (KEEP_MODEL=1 keeps it)"
    corpus-search rerankers --collection demo --remove "$(python -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$TRAINED")" \
      | sed -n 1p
  fi
fi
