"""How many real article pages ``tasks.stages.error_page`` would refuse as error or sign-in pages (false positives).

    python benchmarks/error_pages.py                     # the 181 public extraction-benchmark pages
    python benchmarks/error_pages.py --pages DIR         # any directory of .html / .html.gz pages

Each page is split as an index run splits a fetched page (default settings, the bi-encoder's token limit)
and given to ``error_page`` as if fetched from a URL in the place of an article indexed under another title
(the only case it judges). It prints the pages, how many are short enough to be judged at all
(``ERROR_PAGE_MAX_CHARS``), and every page it would refuse, with the reason. A real article refused is a
false positive: that URL's update would fail, its old rows kept.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

#: The shared data, as ../shared/data from the repo root.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=DATA / "extraction" / "html")
    args = parser.parse_args()

    from query.settings import get_settings
    from tasks.html import decode_body
    from tasks.records import Article
    from tasks.split import split_article
    from tasks.stages import ERROR_PAGE_MAX_CHARS, counting_tokenizer, error_page, split_options

    settings = get_settings()
    opts, count = split_options(settings), counting_tokenizer(settings)
    paths = sorted(p for p in args.pages.iterdir() if p.name.endswith((".html", ".htm", ".html.gz")))
    short = refused = 0
    for path in paths:
        raw = path.read_bytes()
        body = decode_body(gzip.decompress(raw) if path.suffix == ".gz" else raw, None, html=True)
        url = f"https://example.org/{path.name}"
        article = Article(url, url, "", body, "html")
        paragraphs = split_article(article, opts, count)
        short += sum(len(p.text) for p in paragraphs) <= ERROR_PAGE_MAX_CHARS
        if why := error_page(article, paragraphs, indexed_title="an article indexed before"):
            refused += 1
            print(f"refused: {path.name}: {why}")
    print(f"pages {len(paths)}, short enough to be judged {short}, refused {refused} "
          f"(false-positive rate {refused / max(1, len(paths)):.3f})")


if __name__ == "__main__":
    main()
