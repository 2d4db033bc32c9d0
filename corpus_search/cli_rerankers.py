"""``corpus-search train-reranker`` (Prefect flow ``train-reranker``) and ``corpus-search rerankers``.

Flows and trainers are imported inside the command functions, so building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corpus_search.errors import UsageError


def _db_uri(args: argparse.Namespace) -> str:
    from query.settings import get_settings

    return args.db or get_settings().db_uri


def _collection(args: argparse.Namespace) -> str:
    from query.schema import validate_collection_name
    from query.settings import get_settings

    return validate_collection_name(args.collection or get_settings().collection)


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from corpus_search.ephemeral import guard_temporary_server
    from deployments.prefect_env import prefect_environment
    from flows.train_reranker import check_training_args
    from query.errors import InvalidQueryError

    if args.split and not args.judgments:
        raise InvalidQueryError("--split goes with --judgments (the qrels file qrels/<split>.tsv)")
    # Every cheap check before Prefect starts: a mistyped option is one line, not a failed flow run's traceback.
    collection, db_uri = _collection(args), _db_uri(args)
    check_training_args(judgments=args.judgments, self_supervised=args.self_supervised, split=args.split or "train",
                        promote=args.promote, time_budget=args.time_budget, max_length=args.max_length,
                        train_layers=args.train_layers, out=args.out, db_uri=db_uri)
    from query.searcher import Searcher

    Searcher(db_uri=db_uri, collection=collection)  # a missing collection is a usage error before Prefect starts
    prefect_environment()
    guard_temporary_server()
    from flows.train_reranker import train_reranker

    result = train_reranker(
        collection, db_uri=db_uri, judgments=args.judgments, split=args.split or "train",
        self_supervised=args.self_supervised, base=args.base, time_budget=args.time_budget, out=args.out,
        promote=args.promote, seed=args.seed, max_length=args.max_length, train_layers=args.train_layers,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    dev = result["dev"]
    prev = dev["previous"]
    print(f"re-ranker {result['id']} for {collection}: {result['signal']}, base {result['base']}")
    print(f"  trained on {result['train_queries']} queries, {result['pairs']} pairs, {result['steps']} steps "
          f"in {result['train_seconds']:.0f} s (whole run {result['seconds']:.0f} s); saved to {result['model']}"
          + (f", stored at {result['stored']}" if result["stored"] != result["model"] else ""))
    print(f"  dev nDCG@10 on {dev['queries']} held-out queries: retrieval alone {dev['retrieval']['ndcg@10']:.4f}"
          + (f", current re-ranker {prev['ndcg@10']:.4f}" if prev else "")
          # The fused figure is cross-validated (each half's weight chosen on the other half), so it can
          # differ from retrieval alone even when the weight saved, chosen on all of dev, is 0.
          + f", this one fused {dev['candidate']['ndcg@10']:.4f} (cross-validated over the fusion weight; "
          f"weight saved {result['alpha']}), alone {dev['candidate']['alone']:.4f}")
    print(f"  {result['decision']}")
    return 0


def cmd_rerankers(args: argparse.Namespace) -> int:
    from query.errors import CorpusSearchError
    from tasks.rerank_registry import check_removable, listing, promote, remove

    collection, db_uri = _collection(args), _db_uri(args)
    if args.promote is not None and args.promote in (args.remove or []):  # refused before either one acts
        raise UsageError(f"--promote {args.promote} --remove {args.promote}: a re-ranker cannot be promoted and "
                         "removed at once; promote another one, or remove it alone")
    if args.remove and (args.promote is not None or args.unpromote):
        # Checked before the promotion commits: a removal refused (a mistyped id, a model a tag promotes) must
        # change nothing, not half the command.
        try:
            check_removable(db_uri, collection, args.remove, None if args.unpromote else args.promote)
        except CorpusSearchError as exc:
            raise UsageError(f"{exc}; nothing was changed") from exc
    if args.promote is not None or args.unpromote:
        entry = promote(db_uri, collection, None if args.unpromote else args.promote)
        if not args.json:
            print(f"collection {collection}: " + (f"re-ranker {entry.id} promoted" if entry else
                  "no re-ranker promoted (searches use the configured cross-encoder)"))
    if args.remove:  # after a promotion: --promote B --remove A replaces A
        deleted = remove(db_uri, collection, args.remove)
        if not args.json:
            print(f"collection {collection}: removed re-ranker(s) {', '.join(args.remove)}"
                  + (f"; deleted {', '.join(deleted)}" if deleted else ""))
    result = listing(db_uri, collection)
    if args.json:
        print(json.dumps(result))
        return 0
    if not result["models"]:
        print(f"collection {collection}: no trained re-rankers (corpus-search train-reranker --collection {collection} ...)")
    else:
        print(f"  {'id':<36} {'signal':<16} {'dev retrieval':>13} {'dev re-ranked':>13} {'alpha':>5}  base")
        for m in result["models"]:
            d = m.get("dev") or {}  # an entry registered from Python may have no gate numbers

            def score(key: str, d=d) -> str:
                value = (d.get(key) or {}).get("ndcg@10")
                return f"{value:>13.4f}" if isinstance(value, int | float) else f"{'-':>13}"

            print(f"{'*' if m['promoted'] else ' '} {m['id']:<36} {m['signal']:<16} {score('retrieval')} "
                  f"{score('candidate')} {m['alpha']:>5}  {m['base']}"
                  + ("  (its files are missing)" if m["missing"] else ""))
        print("(* promoted; dev = nDCG@10 on the held-out training queries)")
    if result["unregistered"]:
        print(f"directories under {Path(result['unregistered'][0]['path']).parent} that this version's registry does "
              "not name (a run in progress, one interrupted before it registered its model, or models of another "
              "version of the collection, which a rollback to it needs):")
        for d in result["unregistered"]:
            why = ("training now" if d["training"] else
                   f"named by version(s) {', '.join(map(str, d['versions']))}" if d["versions"] else
                   f"no kept version names it: --remove {Path(d['path']).name} deletes it")
            print(f"  {d['path']}  ({why})")
    if any(m["missing"] and m["promoted"] for m in result["models"]):
        print("the promoted re-ranker's files are missing, so searches use retrieval alone: promote another "
              "(--promote ID) or --unpromote", file=sys.stderr)
    return 0


def register(sub, common) -> None:
    tr = sub.add_parser(
        "train-reranker",
        help="train a cross-encoder for a collection, gate it on held-out queries, promote it if it wins "
        "(Prefect flow train-reranker)",
    )
    tr.add_argument("--judgments", metavar="DATASET_DIR", default=None,
                    help="BEIR directory: queries.jsonl + qrels/<split>.tsv whose corpus ids are the collection's doc ids")
    tr.add_argument("--split", default=None, help="qrels split to train on (default: train); dev queries are held out of it")
    tr.add_argument("--self-supervised", action="store_true",
                    help="no judgments: pseudo-queries (titles, cut-out sentences, salient terms) made from the collection")
    tr.add_argument("--base", default=None, metavar="NAME_OR_PATH",
                    help="start point: a cross-encoder or an encoder body (default: the configured cross-encoder "
                    "when it loads, else the packaged all-MiniLM-L6-v2 body)")
    tr.add_argument("--time-budget", type=float, default=600.0, metavar="SECONDS",
                    help="training time, its scorings on dev included (default 600); building the data, "
                         "a speed probe and the gate come on top")
    tr.add_argument("--out", default=None, metavar="DIR",
                    help="where to save the model: a new or empty directory (default: <db>/_rerankers/<collection>/<id>)")
    tr.add_argument("--promote", choices=("auto", "never", "always"), default="auto",
                    help="auto (default): promote only if it beats retrieval alone and the current re-ranker on dev")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--max-length", type=int, default=None, metavar="TOKENS",
                    help="query + passage tokens the model trains on (default 256; at least 32, at most the base's "
                    "positions, 512 for MiniLM)")
    tr.add_argument("--train-layers", type=int, default=None, metavar="N",
                    help="train only the top N transformer layers and the head (default: all; 0: the head only); "
                    "faster on a CPU")
    common(tr)
    tr.set_defaults(func=cmd_train_reranker)

    rr = sub.add_parser("rerankers", help="list a collection's trained re-rankers; promote one (or an older one back)")
    which = rr.add_mutually_exclusive_group()  # promoting one and none at once has no meaning
    which.add_argument("--promote", default=None, metavar="ID", help="make this trained re-ranker the collection's")
    which.add_argument("--unpromote", action="store_true", help="promote none: searches use the configured cross-encoder")
    rr.add_argument("--remove", action="append", default=None, metavar="ID",
                    help="forget this trained re-ranker and delete its saved model (repeatable; never the promoted "
                    "one; a model saved with --out elsewhere is only forgotten); also a listed model directory that "
                    "no kept version names (a run killed before it registered its model)")
    common(rr)
    rr.set_defaults(func=cmd_rerankers)
