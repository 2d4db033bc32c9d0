"""The ``train-reranker`` flow: fit a cross-encoder to one collection, gate it on dev queries, promote it.

training examples (judgments, or pseudo-queries from the collection) with hard negatives from the
collection's own retrieval → sentence-transformers' trainer within a time budget → the gate on held-out
dev queries (retrieval alone / the current re-ranker / the candidate, with its fusion weight) → the
model and its numbers recorded in the collection's registry, promoted only when it wins (``auto``).
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.hooks import log_cancellation, log_crash, log_failure
from flows.summary import artifact_key
from query.errors import InvalidQueryError
from query.registry import RerankerEntry, registry_or_empty
from query.settings import get_settings
from tasks.rerank_train import INTERRUPTED_DIR, MAX_LENGTH, load_base

Promote = Literal["auto", "never", "always"]
#: Training queries (9 passages each) per second of budget on a 2-core CPU, by training precision
#: (measured: benchmarks/RESULTS.md, "Trained re-rankers"). A short budget's self-supervised sample is sized
#: from it; a longer one measures the machine instead (PROBE_MIN_BUDGET), since CPUs differ: a 2-core CPU
#: of another generation trained at 0.82, not 1.2 (benchmarks/RESULTS.md, "Stop 27").
CPU_QUERIES_PER_S = {"fp32": 0.6, "bf16": 1.2}
#: From this budget on, the training speed is measured (tasks.rerank_train.measure_speed: nine trainer
#: steps, about a minute on a 2-core CPU) rather than taken from the constants, to size the sample.
PROBE_MIN_BUDGET = 600.0
#: The fewest training queries a self-supervised sample holds, whatever the budget (a collection of at most
#: that many paragraphs is sampled whole).
MIN_PSEUDO_SAMPLE = 300
#: Passes over the pseudo-queries the self-supervised sample is sized for: fewer queries seen twice gained
#: more on SciFact test than more queries seen once (+0.013, p 0.016, against +0.009, p 0.34; three passes
#: gave +0.013 too). benchmarks/RESULTS.md, "Stop 24". One pass over 4,383 queries with the learning rate
#: decaying to zero at the budget gained +0.007 ("Stop 33"): not adopted.
PSEUDO_EPOCHS = 2
GPU_SPEEDUP = 25
#: Share of the measured speed the sample is sized for. Too big a sample loses the second pass it is sized
#: for (PSEUDO_EPOCHS); too small a one starts a third pass, whose cut checkpoint the soup may take or
#: refuse. A 2-core CPU's speed moves by 13 % within minutes: a probe read 1.47 queries/s and the run 1.17
#: (1.61 passes, "Stop 30"); with this margin the next runs finished their two passes at 81 % and 99 % of
#: the budget: a long run keeps about 80 % of the speed of its first minutes (benchmarks/RESULTS.md,
#: "Stop 31" and "Stop 32").
SPEED_MARGIN = 0.8
MAX_DEV_QUERIES = 100
#: Candidates the gate re-ranks per dev query, saved with the model as the depth it re-ranks at query time.
#: 30 keeps hybrid's recall (SciFact R@30 0.91 vs R@100 0.96) at under a third of the cross-encoder's cost.
DEV_DEPTH = 30
#: The fewest query + passage tokens --max-length takes: below that a pair is cut to a few words.
MIN_MAX_LENGTH = 32
#: Paragraphs sampled to find the self-supervised dev queries (most qualify; see pseudo_dev_queries).
DEV_SAMPLE = 600
#: The dev queries come from about this many documents at least, where the collection's are not too long:
#: see held_out_rows.
DEV_MIN_DOCS = 10


def _searcher(db_uri: str, collection: str):
    from query.searcher import Searcher

    return Searcher(db_uri=db_uri, collection=collection)


def dev_share(n: int, max_dev: int = MAX_DEV_QUERIES) -> float:
    """Share of queries held out for the gate: 15 %, at least 3 and at most ``max_dev`` queries."""
    return min(max_dev, max(3, round(0.15 * n))) / max(n, 1)


def pseudo_sample_size(time_budget: float, device: str, queries_per_s: float | None = None) -> int:
    """Self-supervised training queries to make: ``PSEUDO_EPOCHS`` passes over them fill ``time_budget``.

    ``queries_per_s``: the measured training speed (see ``training_speed``), of which ``SPEED_MARGIN`` is
    counted on; None: the device's constant.
    """
    from tasks.rerank_train import precision

    if queries_per_s is None:
        cuda = device.startswith("cuda")
        queries_per_s = CPU_QUERIES_PER_S["fp32"] * GPU_SPEEDUP if cuda else CPU_QUERIES_PER_S[precision(device)]
    else:
        queries_per_s *= SPEED_MARGIN
    return int(min(50_000, max(MIN_PSEUDO_SAMPLE, time_budget * queries_per_s / PSEUDO_EPOCHS)))


@task(name="training-speed")
def training_speed(db_uri: str, collection: str, base: str, seed: int, max_length: int,
                   train_layers: int | None) -> float | None:
    """Training queries per second on this machine, measured on throwaway pseudo-queries of the collection.

    None when there is nothing to measure for: a collection of at most ``MIN_PSEUDO_SAMPLE`` paragraphs is
    sampled whole; and None when the collection cannot fill the probe's batches (the constants then size it).
    """
    from tasks import rerank_data as rd
    from tasks.rerank_train import PAIRS_PER_QUERY, PROBE_EXAMPLES, PROBE_STEPS, measure_speed

    searcher = _searcher(db_uri, collection)
    if searcher.table.count_rows() <= MIN_PSEUDO_SAMPLE:
        return None
    rows = rd.sample_paragraphs(searcher, 3 * PROBE_EXAMPLES, seed + 2)
    # With hard negatives mined as training's are: the retrieved passages' lengths, hence the padding, are
    # what a step costs. On SciFact this probe read 0.86 queries/s against a 5400 s run's 0.82 between its
    # scorings; with other queries' positives as negatives it read 0.93 (benchmarks/RESULTS.md, "Stop 27").
    probe = rd.pseudo_queries(rows, searcher.meta.encode_title, seed + 2)[: 2 * PROBE_EXAMPLES]
    probe = rd.fill_negatives(rd.add_hard_negatives(searcher, probe, seed + 2), seed + 2)
    if len(probe) < PROBE_EXAMPLES:
        return None
    speed = measure_speed(probe, base, max_length=max_length, train_layers=train_layers)
    get_run_logger().info("training speed on this machine: %.2f queries/s (%d passages each), measured over %d steps",
                          speed, PAIRS_PER_QUERY, PROBE_STEPS)
    return speed


#: Fewer held-out queries than this and the gate's decision is mostly noise: the run says so.
FEW_DEV_QUERIES = 20


def judged_split(searcher, judgments: str, split: str, seed: int) -> tuple[list, list]:
    """Judged examples split into (train, dev) by a stable hash of the query id; queries of one text (under
    several ids) on one side, by the first of their ids, so that no dev query was trained on. Queries the
    dataset's test split judges too (by id or text) are left out of both."""
    from tasks import rerank_data as rd

    log = get_run_logger()
    queries, qrels = rd.judged_queries(judgments, split)
    if leaked := rd.judged_in_test(judgments, split, queries):
        log.warning("%d of the %d queries judged in split %r are test queries too (by id or text): left out, so that "
                    "no test query is trained or gated on", len(leaked), len(queries), split)
        queries = {q: t for q, t in queries.items() if q not in leaked}
        qrels = {q: d for q, d in qrels.items() if q not in leaked}
    share = dev_share(len(queries))
    first: dict[str, str] = {}
    for qid in sorted(queries):
        first.setdefault(rd.normalized_query(queries[qid]), qid)
    dev = {q for q, t in queries.items() if rd.is_dev(first[rd.normalized_query(t)], share)}
    examples = rd.examples_from_judgments(searcher, queries, qrels, seed)
    if skipped := len(queries) - len(examples):
        log.warning(
            "%d of %d judged queries were skipped: none of their judged documents is in collection %r (do the "
            "judgments use its doc ids?)", skipped, len(queries), searcher.collection)
    return [e for e in examples if e.qid not in dev], [e for e in examples if e.qid in dev]


def pseudo_dev(searcher, seed: int) -> list:
    """Self-supervised dev queries: drawn on their own, from the seed and the collection alone.

    They do not depend on the training sample's size, so every self-supervised model of a collection (same
    seed) is gated on the same held-out documents, which ``pseudo_split`` keeps out of every training sample:
    the promoted model and a new one are compared on equal terms.
    """
    from tasks import rerank_data as rd

    budget = max(_n_dev(searcher), 1)
    dev_rows = rd.stable_paragraphs(searcher, budget, seed)  # an index run moves it only by what it adds or removes
    return rd.pseudo_dev_queries(searcher, held_out_rows(searcher, dev_rows, budget, seed), MAX_DEV_QUERIES, seed)


def held_out_rows(searcher, rows: list[dict], budget: int, seed: int) -> list[dict]:
    """The dev candidates among ``rows`` (drawn paragraphs, in draw order): those of the first documents
    whose paragraphs, all held out of training, total at most ``budget`` (at least one document).

    Training leaves out a dev query's whole document, so a budget counted in drawn paragraphs alone would
    hold out far more: on a collection of multi-paragraph pages, 64 paragraphs drawn from the demo's 215
    fell in 36 of its 43 documents, leaving 7 to train on (benchmarks/RESULTS.md, "Stop 35"). Where the
    drawn rows of those documents make too few queries, their other paragraphs follow, shuffled.
    """
    from tasks import rerank_data as rd

    paragraphs = rd.doc_paragraphs(searcher, sorted({r["doc_id"] for r in rows}))
    # A long document is not held out, unless nothing else fits: one long page would take the dev queries
    # (and make them easy: any of its many paragraphs answers). Long: over a tenth of the budget, and
    # over the drawn documents' median size (the budget of a small collection may be a few pages).
    largest = max(budget // DEV_MIN_DOCS, statistics.median(len(p) for p in paragraphs.values()))
    admitted: set[str] = set()
    held, kept = 0, []
    for cap in (largest, float("inf")):  # the second pass: at least the first drawn document, however long
        for r in rows:
            doc = r["doc_id"]
            if doc not in admitted:
                size = len(paragraphs[doc])
                if size > cap or (held and held + size > budget):
                    continue
                admitted.add(doc)
                held += size
            kept.append(r)
        if admitted:
            break
    taken = {r["id"] for r in kept}
    others = [p for doc in sorted(admitted) for p in paragraphs[doc] if p["id"] not in taken]
    random.Random(seed).shuffle(others)
    return kept + others


def _n_dev(searcher) -> int:
    # A small collection holds out at most 30 % of its paragraphs for dev queries; a large one DEV_SAMPLE.
    return min(DEV_SAMPLE, searcher.table.count_rows() * 3 // 10)


def pseudo_split(searcher, n_pseudo: int, seed: int) -> tuple[list, list]:
    """Self-supervised dev queries (``pseudo_dev``) and up to ``n_pseudo`` training pseudo-queries (no
    negatives yet), none from a dev query's document.

    ``pseudo_sample_size`` counts queries, and not every paragraph makes one (on CACM, where many documents
    are a title alone, 421 paragraphs made 197; benchmarks/RESULTS.md, "Stop 31"). So the paragraphs are
    drawn again, twice as many each time, until they make ``n_pseudo`` queries or are the whole collection.
    """
    from tasks import rerank_data as rd

    dev = pseudo_dev(searcher, seed)
    dev_docs = {d for e in dev for d in e.relevant}
    size, total = n_pseudo + _n_dev(searcher), searcher.table.count_rows()
    while True:
        rows = [r for r in rd.sample_paragraphs(searcher, size, seed + 1) if r["doc_id"] not in dev_docs]
        random.Random(seed).shuffle(rows)
        train = rd.pseudo_queries(rows, searcher.meta.encode_title, seed, limit=n_pseudo)
        if len(train) >= n_pseudo or size >= total:
            return dev, train
        size *= 2


@task(name="training-examples")
def training_examples(db_uri: str, collection: str, judgments: str | None, split: str, seed: int,
                      n_pseudo: int) -> tuple[list, list]:
    """Train and dev examples: judged queries, or pseudo-queries sampled from the collection."""
    from tasks import rerank_data as rd

    searcher = _searcher(db_uri, collection)
    log = get_run_logger()
    if judgments:
        train, dev = judged_split(searcher, judgments, split, seed)
    else:
        dev, train = pseudo_split(searcher, n_pseudo, seed)
        train = rd.add_hard_negatives(searcher, train, seed)
    made = len(train)
    train = rd.fill_negatives(train, seed)
    if not dev and train and not judgments:
        # The gate asks for a document through its other paragraphs (the query's own is hidden, or it would
        # be found trivially): a collection of one-paragraph documents (notes, FAQs, abstracts) has none.
        raise rd.TrainingDataError(
            f"no held-out dev queries could be made from collection {collection!r}: self-supervised training checks "
            "itself on documents of two paragraphs or more, asking for one with a sentence (6 to 40 words) cut out "
            "of one of its paragraphs of two sentences or more, and none of the sampled documents offers both. "
            "Train it with judgments (--judgments DATASET_DIR), or index longer documents"
        )
    if made and not train and not judgments:
        # A collection whose paragraphs are nearly all one document's: a negative is never a paragraph of the
        # query's own document (too often relevant too), and the other documents are too few to fill in.
        raise rd.TrainingDataError(
            f"{made} training queries were made from collection {collection!r}, but none found {rd.NEGATIVES} "
            "negatives outside its own document (a paragraph of the query's own document is never one): the "
            "collection has too few other documents, or its paragraphs are nearly all one document's. Index more "
            "documents, or give judgments with --judgments"
        )
    if dropped := made - len(train):
        log.warning("%d of %d training queries were dropped: too few negatives outside their own document", dropped,
                    made)
    if (not train or not dev) and judgments:
        raise rd.TrainingDataError(
            f"only {len(train) + len(dev)} judged queries of split {split!r} have a judged document in collection "
            f"{collection!r} ({len(train)} to train on, {len(dev)} held out to check the model): at least 3 are held "
            "out, so give more judged queries (4 at the very least, dozens to learn anything), or another --split"
        )
    if not train or not dev:
        raise rd.TrainingDataError(
            f"only {len(train)} training and {len(dev)} dev queries could be made from collection {collection!r}: "
            "index more articles (a few dozen paragraphs at least), or give judgments with --judgments"
        )
    kinds = {k: sum(e.kind == k for e in train) for k in dict.fromkeys(e.kind for e in train)}
    log.info("%d training queries %s, %d dev queries", len(train), kinds, len(dev))
    if len(dev) < FEW_DEV_QUERIES:
        log.warning("only %d dev queries: the gate's comparison (and --promote auto) rests on very few; more "
                    "judged queries or a larger collection make it trustworthy", len(dev))
    return train, dev


@task(name="dev-candidates")
def dev_candidates(db_uri: str, collection: str, dev: list, depth: int):
    """Each dev query's first-stage candidates: what training picks its best epoch on and the gate scores."""
    from tasks.rerank_gate import dev_set

    return dev_set(_searcher(db_uri, collection), dev, depth)


@task(name="train-cross-encoder")
def train(examples: list, base: str, out_dir: str, time_budget_s: float, seed: int, max_length: int,
          train_layers: int | None, dev_samples: list[dict]) -> dict:
    from tasks.rerank_train import train_cross_encoder

    log = get_run_logger()
    return asdict(train_cross_encoder(examples, base, out_dir, time_budget_s=time_budget_s, seed=seed, log=log.info,
                                      max_length=max_length, train_layers=train_layers, dev_samples=dev_samples))


@task(name="gate")
def gate(db_uri: str, collection: str, devset, model_dir: str, depth: int, model_id: str = "") -> dict:
    """Dev nDCG@10 of retrieval alone, the current re-ranker and the candidate (see tasks.rerank_gate)."""
    from query.models import load_reranker, reranker_options
    from query.registry import promoted_model
    from tasks import rerank_gate as rg

    s = get_settings()
    searcher = _searcher(db_uri, collection)

    def scores(path: str, revision: str):
        # Scored as queries will be (same backend and precision, and the same once-per-process model a search
        # of that registry id loads), so the gate judges what will be served.
        return rg.rerank_scores(load_reranker(path, **reranker_options(s), revision=revision), devset)

    retrieval = round(rg.ndcg10(devset, None, 0.0), 4)
    previous = None
    current = promoted_model(searcher.table, db_uri)
    if current is not None:
        entry, path = current
        previous = {"id": entry.id, "alpha": entry.alpha,
                    "ndcg@10": round(rg.ndcg10(devset, scores(str(path), entry.id), entry.alpha), 4)}
    candidate = rg.choose_alpha(devset, scores(model_dir, model_id))
    return {"queries": len(devset.qids), "documents": rg.dev_documents(devset), "depth": depth,
            "retrieval": {"ndcg@10": retrieval}, "previous": previous, "candidate": candidate}


@task(name="publish-reranker", retries=2, retry_delay_seconds=5)
def publish_model(db_uri: str, collection: str, model_id: str, out_dir: str) -> str:
    """The model where every reader of the database finds it (uploaded, for an object store)."""
    from tasks.rerank_registry import publish

    return publish(db_uri, collection, model_id, out_dir)


@task(name="register-reranker")
def register(db_uri: str, collection: str, entry: RerankerEntry, promote: bool,
             gated_against: str | None | object) -> tuple[RerankerEntry, bool]:
    from tasks.rerank_registry import record

    return record(db_uri, collection, entry, promote, gated_against)


def check_training_args(*, judgments: str | None, self_supervised: bool, split: str, promote: str,
                        time_budget: float, max_length: int | None, train_layers: int | None, out: str | None,
                        db_uri: str | None = None) -> str:
    """Every check of the arguments that needs no model and no data; the training signal.

    The flow runs it first, and the CLI before Prefect even starts, so a mistyped option is one line.
    """
    from tasks.rerank_data import check_signal, judgment_files

    signal = check_signal(judgments, self_supervised)
    if promote not in ("auto", "never", "always"):
        raise InvalidQueryError(f"--promote must be auto, never or always, got {promote!r}")
    if not (isinstance(time_budget, int | float) and math.isfinite(time_budget) and time_budget > 0):
        raise InvalidQueryError(f"--time-budget must be a positive, finite number of seconds, got {time_budget}")
    if max_length is not None and max_length < MIN_MAX_LENGTH:
        raise InvalidQueryError(f"--max-length must be at least {MIN_MAX_LENGTH} tokens (query and passage), "
                                f"got {max_length}")
    if train_layers is not None and train_layers < 0:
        raise InvalidQueryError(f"--train-layers must be 0 (the head only) or more, got {train_layers}")
    if judgments:
        judgment_files(judgments, split)
    check_out_dir(out, db_uri)
    return signal


def check_out_dir(out: str | None, db_uri: str | None = None) -> None:
    """``--out`` must be a new or empty directory: a trained model is never written over other files (a
    previous model, perhaps the promoted one, or anything else the user keeps there). It must be one this
    run can create, and never inside the database's own models folder (``db_uri``), whose directories
    belong to the collections: a model saved there under another collection's name was deleted with it."""
    if not out:
        return
    path = Path(out).expanduser()
    if db_uri:
        from query.registry import RERANKERS_DIR, models_root

        owned = models_root(db_uri, "-").parent  # <db>/_rerankers (an object store's: its local cache)
        if path.resolve().is_relative_to(owned.resolve()):
            raise InvalidQueryError(f"--out {out} is inside the database's models folder {owned}, whose directories "
                                    f"belong to its collections' re-rankers ({RERANKERS_DIR}/<collection>/<id>): "
                                    "leave --out out (models are saved there under a new id) or choose a directory "
                                    "outside it")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        kept = path / INTERRUPTED_DIR
        hint = (f" (the weights of an interrupted run are in {kept}: --base {kept} continues from them, with a new "
                "--out)") if kept.is_dir() else ""
        raise InvalidQueryError(f"--out {out} is not an empty directory: a trained model is never written over "
                                f"other files; choose a new or empty directory{hint}")
    ancestor = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if ancestor is not None and (not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK)):
        raise InvalidQueryError(f"--out {out} cannot be created: {ancestor} is "
                                + ("not a directory" if not ancestor.is_dir() else "not writable by this user"))


def default_base(cross_encoder: str) -> str:
    """The configured cross-encoder when it loads (online, or cached), else the packaged MiniLM body."""
    from query.errors import ModelUnavailableError
    from query.models import load_reranker
    from query.settings import DEFAULT_BI_ENCODER

    try:
        load_reranker(cross_encoder)
        return cross_encoder
    except ModelUnavailableError:
        return DEFAULT_BI_ENCODER


@flow(name="train-reranker", flow_run_name="train-reranker-{collection}", on_failure=[log_failure],
      on_crashed=[log_crash], on_cancellation=[log_cancellation])
def train_reranker(
    collection: str,
    db_uri: str | None = None,
    judgments: str | None = None,
    split: str = "train",
    self_supervised: bool = False,
    base: str | None = None,
    time_budget: float = 600.0,
    out: str | None = None,
    promote: Promote = "auto",
    seed: int = 0,
    dev_depth: int | None = None,
    max_length: int | None = None,
    train_layers: int | None = None,
) -> dict:
    """Train a re-ranker for ``collection`` and promote it if it beats what the collection has (``auto``)."""
    from query.devices import resolve_device
    from query.registry import model_location
    from tasks.rerank_data import fingerprint
    from tasks.rerank_gate import decide, evaluator_samples
    from tasks.rerank_registry import claim_model_dir, release_model_dir

    log = get_run_logger()
    s = get_settings()
    db_uri = db_uri or s.db_uri
    signal = check_training_args(judgments=judgments, self_supervised=self_supervised, split=split, promote=promote,
                                 time_budget=time_budget, max_length=max_length, train_layers=train_layers, out=out,
                                 db_uri=db_uri)
    _searcher(db_uri, collection)  # a missing collection fails here, before any model loads
    if judgments and split == "test":
        log.warning("training on the judgments' test split: an evaluation on those test queries (corpus-search "
                    "eval) will overstate this re-ranker; train on another split, or evaluate on other queries")
    t0 = time.monotonic()
    base = base or default_base(s.cross_encoder)
    load_base(base, "cpu", construct=False)  # a base that cannot load fails now, not after the data is built
    speed = None
    if signal == "self-supervised" and time_budget >= PROBE_MIN_BUDGET:
        speed = training_speed(db_uri, collection, base, seed, max_length or MAX_LENGTH, train_layers)
    n_pseudo = pseudo_sample_size(time_budget, resolve_device(s.device), speed)
    train_ex, dev_ex = training_examples(db_uri, collection, judgments, split, seed, n_pseudo)
    model_id, claimed = claim_model_dir(db_uri, collection, signal, out)
    out_dir = str(claimed if not out else Path(out))
    # Said now: a run cancelled or killed from here on may leave this folder (`rerankers --remove` deletes it).
    log.info("training re-ranker %s into %s", model_id, out_dir)
    depth = dev_depth or DEV_DEPTH
    try:  # from the claim on: whatever ends the run gives it back (below)
        devset = dev_candidates(db_uri, collection, dev_ex, depth)
        trained = train(train_ex, base, out_dir, time_budget, seed, max_length or MAX_LENGTH, train_layers,
                        evaluator_samples(devset))
        # The promoted id the gate compares with (a promoted model whose folder is gone scores as none).
        promoted_before = registry_or_empty(_searcher(db_uri, collection).table).promoted
        dev = gate(db_uri, collection, devset, out_dir, depth, model_id)
        prev = dev["previous"]["ndcg@10"] if dev["previous"] else None
        promoted, why = decide(promote, dev["retrieval"]["ndcg@10"], prev, dev["candidate"]["ndcg@10"],
                               dev["candidate"]["p"], dev["documents"])
        entry = RerankerEntry(
            id=model_id, path=publish_model(db_uri, collection, model_id, out_dir),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            base=base, signal=signal, fingerprint=fingerprint(train_ex, seed), alpha=dev["candidate"]["alpha"], depth=depth, dev=dev,
            train={"queries": len(train_ex), "pairs": trained["pairs"], "steps": trained["steps"],
                   "seconds": trained["seconds"], "precision": trained["precision"], "seed": seed,
                   "epochs": trained["epochs"], "best_epoch": trained["best_epoch"], "dev_curve": trained["dev_curve"],
                   "soup": trained["soup"], "measured_queries_per_s": round(speed, 3) if speed else None},
        )
        from tasks.rerank_registry import UNGATED

        gated_against = promoted_before if promote == "auto" else UNGATED
        entry, kept = register(db_uri, collection, entry, promoted, gated_against)
        if promoted and not kept:
            why = (f"not promoted: another run promoted a re-ranker while this one was gated against "
                   f"{gated_against or 'retrieval alone'}; compare them with corpus-search rerankers")
    finally:
        # Done with it, whatever ended the run (an interruption included), but only once it is registered:
        # released before, `rerankers` listed it as a leftover that --remove deleted, and the run then
        # registered (and could promote) a model without its files.
        release_model_dir(out_dir)
    promoted, model_id = kept, entry.id
    log.info("re-ranker %s: %s", model_id, why)
    result = {
        "collection": collection, "model": out_dir, "stored": model_location(db_uri, entry), "id": model_id,
        "base": base, "signal": signal,
        "train_queries": len(train_ex), "pairs": trained["pairs"], "steps": trained["steps"],
        "seconds": round(time.monotonic() - t0, 1), "train_seconds": trained["seconds"],
        "epochs": trained["epochs"], "best_epoch": trained["best_epoch"], "soup": trained["soup"],
        "dev": dev, "alpha": entry.alpha, "promoted": promoted, "decision": why,
    }
    create_markdown_artifact(
        key=artifact_key("reranker", collection),
        markdown=f"## Re-ranker `{model_id}` for `{collection}`\n\n{why}\n\n"
        f"| dev nDCG@10 | value |\n|---|---|\n| retrieval alone | {dev['retrieval']['ndcg@10']:.4f} |\n"
        + (f"| current re-ranker | {prev:.4f} |\n" if prev is not None else "")
        + f"| candidate (alpha {entry.alpha}, cross-validated) | {dev['candidate']['ndcg@10']:.4f} |\n"
        f"| candidate alone | {dev['candidate']['alone']:.4f} |\n",
        description=f"train-reranker {collection}",
    )
    return result
