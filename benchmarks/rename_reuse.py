"""Time the index run after a folder is renamed: its articles vanish under the old names and come back under
the new ones. Optionally against another checkout of corpus-search (the baseline), each on its own copy.

    python benchmarks/rename_reuse.py SOURCE_DIR [--baseline-code OLD_CHECKOUT] [--work DIR]

SOURCE_DIR (for example the extracted CACM HTML files) is copied to ``WORK/<side>/root/before/``; each side
indexes ``WORK/<side>/root`` into its own database, renames ``before`` to ``after`` and indexes again (with
``--allow-mass-delete``, so that a baseline that counts the rename as a mass deletion does the same work).
Each run is a fresh ``corpus-search index --json`` process (Prefect's temporary server included). It prints
each run's wall time, the flow's ``seconds`` and what it encoded, then the rename run against the first run
and, with a baseline, baseline / current for the rename run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from noop_rerun import cli_index

REPO = Path(__file__).resolve().parents[1]


def index(code: Path, root: Path, db: Path) -> dict:
    """One ``corpus-search index ROOT --json`` in a fresh process of the checkout ``code``."""
    wall, s = cli_index(code, [str(root), "-c", "bench", "--db", str(db), "--allow-mass-delete"], timeout=7200)
    return {"wall_s": wall, "flow_s": s["seconds"], "encoded": s["paragraphs_encoded"],
            "reused": s.get("paragraphs_reused", 0), "added": s["paragraphs_added"], "deleted": s["paragraphs_deleted"],
            "rows": s["rows"]}


def side(name: str, code: Path, source: Path, work: Path) -> tuple[dict, dict]:
    """Index a copy of ``source``, rename its folder, index again: (first run, rename run)."""
    root = work / name / "root"
    shutil.rmtree(work / name, ignore_errors=True)
    shutil.copytree(source, root / "before")
    db = work / name / "db"
    first = index(code, root, db)
    (root / "before").rename(root / "after")
    again = index(code, root, db)
    for label, r in (("first index", first), ("after rename", again)):
        print(f"{name:>8} {label:>12}: wall {r['wall_s']:7.1f} s, flow {r['flow_s']:7.1f} s, "
              f"{r['encoded']} encoded, {r['reused']} reused, {r['deleted']} deleted, {r['rows']} rows", flush=True)
    print(f"{name:>8} rename run / first run: flow {again['flow_s'] / first['flow_s']:.3f}x")
    return first, again


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a directory of articles (copied, never changed)")
    ap.add_argument("--baseline-code", type=Path, default=None, help="another checkout (e.g. a git worktree of main~N)")
    ap.add_argument("--work", type=Path, default=None, help="where the copies and databases go (default: a new temp dir)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="rename-bench-"))
    runs = {}
    if args.baseline_code:
        runs["baseline"] = side("baseline", args.baseline_code.resolve(), args.source, work)
    runs["current"] = side("current", REPO, args.source, work)
    if "baseline" in runs:
        b, c = runs["baseline"][1], runs["current"][1]
        print(f"rename run, baseline / current: wall {b['wall_s'] / c['wall_s']:.2f}x, flow {b['flow_s'] / c['flow_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
