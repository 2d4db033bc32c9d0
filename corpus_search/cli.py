"""The ``corpus-search`` command. ``search`` never imports Prefect; other subcommands import flows lazily."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence

from corpus_search.argtypes import non_negative_int, positive_int
from corpus_search.errors import UsageError
from deployments.prefect_env import prefect_environment
from query.errors import CorpusSearchError


def _settings(args: argparse.Namespace):
    from query.settings import settings_with

    updates = {}
    for attr, key in (("db", "db_uri"), ("bi_encoder", "bi_encoder"), ("cross_encoder", "cross_encoder"),
                      ("collection", "collection")):
        value = getattr(args, attr, None)
        if value is not None:
            updates[key] = value
    return settings_with(updates)


def _parse_where(items: Sequence[str] | None) -> dict | None:
    """``--where KEY<op>VALUE`` options as a filter mapping (``query.filters.parse_cli_conditions``)."""
    if not items:
        return None
    from query.filters import parse_cli_conditions

    return parse_cli_conditions(items)


def _emphasis() -> bool:
    """Bold matched words only for a person at a terminal: never in a pipe or a file, nor under NO_COLOR."""
    import os

    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _print_answer(answer, as_json: bool) -> None:
    """Print an ``answers.Answer`` as ``search`` / ``search-document`` do (one JSON line, or readable text)."""
    from corpus_search.answers import answer_text

    print(answer_text(answer, as_json, emphasis=not as_json and _emphasis()))


def _show_progress(args: argparse.Namespace) -> bool:
    """``--progress`` / ``--no-progress``, else a bar only for a person watching: stderr a TTY, no ``--json``."""
    if args.progress is not None:
        return args.progress
    return sys.stderr.isatty() and not args.json


def index_overrides(args: argparse.Namespace) -> dict:
    """The settings ``index`` options override for the flow run (``--bi-encoder``, ``--workers``, ``--dask-address``)."""
    overrides = {}
    for attr in ("bi_encoder", "workers", "dask_address"):
        if getattr(args, attr, None) is not None:
            overrides[attr] = getattr(args, attr)
    if not overrides.get("bi_encoder"):
        overrides.pop("bi_encoder", None)
    if "workers" in overrides and "dask_address" not in overrides:
        overrides["dask_address"] = None  # --workers N wins over a CORPUS_SEARCH_DASK_ADDRESS in the environment
    return overrides


def _print_stopped(exc: BaseException, collection: str) -> None:
    """``index --json``'s one object for a run that stopped part-way: the counts of what it did before (when the
    flow attached them to ``exc``; else unknown: null), ``outcome: stopped`` and the error."""
    from flows.summary import JSON_KEYS
    from tasks.records import printable

    done = getattr(exc, "index_summary", None) or {}
    print(json.dumps({**dict.fromkeys(JSON_KEYS), **{k: done[k] for k in JSON_KEYS if k in done},
                      "collection": collection, "outcome": "stopped",
                      "failures": done.get("failures", []), "notices": done.get("notices", []),
                      "error": f"{type(exc).__name__}: {printable(str(exc))[:500]}"}, ensure_ascii=False))


def cmd_index(args: argparse.Namespace) -> int:
    """Run the index flow; the exit code says how it went (``flows.summary.EXIT_CODES``)."""
    prefect_environment()
    from concurrent.futures import CancelledError

    from corpus_search.ephemeral import guard_temporary_server
    from flows.index_corpus import index_corpus
    from flows.summary import EXIT_CODES, EXIT_STOPPED, JSON_KEYS, IndexSummary, NothingIndexedError
    from tasks.records import printable

    from query.schema import validate_collection_name
    from query.storage import check_db_uri
    from tasks.fetch import SourceError, classify_source
    from tasks.urls import has_credentials

    settings = _settings(args)
    # Bad names and database paths are usage errors (exit 2), found before Prefect starts or a file is made.
    validate_collection_name(settings.collection)
    check_db_uri(settings.db_uri, write=True)
    # A malformed URL is that source's failure in a run (the other sources are indexed, exit 3), but a
    # command whose every source is one is a typo: a usage error, before Prefect starts.
    bad = []
    for source in args.sources:
        if "://" in source:
            try:
                classify_source(source)
            except SourceError as exc:
                if has_credentials(source):  # passed on, it would be stored in the run's parameters
                    raise
                bad.append(exc)
    if bad and len(bad) == len(args.sources):
        raise bad[0]
    overrides = index_overrides(args)
    address = overrides["dask_address"] if "dask_address" in overrides else settings.dask_address
    if address:  # from --dask-address or CORPUS_SEARCH_DASK_ADDRESS
        from flows.runners import check_dask_address

        check_dask_address(address)  # an unreachable scheduler: exit 2 before Prefect starts
    guard_temporary_server()
    # What a store, a cluster or a write conflict raises (lance's errors are RuntimeErrors and OSErrors); a
    # bug (TypeError, AttributeError...) keeps its traceback and exit 1.
    stopped: tuple[type[BaseException], ...] = (OSError, RuntimeError, CancelledError)
    if address or overrides.get("workers") or settings.workers:
        from distributed.client import ClosedClientError  # a Dask scheduler that died

        stopped += (ClosedClientError,)
    try:
        result = index_corpus(
            list(args.sources),
            collection=settings.collection,
            db_uri=settings.db_uri,
            batch_articles=args.batch_articles,
            settings_overrides=overrides or None,
            progress=_show_progress(args),
            allow_empty_source=args.allow_empty_source,
            allow_mass_delete=args.allow_mass_delete,
        )
    except NothingIndexedError as exc:
        result = exc.summary
    except CorpusSearchError as exc:
        if args.json and getattr(exc, "index_summary", None):  # it stopped a run part-way: what it did, and why
            _print_stopped(exc, settings.collection)
        raise  # a user error: one line, exit 2
    except stopped as exc:
        # An object store that went away, a Dask scheduler that died, a commit conflict: a cron job gets
        # its own exit status and one line, not a page of traceback (the run's logs keep that).
        print(f"corpus-search: error: the run stopped part-way: {type(exc).__name__}: {printable(str(exc))[:500]}\n"
              "corpus-search: what it wrote stays, and the next run resumes (only changed articles are encoded); "
              "the run's logs (above, and in the Prefect UI) have the traceback", file=sys.stderr)
        if args.json:  # a script that parses stdout still gets its one object: what is known, and why it stopped
            _print_stopped(exc, settings.collection)
        return EXIT_STOPPED
    if args.json:
        print(json.dumps({**{k: result[k] for k in JSON_KEYS}, "outcome": result["outcome"],
                          "failures": result["failures"], "notices": result.get("notices", [])}, ensure_ascii=False))
    else:
        print(IndexSummary.from_result(result).to_text())
    return EXIT_CODES[result["outcome"]]


def _rerank_mode(args: argparse.Namespace) -> bool | str:
    """``Searcher.search``'s ``rerank`` from ``--no-rerank`` / ``--require-rerank``, locally and through --api."""
    return False if args.no_rerank else ("require" if args.require_rerank else True)


def _api_url(args: argparse.Namespace) -> str | None:
    """The query service to send ``search`` to: ``--api``, else the ``CORPUS_SEARCH_API_URL`` setting."""
    if args.api is not None:
        return args.api
    from query.settings import get_settings

    return get_settings().api_url


def _search_remote(args: argparse.Namespace, api_url: str, where: dict | None) -> int:
    """``search --api``: the service answers with its own models and database (no torch, LanceDB or Prefect here)."""
    import warnings

    from corpus_search.api_client import post

    local_only = [opt for opt, attr in (("--db", "db"), ("--bi-encoder", "bi_encoder"),
                                        ("--cross-encoder", "cross_encoder"), ("--version", "version"))
                  if getattr(args, attr, None) is not None]
    if local_only:
        raise UsageError(f"{', '.join(local_only)} cannot be used with the query service at {api_url}: it searches "
                         "with the database and models it was started with (corpus-search api --db ...). "
                         "Drop the option, or search locally: --api '' (or no --api and CORPUS_SEARCH_API_URL unset)")
    from query.settings import get_settings

    body = {"query": args.query, "collection": args.collection or get_settings().collection, "k": args.k,
            "mode": args.mode, "candidates": args.candidates,
            "rerank": _rerank_mode(args), "where": where}
    # Sent only when used, so that a service older than these fields still answers plain searches.
    if args.offset:
        body["offset"] = args.offset
    if args.score_threshold is not None:
        body["score_threshold"] = args.score_threshold
    answer = post(api_url, "/search", body)
    for message in answer.warnings:  # the service's warnings, shown as a local search shows its own
        warnings.warn(message, stacklevel=1)
    _print_answer(answer, args.json)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    where = _parse_where(args.where)  # a malformed option fails before the database or any model is opened
    if api_url := _api_url(args):
        return _search_remote(args, api_url, where)
    from corpus_search.answers import search_answer
    from query.searcher import Searcher

    searcher = Searcher(settings=_settings(args), version=args.version)
    answer = search_answer(searcher, args.query, k=args.k, mode=args.mode, candidates=args.candidates,
                           rerank=_rerank_mode(args), where=where, score_threshold=args.score_threshold,
                           offset=args.offset)
    _print_answer(answer, args.json)
    return 0


def cmd_search_document(args: argparse.Namespace) -> int:
    from corpus_search.answers import document_answer

    answer = document_answer(args.source, args.query, k=args.k, settings=_settings(args),
                             score_threshold=args.score_threshold, offset=args.offset, rerank=_rerank_mode(args))
    _print_answer(answer, args.json)
    return 0


def _rerank_flags(sp: argparse.ArgumentParser, fallback: str) -> None:
    """--no-rerank and --require-rerank (read back by ``_rerank_mode``), shared by search and search-document."""
    rr = sp.add_mutually_exclusive_group()
    rr.add_argument("--no-rerank", action="store_true",
                    help=f"skip the cross-encoder: the hits are {fallback}, with its scores")
    rr.add_argument("--require-rerank", action="store_true",
                    help=f"fail (exit 2) when no cross-encoder loads, instead of answering with {fallback}")


def _paging(sp: argparse.ArgumentParser, score: str) -> None:
    """--offset and --score-threshold, shared by search and search-document."""
    sp.add_argument("--offset", type=non_negative_int, default=0, metavar="N",
                    help="skip the first N hits of the ranking: -k 10 --offset 10 is page 2, ranked 11-20 (default: 0)")
    sp.add_argument("--score-threshold", type=float, default=None, metavar="X",
                    help=f"drop hits whose score is below X; the score is {score} (default: keep all)")


def setting_default(name: str):
    """The value a setting has now (environment and .env included), for help texts that show real defaults.

    A broken environment must not break ``--help``: it falls back to the built-in default.
    """
    from query.settings import Settings, get_settings

    try:
        return getattr(get_settings(), name)
    except Exception:  # noqa: BLE001 - e.g. an invalid CORPUS_SEARCH_* value; the command itself reports it
        return Settings.model_fields[name].default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corpus-search", description="Index articles and search them: retrieve, then re-rank.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, collection: bool | str = True) -> None:
        if collection:
            sp.add_argument("--collection", "-c", default=None,
                            help=collection if isinstance(collection, str) else
                            f"collection name (default: {setting_default('collection')!r}, "
                            "the CORPUS_SEARCH_COLLECTION setting)")
        sp.add_argument("--db", default=None,
                        help=f"LanceDB URI: a directory or s3://... (default: {setting_default('db_uri')!r}, "
                        "the CORPUS_SEARCH_DB_URI setting)")
        sp.add_argument("--json", action="store_true",
                        help="print one JSON document instead of text (collections and versions: a list; rerankers: an object "
                             "with its models)")

    from flows.summary import EXIT_HELP

    ix = sub.add_parser("index", help="index URLs, files, directories and JSONL dumps (Prefect flow index-corpus)",
                        description="Index sources into a collection, incrementally (Prefect flow index-corpus).",
                        epilog=EXIT_HELP)
    ix.add_argument("sources", nargs="+", help="http(s) URL, file, directory, or .jsonl/.jsonl.gz dump")
    ix.add_argument("--allow-empty-source", action="store_true",
                    help="a source directory or dump that exists but is empty really is empty: delete its indexed "
                    "articles (default: keep them and report a failure, since an unmounted disk looks the same)")
    ix.add_argument("--allow-mass-delete", action="store_true",
                    help="delete vanished articles even when they are more than CORPUS_SEARCH_MAX_DELETE_FRACTION "
                    "(default 0.5) of the collection's rows (default: delete nothing and report)")
    ix.add_argument("--bi-encoder", default=None,
                    help=f"bi-encoder name or local path (default: {setting_default('bi_encoder')!r}, the "
                    "CORPUS_SEARCH_BI_ENCODER setting); an existing collection keeps the one it was made with")
    ix.add_argument("--batch-articles", type=positive_int, default=512,
                    help="articles read, split, encoded and written per batch; bounds memory (default: 512)")
    dask = ix.add_mutually_exclusive_group()
    dask.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                      help="fetch, split and encode on a local Dask cluster of N worker processes, started for the "
                      "run (prefect-dask); one process still writes (default: "
                      f"{setting_default('workers')}, the CORPUS_SEARCH_WORKERS setting; 0: in this process)")
    dask.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT",
                      help="fetch, split and encode on the running Dask cluster whose scheduler is at this address "
                      "(default: the CORPUS_SEARCH_DASK_ADDRESS setting); its workers need this project and the "
                      "database's location")
    ix.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show a progress bar on stderr: paragraphs encoded (rate, ETA) and articles read "
                    "(default: only when stderr is a terminal and --json is not given)")
    common(ix)
    ix.set_defaults(func=cmd_index)

    se = sub.add_parser("search", help="search a collection (no Prefect involved)")
    se.add_argument("query", help="the question or keywords, e.g. 'How do glaciers form?'")
    se.add_argument("-k", type=positive_int, default=5, help="hits to return (default: 5)")
    from query.settings import MODES
    se.add_argument("--mode", choices=list(MODES), default="hybrid",
                    help="retrieval: dense (bi-encoder cosine), lexical (BM25) or hybrid (reciprocal rank fusion of "
                    "both) (default: hybrid)")
    se.add_argument("--candidates", type=positive_int, default=None,
                    help=f"candidates retrieved before re-ranking (default: {setting_default('candidates')}, the "
                    "CORPUS_SEARCH_CANDIDATES setting; a promoted re-ranker may use its own depth)")
    _rerank_flags(se, "the retrieval ranking")
    se.add_argument(
        "--where", action="append", metavar="KEY<op>VALUE",
        help="filter (repeatable, ANDed; one key given '=' twice means either value). op: = != < <= > >= ^= "
        "(starts with). KEY: a column (source, doc_id, origin, title, position, published, indexed_at...) or "
        "metadata.FIELD. A date without a time is its whole UTC day. Quote a filter with < or > (the shell reads "
        "them as redirections). E.g. "
        "--where 'published>=2024-01-01' --where source^=/home/me/notes/ --where metadata.author=Ann",
    )
    _paging(se, "in 0..1 when re-ranked: the cross-encoder's relevance, or, fused with retrieval (a trained "
            "re-ranker's weight), a score relative to the query's candidates; with --no-rerank the retrieval score")
    se.add_argument("--bi-encoder", default=None,
                    help=f"bi-encoder name or local path; must be the collection's (default: "
                    f"{setting_default('bi_encoder')!r}, the CORPUS_SEARCH_BI_ENCODER setting)")
    se.add_argument("--cross-encoder", default=None,
                    help="cross-encoder name or local path (default: the collection's promoted re-ranker, else "
                    f"{setting_default('cross_encoder')!r}, the CORPUS_SEARCH_CROSS_ENCODER setting)")
    se.add_argument("--version", default=None, help="search this version number or tag (default: the latest)")
    se.add_argument("--api", default=None, metavar="URL",
                    help="send the query to a running query service (corpus-search api), e.g. http://127.0.0.1:8000 "
                    "(default: the CORPUS_SEARCH_API_URL setting; unset: search locally)")
    common(se)
    se.set_defaults(func=cmd_search)

    sd = sub.add_parser("search-document", help="rank the paragraphs of one URL or file with the cross-encoder alone")
    sd.add_argument("source", help="http(s) URL or local file")
    sd.add_argument("query", help="the question or keywords")
    sd.add_argument("-k", type=positive_int, default=5, help="paragraphs to return (default: 5)")
    sd.add_argument("--cross-encoder", default=None,
                    help=f"cross-encoder name or local path (default: {setting_default('cross_encoder')!r}, "
                    "the CORPUS_SEARCH_CROSS_ENCODER setting)")
    _rerank_flags(sd, "the bi-encoder's ranking (cosine similarity)")
    _paging(sd, "the 0..1 cross-encoder relevance, or the bi-encoder's cosine when no cross-encoder ranks")
    common(sd, collection=False)
    sd.set_defaults(func=cmd_search_document)

    # Each module imports Prefect only inside its command functions, so `search` stays free of Prefect.
    from corpus_search import cli_api, cli_collections, cli_deploy, cli_eval, cli_rerankers, cli_versions

    for module in (cli_eval, cli_deploy, cli_collections, cli_versions, cli_rerankers, cli_api):
        module.register(sub, common)
    return p


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings meant for users (re-ranking skipped, a query cut) as one line, without a source line."""
    return f"corpus-search: warning: {message}\n"


def add_collection_operand(sp: argparse.ArgumentParser) -> None:
    """The collection operand of the commands on one named collection (versions, rollback, tag, migrate,
    drop, delete): ``versions NAME``, or ``versions -c NAME`` as search and index spell it. It has no default.
    """
    sp.add_argument("collection", nargs="?", default=None, help="collection name (or -c NAME)")
    sp.add_argument("--collection", "-c", dest="collection_flag", default=None, metavar="NAME",
                    help="the collection, named as search and index take it (instead of the operand)")
    sp.set_defaults(collection_parser=sp)


def _collection_operand(sp: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The collection given to an ``add_collection_operand`` command: exactly one name, operand or -c."""
    named = {name for name in (args.collection, args.collection_flag) if name is not None}
    if len(named) > 1:
        sp.error(f"two collections given ({args.collection!r} and -c {args.collection_flag!r}): give one")
    if not named:
        sp.error("the collection is required: give its name (or -c NAME)")
    return named.pop()


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _format_warning
    try:
        args = build_parser().parse_args(argv)  # --help through a closed pipe too
        if (sp := getattr(args, "collection_parser", None)) is not None:
            args.collection = _collection_operand(sp, args)
        return int(args.func(args) or 0)
    except CorpusSearchError as exc:
        # User errors (bad names, filters, paths, settings) are one line and exit 2; bugs keep their traceback.
        print(f"corpus-search: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Ctrl-C: one line and what the interrupted step kept, no traceback, and the shell's status for SIGINT
        # (130), so a script can tell. (A SIGTERM never gets here: inside a flow run, Prefect's engine records
        # the run as Crashed and ends the process with the signal itself, status 143.)
        print("corpus-search: interrupted", file=sys.stderr)
        for note in getattr(exc, "__notes__", ()):
            print(f"corpus-search: {note}", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`corpus-search collections | head -3`): as the shell's own tools, stop quietly
        # with SIGPIPE's status. stdout is pointed at /dev/null so that the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    raise SystemExit(main())
