"""``corpus-search serve`` and ``corpus-search deploy``: scheduled reindex deployments from the collections config.

Prefect (and the flows) are imported only inside the command functions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from urllib.parse import urlparse

from corpus_search.argtypes import positive_int
from corpus_search.errors import UsageError


def _api_url_setting() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM as ``SystemExit(143)`` inside the block, so that cleanup on the way out runs (its default action
    ends the process at once). Once serving, Prefect handles SIGTERM itself."""
    def on_term(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.serve import LOCAL_HOSTS, api_healthy, prepare_environment, start_local_server

    prepare_environment()
    from deployments.config import load_config

    cfg = load_config(args.config)  # fail on a bad config (or an unknown -c name) before starting anything
    from deployments.build import deployment_specs

    deployment_specs(cfg, only=args.collection)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = _api_url_setting()
    server = None
    local = f"http://127.0.0.1:{args.port}/api"
    if not api and api_healthy(local):  # a server already runs there (another serve's): use it, start none
        api = local
    if api and api_healthy(api):
        print(f"corpus-search: using the Prefect server at {api}", file=sys.stderr)
    else:
        port = args.port
        if api:
            parsed = urlparse(api)
            if parsed.hostname not in LOCAL_HOSTS:
                raise UsageError(f"PREFECT_API_URL={api} is not reachable; start that server or unset PREFECT_API_URL")
            port = parsed.port or port
        print(f"corpus-search: starting a local Prefect server on 127.0.0.1:{port} ...", file=sys.stderr)
        with _sigterm_raises():  # start_local_server stops the server if the wait for it is cut short
            server = start_local_server(port)
        api = server.api_url
        print(f"corpus-search: Prefect UI at {server.ui_url}", file=sys.stderr)
    os.environ["PREFECT_API_URL"] = api  # flow-run subprocesses inherit it
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            from deployments.serve import serve

            serve(cfg.path, collections=args.collection, limit=args.limit)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            print("corpus-search: stopping the local Prefect server", file=sys.stderr)
            server.stop()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from deployments.build import render_prefect_yaml
    from deployments.config import load_config

    cfg = load_config(args.config)
    if args.write_yaml is not None:
        from pathlib import Path

        target = Path(args.write_yaml)
        text = render_prefect_yaml(cfg, work_pool=args.work_pool, only=args.collection)
        target.write_text(text, encoding="utf-8")
        import yaml

        names = [d["name"] for d in yaml.safe_load(text)["deployments"]]
        print(f"corpus-search: wrote {target} ({len(names)} deployments: {', '.join(names)})")
        return 0

    from deployments.serve import api_healthy

    api = _api_url_setting()
    if not api or not api_healthy(api):
        raise UsageError(
            f"no Prefect server reachable at PREFECT_API_URL={api or '(unset)'}: `corpus-search deploy` registers "
            "deployments on an existing server (for a laptop, use `corpus-search serve`)"
        )
    from prefect import deploy
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from deployments.build import build_deployments

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(args.work_pool)
        except ObjectNotFound:
            if not args.create_pool:
                raise UsageError(
                    f"work pool {args.work_pool!r} does not exist on {api}: create it with "
                    f"`prefect work-pool create {args.work_pool} --type process` or pass --create-pool"
                ) from None
            from prefect.client.schemas.actions import WorkPoolCreate

            client.create_work_pool(WorkPoolCreate(name=args.work_pool, type="process"))
            print(f"corpus-search: created process work pool {args.work_pool!r}", file=sys.stderr)
    deployments = build_deployments(cfg, work_pool=args.work_pool, only=args.collection)
    ids = deploy(*deployments, work_pool_name=args.work_pool, build=False, push=False,
                 print_next_steps_message=False, ignore_warnings=True)
    for d, i in zip(deployments, ids, strict=True):
        print(f"{d.flow_name}/{d.name}\t{i}")
    _stale(cfg, args.work_pool, prune=args.prune)
    print(f"corpus-search: start a worker with `prefect worker start --pool {args.work_pool}` "
          "in an environment where corpus-search is installed", file=sys.stderr)
    return 0


def _stale(cfg, work_pool: str, *, prune: bool) -> list[str]:
    """The work pool's corpus-search deployments that the config no longer defines, warned about or deleted.

    Registering only upserts: after a deployment was renamed, or a collection removed from the config, the old
    deployment kept its schedule, so two deployments reindexed one collection with different settings. A
    deployment of a collection the config defines under another name is surely stale; one of a collection the
    config does not name may be another config's, so only ``--prune`` (this config owns the pool) deletes it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags, WorkPoolFilter, WorkPoolFilterName

    from deployments.build import deployment_specs
    from deployments.config import COLLECTION_TAG, INDEX_FLOW_NAME, EVALUATE_FLOW_NAME

    wanted = {(INDEX_FLOW_NAME if s.flow.startswith("flows.index_corpus") else EVALUATE_FLOW_NAME, s.name)
              for s in deployment_specs(cfg)}
    stale: list[str] = []
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["corpus-search"])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool])))
        flows = {}
        for d in found:
            flow = flows.get(d.flow_id) or flows.setdefault(d.flow_id, client.read_flow(d.flow_id).name)
            if (flow, d.name) in wanted:
                continue
            collection = next((t[len(COLLECTION_TAG):] for t in d.tags if t.startswith(COLLECTION_TAG)), None)
            surely = collection is not None and collection in cfg.collections
            name = f"{flow}/{d.name}"
            if prune:
                client.delete_deployment(d.id)
                print(f"corpus-search: deleted {name}: the config no longer defines it", file=sys.stderr)
            else:
                why = (f"collection {collection!r} is now deployed as {cfg.reindex_name(collection)!r}" if surely
                       else "the config does not define it (another config's, or one removed from this config)")
                print(f"corpus-search: warning: {name} is still registered in work pool {work_pool!r} with its "
                      f"schedule: {why}; delete it with `prefect deployment delete '{name}'`, or deploy with "
                      "--prune", file=sys.stderr)
            stale.append(name)
    return stale


def register(sub, common) -> None:
    """Add ``serve`` and ``deploy`` to the ``corpus-search`` parser."""
    sv = sub.add_parser("serve", help="serve the scheduled reindex deployments (starts a local Prefect server if needed)")
    sv.add_argument("--config", default=None, help="collections config (default: deployments/collections.toml)")
    sv.add_argument("--port", type=int, default=4200, help="port of the local Prefect server started if none is reachable")
    sv.add_argument("--collection", "-c", action="append", default=None, help="serve only this collection (repeatable)")
    sv.add_argument("--limit", type=positive_int, default=None, help="at most this many concurrent flow runs")
    sv.set_defaults(func=cmd_serve)

    dp = sub.add_parser("deploy", help="register the deployments on an existing Prefect server and work pool")
    dp.add_argument("--config", default=None, help="collections config (default: deployments/collections.toml)")
    dp.add_argument("--work-pool", default="corpus-search", help="work pool name (default: corpus-search)")
    dp.add_argument("--create-pool", action="store_true", help="create the work pool (type process) if missing")
    dp.add_argument("--collection", "-c", action="append", default=None, help="deploy only this collection (repeatable)")
    dp.add_argument("--prune", action="store_true",
                    help="delete the work pool's corpus-search deployments that the config no longer defines "
                    "(renamed, or their collection removed); without it they are only warned about")
    dp.add_argument("--write-yaml", default=None, metavar="PATH",
                    help="instead: write the same deployments as a prefect.yaml to PATH, for `prefect deploy --all "
                    "--prefect-file PATH` (generated on demand from the config; not kept in the repository)")
    dp.set_defaults(func=cmd_deploy)
