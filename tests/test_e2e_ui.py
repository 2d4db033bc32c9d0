"""End to end, as a user sees it: a real Prefect server, `corpus-search serve`, a reindex run triggered
through the API, and the Prefect UI in headless Chromium showing the run and its summary artifact.

Needs /usr/bin/chromium (Debian package `chromium`; .ci/run installs it). Skipped without it locally,
an error in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.prefect_env import prefect_environment
from deployments.serve import free_port, start_local_server, stop_process
from tests.conftest import EXAMPLES, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
    "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio", "--metrics-recording-only",
    "--password-store=basic", "--use-mock-keychain",
]
COLLECTION = "e2e-notes"
DEPLOYMENT = "index-corpus/reindex-e2e"


def _need_chromium() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install 'corpus-search[test]')"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"e2e UI test cannot run in CI: {missing}")
        pytest.skip(missing)


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.5, logs: list[Path] = ()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


def test_reindex_run_and_its_summary_artifact_render_in_the_prefect_ui(tmp_path):
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = time.monotonic()
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("earthquakes.md", "tides.txt"):
        shutil.copy(EXAMPLES / "notes" / name, notes / name)
    config = tmp_path / "collections.toml"
    config.write_text(
        f'db_uri = "lancedb"\n[collections.{COLLECTION}]\nsources = ["notes"]\ncron = "0 3 * * *"\n'
        'deployment = "reindex-e2e"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PREFECT_LOGGING_LEVEL="INFO")
    prefect_environment(env)
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = serve = None
    try:
        server = start_local_server(free_port(), env=env, log_path=server_log, timeout_s=120)
        api = server.api_url
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen(
                [sys.executable, "-m", "corpus_search.cli", "serve", "--config", str(config)],
                cwd=REPO, env={**env, "PREFECT_API_URL": api}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logs = [server_log, serve_log]
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:

            def deployment():
                assert serve.poll() is None, serve_log.read_text(errors="replace")[-3000:]
                try:
                    return client.read_deployment_by_name(DEPLOYMENT)
                except Exception:  # noqa: BLE001 - not registered yet
                    return None

            dep = _wait(deployment, 90, f"deployment {DEPLOYMENT}", logs=logs)
            assert dep.parameters["sources"] == [str(notes)] and dep.parameters["db_uri"] == str(tmp_path / "lancedb")
            run = client.create_flow_run_from_deployment(dep.id)

            def finished():
                r = client.read_flow_run(run.id)
                return r if r.state and r.state.is_final() else None

            final = _wait(finished, 150, f"flow run {run.name} to finish", poll_s=1.0, logs=logs)
            assert final.state.is_completed(), f"{final.state.type}: {final.state.message}"
            arts = [a for a in client.read_artifacts() if a.flow_run_id == run.id]
            keys = {a.key for a in arts}
            assert {f"index-summary-{COLLECTION}", f"index-failures-{COLLECTION}"} <= keys, keys
            table = next(a for a in arts if a.key == f"index-summary-{COLLECTION}")
            metrics = {r["metric"]: r["value"] for r in json.loads(table.data)}
            assert metrics["articles_fetched"] == 2 and metrics["rows"] > 0
        run_seconds = time.monotonic() - started

        ui = server.ui_url
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
            )
            try:
                page = context.new_page()
                page.set_default_timeout(45_000)
                page.goto(f"{ui}/runs/flow-run/{run.id}")
                # The name the run took when it started (index-<collection>), not the one it was created with.
                assert final.name == f"index-{COLLECTION}"
                expect(page.get_by_text(final.name).filter(visible=True).first).to_be_visible()
                expect(page.get_by_text("Completed").first).to_be_visible()
                expect(page.get_by_text("index-corpus").first).to_be_visible()
                page.screenshot(path=str(tmp_path / "flow-run.png"), full_page=True)
                page.locator("li.p-tab", has_text="Artifacts").first.click()  # the run page's tabs
                expect(page.get_by_text(f"index-failures-{COLLECTION}").first).to_be_visible()
                card = page.get_by_text(f"index-summary-{COLLECTION}").first
                expect(card).to_be_visible()
                page.screenshot(path=str(tmp_path / "flow-run-artifacts.png"), full_page=True)

                card.click()  # the artifact's own page renders the table
                page.wait_for_url(re.compile(rf"/artifacts/artifact/{table.id}"))
                expect(page.get_by_text("articles_fetched").first).to_be_visible()
                expect(page.get_by_text("paragraphs_per_second_encoding").first).to_be_visible()
                expect(page.get_by_text(f"index-summary-{COLLECTION}").first).to_be_visible()
                for metric in ("collection", "articles_fetched", "paragraphs_encoded", "rows"):
                    row = page.locator("tr", has=page.get_by_text(metric, exact=True))
                    expect(row.first).to_contain_text(str(metrics[metric]))
                page.screenshot(path=str(tmp_path / "artifact.png"), full_page=True)
            finally:
                context.close()
        for name in ("flow-run.png", "flow-run-artifacts.png", "artifact.png"):
            assert (tmp_path / name).stat().st_size > 10_000
        shots = os.environ.get("CORPUS_SEARCH_E2E_SCREENSHOTS")
        if shots:  # keep the screenshots for a human to look at
            Path(shots).mkdir(parents=True, exist_ok=True)
            for name in ("flow-run.png", "flow-run-artifacts.png", "artifact.png"):
                shutil.copy(tmp_path / name, Path(shots) / name)
        print(f"e2e: run completed after {run_seconds:.1f}s, UI checked after {time.monotonic() - started:.1f}s")
    finally:
        if serve is not None:
            stop_process(serve, timeout_s=20)
        if server is not None:
            server.stop(timeout_s=20)
