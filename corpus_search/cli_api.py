"""``corpus-search api``: the long-lived query service (FastAPI + uvicorn) that keeps its models warm.

FastAPI, uvicorn and the models are imported inside the command, so building the parser stays light.
"""

from __future__ import annotations

import argparse
import ipaddress


def _port(text: str) -> int:
    """argparse type of --port: 1..65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port_free(host: str, port: int) -> None:
    """A taken port is a one-line usage error before any model loads (uvicorn would log it after the imports)."""
    import socket

    from corpus_search.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"--host {host!r} is not an address of this machine ({exc}); e.g. --host 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            s.bind(addr)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}): is a service already running "
                             f"there? Pick another --port") from None


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the query API until interrupted (Ctrl-C)."""
    import logging

    import uvicorn

    from corpus_search.api import create_app
    from query.schema import validate_collection_name
    from query.settings import settings_with
    from query.storage import check_db_uri

    updates = {key: value for key, value in (("db_uri", args.db), ("bi_encoder", args.bi_encoder),
                                             ("cross_encoder", args.cross_encoder)) if value is not None}
    settings = settings_with(updates)
    # A bad --db is a usage error now, not a 500 on every query; a mistyped one is not created empty and served.
    check_db_uri(settings.db_uri, must_exist=True)
    collections = [validate_collection_name(c) for c in args.collection] if args.collection else None
    _check_port_free(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("corpus_search.api")
    # search-document could read any file this process can read: beyond loopback, only when asked to.
    local_files = args.allow_local_files or _loopback(args.host)
    if not _loopback(args.host):
        log.warning("listening on %s, not loopback: every client can search%s", args.host,
                    ", and POST /search-document can read any file this process can read" if local_files
                    else "; POST /search-document takes http(s) URLs only (--allow-local-files: files too)")
    log.info("database %s; page at http://%s:%d/ ; health at /healthz", settings.db_uri, args.host, args.port)
    app = create_app(settings, collections, model_threads=args.model_threads, local_files=local_files)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=args.access_log)
    return 0


def register(sub, common) -> None:
    ap = sub.add_parser(
        "api", help="serve searches over HTTP with warm models (FastAPI): /search, /search-document, a page at /",
        description="A long-lived query service: models load once, then POST /search answers exactly what "
        "`corpus-search search --json` prints. GET /healthz is 200 once the models are warm.")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    from corpus_search.cli import setting_default

    ap.add_argument("--db", default=None,
                    help=f"LanceDB URI: a directory or s3://... (default: {setting_default('db_uri')!r}, "
                    "the CORPUS_SEARCH_DB_URI setting)")
    ap.add_argument("--collection", "-c", action="append", metavar="NAME",
                    help="warm up only this collection (repeatable); default: the first "
                    "few collections of the database. Other collections still answer, opened on first use")
    ap.add_argument("--bi-encoder", default=None,
                    help=f"bi-encoder name or local path (default: {setting_default('bi_encoder')!r})")
    ap.add_argument("--cross-encoder", default=None,
                    help="cross-encoder name or local path (default: each collection's promoted re-ranker, else "
                    f"{setting_default('cross_encoder')!r})")
    ap.add_argument("--model-threads", type=int, choices=(1, 2, 4), default=1,
                    help="threads that run model work (default 1: one tokenizer user at a time; more only "
                    "contend for the CPU cores and may hit the tokenizers' 'Already borrowed' error; for measurements)")
    ap.add_argument("--allow-local-files", action="store_true",
                    help="let POST /search-document read local files when listening beyond loopback "
                    "(on 127.0.0.1 it always may)")
    ap.add_argument("--access-log", action="store_true", help="log every request")
    ap.set_defaults(func=cmd_api)
