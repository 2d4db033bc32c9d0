"""Extraction quality on the public ScrapingHub article-extraction benchmark.

Scored with the benchmark's own ``evaluate.py`` (4-gram shingle P/R/F1 per page, averaged),
imported from the dataset directory so the metric is exactly theirs.  Every extractor runs once
per page; combinations reuse the outputs of their parts and are charged the sum of their
parts' time.  A 2-fold split (pages alternately by sorted key) picks the best configuration on
one half and reports it on the other, to show the choice is not fitted to these pages.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tasks.extract import trafilatura_blocks
from tasks.html import decode_body, extract_html

Blocks = list[str]


def _load_evaluate(dataset: Path):
    spec = importlib.util.spec_from_file_location("shub_evaluate", dataset / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _trafilatura_flat(**options: object) -> Callable[[str], Blocks]:
    import trafilatura

    def run(html: str) -> Blocks:
        return [trafilatura.extract(html, include_comments=False, **options) or ""]

    return run


def _ours_with(**constants: float) -> Callable[[str], Blocks]:
    """``extract_html`` with some of its module constants changed: a rule with and without."""
    import tasks.html

    def run(html: str) -> Blocks:
        saved = {name: getattr(tasks.html, name) for name in constants}
        try:
            for name, value in constants.items():
                setattr(tasks.html, name, value)
            return extract_html(html).blocks
        finally:
            for name, value in saved.items():
                setattr(tasks.html, name, value)

    return run


def _base_extractors() -> dict[str, Callable[[str], Blocks]]:
    return {
        "ours": lambda html: extract_html(html).blocks,  # what the index uses
        # The same with one rule changed or off (see tasks/html.py for each constant).
        "ours-link-share-0.5": _ours_with(_MAX_LINK_SHARE=0.5),
        "ours-link-share-0.9": _ours_with(_MAX_LINK_SHARE=0.9),
        "ours-no-link-filter": _ours_with(_MAX_LINK_SHARE=float("inf")),
        "ours-no-scorer": _ours_with(_PAGE_SHARE=0.0, _SCORER_SHARE=0.0),
        "ours-legacy": lambda html: extract_html(html, extractor="scorer").blocks,
        "ours-all-blocks": lambda html: extract_html(html, main_content=False).blocks,
        "traf-flat": _trafilatura_flat(),  # trafilatura defaults: the speed yardstick
        "traf-flat-precision": _trafilatura_flat(favor_precision=True),
        "traf-flat-recall": _trafilatura_flat(favor_recall=True),
        "traf-blocks": lambda html: trafilatura_blocks(html) or [],
        "traf-blocks-precision": lambda html: trafilatura_blocks(html, favor_precision=True) or [],
        "traf-blocks-precision-fast": lambda html: trafilatura_blocks(
            html, favor_precision=True, fast=True) or [],
    }


def _chars(blocks: Blocks) -> int:
    return sum(len(b) for b in blocks)


def _combinations(out: dict[str, Blocks]) -> dict[str, tuple[Blocks, tuple[str, ...]]]:
    """Combinations of two extractors' blocks; value: (blocks, parts whose time it costs)."""
    legacy, traf, prec = out["ours-legacy"], out["traf-blocks"], out["traf-blocks-precision"]
    traf_text = "\n".join(traf)
    legacy_text = "\n".join(legacy)
    combos: dict[str, tuple[Blocks, tuple[str, ...]]] = {}
    # Fallback: trafilatura unless it returned much less than ours (it missed the article).
    for share in (0.25, 0.5):
        pick = legacy if _chars(traf) < share * _chars(legacy) else traf
        combos[f"traf>ours@{share}"] = (pick, ("traf-blocks", "ours-legacy"))
    # Intersection: trafilatura's blocks that ours also kept (both agree it is article).
    combos["intersection"] = ([b for b in traf if b in legacy_text] or traf,
                              ("traf-blocks", "ours-legacy"))
    # Union: all of trafilatura's blocks plus ours that trafilatura does not have.
    combos["union"] = (traf + [b for b in legacy if b not in traf_text],
                       ("traf-blocks", "ours-legacy"))
    # Precision mode unless it kept much less than default mode (it cut into the article).
    combos["prec>default@0.5"] = (traf if _chars(prec) < 0.5 * _chars(traf) else prec,
                                  ("traf-blocks", "traf-blocks-precision"))
    combos["prec∩ours"] = ([b for b in prec if b in legacy_text] or prec,
                           ("traf-blocks-precision", "ours-legacy"))
    return combos


def run_public(dataset: Path) -> None:
    """Print P/R/F1 and ms/page per extractor and the 2-fold selection check."""
    evaluate = _load_evaluate(dataset)
    truth = json.loads((dataset / "ground-truth.json").read_text(encoding="utf-8"))
    keys = sorted(truth)
    base = _base_extractors()
    outputs: dict[str, dict[str, Blocks]] = {name: {} for name in base}
    millis: dict[str, list[float]] = {name: [] for name in base}
    combos: dict[str, dict[str, Blocks]] = {}
    combo_parts: dict[str, tuple[str, ...]] = {}
    for key in keys:
        body = gzip.decompress((dataset / "html" / f"{key}.html.gz").read_bytes())
        started = time.perf_counter()
        html = decode_body(body)
        decode_ms = (time.perf_counter() - started) * 1000
        page: dict[str, Blocks] = {}
        for name, run in base.items():
            started = time.perf_counter()
            page[name] = run(html)
            millis[name].append(decode_ms + (time.perf_counter() - started) * 1000)
            outputs[name][key] = page[name]
        for name, (blocks, parts) in _combinations(page).items():
            combos.setdefault(name, {})[key] = blocks
            combo_parts[name] = parts
    for name, parts in combo_parts.items():
        outputs[name] = combos[name]
        millis[name] = [sum(millis[p][i] for p in parts) for i in range(len(keys))]

    def score(name: str, subset: list[str]) -> dict[str, float]:
        pred = {k: {"articleBody": "\n".join(outputs[name][k])} for k in subset}
        return evaluate.evaluate({k: truth[k] for k in subset}, pred, 0)

    print(f"{len(keys)} pages, metric: {dataset / 'evaluate.py'}")
    print("ms/page: median and mean; x traf: median relative to trafilatura defaults (traf-flat)"
          " in this same run, which is steadier than ms on a shared machine")
    yardstick = statistics.median(millis["traf-flat"])
    print(f"{'extractor':28}{'F1':>7}{'P':>7}{'R':>7}{'median':>8}{'mean':>8}{'x traf':>8}")
    for name in outputs:
        m = score(name, keys)
        median = statistics.median(millis[name])
        print(f"{name:28}{m['f1']:7.3f}{m['precision']:7.3f}{m['recall']:7.3f}"
              f"{median:8.1f}{statistics.mean(millis[name]):8.1f}{median / yardstick:8.2f}")

    folds = [keys[0::2], keys[1::2]]
    print("\n2-fold check: choose the best F1 on one half, report it on the other")
    for i, (choose, report) in enumerate((folds, folds[::-1])):
        best = max(outputs, key=lambda n: score(n, choose)["f1"])
        print(f"  fold {i}: chosen {best} (F1 {score(best, choose)['f1']:.3f} on choice half),"
              f" held-out F1 {score(best, report)['f1']:.3f}")
    sys.stdout.flush()
