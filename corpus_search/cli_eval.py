"""``corpus-search eval``: score retrieval modes on a test collection (Prefect flow ``evaluate``).

Prefect and the flows are imported inside the command function only, so building the parser (and
``corpus-search search``) stays free of Prefect.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from corpus_search.errors import UsageError
from deployments.prefect_env import prefect_environment


def _parse_set(items: list[str] | None) -> dict:
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: use NAME=VALUE, e.g. --set min_paragraph_chars=0")
        key, value = item.split("=", 1)
        from query.settings import SECRET_SETTINGS, Settings

        if key.strip().lower() in SECRET_SETTINGS:
            # The overrides are the evaluate run's parameters, stored by Prefect and shown in its UI.
            raise UsageError(f"--set {key.strip()}: credentials cannot be a flow parameter (Prefect stores and shows "
                             "them); give them as AWS_* or CORPUS_SEARCH_STORAGE_OPTIONS in the environment")
        if key.strip() not in Settings.model_fields:  # inside the flow, after Prefect stored it as a parameter
            raise UsageError(f"--set {key.strip()}: no such setting (see corpus-search --help for CORPUS_SEARCH_* "
                             "settings; names are lower case, e.g. min_paragraph_chars)")
        out[key.strip()] = value  # pydantic-settings coerces strings ("0", "false") to the field's type
    return out


def _check_before_the_flow(args: argparse.Namespace, overrides: dict) -> None:
    """The usage errors the flow would find, found before it starts: inside it each printed a Prefect traceback
    and a failure report saying that indexed rows stay, where nothing was indexed."""
    from flows.evaluate import UNITS
    from query.errors import InvalidQueryError
    from tasks.datasets import load_dataset

    if args.depth < 1:
        raise InvalidQueryError(f"--depth must be >= 1, got {args.depth}")
    if args.paragraphs is not None and args.paragraphs < 1:
        raise InvalidQueryError(f"--paragraphs must be >= 1, got {args.paragraphs}")
    if args.unit not in UNITS:
        raise InvalidQueryError(f"--unit must be one of {', '.join(UNITS)}, got {args.unit!r}")
    if args.tag is not None:
        from query.versions import check_tag_name

        check_tag_name(args.tag)
    from query.settings import settings_with

    settings_with(overrides)  # a bad --set value, before Prefect stores it
    if args.corpus_html and not Path(args.corpus_html).exists():
        raise InvalidQueryError(f"--corpus-html {args.corpus_html}: no such archive or directory")
    if args.out and Path(args.out).is_dir():
        raise InvalidQueryError(f"--out {args.out} is a directory: give the file to write, e.g. "
                                f"{Path(args.out) / 'results.json'}")
    if args.run_dir and Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        raise InvalidQueryError(f"--run-dir {args.run_dir} is a file: give a directory (made if missing) for the run files")
    data = load_dataset(args.dataset, split=args.split, queries=args.queries, qrels=args.qrels)  # not the corpus
    if args.run_dir and (bad := next((q for q in data.queries if any(c.isspace() for c in q)), None)) is not None:
        from tasks.metrics import RunFileError

        raise RunFileError(f"query id {bad!r} contains whitespace: a TREC run file cannot hold it; evaluate without "
                           "--run-dir, or give the queries ids without spaces")
    if data.corpus is None and not args.corpus_html:
        from tasks.datasets import DatasetFormatError

        raise DatasetFormatError(f"{args.dataset}: no corpus.jsonl; give the documents with --corpus-html ARCHIVE_OR_DIR")


def cmd_eval(args: argparse.Namespace) -> int:
    prefect_environment()
    from flows.evaluate import evaluate, format_table, parse_modes, public_json

    modes = parse_modes(args.modes)  # fail on a typo before Prefect starts
    overrides = _parse_set(args.set)
    if args.bi_encoder:
        overrides["bi_encoder"] = args.bi_encoder
    _check_before_the_flow(args, overrides)
    result = evaluate(
        args.dataset,
        collection=args.collection,
        db_uri=args.db,
        modes=modes,
        split=args.split,
        unit=args.unit,
        corpus_html=args.corpus_html,
        queries=args.queries,
        qrels=args.qrels,
        cross_encoder=args.cross_encoder,
        rerank=not args.no_rerank,
        depth=args.depth,
        paragraphs=args.paragraphs,
        out=args.out,
        settings_overrides=overrides or None,
        tag=args.tag,
        run_dir=args.run_dir,
    )
    if args.json:
        print(json.dumps(public_json(result), allow_nan=False))
    else:
        print(format_table(result))
        if result["details"].get("tag"):
            t = result["details"]["tag"]
            print(f"version {t['version']} of {t['collection']} tagged {t['tag']!r} with these metrics")
        if result["details"].get("out"):
            print(f"results written to {result['details']['out']}")
        if result["details"].get("run_files"):
            print(f"TREC run files written to {args.run_dir}: "
                  + ", ".join(Path(f).name for f in result["details"]["run_files"].values()))
    return 0


def register(sub, common) -> None:
    ev = sub.add_parser(
        "eval",
        help="evaluate retrieval on a test collection: NDCG@10, MRR@10, Recall@100, MAP, per-query scores, "
        "significance tests, TREC run files (Prefect flow evaluate)",
        description="Index a BEIR-layout collection (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or an "
        "archive of HTML documents, run its queries in each mode, and score the rankings at document level "
        "(MaxP) with ir-measures. Re-rank rows appear when the cross-encoder loads. Each mode is compared with the "
        "best one (by nDCG@10) by a paired t-test per metric (scipy.stats.ttest_rel, Holm-corrected; * in the table "
        "marks p < 0.05), and a warning is printed when a +rerank row scores below its base mode.",
    )
    ev.add_argument("dataset", help="directory in BEIR layout (queries.jsonl, qrels/<split>.tsv, corpus.jsonl)")
    ev.add_argument("--modes", default="lexical,dense,hybrid", help="comma-separated: lexical,dense,hybrid")
    ev.add_argument("--split", default="test", help="qrels split: test or train (qrels/<split>.tsv)")
    ev.add_argument("--unit", choices=["paragraph", "document"], default="paragraph",
                    help="paragraph: split long documents, score a document by its best paragraph (MaxP); "
                    "document: one unit per document, truncated by the model (as published BEIR numbers)")
    ev.add_argument("--corpus-html", default=None, metavar="ARCHIVE",
                    help=".tar.gz/.zip (or directory) of HTML documents; doc id = file name without extension")
    ev.add_argument("--queries", default=None, help="queries file instead of DATASET/queries.jsonl (TREC topics work)")
    ev.add_argument("--qrels", default=None, help="qrels file instead of DATASET/qrels/<split>.tsv (TREC qrels work)")
    ev.add_argument("--cross-encoder", default=None, metavar="PATH", help="cross-encoder for the +rerank rows")
    ev.add_argument("--no-rerank", action="store_true", help="skip the +rerank rows")
    ev.add_argument("--bi-encoder", default=None, help="bi-encoder name or local path")
    ev.add_argument("--depth", type=int, default=100, help="hits per query that are scored (default 100)")
    ev.add_argument("--paragraphs", type=int, default=None,
                    help="paragraph hits retrieved per query before MaxP (default: --depth); raise it so that "
                    "--depth distinct documents remain when documents have several paragraphs")
    ev.add_argument("--set", action="append", metavar="NAME=VALUE", help="index setting override, e.g. min_paragraph_chars=0")
    ev.add_argument("--tag", default=None, metavar="NAME",
                    help="tag the evaluated version of the collection NAME and store the metrics with it "
                    "(see corpus-search versions; pin it with search --version NAME)")
    ev.add_argument("--out", default=None,
                    help="write the results JSON here, the same document --json prints: metrics per mode and per query "
                    "(details.per_query), significance tests (details.significance), warnings "
                    "(default: <db>/../eval/<collection>.json next to a local database)")
    ev.add_argument("--run-dir", default=None, metavar="DIR",
                    help="write one TREC run file per mode, DIR/<mode>.run (e.g. hybrid+rerank.run), documents as "
                    "scored (after MaxP), for trec_eval or ir_measures (default: none)")
    common(ev, "collection to index the dataset into (default: eval-<dataset name>, -document appended with "
               "--unit document; not the CORPUS_SEARCH_COLLECTION setting, so a real collection is never evaluated "
               "into by accident)")
    ev.set_defaults(func=cmd_eval)
