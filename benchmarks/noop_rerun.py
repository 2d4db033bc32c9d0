"""Time a no-op rerun of ``corpus-search index`` (nothing changed since the last run), optionally against
another checkout of corpus-search (the baseline) on its own copy of the collection, alternating runs.

    python benchmarks/noop_rerun.py ../shared/data/scifact/corpus.jsonl --collection scifact-eval --db DB \
        [--baseline-code OLD_CHECKOUT --baseline-db OLD_DB] [--repeats 3]

Each run is a fresh CLI process (Prefect's temporary server, imports and all: what a cron job pays).
It prints per run the wall time and the flow's own ``seconds``, then the medians and the ratio
baseline / current. The collection must already be indexed from SOURCE in both databases, or the first
run is not a no-op (the script says so when a run encodes anything).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_index(code: Path, args: list[str], timeout: float = 3600) -> tuple[float, dict]:
    """One ``corpus-search index ARGS --json`` in a fresh process of the checkout ``code`` (Prefect's temporary
    server included: what a cron job pays): its wall seconds and its summary."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "corpus_search.cli", "index", *args, "--json"], cwd=code, env=env,
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"no summary from {code}: rc {proc.returncode}\n{proc.stderr[-2000:]}")
    return wall, json.loads(line)


def run_once(code: Path, source: list[str], collection: str, db: str) -> dict:
    """One no-op rerun: ``cli_index`` of ``source`` into ``collection``."""
    wall, summary = cli_index(code, [*source, "-c", collection, "--db", db])
    return {"wall_s": wall, "flow_s": summary["seconds"], "encoded": summary["paragraphs_encoded"],
            "unchanged": summary["articles_unchanged"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="+", help="what the collection was indexed from")
    ap.add_argument("--collection", required=True)
    ap.add_argument("--db", required=True, help="database of the current code's collection")
    ap.add_argument("--baseline-code", type=Path, default=None, help="another checkout (e.g. git worktree of main~N)")
    ap.add_argument("--baseline-db", default=None, help="the baseline's own copy of the collection (its schema)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    sides = [("current", REPO, args.db)]
    if args.baseline_code:
        sides.insert(0, ("baseline", args.baseline_code.resolve(), args.baseline_db or args.db))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in sides}
    for i in range(args.repeats):
        order = sides if i % 2 == 0 else sides[::-1]  # alternate who goes first: the machine drifts
        for name, code, db in order:
            r = run_once(code, args.source, args.collection, db)
            runs[name].append(r)
            note = "" if r["encoded"] == 0 else f"  (NOT a no-op: {r['encoded']} paragraphs encoded)"
            print(f"{name:>8} run {i + 1}: wall {r['wall_s']:.1f} s, flow {r['flow_s']:.1f} s, "
                  f"{r['unchanged']} articles unchanged{note}", flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "flow_s")} for name, rs in runs.items()}
    for name, m in med.items():
        print(f"median {name:>8}: wall {m['wall_s']:.1f} s, flow {m['flow_s']:.1f} s")
    if "baseline" in med:
        print(f"baseline / current: wall {med['baseline']['wall_s'] / med['current']['wall_s']:.2f}x, "
              f"flow {med['baseline']['flow_s'] / med['current']['flow_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
