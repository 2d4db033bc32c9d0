"""Main-content extraction quality on the pages in benchmarks/extraction/.

For every NAME.html with a hand-written ground truth NAME.txt, score each extractor's text
against the ground truth with bag-of-words precision/recall/F1 (token multiset overlap, as in
the ScrapingHub article-extraction benchmark that trafilatura reports), then print a per-page
table and the mean P/R/F1 and ms/page per extractor.

    python benchmarks/extraction_quality.py            # all extractors that are installed
    python benchmarks/extraction_quality.py --repeat 5 # steadier timings

With ``--dataset DIR`` (the public ScrapingHub article-extraction benchmark: ``html/*.html.gz``,
``ground-truth.json``, ``evaluate.py``) it scores instead with that benchmark's own metric
(``evaluate.evaluate``, imported from DIR) and adds trafilatura configurations and combinations;
see ``extraction_public.py``.

readability-lxml is optional and benchmark-only (``pip install readability-lxml``); it is
skipped with a note when missing.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.html import extract_html  # noqa: E402

PAGES = Path(__file__).resolve().parent / "extraction"
_TOKEN = re.compile(r"\w+", re.UNICODE)

Extractor = Callable[[bytes], str]


def tokens(text: str) -> Counter[str]:
    return Counter(t.casefold() for t in _TOKEN.findall(text))


def prf(predicted: str, truth: str) -> tuple[float, float, float]:
    """Bag-of-words precision, recall and F1 with multiplicity."""
    pred, gold = tokens(predicted), tokens(truth)
    overlap = sum((pred & gold).values())
    p = overlap / sum(pred.values()) if pred else 0.0
    r = overlap / sum(gold.values()) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def ours(main_content: bool) -> Extractor:
    return lambda body: "\n".join(extract_html(body, main_content=main_content).blocks)


def extractors() -> dict[str, Extractor]:
    found: dict[str, Extractor] = {"ours-main": ours(True), "ours-all": ours(False)}
    try:
        import trafilatura

        found["trafilatura"] = lambda body: trafilatura.extract(body) or ""
    except ImportError:
        print("note: trafilatura not installed, skipped", file=sys.stderr)
    try:
        import lxml.html
        from readability import Document

        def readability(body: bytes) -> str:
            summary = Document(body).summary(html_partial=True)
            return lxml.html.fromstring(summary).text_content() if summary.strip() else ""

        found["readability"] = readability
    except ImportError:
        print("note: readability-lxml not installed (pip install readability-lxml), skipped",
              file=sys.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per page for timing")
    parser.add_argument("--dataset", type=Path, help="public benchmark directory (see above)")
    args = parser.parse_args()
    if args.dataset:
        from extraction_public import run_public

        run_public(args.dataset)
        return

    pages = sorted(p for p in PAGES.glob("*.html") if p.with_suffix(".txt").exists())
    runners = extractors()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runners}
    millis: dict[str, list[float]] = {name: [] for name in runners}

    header = f"{'page':34}" + "".join(f"{name:>22}" for name in runners)
    print(header + "\n" + " " * 34 + "".join(f"{'P    R    F1':>22}" for _ in runners))
    for page in pages:
        body = page.read_bytes()
        truth = page.with_suffix(".txt").read_text(encoding="utf-8")
        row = f"{page.stem[:33]:34}"
        for name, run in runners.items():
            started = time.perf_counter()
            for _ in range(args.repeat):
                text = run(body)
            millis[name].append((time.perf_counter() - started) * 1000 / args.repeat)
            scores = prf(text, truth)
            results[name].append(scores)
            row += f"{'':7}{scores[0]:.2f} {scores[1]:.2f} {scores[2]:.2f}"
        print(row)

    print(f"\nmean over {len(pages)} pages")
    print(f"{'extractor':14}{'P':>7}{'R':>7}{'F1':>7}{'ms/page':>10}")
    for name in runners:
        p, r, f = (statistics.mean(s[i] for s in results[name]) for i in range(3))
        print(f"{name:14}{p:7.3f}{r:7.3f}{f:7.3f}{statistics.mean(millis[name]):10.1f}")


if __name__ == "__main__":
    main()
