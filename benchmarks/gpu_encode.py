"""GPU encoding: the index flow's paragraphs/s against raw ``SentenceTransformer.encode`` on the same GPU.

    python benchmarks/gpu_encode.py                                  # SciFact, cuda, fp16
    python benchmarks/gpu_encode.py --workers 2                      # + the CLI on 2 Dask workers (one per GPU)
    python benchmarks/gpu_encode.py --device cpu --limit 500         # the smoke path (no GPU needed)

Same paragraphs for both (exactly the texts the flow encodes: the dump split by the product's own rules),
same device, same model, fp16, and the same batch size: the largest power of two from 64 up that fits
(probed on the longest texts; a ``torch.cuda.OutOfMemoryError`` ends the search). Raw encoding is timed
twice: with fp16 weights (``model.half()``, the usual raw baseline) and under fp16 autocast (what the
product does, ``query.devices.autocast``); the ratio is against the faster. The flow runs in this
process (``index_corpus``, a fresh database, model loaded before timing), so its rate includes reading,
splitting, writing to LanceDB and building the FTS index: paragraphs encoded / flow seconds.

``--workers N`` also runs ``corpus-search index --workers N`` (a Dask LocalCluster; with CUDA each worker
sees one GPU through ``CUDA_VISIBLE_DEVICES``) and reports its paragraphs/s. On a CPU (``--device cpu``)
the batch search is skipped (``--batch``, default 64) and fp32 is used: the same code, quickly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from deployments.prefect_env import prefect_environment  # noqa: E402

prefect_environment()


def write_subset(corpus: Path, docs: int | None, out: Path) -> Path:
    """The first ``docs`` records of a JSONL dump (all of them when None)."""
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in itertools.islice(src, docs):
            dst.write(line)
    return out


def encoded_texts(dump: Path, settings) -> list[str]:
    """Exactly the texts the flow encodes from ``dump`` (same split rules and settings)."""
    from query.models import bi_encoder_from_settings
    from tasks.fetch import classify_source, iter_jsonl
    from tasks.split import split_article, tokenizer_counter
    from tasks.stages import split_options

    opts = split_options(settings)
    count = tokenizer_counter(bi_encoder_from_settings(settings).tokenizer)
    texts: list[str] = []
    for article in iter_jsonl(classify_source(str(dump))):
        texts.extend(p.encoded for p in split_article(article, opts, count))
    return texts


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def largest_batch(model, texts: list[str], device: str, start: int = 64, cap: int = 8192) -> int:
    """The largest power of two from ``start`` up to ``cap`` whose batch of the longest texts fits in memory."""
    import torch

    longest = sorted(texts, key=len, reverse=True)
    best, batch = None, start
    while batch <= min(cap, max(start, len(texts))):
        probe = list(itertools.islice(itertools.cycle(longest), batch))
        try:
            model.encode(probe, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
            synchronize(device)
            best = batch
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        batch *= 2
    if best is None:
        raise SystemExit(f"not even a batch of {start} fits on {device}: pass --batch")
    return best


def raw_rate(model, texts: list[str], batch: int, device: str, autocast_precision: str | None = None) -> float:
    """Paragraphs/s of ``model.encode`` over ``texts`` (normalised numpy output, as the flow asks for)."""
    from contextlib import nullcontext

    from query.devices import autocast

    ctx = autocast(device, autocast_precision) if autocast_precision else nullcontext()
    with ctx:
        model.encode(texts[:batch], batch_size=batch, show_progress_bar=False)  # warm-up (kernels, allocator)
        synchronize(device)
        started = time.perf_counter()
        model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
        synchronize(device)
    return len(texts) / (time.perf_counter() - started)


def cli_run(dump: Path, db: Path, workers: int, env: dict[str, str]) -> dict | str:
    """``corpus-search index --workers N`` in a child process: its summary, or why it could not run."""
    base = [sys.executable, "-m", "corpus_search.cli", "index"]
    helptext = subprocess.run([*base, "--help"], capture_output=True, text=True, env=env, cwd=REPO, check=False).stdout
    if "--workers" not in helptext:
        return "this corpus-search has no `index --workers` yet (issue 13, Dask task runner)"
    started = time.perf_counter()
    out = subprocess.run([*base, str(dump), "--collection", "gpu", "--db", str(db), "--workers", str(workers),
                          "--json", "--no-progress"], capture_output=True, text=True, env=env, cwd=REPO,
                         check=False)
    if out.returncode not in (0, 1):
        return f"exit {out.returncode}: {out.stderr.strip()[-2000:]}"
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["wall"] = time.perf_counter() - started
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default=str(REPO.parent / "shared/data/scifact/corpus.jsonl"),
                    help="a JSONL dump (default: SciFact's corpus.jsonl)")
    ap.add_argument("--limit", type=int, default=None, help="only the first LIMIT documents")
    ap.add_argument("--model", default=None, help="bi-encoder name or path (default: the bi_encoder setting)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu...")
    ap.add_argument("--precision", default=None, help="fp16 (default on cuda) or fp32 (default elsewhere)")
    ap.add_argument("--batch", type=int, default=None, help="skip the search: use this batch size")
    ap.add_argument("--max-batch", type=int, default=8192, help="the batch search stops here (default 8192)")
    ap.add_argument("--workers", type=int, default=0, help="also run `corpus-search index --workers N`")
    args = ap.parse_args()

    import torch
    from prefect.testing.utilities import prefect_test_harness
    from sentence_transformers import SentenceTransformer

    from query.models import bi_encoder_from_settings
    from query.offline import resolve_model_location
    from query.settings import Settings, get_settings

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --limit 500 for the smoke path")
    precision = args.precision or ("fp16" if device.startswith("cuda") else "fp32")
    model_name = args.model or get_settings().bi_encoder
    work = Path(tempfile.mkdtemp(prefix="gpu-encode-"))
    try:
        dump = write_subset(Path(args.corpus), args.limit, work / "corpus.jsonl")
        probe_settings = Settings(**{**get_settings().model_dump(), "bi_encoder": model_name, "device": device,
                                     "precision": precision})
        texts = encoded_texts(dump, probe_settings)

        raw = SentenceTransformer(resolve_model_location(model_name), device=device)
        if device.startswith("cuda"):
            name = torch.cuda.get_device_name(torch.device(device))
            memory = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
            where = f"{name} ({memory:.0f} GiB), CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"
        else:
            where = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
        print(f"device: {where}; torch {torch.__version__}")
        print(f"model: {model_name}; precision {precision}; {len(texts)} paragraphs from {args.limit or 'all'} "
              f"documents of {args.corpus}")

        half = raw.half() if precision == "fp16" else raw
        if args.batch:
            batch = args.batch
        elif device.startswith("cuda"):
            batch = largest_batch(half, texts, device, cap=args.max_batch)
        else:
            batch = 64
        print(f"batch: {batch}" + ("" if args.batch or not device.startswith("cuda") else
                                   " (largest power of two from 64 that fits, probed on the longest texts)"))

        rates = {"raw, fp16 weights" if precision == "fp16" else f"raw, {precision}": raw_rate(half, texts, batch, device)}
        del half, raw
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        if precision != "fp32":
            auto = SentenceTransformer(resolve_model_location(model_name), device=device)
            rates[f"raw, {precision} autocast"] = raw_rate(auto, texts, batch, device, precision)
            del auto

        overrides = {"bi_encoder": model_name, "device": device, "precision": precision, "batch_size": batch,
                     "encode_chunk_size": max(get_settings().encode_chunk_size, 4 * batch)}
        flow_settings = Settings(**{**get_settings().model_dump(), **overrides})
        enc = bi_encoder_from_settings(flow_settings)  # loaded before timing, as a long-lived worker has it
        from flows.index_corpus import index_corpus

        with prefect_test_harness(server_startup_timeout=180):
            summary = index_corpus([str(dump)], collection="gpu", db_uri=str(work / "db"), settings_overrides=overrides)
        flow_rate = summary["paragraphs_encoded"] / summary["seconds"]
        encode_stage = summary["paragraphs_encoded"] / summary["encode_seconds"] if summary["encode_seconds"] else 0.0
        best_raw = max(rates.values())
        for label, rate in rates.items():
            print(f"{label + ':':<28}{rate:10.1f} paragraphs/s")
        print(f"{'flow encode stage:':<28}{encode_stage:10.1f} paragraphs/s  ({enc.device}, {enc.precision})")
        print(f"{'flow end to end:':<28}{flow_rate:10.1f} paragraphs/s  ({summary['paragraphs_encoded']} paragraphs in "
              f"{summary['seconds']:.1f} s: read, split, encode, write, FTS index)")
        print(f"ratio flow / raw:           {flow_rate / best_raw:10.3f}  (encode stage / raw: {encode_stage / best_raw:.3f})")

        if args.workers:
            env = {**os.environ, "PYTHONPATH": str(REPO), "CORPUS_SEARCH_BI_ENCODER": model_name,
                   "CORPUS_SEARCH_DEVICE": device, "CORPUS_SEARCH_PRECISION": precision,
                   "CORPUS_SEARCH_BATCH_SIZE": str(batch),
                   "CORPUS_SEARCH_ENCODE_CHUNK_SIZE": str(overrides["encode_chunk_size"])}
            result = cli_run(dump, work / "db-workers", args.workers, env)
            if isinstance(result, str):
                print(f"--workers {args.workers}: not run: {result}")
            else:
                rate = result["paragraphs_encoded"] / result["seconds"]
                print(f"{f'CLI --workers {args.workers}:':<28}{rate:10.1f} paragraphs/s  (flow {result['seconds']:.1f} s, "
                      f"process {result['wall']:.1f} s with start-up); ratio / raw {rate / best_raw:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
