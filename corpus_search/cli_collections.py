"""``corpus-search collections``, ``drop`` and ``delete``: manage the collections of a database.

``tasks.collections`` is imported inside the command functions, so building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import sys

from corpus_search.errors import UsageError


def _db_uri(args: argparse.Namespace) -> str:
    from query.settings import get_settings

    return args.db or get_settings().db_uri


def human_bytes(n: int | None) -> str:
    """1536 → '1.5 KiB'; None (object storage) → '-'."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _last_text(last: dict | None) -> str:
    if not last:
        return "-"
    at = last["at"][:16].replace("T", " ")
    return f"{at} UTC {last.get('outcome') or '?'}"


def collections_table(items: list[dict]) -> str:
    """The collections as an aligned text table (numbers right-aligned, sizes human-readable)."""
    header = ("name", "rows", "documents", "size", "version", "last indexed", "encoder", "re-ranker")
    rows = [(c["name"], str(c["rows"]), str(c["documents"]), human_bytes(c["size_bytes"]), str(c["version"]),
             _last_text(c["last_indexed"]), c["encoder"] or "-", c["reranker"] or "-") for c in items]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join(line(r) for r in [header, *rows])


def cmd_collections(args: argparse.Namespace) -> int:
    from tasks.collections import list_collections

    db_uri = _db_uri(args)
    items = list_collections(db_uri)
    if args.json:
        print(json.dumps(items, ensure_ascii=False))
    elif not items:
        print(f"no collections in {db_uri}: create one with corpus-search index SOURCE... -c NAME --db {db_uri}")
    else:
        print(collections_table(items))
    return 0


def _confirm_drop(name: str, db_uri: str) -> bool:
    """Ask on the terminal; True when the user types the collection name or y/yes."""
    from tasks.collections import list_collections

    info = next((c for c in list_collections(db_uri) if c["name"] == name), None)
    what = (f"{info['rows']} rows, {info['documents']} documents, {human_bytes(info['size_bytes'])}"
            + (f", promoted re-ranker {info['reranker']}" if info["reranker"] else "")) if info else "?"
    from tasks.records import printable

    tags = _tags(name, db_uri)
    saved = f", its {len(tags)} tagged version(s) ({', '.join(map(printable, tags[:5]))}{', ...' if len(tags) > 5 else ''})" \
        if tags else ""
    print(f"Drop collection {name!r} in {db_uri} ({what}), its article state, run log{saved} and trained re-rankers?\n"
          "This cannot be undone. Type the collection name or 'y' to drop it [y/N]: ", end="", file=sys.stderr,
          flush=True)
    answer = sys.stdin.readline().strip()
    return answer in (name, "y", "Y", "yes", "YES", "Yes")


def _tags(name: str, db_uri: str) -> list[str]:
    """The collection's tagged versions (``corpus-search versions --tag``): saved points that a drop destroys."""
    from tasks.collections import connect_existing

    try:
        return sorted(connect_existing(db_uri).open_table(name).tags.list())
    except Exception:  # noqa: BLE001 - the question is asked all the same; drop itself reads them again
        return []


def cmd_drop(args: argparse.Namespace) -> int:
    from tasks.collections import connect_existing, require_collection, drop_collection

    from query.schema import validate_collection_name

    db_uri = _db_uri(args)
    validate_collection_name(args.collection)
    require_collection(connect_existing(db_uri), args.collection)  # an unknown name fails before any question
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to drop collection {args.collection!r} without confirmation (stdin is not a terminal): "
                f"pass --yes, e.g. corpus-search drop {args.collection} --yes"
            )
        if not _confirm_drop(args.collection, db_uri):
            print(f"collection {args.collection!r} was not dropped", file=sys.stderr)
            return 1
    result = drop_collection(args.collection, db_uri)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        from tasks.records import printable

        extra = f" and {len(result['rerankers_removed'])} re-ranker directories" if result["rerankers_removed"] else ""
        tags = f"; tags {', '.join(map(printable, result['tags_dropped']))} went with them" if result["tags_dropped"] else ""
        print(f"dropped collection {args.collection!r} ({result['rows']} rows): tables "
              f"{', '.join(result['tables_dropped'])}{extra}{tags}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from tasks.collections import delete_documents

    result = delete_documents(args.collection, doc_ids=args.doc_id, sources=args.source, db_uri=_db_uri(args),
                              origin=args.origin)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"collection {args.collection}: deleted {result['rows_deleted']} rows of "
              f"{result['articles_deleted']} documents")
    return 0


def register(sub, common) -> None:
    from corpus_search.cli import add_collection_operand

    co = sub.add_parser("collections", help="list the collections of a database: rows, documents, encoder, "
                        "last index run, size, version, re-ranker")
    common(co, collection=False)
    co.set_defaults(func=cmd_collections)

    dr = sub.add_parser("drop", help="remove a collection with its article state, run log and trained re-rankers",
                        description="Remove a collection for good. Asks for confirmation on a terminal; "
                        "scripts pass --yes.")
    add_collection_operand(dr)
    dr.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    common(dr, collection=False)
    dr.set_defaults(func=cmd_drop)

    de = sub.add_parser("delete", help="delete documents from a collection by doc id or source",
                        description="Delete documents (their paragraphs and article state) from a collection. "
                        "Nothing matching deletes 0 rows (a doc id that matches nothing gets a warning with what would). A later `corpus-search index` of their source "
                        "indexes them again.")
    add_collection_operand(de)
    which = de.add_mutually_exclusive_group(required=True)
    which.add_argument("--doc-id", action="append", metavar="ID",
                       help="a document's doc_id, its path under the root it was indexed through (repeatable); "
                       "an id found under several roots deletes nothing unless --origin says which")
    which.add_argument("--source", action="append", metavar="PATH|URL",
                       help="a document's source (file path or URL), exactly; a directory (trailing '/' or an "
                       "existing local directory) deletes every document under it; 'DIR/*' only the documents under "
                       "it. A URL ending in '/' that is itself an indexed page with pages under it is refused: "
                       "say --doc-id URL or --source 'URL*' (repeatable)")
    de.add_argument("--origin", metavar="ROOT", default=None,
                    help="with --doc-id: only the documents indexed through this root (a directory, dump, site "
                    "URL or records origin, as `search --json` shows in origin)")
    common(de, collection=False)
    de.set_defaults(func=cmd_delete)
