"""``corpus-search versions``, ``rollback`` and ``tag``: a collection's LanceDB versions.

``tasks.versions`` is imported inside the command functions, so building the parser stays light.
"""

from __future__ import annotations

import argparse
import json


def _db_uri(args: argparse.Namespace) -> str:
    from query.settings import get_settings

    return args.db or get_settings().db_uri


def _run_text(item: dict) -> str:
    s = item.get("summary")
    if not s:
        return ""
    if item.get("kind") == "rollback":
        return f"rollback to v{s['rolled_back_to']}" + (f" ({s['tag']})" if s.get("tag") else "")
    if item.get("kind") == "reranker":
        promoted = f"re-ranker {s['promoted']} promoted" if s.get("promoted") else "no re-ranker promoted"
        if "trained" in s:
            return f"re-ranker {s['trained']} trained ({s['signal']}); {promoted}"
        if "removed" in s:
            return f"re-ranker(s) {', '.join(s['removed'])} removed; {promoted}"
        return promoted
    if item.get("kind") == "delete":
        return f"delete: rows_deleted {s.get('rows_deleted', 0)}, articles_deleted {s.get('articles_deleted', 0)}"
    keys = ("articles_fetched", "articles_deleted", "paragraphs_encoded", "paragraphs_deleted")
    return "index run: " + ", ".join(f"{k} {s[k]}" for k in keys if k in s)


def cmd_versions(args: argparse.Namespace) -> int:
    from tasks.versions import list_versions

    items = list_versions(_db_uri(args), args.collection)
    if args.json:
        print(json.dumps(items))
        return 0
    print(f"{'version':>7}  {'timestamp (UTC)':<26} {'rows':>8}  tags / run")
    for it in items:
        notes = [", ".join(it["tags"])] if it["tags"] else []
        notes += [_run_text(it)] if it["summary"] else []
        notes += [f"{tag}: " + json.dumps(m, separators=(",", ":")) for tag, m in it["metrics"].items()]
        print(f"{it['version']:>7}  {it['timestamp'][:26]:<26} {it['rows']:>8}  {'; '.join(notes)}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from tasks.versions import rollback

    result = rollback(_db_uri(args), args.collection, args.to)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"collection {args.collection}: version {result['rolled_back_to']} restored as new version "
              f"{result['version']} ({result['rows']} rows, {result['articles']} articles); "
              f"undo with: corpus-search rollback {args.collection} --to {result['from_version']}")
        if result.get("migrated_from"):
            print(f"collection {args.collection}: that version used index schema v{result['migrated_from']}; it was "
                  "upgraded in place (as corpus-search migrate does), keeping every vector")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from tasks.versions import tag_version

    result = tag_version(_db_uri(args), args.collection, args.name, args.version)
    if args.json:
        print(json.dumps(result))
    else:
        moved = f" (moved from version {result['previous_version']})" if result["previous_version"] is not None else ""
        print(f"collection {args.collection}: version {result['version']} tagged {args.name!r}{moved}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from tasks.migrate import migrate_collection

    result = migrate_collection(_db_uri(args), args.collection)
    if args.json:
        print(json.dumps(result))
    elif result["from_version"] == result["to_version"]:
        print(f"collection {args.collection} already uses index schema v{result['to_version']}: nothing to do")
    else:
        print(f"collection {args.collection}: index schema v{result['from_version']} -> v{result['to_version']} "
              f"({result['rows']} rows kept with their vectors; source now names the file or URL of "
              f"{result['sources_updated']} rows)")
    return 0


def register(sub, common) -> None:
    from corpus_search.cli import add_collection_operand

    ve = sub.add_parser("versions", help="list a collection's versions with rows, tags, run summaries and eval metrics")
    add_collection_operand(ve)
    common(ve, collection=False)
    ve.set_defaults(func=cmd_versions)

    rb = sub.add_parser(
        "rollback",
        help="make an older version (number or tag) the latest again; history is kept, so it can be undone",
    )
    add_collection_operand(rb)
    rb.add_argument("--to", required=True, metavar="VERSION|TAG", help="version number or tag to restore")
    common(rb, collection=False)
    rb.set_defaults(func=cmd_rollback)

    tg = sub.add_parser("tag", help="tag a version of a collection (tagged versions are never cleaned up)")
    add_collection_operand(tg)
    tg.add_argument("name", help="tag name: letters, digits, '.', '-', '_' (e.g. prod)")
    tg.add_argument("--version", default=None, metavar="VERSION|TAG", help="version to tag (default: the latest)")
    common(tg, collection=False)
    tg.set_defaults(func=cmd_tag)

    mg = sub.add_parser(
        "migrate",
        help="upgrade a collection made by an older corpus-search to the current index schema, in place "
        "(vectors kept, nothing re-encoded)",
    )
    add_collection_operand(mg)
    common(mg, collection=False)
    mg.set_defaults(func=cmd_migrate)
