#!/usr/bin/env python
"""Exact vs ANN cosine search in LanceDB: build time, latency and Recall@k.

The product stores L2-normalised all-MiniLM-L6-v2 embeddings (384-dim float32)
and searches with distance type "cosine".  This benchmark measures, for a
range of table sizes, whether LanceDB's exact (flat) search is fast enough or
whether an ANN index is worth it, and which index + query parameters keep
Recall@100 >= 0.95.

Data are synthetic but clustered like sentence embeddings: a two-level
Gaussian mixture (topics -> a few thousand cluster centres -> points, with a
shared "common direction" that mimics the anisotropy of real embedding
spaces, log-normal cluster sizes and per-cluster spread), L2-normalised.
Queries come from the same mixture with slightly more noise (unseen points
near the data).  Vectors are generated in chunks (bounded memory) and the
ground truth top-k is computed in numpy in the same streaming pass.

Recall@k is measured against the numpy ground truth; LanceDB's own
`bypass_vector_index()` search is also timed and checked against it (its
recall should be ~1.0), so the exact-search latency is in the same table.

Usage:
    python benchmarks/ann_recall.py --sizes 100000,1000000 --queries 200 \
        --out /tmp/ann_bench/results.json

All LanceDB data go under --workdir (default /tmp/ann_bench).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

import lancedb
from lancedb.index import IvfFlat, IvfHnswSq, IvfPq, IvfSq

try:  # IVF_RQ (RaBitQ) is only in recent lancedb releases
    from lancedb.index import IvfRq
except ImportError:  # pragma: no cover - depends on installed version
    IvfRq = None

DIM = 384
METRIC = "cosine"
VECTOR_COL = "vector"
INDEX_NAME = "vector_idx"


# --------------------------------------------------------------------------
# Synthetic clustered data
# --------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass
class Mixture:
    """Hierarchical Gaussian mixture in a low-dimensional latent space,
    embedded in 384 dims and L2-normalised.

    topics -> cluster centres -> points, all in a `latent_dim`-dimensional
    latent space (real sentence-embedding sets have an intrinsic dimension far
    below 384) with an anisotropic, decaying per-axis spread; the latent point
    is mapped into 384 dims by a random orthonormal map, a shared "common
    direction" is added (embedding anisotropy: mean pairwise cosine > 0) plus
    a little isotropic noise.  Clusters overlap, so neighbours of a query are
    spread over several clusters, as in real text-embedding data; well-separated
    blobs with isotropic noise make IVF partitioning unrealistically easy.
    """

    seed: int
    latent_dim: int = 64
    n_topics: int = 300
    n_centres: int = 4000
    topic_scale: float = 1.0  # spread of topic means
    centre_noise: float = 0.4  # spread of cluster centres around their topic
    spread_lo: float = 1.0  # per-cluster point spread (clusters overlap)
    spread_hi: float = 1.4
    spectrum_decay: float = 0.3  # latent axis i has std ~ i**-decay (normalised)
    common_weight: float = 0.4  # norm of the shared direction, latent norm ~1
    iso: float = 0.15  # isotropic 384-d noise norm

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        L = self.latent_dim
        il = 1.0 / math.sqrt(L)
        self.common = _normalise(rng.standard_normal((1, DIM))).astype(np.float32)[0]
        w, _r = np.linalg.qr(rng.standard_normal((DIM, L)))
        self.proj = w.T.astype(np.float32)  # (L, DIM), orthonormal rows
        topics = self.topic_scale * il * rng.standard_normal((self.n_topics, L))
        self.topic_of = rng.integers(self.n_topics, size=self.n_centres)
        self.centres = (
            topics[self.topic_of] + self.centre_noise * il * rng.standard_normal((self.n_centres, L))
        ).astype(np.float32)
        wts = rng.lognormal(0.0, 1.0, self.n_centres)  # uneven cluster sizes
        self.weights = wts / wts.sum()
        self.spread = rng.uniform(self.spread_lo, self.spread_hi, self.n_centres).astype(np.float32)
        ax = np.arange(1, L + 1, dtype=np.float64) ** -self.spectrum_decay
        ax *= math.sqrt(L / (ax**2).sum())  # mean squared axis scale = 1
        self.axis = (ax * il).astype(np.float32)
        # each topic gets its own random rotation of the axis scales
        self.axis_perm = np.stack([rng.permutation(L) for _ in range(self.n_topics)])

    def sample(self, n: int, stream: int, noise_mult: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, stream])
        cid = rng.choice(self.n_centres, size=n, p=self.weights)
        z = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        z *= self.axis[self.axis_perm[self.topic_of[cid]]]
        z *= (self.spread[cid] * noise_mult)[:, None]
        z += self.centres[cid]
        out = z @ self.proj
        out += (self.iso / math.sqrt(DIM)) * rng.standard_normal((n, DIM), dtype=np.float32)
        out += self.common_weight * self.common
        return _normalise(out)


def chunks(mix: Mixture, n: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Deterministic chunks: the first n rows are identical for every n."""
    start, i = 0, 0
    while start < n:
        m = min(chunk, n - start)
        yield start, mix.sample(chunk, stream=1000 + i)[:m]
        start += m
        i += 1


class StreamingTopK:
    """Running exact top-k (by cosine = dot on unit vectors) over chunks."""

    def __init__(self, queries: np.ndarray, k: int):
        self.q = queries
        self.k = k
        nq = len(queries)
        self.ids = np.full((nq, 0), -1, dtype=np.int64)
        self.sims = np.full((nq, 0), -np.inf, dtype=np.float32)

    def update(self, start: int, block: np.ndarray) -> None:
        s = self.q @ block.T  # (nq, m)
        kk = min(self.k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([self.sims, np.take_along_axis(s, part, 1)], axis=1)
        cand_i = np.concatenate([self.ids, part.astype(np.int64) + start], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, : self.k]
        self.sims = np.take_along_axis(cand_s, keep, 1)
        self.ids = np.take_along_axis(cand_i, keep, 1)


# --------------------------------------------------------------------------
# Index / query configurations
# --------------------------------------------------------------------------


@dataclass
class IndexSpec:
    label: str
    index_type: str
    make: Any  # callable(n_rows) -> (config, build_params dict)
    query_grid: Any  # callable(build_params, k) -> list[dict]
    rank: int  # expected build cost order (cheap first)


def _parts(n: int) -> int:
    return max(1, int(round(math.sqrt(n))))


def _nprobes(p: int, fracs: tuple[float, ...]) -> list[int]:
    out = sorted({max(1, int(round(p * f))) for f in fracs})
    return out


def index_specs(
    hnsw_part_div: int,
    hnsw_ef_construction: int,
    flat_fracs: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2),
    fracs: tuple[float, ...] = (0.05, 0.1, 0.2),
) -> list[IndexSpec]:
    """nprobes are tried as fractions of num_partitions (flat_fracs for IVF_FLAT)."""
    specs: list[IndexSpec] = []

    def ivf_flat(n):
        p = _parts(n)
        return IvfFlat(distance_type=METRIC, num_partitions=p), {"num_partitions": p}

    specs.append(
        IndexSpec(
            "IVF_FLAT",
            "IVF_FLAT",
            ivf_flat,
            lambda b, k: [
                {"nprobes": np_}
                for np_ in _nprobes(b["num_partitions"], flat_fracs)
            ],
            0,
        )
    )

    def ivf_sq(n):
        p = _parts(n)
        return IvfSq(distance_type=METRIC, num_partitions=p), {"num_partitions": p}

    specs.append(
        IndexSpec(
            "IVF_SQ",
            "IVF_SQ",
            ivf_sq,
            lambda b, k: [
                {"nprobes": np_, "refine_factor": rf}
                for np_ in _nprobes(b["num_partitions"], fracs)
                for rf in (None, 2)
            ],
            1,
        )
    )

    if IvfRq is not None:

        def ivf_rq(n):
            p = _parts(n)
            return IvfRq(distance_type=METRIC, num_partitions=p, num_bits=1), {
                "num_partitions": p,
                "num_bits": 1,
            }

        specs.append(
            IndexSpec(
                "IVF_RQ",
                "IVF_RQ",
                ivf_rq,
                lambda b, k: [
                    {"nprobes": np_, "refine_factor": rf}
                    for np_ in _nprobes(b["num_partitions"], fracs)
                    for rf in (None, 5, 10)
                ],
                2,
            )
        )

    for m in (48, 96):

        def ivf_pq(n, m=m):
            p = _parts(n)
            return IvfPq(distance_type=METRIC, num_partitions=p, num_sub_vectors=m), {
                "num_partitions": p,
                "num_sub_vectors": m,
            }

        specs.append(
            IndexSpec(
                f"IVF_PQ{m}",
                "IVF_PQ",
                ivf_pq,
                lambda b, k: [
                    {"nprobes": np_, "refine_factor": rf}
                    for np_ in _nprobes(b["num_partitions"], fracs)
                    for rf in (None, 5, 10)
                ],
                3 + (m == 96),
            )
        )

    def ivf_hnsw_sq(n):
        # HNSW inside each partition: fewer, larger partitions than plain IVF.
        p = max(1, _parts(n) // hnsw_part_div)
        cfg = IvfHnswSq(
            distance_type=METRIC,
            num_partitions=p,
            m=20,
            ef_construction=hnsw_ef_construction,
        )
        return cfg, {"num_partitions": p, "m": 20, "ef_construction": hnsw_ef_construction}

    specs.append(
        IndexSpec(
            "IVF_HNSW_SQ",
            "IVF_HNSW_SQ",
            ivf_hnsw_sq,
            lambda b, k: [
                {"nprobes": np_, "ef": ef}
                for np_ in _nprobes(b["num_partitions"], fracs)
                for ef in (k + k // 2, 3 * k, 6 * k)
            ],
            5,
        )
    )
    return specs


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


@dataclass
class Row:
    size: int
    index: str
    build_s: float | None
    build_params: dict
    query_params: dict
    ms_median: float
    ms_p95: float
    recall: float
    speedup: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def _query(tbl, q: np.ndarray, k: int, params: dict | None):
    b = tbl.search(q, vector_column_name=VECTOR_COL).distance_type(METRIC).limit(k)
    b = b.select(["id", "_distance"])
    if params is None:
        b = b.bypass_vector_index()
    else:
        if params.get("nprobes"):
            b = b.nprobes(int(params["nprobes"]))
        if params.get("refine_factor"):
            b = b.refine_factor(int(params["refine_factor"]))
        if params.get("ef"):
            b = b.ef(int(params["ef"]))
    return b.to_arrow()


def run_queries(tbl, queries, gt_ids, k, params, warmup=5):
    for q in queries[:warmup]:
        _query(tbl, q, k, params)
    times, recalls = [], []
    for q, gt in zip(queries, gt_ids):
        t0 = time.perf_counter()
        res = _query(tbl, q, k, params)
        times.append((time.perf_counter() - t0) * 1e3)
        got = res.column("id").to_numpy()
        recalls.append(len(np.intersect1d(got, gt, assume_unique=False)) / k)
    times.sort()
    p95 = times[min(len(times) - 1, int(math.ceil(0.95 * len(times))) - 1)]
    return statistics.median(times), p95, float(np.mean(recalls))


def build_table(db, mix, n, queries, k, chunk):
    name = f"vec_{n}"
    topk = StreamingTopK(queries, k)
    schema = pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field(VECTOR_COL, pa.list_(pa.float32(), DIM)),
        ]
    )

    def batches():
        for start, block in chunks(mix, n, chunk):
            topk.update(start, block)
            ids = pa.array(np.arange(start, start + len(block), dtype=np.int64))
            vec = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), DIM)
            yield pa.RecordBatch.from_arrays([ids, vec], schema=schema)

    t0 = time.perf_counter()
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    tbl = db.create_table(name, data=reader, mode="overwrite")
    dt = time.perf_counter() - t0
    assert tbl.count_rows() == n, tbl.count_rows()
    return tbl, topk, dt


def _fmt_params(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if v is not None) or "-"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_size(db, n, args, specs, queries, mix, out_rows, notes, deadline):
    log(f"=== n={n}: generating + writing table")
    tbl, topk, write_s = build_table(db, mix, n, queries, args.k, args.chunk)
    gt = topk.ids
    log(f"n={n}: table written in {write_s:.1f}s; mean top-1 cos={topk.sims[:, 0].mean():.3f}"
        f" top-{args.k} cos={topk.sims[:, -1].mean():.3f}")
    exact_ms, exact_p95, exact_rec = run_queries(tbl, queries, gt, args.k, None)
    log(f"n={n}: exact {exact_ms:.2f} ms/q (p95 {exact_p95:.2f}), recall vs numpy {exact_rec:.4f}")
    out_rows.append(
        Row(n, "EXACT (bypass_vector_index)", None, {}, {}, exact_ms, exact_p95, exact_rec, 1.0,
            extra={"write_s": write_s,
                   "gt_mean_top1_cos": float(topk.sims[:, 0].mean()),
                   "gt_mean_topk_cos": float(topk.sims[:, -1].mean())})
    )
    if n in args.exact_only_sizes:
        _drop(db, tbl, args)
        return

    skip_rank = None
    for spec in specs:
        if spec.label not in (args.small_types if n in args.small_set else args.types):
            continue
        if skip_rank is not None and spec.rank >= skip_rank:
            notes.append(f"n={n}: skipped {spec.label} (an earlier build exceeded "
                         f"{args.max_build_s:.0f}s; this type is expected to be slower to build)")
            log(notes[-1])
            continue
        if time.time() > deadline:
            notes.append(f"n={n}: skipped {spec.label} (overall time budget exhausted)")
            log(notes[-1])
            continue
        cfg, bparams = spec.make(n)
        log(f"n={n}: building {spec.label} {bparams}")
        try:
            _drop_index(tbl)
            t0 = time.perf_counter()
            tbl.create_index(VECTOR_COL, config=cfg, replace=True, name=INDEX_NAME)
            build_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - report and continue
            notes.append(f"n={n}: {spec.label} build failed: {type(exc).__name__}: {exc}")
            log(notes[-1])
            continue
        stats = tbl.index_stats(INDEX_NAME)
        dist = getattr(stats, "distance_type", None)
        bparams = dict(bparams, index_distance_type=dist)
        if dist is not None and str(dist).lower() != METRIC:
            notes.append(f"n={n}: {spec.label} index distance_type={dist} != {METRIC}")
        log(f"n={n}: {spec.label} built in {build_s:.1f}s (stats: {stats})")
        if build_s > args.max_build_s:
            skip_rank = spec.rank + 1
            notes.append(f"n={n}: {spec.label} build took {build_s:.0f}s > {args.max_build_s:.0f}s")
        for qp in spec.query_grid(bparams, args.k):
            ms, p95, rec = run_queries(tbl, queries, gt, args.k, qp)
            qp = {kk: v for kk, v in qp.items() if v is not None}
            row = Row(n, spec.label, build_s, bparams, qp, ms, p95, rec, exact_ms / ms)
            out_rows.append(row)
            log(f"n={n}: {spec.label:12s} {_fmt_params(qp):28s} {ms:8.2f} ms  recall={rec:.4f}")
        _save(args, out_rows, notes)
    _drop_index(tbl)
    _drop(db, tbl, args)


def _drop_index(tbl) -> None:
    try:
        names = [ix.name for ix in tbl.list_indices()]
    except Exception:  # noqa: BLE001
        names = []
    if INDEX_NAME in names:
        tbl.drop_index(INDEX_NAME)
        try:  # reclaim disk from the dropped index / old versions
            from datetime import timedelta

            import warnings

            with warnings.catch_warnings():  # benchmark-private table
                warnings.simplefilter("ignore")
                tbl.optimize(cleanup_older_than=timedelta(seconds=0))
        except Exception:  # noqa: BLE001
            pass


def _drop(db, tbl, args) -> None:
    if not args.keep:
        db.drop_table(tbl.name)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    hdr = f"{'rows':>9} {'index':<28} {'build_s':>8} {'query params':<30} {'ms/q p50':>9} {'p95':>8} {'R@100':>7} {'x exact':>8}"
    print(hdr)
    print("-" * len(hdr))
    last = None
    for r in rows:
        if last is not None and r.size != last:
            print()
        last = r.size
        b = f"{r.build_s:8.1f}" if r.build_s is not None else f"{'-':>8}"
        idx = r.index
        if r.build_params.get("num_partitions"):
            idx += f" P={r.build_params['num_partitions']}"
        sp = f"{r.speedup:7.1f}x" if r.speedup else f"{'-':>8}"
        print(f"{r.size:>9} {idx:<28} {b} {_fmt_params(r.query_params):<30} "
              f"{r.ms_median:9.2f} {r.ms_p95:8.2f} {r.recall:7.4f} {sp}")


def recommend(rows: list[Row], target: float, min_saving_ms: float, min_speedup: float) -> dict:
    sizes = sorted({r.size for r in rows})
    exact = {r.size: r for r in rows if r.build_s is None}
    best: dict[int, Row | None] = {}
    for n in sizes:
        ok = [r for r in rows if r.size == n and r.build_s is not None and r.recall >= target]
        best[n] = min(ok, key=lambda r: r.ms_median) if ok else None

    lines = []
    lines.append("Exact (bypass_vector_index) median ms/query by rows: "
                 + ", ".join(f"{n}: {exact[n].ms_median:.1f}" for n in sizes if n in exact))
    threshold = None
    for n in sizes:
        b = best[n]
        if b is None or n not in exact:
            continue
        saving = exact[n].ms_median - b.ms_median
        lines.append(f"rows={n}: best ANN with R@100>={target}: {b.index} "
                     f"{_fmt_params(b.query_params)} -> {b.ms_median:.1f} ms "
                     f"(exact {exact[n].ms_median:.1f} ms, {exact[n].ms_median / b.ms_median:.1f}x, "
                     f"saves {saving:.1f} ms, recall {b.recall:.3f}, build {b.build_s:.0f}s)")
        if threshold is None and saving >= min_saving_ms and exact[n].ms_median / b.ms_median >= min_speedup:
            threshold = n
    # Log-log interpolation of exact latency: rows at which exact search costs
    # min_saving_ms * 2 (i.e. an index can plausibly save >= min_saving_ms).
    pts = sorted((n, exact[n].ms_median) for n in exact)
    est = None
    want = 2 * min_saving_ms
    for (n0, t0), (n1, t1) in zip(pts, pts[1:]):
        if t0 <= want <= t1 and t1 > t0:
            a = (math.log(want) - math.log(t0)) / (math.log(t1) - math.log(t0))
            est = int(round(math.exp(math.log(n0) + a * (math.log(n1) - math.log(n0)))))
            break
    if threshold is not None:
        lines.append(f"Threshold: ANN first beats exact by >= {min_speedup:.0f}x and >= {min_saving_ms:.0f} ms "
                     f"at the measured size {threshold} rows.")
    else:
        lines.append("Threshold: at no measured size did ANN beat exact by the required margin.")
    if est is not None:
        lines.append(f"Exact search reaches ~{want:.0f} ms/query at ~{est} rows (log-log interpolation).")

    # Index choice: the config that reaches target recall at the largest size.
    big = max((n for n in sizes if best[n] is not None), default=None)
    choice = None
    if big is not None:
        b = best[big]
        p = b.build_params.get("num_partitions")
        frac = (b.query_params.get("nprobes", 0) / p) if p else None
        choice = {
            "rows": big,
            "index": b.index,
            "build_params": b.build_params,
            "query_params": b.query_params,
            "nprobes_fraction_of_partitions": frac,
            "ms_median": b.ms_median,
            "recall": b.recall,
            "build_s": b.build_s,
        }
        lines.append(f"Recommended index: {b.index} {b.build_params} with {_fmt_params(b.query_params)}"
                     + (f" (nprobes ~= {frac:.3f} x num_partitions)" if frac else "")
                     + f": {b.ms_median:.1f} ms/q, R@100={b.recall:.3f} at {big} rows.")
        # How does the same index type + same nprobes fraction do at the other sizes?
        for n in sizes:
            same = [r for r in rows if r.size == n and r.index == b.index and r.build_s is not None]
            if not same or n == big:
                continue
            good = [r for r in same if r.recall >= target]
            if good:
                g = min(good, key=lambda r: r.ms_median)
                lines.append(f"  same type at {n} rows: cheapest with R>={target}: "
                             f"{_fmt_params(g.query_params)} -> {g.ms_median:.1f} ms, R={g.recall:.3f}")
            else:
                lines.append(f"  same type at {n} rows: no tested params reached R>={target} "
                             f"(best {max(r.recall for r in same):.3f})")
    return {"lines": lines, "threshold_rows": threshold, "interpolated_rows": est,
            "choice": choice}


def _save(args, rows, notes, rec=None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    payload = {
        "meta": {
            "lancedb": lancedb.__version__,
            "pyarrow": pa.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "dim": DIM,
            "metric": METRIC,
            "k": args.k,
            "queries": args.queries,
            "argv": sys.argv,
        },
        "rows": [asdict(r) for r in rows],
        "notes": notes,
        "recommendation": rec,
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=str)
    os.replace(tmp, args.out)


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    return [int(float(x)) for x in s.split(",") if x.strip()]


def report_only(args) -> int:
    """Merge rows of several runs (later files win per size+index+params)."""
    merged: dict[tuple, Row] = {}
    notes: list[str] = []
    for path in [p for p in args.report_only.split(",") if p.strip()]:
        with open(path) as f:
            data = json.load(f)
        notes += [f"[{os.path.basename(path)}] {n}" for n in data.get("notes", [])]
        for d in data["rows"]:
            r = Row(**d)
            merged[(r.size, r.index, json.dumps(r.query_params, sort_keys=True))] = r
    order = {"EXACT": 0, "IVF_FLAT": 1, "IVF_SQ": 2, "IVF_RQ": 3, "IVF_PQ48": 4, "IVF_PQ96": 5,
             "IVF_HNSW_SQ": 6}
    rows = sorted(merged.values(), key=lambda r: (r.size, order.get(r.index.split(" ")[0], 9)))
    # speedups relative to the exact row of the same size (may come from another file)
    exact = {r.size: r.ms_median for r in rows if r.build_s is None}
    for r in rows:
        if r.size in exact:
            r.speedup = exact[r.size] / r.ms_median
    print_table(rows)
    rec = recommend(rows, args.recall_target, args.min_saving_ms, args.min_speedup)
    print("\nRecommendation")
    for line in rec["lines"]:
        print("  " + line)
    if notes:
        print("\nNotes")
        for n in notes:
            print("  - " + n)
    if args.out:
        _save(args, rows, notes, rec)
        print(f"\nmerged results: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="table sizes with full index grid")
    ap.add_argument("--small-sizes", default="10000,30000",
                    help="extra small sizes, also run (cheap); '' to skip")
    ap.add_argument("--exact-only-sizes", default="",
                    help="sizes for which only exact search is measured")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--types", default="IVF_FLAT,IVF_SQ,IVF_RQ,IVF_PQ48,IVF_PQ96,IVF_HNSW_SQ")
    ap.add_argument("--small-types", default="IVF_FLAT,IVF_SQ,IVF_HNSW_SQ",
                    help="index types for --small-sizes (fast builds)")
    ap.add_argument("--mixture", default="{}",
                    help='JSON overrides for the data generator, e.g. {"n_topics": 50}')
    ap.add_argument("--hnsw-partition-divisor", type=int, default=4,
                    help="IVF_HNSW_SQ uses sqrt(n)/this partitions")
    ap.add_argument("--hnsw-ef-construction", type=int, default=150)
    ap.add_argument("--max-build-s", type=float, default=600.0,
                    help="after a build slower than this, skip the (slower-to-build) types after it")
    ap.add_argument("--time-budget-min", type=float, default=50.0,
                    help="skip further index builds once this much wall time is used")
    ap.add_argument("--recall-target", type=float, default=0.95)
    ap.add_argument("--min-saving-ms", type=float, default=10.0)
    ap.add_argument("--min-speedup", type=float, default=3.0)
    ap.add_argument("--flat-nprobes-fracs", default="0.01,0.02,0.05,0.1,0.2",
                    help="IVF_FLAT nprobes as fractions of num_partitions")
    ap.add_argument("--nprobes-fracs", default="0.05,0.1,0.2",
                    help="nprobes fractions for the other index types")
    ap.add_argument("--report-only", default="",
                    help="comma-separated results JSON files: merge them, print table + recommendation, exit")
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--workdir", default="/tmp/ann_bench")
    ap.add_argument("--out", default="/tmp/ann_bench/results.json")
    ap.add_argument("--keep", action="store_true", help="keep LanceDB tables after the run")
    args = ap.parse_args(argv)

    if args.report_only:
        return report_only(args)
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    args.exact_only_sizes = set(_ints(args.exact_only_sizes))
    args.small_types = [t.strip() for t in args.small_types.split(",") if t.strip()]
    args.small_set = set(_ints(args.small_sizes)) - set(_ints(args.sizes))
    sizes = sorted(set(_ints(args.sizes)) | set(_ints(args.small_sizes)) | args.exact_only_sizes)
    deadline = time.time() + args.time_budget_min * 60

    os.makedirs(args.workdir, exist_ok=True)
    db = lancedb.connect(os.path.join(args.workdir, "db"))
    mix = Mixture(seed=args.seed, **json.loads(args.mixture))
    queries = mix.sample(args.queries, stream=1, noise_mult=1.15)
    specs = index_specs(args.hnsw_partition_divisor, args.hnsw_ef_construction,
                        tuple(_floats(args.flat_nprobes_fracs)), tuple(_floats(args.nprobes_fracs)))
    notes: list[str] = []
    if IvfRq is None:
        notes.append("IVF_RQ not available in this lancedb version; skipped")
    log(f"lancedb {lancedb.__version__}, sizes={sizes}, queries={args.queries}, k={args.k}, "
        f"types={args.types}")

    rows: list[Row] = []
    t_start = time.time()
    for n in sizes:
        bench_size(db, n, args, specs, queries, mix, rows, notes, deadline)
        _save(args, rows, notes)
    total = time.time() - t_start

    print()
    print(f"LanceDB {lancedb.__version__} | dim={DIM} metric={METRIC} k={args.k} "
          f"queries={args.queries} | cpus={os.cpu_count()} | total {total / 60:.1f} min")
    print_table(rows)
    rec = recommend(rows, args.recall_target, args.min_saving_ms, args.min_speedup)
    print()
    print("Recommendation")
    for line in rec["lines"]:
        print("  " + line)
    if notes:
        print()
        print("Notes")
        for nline in notes:
            print("  - " + nline)
    _save(args, rows, notes, rec)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
