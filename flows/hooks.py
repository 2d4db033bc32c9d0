"""State-change hooks of the index, evaluation and training flows: a clear summary when a run fails or crashes.

Attach to a flow with ``@flow(..., on_failure=[log_failure], on_crashed=[log_crash],
on_cancellation=[log_cancellation])``. The hook logs
one summary into the run's own logs (visible in the Prefect UI, beside the Failed/Crashed state and
its error), and, when the run carries a ``notify:<block-type-slug>/<block-name>`` tag (the reindex
deployments add it from ``notify_block`` in the collections config), sends the same summary through
that Prefect notification block. A hook never raises: a broken notification is logged, not fatal.

It lives in ``flows`` because the flows attach it; ``deployments`` imports the tag names from here
(layers point one way: deployments → flows). It must not import the flow modules (they import it).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

#: Deployment tags the hooks read (flow runs inherit their deployment's tags); ``deployments`` writes them.
NOTIFY_TAG = "notify:"
COLLECTION_TAG = "collection:"
#: Fallback notification block for runs without a ``notify:`` tag (e.g. ad-hoc CLI runs).
NOTIFY_ENV = "CORPUS_SEARCH_NOTIFY_BLOCK"

log = logging.getLogger(__name__)

#: What a failed run of each flow leaves behind: the summary's last line (by flow name, so that this module
#: need not import the flows).
AFTER_FAILURE = {
    # "any": a run refused before its first batch (a lock, a mismatched encoder) wrote nothing
    "index-corpus": "Any rows it wrote before it ended stay; the next run resumes (only changed articles are "
                    "re-encoded).",
    "evaluate": "Any rows its index step wrote before it ended stay; the next run resumes (only changed articles "
                "are re-encoded).",
    # the flow writes to the registry once, in its last step: a failed run changed nothing a search uses
    "train-reranker": "The collection's re-rankers are unchanged: a run registers its model only as its last step. "
                      "If it had started training, the folder it was writing may remain: `corpus-search rerankers "
                      "--collection {collection}` lists it, and `--remove ID` deletes it.",
}


def _logger(flow: Any, flow_run: Any):
    try:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run=flow_run, flow=flow)
    except Exception:  # noqa: BLE001 - a hook must not fail because of logging
        return log


def _ui_url(flow_run: Any) -> str | None:
    try:
        from prefect.settings import get_current_settings

        ui = get_current_settings().ui_url
    except Exception:  # noqa: BLE001
        return None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run.id}" if ui else None


def _error_of(state: Any) -> str:
    """The exception of a failed state as 'Type: message', else the state's message."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - result unavailable (crash, no persistence): use the message
        # A Cancelling state (what on_cancellation hooks get) has no result yet: its message says why.
        exc = err if not isinstance(err, (KeyError, AttributeError)) and type(err).__name__ != "UnfinishedRun" else None
    if isinstance(exc, BaseException) and str(exc).strip():
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseException):  # an interrupt carries no text: the state's message says what happened
        return f"{type(exc).__name__}: {(getattr(state, 'message', None) or 'no error message').strip()}"
    return (getattr(state, "message", None) or "no error message").strip()


def notify_block_of(flow_run: Any) -> str | None:
    for tag in getattr(flow_run, "tags", None) or []:
        if tag.startswith(NOTIFY_TAG):
            return tag[len(NOTIFY_TAG):]
    return os.environ.get(NOTIFY_ENV) or None


def _run_name(flow_run: Any) -> str:
    """The run's name now: a flow renames its run as it starts (``index-<collection>``), and Prefect hands a crash
    hook the run as it was read before that, under the name it was given first ('sassy-gibbon')."""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return client.read_flow_run(flow_run.id).name
    except Exception:  # noqa: BLE001 - a hook never fails: the name it was given
        return flow_run.name


def _collection_of(flow_run: Any) -> str:
    params = dict(getattr(flow_run, "parameters", None) or {})
    collection = params.get("collection")
    if collection is None:
        collection = next((t[len(COLLECTION_TAG):] for t in flow_run.tags or [] if t.startswith(COLLECTION_TAG)), None)
    if collection is None and params.get("dataset"):  # an evaluation's default
        from pathlib import Path

        from tasks.datasets import default_collection

        collection = default_collection(Path(str(params["dataset"])).resolve().name, params.get("unit") or "paragraph")
    return collection if collection is not None else "?"


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(getattr(state, "type", "FAILED"))
    return "Cancelled" if name == "Cancelling" else name  # the hook runs as it ends so


def summary(flow: Any, flow_run: Any, state: Any, name: str | None = None) -> str:
    """One readable paragraph: what ran, on which collection, how it ended, why, where to look (``name``: the
    run's name, when the caller read it already)."""
    params = dict(getattr(flow_run, "parameters", None) or {})
    collection = _collection_of(flow_run)
    state_name = _state_name(state)
    lines = [
        f"corpus-search: {flow.name} run {name or _run_name(flow_run)!r} of collection {collection!r} ended {state_name}",
        f"  error:   {_error_of(state)}",
    ]
    if params.get("dataset"):  # an evaluation run
        lines.append(f"  dataset: {params['dataset']}")
    if "sources" in params:
        from tasks.urls import without_credentials

        srcs = [without_credentials(str(s)) for s in params["sources"] or []]  # logged and notified: no passwords
        shown = ", ".join(map(str, srcs[:3])) + (f" and {len(srcs) - 3} more" if len(srcs) > 3 else "")
        lines.append(f"  sources: {shown}")
    if params.get("db_uri"):
        lines.append(f"  db_uri:  {params['db_uri']}")
    if getattr(flow_run, "deployment_id", None):
        lines.append(f"  deployment id: {flow_run.deployment_id}")
    lines.append(f"  flow run id: {flow_run.id}")
    if url := _ui_url(flow_run):
        lines.append(f"  details: {url}")
    if after := AFTER_FAILURE.get(flow.name):
        lines.append(f"  {after.replace('{collection}', collection)}")
    return "\n".join(lines)


def _notify(block_ref: str, subject: str, body: str, logger) -> bool:
    try:
        from prefect.blocks.core import Block

        block = Block.load(block_ref)
        block.notify(body=body, subject=subject)
    except Exception as exc:  # noqa: BLE001 - report, never mask the run's own failure
        logger.error("could not send the failure notice through block %r: %s: %s", block_ref, type(exc).__name__, exc)
        return False
    logger.info("failure notice sent through notification block %r", block_ref)
    return True


def report(flow: Any, flow_run: Any, state: Any, name: str | None = None) -> str:
    """Log the summary into the run's logs and send it through the configured block, if any."""
    text = summary(flow, flow_run, state, name)
    logger = _logger(flow, flow_run)
    try:
        logger.error("%s", text)
    except Exception:  # noqa: BLE001
        log.error("%s", text)
    if block := notify_block_of(flow_run):
        params = dict(getattr(flow_run, "parameters", None) or {})
        subject = f"corpus-search: {flow.name} {params.get('collection', '')} {getattr(state, 'name', 'failed')}".strip()
        _notify(block, subject, text, logger)
    return text


def report_partial(collection: str, failures: list[tuple[str, str]], notices: list[str]) -> str | None:
    """Send a partly failed run's failures through the current flow run's notification block, if it has one.

    Such a run ends Completed (what it wrote is good, and the CLI tells a cron job with exit 3), so no
    ``on_failure`` hook fires: a scheduled reindex whose source disk was unmounted, or whose mass delete was
    refused, went unnoticed. Called by the flow itself; returns the text sent, or None when there is no block.
    """
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
    except Exception:  # noqa: BLE001 - a report must never fail the run
        return None
    if ctx is None or ctx.flow_run is None or not (block := notify_block_of(ctx.flow_run)):
        return None
    run = ctx.flow_run
    lines = [f"corpus-search: {ctx.flow.name} run {run.name!r} of collection {collection!r} ended Completed "
             f"with {len(failures)} failures (the rest was indexed)"]
    lines += [f"  failed: {doc}: {err}" for doc, err in failures[:10]]
    if len(failures) > 10:
        lines.append(f"  ... and {len(failures) - 10} more (see the index-failures artifact)")
    lines += [f"  note: {n}" for n in notices[:5]]
    lines.append(f"  flow run id: {run.id}")
    if url := _ui_url(run):
        lines.append(f"  details: {url}")
    text = "\n".join(lines)
    _notify(block, f"corpus-search: {ctx.flow.name} {collection} partly failed", text, _logger(ctx.flow, run))
    return text


def log_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` hook: the run raised; it is Failed with the error."""
    report(flow, flow_run, state)


def publish_ended(flow: Any, flow_run: Any, state: Any, text: str, name: str | None = None) -> None:
    """An index run that crashed or was cancelled publishes no artifacts of its own, so the UI's latest summary
    and failures were the previous run's, read as this one's: publish both, saying how it ended, on the run's
    own page too (a hook runs outside the run, so they are given its id)."""
    if flow.name != "index-corpus":
        return
    try:
        from prefect.artifacts import MarkdownArtifact, TableArtifact

        from flows.summary import artifact_key

        collection, how = _collection_of(flow_run), _state_name(state)
        # A crash hook runs in the runner, outside the run: Prefect warns of that, and the artifacts are still made.
        warnings.filterwarnings("ignore", message="Artifact creation outside of a flow", category=FutureWarning)
        TableArtifact(
            table=[{"metric": "outcome", "value": how.lower()},
                   {"metric": "flow_run", "value": name or _run_name(flow_run)}],
            key=artifact_key("index-summary", collection), flow_run_id=flow_run.id,
            description=f"corpus-search index run of collection {collection!r}: ended {how}, its counts unknown",
        ).create(_sync=True)
        MarkdownArtifact(
            markdown=f"# {collection}: the index run ended {how}\n\n```\n{text}\n```\n",
            key=artifact_key("index-failures", collection), flow_run_id=flow_run.id,
            description=f"the index run of {collection!r} ended {how}",
        ).create(_sync=True)
    except Exception as exc:  # noqa: BLE001 - a hook never fails
        log.warning("could not publish the %s run's artifacts: %s: %s", _state_name(state), type(exc).__name__, exc)


def log_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_crashed`` hook: the process died or was interrupted; the run is Crashed."""
    name = _run_name(flow_run)
    publish_ended(flow, flow_run, state, report(flow, flow_run, state, name), name)


def log_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` hook: the run was cancelled (from the UI, or by a ``serve`` that shut down while it
    ran): it stopped part-way, so it is reported as a failure is, not left as a Cancelled state alone."""
    name = _run_name(flow_run)
    publish_ended(flow, flow_run, state, report(flow, flow_run, state, name), name)
