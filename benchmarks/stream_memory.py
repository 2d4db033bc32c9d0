"""Peak memory of ``corpus-search index`` on a big JSONL dump: does it stay flat as the dump grows?

    python benchmarks/stream_memory.py                          # 50,000 and 200,000 paragraphs
    python benchmarks/stream_memory.py --sizes 5000 20000       # a quick look
    python benchmarks/stream_memory.py --model sentence-transformers/all-MiniLM-L6-v2   # the real model

For each size it writes a BEIR-layout dump (``{"_id", "title", "text"}``, one paragraph per record,
300-600 characters of real English words from MiniLM's vocabulary, Zipf-distributed) into a temporary
directory, indexes it into a fresh database with ``corpus-search index`` in a child process, and samples
the child's memory every 0.1 s: its own peak RSS (the kernel's high-water mark, VmHWM, so short spikes
are not missed) and the peak of the whole process tree (the CLI plus the temporary Prefect server it
starts). It prints both per size and the ratio largest / smallest of the index process (target <= 1.2).

The model: by default a tiny real bi-encoder built in the temporary directory
(``benchmarks/tiny_bi_encoder.py``: random 2-layer BERT, MiniLM's tokenizer, 384-dim output, so rows and
indexes are as big as MiniLM's) because MiniLM needs hours for 200,000 paragraphs on two shared cores.
Everything else is the product as shipped: the CLI, the Prefect flow, LanceDB, FTS and ANN indexes.
``--model NAME_OR_PATH`` runs with a real model instead. Torch gets ``--threads`` threads (default 1:
on a small shared machine more threads only spin). The temporary directory is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- the dump


def vocabulary() -> list[str]:
    """Whole English words of all-MiniLM-L6-v2's WordPiece vocabulary (no pieces, numbers or marks)."""
    from tiny_bi_encoder import minilm_dir

    words = []
    for line in (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines():
        if line.isascii() and line.isalpha() and line.islower() and len(line) >= 2:
            words.append(line)
    return words


def write_dump(path: Path, paragraphs: int, *, seed: int = 0, min_chars: int = 300, max_chars: int = 600) -> int:
    """Write ``paragraphs`` BEIR records (one paragraph each) to ``path``; returns the bytes written.

    Word frequencies follow Zipf's law over a shuffled vocabulary, so the full-text index sees a
    realistic mix of very common and rare terms; lengths are uniform in [min_chars, max_chars].
    """
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(), dtype=object)
    rng.shuffle(words)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, paragraphs, 1000):
            n = min(1000, paragraphs - start)
            # ~1 word per 7 characters: 100 words cover the longest text, cut to its target length below.
            draws = rng.choice(words, size=(n, 100), p=weights)
            lengths = rng.integers(min_chars, max_chars + 1, size=n)
            sentence_len = rng.integers(6, 18, size=n)
            lines = []
            for i in range(n):
                text, count = [], 0
                for j, word in enumerate(draws[i]):
                    text.append(word.capitalize() if j % sentence_len[i] == 0 else word)
                    count += len(word) + 1
                    if count >= lengths[i]:
                        break
                    if (j + 1) % sentence_len[i] == 0:
                        text[-1] += "."
                body = " ".join(text).rstrip(".") + "."
                title = " ".join(draws[i][-4:]).capitalize()
                lines.append(json.dumps({"_id": f"doc-{start + i:07d}", "title": title, "text": body}))
            data = "\n".join(lines) + "\n"
            fh.write(data)
            written += len(data)
    return written


# --------------------------------------------------------------------------- measuring a child


def _hwm_kb(pid: int) -> int:
    """The kernel's peak resident set size (VmHWM) of ``pid`` in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], env: dict[str, str], scratch: Path, interval: float = 0.1) -> dict:
    """Run ``cmd`` and sample its memory until it exits: peak RSS of the process itself (VmHWM), peak of
    the sum over its process tree, when the peak came, and its stdout (kept in a file under ``scratch``)."""
    import psutil

    started = time.perf_counter()
    out_path = scratch / f"stdout-{time.time_ns()}.txt"
    err_path = out_path.with_suffix(".err")
    # Files, not pipes: a child that logs more than a pipe holds would block while nobody reads it.
    with open(out_path, "w+", encoding="utf-8") as out, open(err_path, "w+", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=out, stderr=err, text=True)
        ps = psutil.Process(proc.pid)
        peak_self, peak_tree, peak_at, timeline = 0, 0, 0.0, []
        last_log = 0.0
        while proc.poll() is None:
            hwm = _hwm_kb(proc.pid)
            tree = 0
            try:
                for p in [ps, *ps.children(recursive=True)]:
                    tree += p.memory_info().rss // 1024
            except psutil.Error:
                pass
            now = time.perf_counter() - started
            if hwm > peak_self:
                peak_self, peak_at = hwm, now
            peak_tree = max(peak_tree, tree)
            if now - last_log >= 5:
                timeline.append((round(now), _rss_kb(ps) // 1024))
                last_log = now
            time.sleep(interval)
        out.seek(0)
        stdout = out.read()
        err.seek(0)
        stderr = err.read()
    out_path.unlink()
    err_path.unlink()
    if proc.returncode not in (0, 1):  # 1: finished with some failures, still a measured run
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-4000:]}")
    return {"peak_self_mb": peak_self / 1024, "peak_tree_mb": peak_tree / 1024, "peak_at_s": peak_at,
            "wall_s": time.perf_counter() - started, "stdout": stdout, "timeline": timeline}


def _rss_kb(ps) -> int:
    try:
        return ps.memory_info().rss // 1024
    except Exception:  # noqa: BLE001 - gone between two samples
        return 0


def index_command(dump: Path, db: Path, batch_articles: int) -> list[str]:
    return [sys.executable, "-m", "corpus_search.cli", "index", str(dump), "--collection", "mem", "--db", str(db),
            "--json", "--no-progress", "--batch-articles", str(batch_articles)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000], help="paragraphs per dump")
    ap.add_argument("--model", default=None, help="bi-encoder name or path (default: a tiny one built here)")
    ap.add_argument("--batch-articles", type=int, default=512, help="the CLI's --batch-articles (default 512)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of the index process (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (dumps, databases)")
    ap.add_argument("--timeline", action="store_true", help="print the index process's RSS every 5 s")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stream-memory-"))
    try:
        model = args.model
        if model is None:
            from tiny_bi_encoder import build_bi_encoder

            model = str(build_bi_encoder(work / "tiny-bi-encoder"))
        env = {**os.environ, "PYTHONPATH": str(REPO), "CORPUS_SEARCH_BI_ENCODER": model,
               "PREFECT_HOME": str(work / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING",
               "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "TOKENIZERS_PARALLELISM": "false"}
        env.pop("PREFECT_API_URL", None)  # each run starts (and stops) its own temporary server, as a user's does
        print(f"model: {model}; torch threads: {args.threads}; --batch-articles {args.batch_articles}")
        print(f"{'paragraphs':>10} {'dump MB':>8} {'rows':>8} {'index s':>8} {'peak RSS MB':>12} "
              f"{'(at s)':>7} {'tree peak MB':>13}")
        peaks = {}
        for n in args.sizes:
            dump = work / f"dump-{n}.jsonl"
            size = write_dump(dump, n)
            run = run_measured(index_command(dump, work / f"db-{n}", args.batch_articles), env, work)
            summary = json.loads(run["stdout"].strip().splitlines()[-1])
            peaks[n] = run["peak_self_mb"]
            print(f"{n:>10} {size / 2**20:>8.1f} {summary['rows']:>8} {run['wall_s']:>8.1f} "
                  f"{run['peak_self_mb']:>12.0f} {run['peak_at_s']:>7.0f} {run['peak_tree_mb']:>13.0f}", flush=True)
            if args.timeline:
                print("   RSS MB every 5 s:", " ".join(f"{t}s:{mb}" for t, mb in run["timeline"]))
            dump.unlink()
            shutil.rmtree(work / f"db-{n}", ignore_errors=True)
        small, large = min(peaks), max(peaks)
        if small != large:
            print(f"peak RSS ratio {large:,} / {small:,} paragraphs: {peaks[large] / peaks[small]:.3f}  (target <= 1.2)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
