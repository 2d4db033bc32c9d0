"""Headings as context, and metadata: what ``split_article`` makes of real pages, before and after a change.

    # 1. dump the paragraphs of each collection with one checkout of the code (run it with both)
    PYTHONPATH=$OLD python benchmarks/extraction_headings.py dump --out before.json.gz
    PYTHONPATH=$PWD python benchmarks/extraction_headings.py dump --out after.json.gz
    # 2. compare (with the new code: it knows which blocks are headings)
    PYTHONPATH=$PWD python benchmarks/extraction_headings.py compare before.json.gz after.json.gz
    # metadata readers: ours over the parsed tree vs trafilatura.metadata.extract_metadata
    PYTHONPATH=$PWD python benchmarks/extraction_headings.py metadata

Collections: the 181 public extraction-benchmark pages (HTML with headings), the 3,204 CACM pages (HTML, one
``<pre>`` each) and the 5,183 SciFact records (BEIR JSONL). Split with the default settings' bi-encoder
tokenizer and ``max_seq_length``, ``min_paragraph_chars`` 30, title encoded. ``compare`` reports paragraph
counts, paragraphs that are a lone heading or repeat the title, how many paragraph ids survive (the rest are
encoded again on the first re-index), and whether the BEIR/CACM paragraphs are byte-identical.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tarfile
import time
from pathlib import Path

#: The shared data, as ../shared/data from the repo root (or --data).
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _articles(collection: str, data: Path):
    from tasks.records import Article

    if collection == "extraction":
        for path in sorted((data / "extraction" / "html").glob("*.html.gz")):
            body = gzip.decompress(path.read_bytes())
            from tasks.html import decode_body

            yield Article(path.name.removesuffix(".html.gz"), "extraction", "", decode_body(body), "html")
    elif collection == "cacm":
        with tarfile.open(data / "cacm" / "raw" / "cacm.tar.gz") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith(".html"):
                    body = tar.extractfile(member).read().decode("utf-8", "replace")
                    yield Article(Path(member.name).name, "cacm", "", body, "html")
    elif collection == "scifact":
        from tasks.fetch import parse_dump_line

        with open(data / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                yield parse_dump_line(json.loads(line), source="scifact")


def dump(out: Path, data: Path, collections: list[str], heading_context: str | None) -> None:
    from query.models import bi_encoder_from_settings
    from query.settings import get_settings
    from tasks.split import SplitOptions, split_article, tokenizer_counter

    settings = get_settings()
    encoder = bi_encoder_from_settings(settings)
    opts = SplitOptions(max_tokens=encoder.max_seq_length, min_chars=settings.min_paragraph_chars,
                        encode_title=settings.encode_title, main_content=settings.main_content,
                        **({"heading_context": heading_context} if heading_context else {}))
    count = tokenizer_counter(encoder.tokenizer)
    result: dict[str, dict[str, list]] = {}
    for collection in collections:
        started = time.perf_counter()
        pages = result.setdefault(collection, {})
        for article in _articles(collection, data):
            pages[article.doc_id] = [
                [p.id, p.title, p.text, p.encoded, getattr(p, "metadata", None),
                 p.published.isoformat() if getattr(p, "published", None) else None]
                for p in split_article(article, opts, count)]
        print(f"{collection}: {len(pages)} articles, {sum(map(len, pages.values()))} paragraphs, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    out.write_bytes(gzip.compress(json.dumps(result).encode()))


def compare(before_path: Path, after_path: Path, data: Path) -> None:
    from query.models import bi_encoder_from_settings
    from tasks.split import _same_text, parse_article, tokenizer_counter

    count = tokenizer_counter(bi_encoder_from_settings().tokenizer)
    before = json.loads(gzip.decompress(before_path.read_bytes()))
    after = json.loads(gzip.decompress(after_path.read_bytes()))
    print(f"{'collection':12}{'articles':>9}{'paras before':>13}{'after':>7}{'lone heading b/a':>18}"
          f"{'title repeat b/a':>18}{'ids kept':>10}{'identical':>10}{'tokens b/a':>18}{'with meta':>10}"
          f"{'published':>10}")
    for collection in after:
        old, new = before.get(collection, {}), after[collection]
        headings: dict[str, set[str]] = {}
        if collection != "scifact":
            for article in _articles(collection, data):
                parsed = parse_article(article)
                headings[article.doc_id] = {b.text for b in parsed.blocks if b.level}

        def lone(pages: dict, headings: dict[str, set[str]] = headings) -> int:
            return sum(1 for doc, rows in pages.items() for r in rows if r[2] in headings.get(doc, ()))

        def title_repeats(pages: dict) -> int:
            return sum(1 for rows in pages.values() for r in rows if r[1] and _same_text(r[2], r[1]))

        old_ids = {r[0] for rows in old.values() for r in rows}
        new_ids = [r[0] for rows in new.values() for r in rows]
        kept = sum(1 for i in new_ids if i in old_ids)
        identical = sum(1 for doc in new if [r[:4] for r in new[doc]] == [r[:4] for r in old.get(doc, [])])
        with_meta = sum(1 for rows in new.values() if rows and rows[0][4])
        published = sum(1 for rows in new.values() if rows and rows[0][5])
        n_old, n_new = sum(map(len, old.values())), len(new_ids)
        tokens_old = sum(count([r[3] for rows in old.values() for r in rows]))
        tokens_new = sum(count([r[3] for rows in new.values() for r in rows]))
        print(f"{collection:12}{len(new):9}{n_old:13}{n_new:7}{lone(old):>10}/{lone(new):<7}"
              f"{title_repeats(old):>10}/{title_repeats(new):<7}{kept / max(n_new, 1):10.1%}"
              f"{identical:>6}/{len(new):<4}{tokens_old:>9}/{tokens_new:<8}{with_meta:10}{published:10}")


def metadata(data: Path) -> None:
    """Our <meta>/JSON-LD/<time> reader vs trafilatura's extract_metadata, on the same parsed trees."""
    from trafilatura.metadata import extract_metadata

    from tasks.extract import parse_html
    from tasks.meta import html_metadata, parse_published

    ours_ms, traf_ms, traf_fast_ms = [], [], []
    both = agree = ours_only = traf_only = author_both = author_agree = 0
    disagreements = []
    for article in _articles("extraction", data):
        tree = parse_html(article.body)
        if tree is None:
            continue
        started = time.perf_counter()
        meta, published = html_metadata(tree)
        ours_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        theirs = extract_metadata(tree)
        traf_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        extract_metadata(tree, extensive=False)
        traf_fast_ms.append((time.perf_counter() - started) * 1000)
        their_date = parse_published(theirs.date) if theirs.date else None
        if published and their_date:
            both += 1
            if published.date() == their_date.date():
                agree += 1
            else:
                disagreements.append((article.doc_id[:12], published.date().isoformat(), their_date.date().isoformat()))
        elif published:
            ours_only += 1
        elif their_date:
            traf_only += 1
            disagreements.append((article.doc_id[:12], "-", their_date.date().isoformat()))
        if meta.get("author") and theirs.author:
            author_both += 1
            author_agree += theirs.author.split(";")[0].strip().casefold() in meta["author"].casefold()
    n = len(ours_ms)
    print(f"{n} pages; ms/page median / mean")
    print(f"  ours (tasks.meta.html_metadata)            {statistics.median(ours_ms):6.2f} / {statistics.mean(ours_ms):6.2f}")
    print(f"  trafilatura extract_metadata               {statistics.median(traf_ms):6.2f} / {statistics.mean(traf_ms):6.2f}")
    print(f"  trafilatura extract_metadata(extensive=F)  {statistics.median(traf_fast_ms):6.2f} / "
          f"{statistics.mean(traf_fast_ms):6.2f}")
    print(f"published: both found {both} (same day {agree}), ours only {ours_only}, trafilatura only {traf_only}")
    print(f"author: both found {author_both}, trafilatura's first author inside ours {author_agree}")
    for row in disagreements:
        print("  date differs (ours, trafilatura):", *row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--collections", nargs="+", default=["extraction", "cacm", "scifact"])
    d.add_argument("--heading-context", choices=["first", "section"], help="SplitOptions.heading_context")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    sub.add_parser("metadata")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out, args.data, args.collections, args.heading_context)
    elif args.command == "compare":
        compare(args.before, args.after, args.data)
    else:
        metadata(args.data)


if __name__ == "__main__":
    main()
