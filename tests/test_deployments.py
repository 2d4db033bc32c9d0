"""Deployments: the collections config, building deployments without a server, one writer per
collection under concurrent flow runs, the run artifacts, the failure hooks, and `corpus-search deploy`."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments.build import build_deployments
from deployments.config import DEFAULT_CONFIG, ConfigError, load_config
from tests.conftest import EXAMPLES, REPO, hook_summary, table_rows

CRON = "0 3 * * *"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "collections.toml"
    p.write_text(text)
    return p


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """A tiny collection: two of the example notes."""
    d = tmp_path / "notes"
    d.mkdir()
    for name in ("earthquakes.md", "tides.txt"):
        shutil.copy(EXAMPLES / "notes" / name, d / name)
    return d


# --------------------------------------------------------------------------- config


def test_the_shipped_config_loads_and_resolves_paths_under_base_dir():
    cfg = load_config()
    assert cfg.path == DEFAULT_CONFIG
    assert "demo" in cfg.collections and cfg.reindex_name("demo") == "reindex-nightly"
    params = cfg.index_parameters("demo")
    assert params["collection"] == "demo"
    assert all(Path(s).is_absolute() and Path(s).exists() for s in params["sources"])
    assert Path(params["db_uri"]).is_absolute()
    assert cfg.index_parameters("demo", absolute=False)["sources"][0] == "examples/articles"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nschedule = "daily"\n',
         "collections.news.schedule: unknown key"),
        (f'colections = 1\n[collections.news]\nsources = ["a"]\ncron = "{CRON}"\n', "colections: unknown key"),
        ('[collections.news]\nsources = ["a"]\ncron = "0 25 * * *"\n', "collections.news.cron: invalid cron '0 25 * * *'"),
        ('[collections.news]\nsources = ["a"]\ncron = "nightly"\n', "collections.news.cron: invalid cron 'nightly'"),
        (f'[collections.news]\nsources = []\ncron = "{CRON}"\n', "collections.news.sources: sources is empty"),
        ('[collections.news]\ncron = "0 3 * * *"\n', "collections.news.sources: required key is missing"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\ntimezone = "Mars/Olympus"\n',
         "collections.news.timezone: unknown time zone 'Mars/Olympus'"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nnotify_block = "ops"\n',
         "collections.news.notify_block: notify_block 'ops': use '<block-type-slug>/<block-name>'"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nsettings = {{ bi_encodr = "x" }}\n',
         "collections.news.settings: unknown settings ['bi_encodr']"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nsettings = {{ storage_options = {{ aws_secret_access_key = "s" }} }}\n',
         "storage_options cannot be a deployment setting"),
        (f'[collections.a]\nsources = ["a"]\ncron = "{CRON}"\ndeployment = "n"\n'
         f'[collections.b]\nsources = ["b"]\ncron = "{CRON}"\ndeployment = "n"\n',
         "collections.a and collections.b both define deployment 'index-corpus/n'"),
        (f'[collections.a]\nsources = ["a"]\ncron = "{CRON}"\n[evaluations.e]\ncron = "{CRON}"\n',
         "evaluations.e.dataset: required key is missing"),
        ("collections = {}\n", "collections: no collections"),
        (f'[collections.news]\nsources = ["https://ann:hunter2@intranet.example/x"]\ncron = "{CRON}"\n',
         "source 'https://intranet.example/x': a user name or password in a URL is not sent"),
        # Accepted before, then failed (or misbehaved) only when the schedule first fired:
        ('[collections.news]\nsources = ["a"]\ncron = "0 0 3 * * *"\n', "invalid cron '0 0 3 * * *': 6 fields"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nsettings = {{ workers = -1 }}\n',
         "collections.news.settings: invalid settings: workers: Input should be greater than or equal to 0"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nsettings = {{ device = "cdua" }}\n',
         "device 'cdua': use auto, or a torch device type"),
        (f'[collections.news__articles]\nsources = ["a"]\ncron = "{CRON}"\n', "contains '__' (reserved"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\ndeployment = "nightly/news"\n',
         "deployment name 'nightly/news': Prefect refuses"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nbatch_articles = true\n',
         "collections.news.batch_articles"),
        (f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\npaused = "yes"\n', "collections.news.paused"),
        ('[collections.news\nsources = ["a"]\n', "not valid TOML"),
    ],
)
def test_invalid_configs_fail_with_an_error_naming_the_entry(tmp_path, toml, expected):
    path = _write(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the collections config"):
        load_config(tmp_path / "nope.toml")


def test_evaluation_parameters_are_checked_against_the_evaluate_flow(tmp_path):
    pytest.importorskip("flows.evaluate")
    path = _write(tmp_path, f'[collections.a]\nsources = ["a"]\ncron = "{CRON}"\n'
                            f'[evaluations.e]\ndataset = "ds"\ncron = "{CRON}"\nparameters = {{ depht = 10 }}\n')
    with pytest.raises(ConfigError, match=r"evaluations.e.parameters: \['depht'\] are not parameters"):
        build_deployments(load_config(path))


# --------------------------------------------------------------------------- deployments, no server


def test_deployments_build_without_a_server(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    cfg = load_config()
    deployments = {f"{d.flow_name}/{d.name}": d for d in build_deployments(cfg)}
    reindex = deployments["index-corpus/reindex-nightly"]
    assert reindex.entrypoint == "flows/index_corpus.py:index_corpus"
    assert reindex.parameters == cfg.index_parameters("demo")
    (schedule,) = reindex.schedules
    assert schedule.schedule.cron == CRON and schedule.schedule.timezone == "UTC" and schedule.active
    assert reindex.concurrency_limit == 1
    assert reindex.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    assert "collection:demo" in reindex.tags
    if (REPO / "flows" / "evaluate.py").exists():
        evaluate = deployments["evaluate/evaluate-beir-sample"]
        assert evaluate.parameters["dataset"] == str(EXAMPLES / "beir-sample")
    # the work-pool route: module entrypoint (no code storage), lock logs routed into run logs
    pooled = build_deployments(cfg, work_pool="corpus-search", only=["demo"])
    assert [d.name for d in pooled] == ["reindex-nightly"]
    assert pooled[0].entrypoint == "flows.index_corpus.index_corpus"
    assert pooled[0].job_variables["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "tasks"
    with pytest.raises(ConfigError, match="unknown collections"):
        build_deployments(cfg, only=["nope"])


def test_a_config_without_db_uri_deploys_this_processs_database_made_absolute(
        tmp_path, monkeypatch):
    """A process worker runs each flow in a temporary folder it deletes afterwards: a relative default database
    went with it, so every scheduled reindex encoded everything again and no search ever saw the rows."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("CORPUS_SEARCH_DB_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    from query.settings import get_settings

    (tmp_path / "cfg").mkdir()
    path = _write(tmp_path / "cfg", f'[collections.tiny]\nsources = ["notes"]\ncron = "{CRON}"\n')
    get_settings.cache_clear()
    try:
        cfg = load_config(path)
        expected = str((tmp_path / get_settings().db_uri).resolve())
        (pooled,) = build_deployments(cfg, work_pool="pool")
        assert pooled.parameters["db_uri"] == expected and Path(expected).is_absolute()
        assert "working_dir" not in pooled.job_variables  # base_dir may not exist on the worker's host
        (served,) = build_deployments(cfg)
        assert served.parameters["db_uri"] == expected  # every route the same database
        monkeypatch.setenv("CORPUS_SEARCH_DB_URI", "s3://bucket/dbs")
        get_settings.cache_clear()
        assert build_deployments(cfg)[0].parameters["db_uri"] == "s3://bucket/dbs"
    finally:
        get_settings.cache_clear()


def test_the_scale_out_example_deploys_an_s3_collection_whose_runs_use_a_dask_cluster(monkeypatch):
    from query.settings import Settings

    if not {"workers", "dask_address"} <= set(Settings.model_fields):
        pytest.skip("the Dask settings of issue 13 (workers, dask_address) have not landed in this tree")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cfg = load_config(REPO / "deployments" / "scale-out.toml")
    params = cfg.index_parameters("wiki")
    assert params["db_uri"] == "s3://corpus-search/collections"  # an object-store URI is kept as it is
    assert params["settings_overrides"]["dask_address"] == "tcp://dask-scheduler:8786"
    Settings(**params["settings_overrides"])  # every override is a valid setting value
    (deployment,) = build_deployments(cfg, work_pool="corpus-search-dask")
    assert deployment.name == "reindex-wiki-dask" and deployment.parameters == params
    assert not any("AWS_" in key for key in deployment.job_variables.get("env", {}))  # credentials: workers' env only


def test_prefect_yaml_is_generated_on_demand_from_the_config_and_valid_for_prefect_deploy(tmp_path, capsys):
    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel

    from corpus_search.cli import main

    target = tmp_path / "prefect.yaml"
    assert main(["deploy", "--write-yaml", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    model = PrefectYamlModel.model_validate(yaml.safe_load(target.read_text()))
    (reindex,) = [d for d in model.deployments if d.name == "reindex-nightly"]
    assert reindex.entrypoint == "flows/index_corpus.py:index_corpus"
    assert (REPO / reindex.entrypoint.split(":")[0]).exists()
    assert reindex.schedules[0].cron == CRON
    assert reindex.concurrency_limit.limit == 1 and reindex.concurrency_limit.collision_strategy == "ENQUEUE"
    # Absolute, resolved under base_dir as the other routes resolve them: the pull step makes the runs' working
    # directory the one `prefect deploy` ran in, so relative paths read and wrote there instead.
    assert reindex.parameters == load_config().index_parameters("demo")
    for source in reindex.parameters["sources"]:
        assert Path(source).is_absolute() and Path(source).exists()
    # -c writes what `deploy -c` would register, and nothing else; an unknown name is a usage error.
    capsys.readouterr()
    assert main(["deploy", "--write-yaml", str(target), "-c", "demo"]) == 0
    assert [d["name"] for d in yaml.safe_load(target.read_text())["deployments"]] == ["reindex-nightly"]
    assert "1 deployments: reindex-nightly" in capsys.readouterr().out
    assert main(["deploy", "--write-yaml", str(target), "-c", "nope"]) == 2
    assert "unknown collections/evaluations ['nope']" in capsys.readouterr().err


# --------------------------------------------------------------------------- one writer per collection


@pytest.mark.slow
def test_two_concurrent_runs_of_one_collection_never_write_together(prefect_harness, db_uri, notes, tmp_path,
                                                                   monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from flows.index_corpus import index_corpus
    from tasks import stages

    # Route tasks.lock into the runs' Prefect logs, as PREFECT_LOGGING_EXTRA_LOGGERS=tasks does for served runs.
    lock_logger = logging.getLogger("tasks.lock")
    extra = [h for h in logging.getLogger("prefect.extra").handlers if h not in lock_logger.handlers]
    waiting = threading.Event()

    class Announced(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "being written by another run" in record.getMessage():
                waiting.set()

    announced = Announced()
    run_logger = logging.getLogger("prefect.flow_runs")  # in case tasks.lock logs through the run logger
    for h in [*extra, announced]:
        lock_logger.addHandler(h)
    run_logger.addHandler(announced)

    spans: dict[str, list[float]] = {}
    first_inside = threading.Event()
    real_load, real_refresh = stages.load_states, stages.refresh_indexes

    def load_states(settings):  # the first call inside the lock
        me = threading.current_thread().name
        spans[me] = [time.monotonic()]
        if not first_inside.is_set():
            first_inside.set()
            assert waiting.wait(60), "the second run never reached the lock"
            time.sleep(0.3)
        return real_load(settings)

    def refresh_indexes(settings):  # the last write inside the lock
        out = real_refresh(settings)
        spans[threading.current_thread().name].append(time.monotonic())
        return out

    monkeypatch.setattr(stages, "load_states", load_states)
    monkeypatch.setattr(stages, "refresh_indexes", refresh_indexes)

    states: dict[str, object] = {}

    def run(name: str) -> None:
        states[name] = index_corpus([str(notes)], collection="race", db_uri=db_uri, return_state=True)

    try:
        a = threading.Thread(target=run, args=("a",), name="a")
        a.start()
        assert first_inside.wait(120)
        b = threading.Thread(target=run, args=("b",), name="b")
        b.start()
        a.join(180)
        b.join(180)
    finally:
        for h in [*extra, announced]:
            lock_logger.removeHandler(h)
        run_logger.removeHandler(announced)

    assert states["a"].is_completed() and states["b"].is_completed()
    ra, rb = states["a"].result(), states["b"].result()
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a1 <= b0, f"writers overlapped: a {a0:.2f}-{a1:.2f}, b {b0:.2f}-{b1:.2f}"

    rows = table_rows(db_uri, "race")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate rows"
    reference = index_corpus([str(notes)], collection="race", db_uri=str(tmp_path / "reference"))
    assert len(ids) == reference["rows"] == ra["rows"] == rb["rows"] > 0
    assert ra["paragraphs_encoded"] == reference["paragraphs_encoded"] and rb["paragraphs_encoded"] == 0

    # the waiting run (b) says so in its own Prefect logs
    b_id = states["b"].state_details.flow_run_id
    deadline = time.monotonic() + 20
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[b_id])))
            messages = [log.message for log in logs]
            if any("being written by another run" in m for m in messages):
                break
            time.sleep(0.5)
        assert any("collection 'race' is being written by another run; waiting for it" in m for m in messages), messages
        a_id = states["a"].state_details.flow_run_id
        a_logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[a_id])))
        assert not any("being written by another run" in log.message for log in a_logs)
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[a_id, b_id])))
        assert {r.state.type.value for r in runs} == {"COMPLETED"}


# --------------------------------------------------------------------------- artifacts


def test_index_run_publishes_summary_and_failure_artifacts(run_index, notes, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.summary import artifact_key

    missing = tmp_path / "unmounted-disk"
    result = run_index([notes, missing], collection="Art_Demo")
    keys = [artifact_key("index-summary", "Art_Demo"), artifact_key("index-failures", "Art_Demo")]
    assert keys[0].startswith("index-summary-art-demo-")  # the slug, and a hash of the name the slug changed
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        by_key = {a.key: a for a in sorted(arts, key=lambda a: a.created)}  # the latest of each key
        assert set(by_key) == set(keys)
        table, failures = by_key[keys[0]], by_key[keys[1]]
        assert table.type == "table" and failures.type == "markdown"
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        metrics = {r["metric"]: r["value"] for r in rows}
        assert metrics["rows"] == result["rows"] > 0
        assert metrics["articles_fetched"] == result["articles_fetched"] == 2
        assert metrics["articles_failed"] == 1 and metrics["collection"] == "Art_Demo"
        assert str(missing) in failures.data and "does not exist" in failures.data
        run = client.read_flow_run(table.flow_run_id)
        assert run.state.is_completed() and failures.flow_run_id == table.flow_run_id


# --------------------------------------------------------------------------- failure hooks


class _Inbox:
    """A local webhook receiver (127.0.0.1) standing in for Slack & co."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                inbox.posts.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failed_run_is_failed_with_its_error_and_the_hook_reports_it(prefect_harness, db_uri, caplog):
    from prefect import tags
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from flows.hooks import log_crash, log_failure
    from flows.index_corpus import index_corpus

    inbox = _Inbox()
    try:
        CustomWebhookNotificationBlock(
            name="corpus-search test", url=inbox.url, json_data={"subject": "{{subject}}", "text": "{{body}}"},
        ).save("corpus-search-test-alerts", overwrite=True)
        flow = index_corpus.with_options(on_failure=[log_failure], on_crashed=[log_crash])
        with tags("notify:custom-webhook/corpus-search-test-alerts"):
            state = flow(["ftp://example.invalid/paper.html"], collection="broken", db_uri=db_uri, return_state=True)
        assert state.is_failed()
        assert "only http:// and https:// URLs are fetched" in state.message
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).state.type.value == "FAILED"
        summary = hook_summary(run_id)
        assert "index-corpus run" in summary and "collection 'broken'" in summary
        assert "source 'ftp://example.invalid/paper.html': only http:// and https://" in summary
        assert f"flow run id: {run_id}" in summary and "the next run resumes" in summary
        (post,) = inbox.posts
        assert "broken" in post["subject"] and "Failed" in post["subject"]
        assert post["text"] == summary
    finally:
        inbox.close()


def test_a_partly_failed_run_ends_completed_and_sends_its_failures_through_the_notification_block(
        prefect_harness, db_uri, notes):
    """It ended Completed and no hook fires on Completed: a scheduled reindex whose source went away (an
    unmounted disk) or whose mass delete was refused told nobody."""
    from prefect import tags
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.index_corpus import index_corpus

    inbox = _Inbox()
    try:
        CustomWebhookNotificationBlock(
            name="corpus-search test", url=inbox.url, json_data={"subject": "{{subject}}", "text": "{{body}}"},
        ).save("corpus-search-partial-alerts", overwrite=True)
        gone = notes.parent / "unmounted"
        with tags("notify:custom-webhook/corpus-search-partial-alerts"):
            state = index_corpus([str(notes), str(gone)], collection="partial", db_uri=db_uri, return_state=True)
        assert state.is_completed() and state.result()["outcome"] == "partial"
        assert state.message.startswith("1 failures, the rest indexed")  # the runs list tells it from a clean run
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            assert client.read_flow_run(state.state_details.flow_run_id).name == "index-partial"
        (post,) = inbox.posts
        assert post["subject"] == "corpus-search: index-corpus partial partly failed"
        assert "ended Completed with 1 failures" in post["text"] and f"failed: {gone}" in post["text"]
        inbox.posts.clear()
        index_corpus([str(notes)], collection="partial", db_uri=db_uri)  # nothing failed, no tag: no notice
        assert inbox.posts == []
    finally:
        inbox.close()


def test_a_failed_evaluation_run_is_reported_by_the_same_failure_hook(prefect_harness, db_uri, tmp_path):

    from flows.evaluate import evaluate
    from flows.hooks import log_crash, log_failure

    assert evaluate.on_failure_hooks == [log_failure] and evaluate.on_crashed_hooks == [log_crash]
    missing = tmp_path / "no-such-dataset"
    state = evaluate(str(missing), collection="eval-broken", db_uri=db_uri, return_state=True)
    assert state.is_failed()
    summary = hook_summary(state.state_details.flow_run_id)
    assert "evaluate run" in summary and "collection 'eval-broken'" in summary
    assert f"dataset: {missing}" in summary and "DatasetFormatError" in summary


def test_the_crash_hook_reports_a_crashed_run_and_survives_a_missing_block(prefect_harness, caplog, capfd):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.hooks import log_crash

    @flow(name="index-corpus")
    def fake(sources: list[str], collection: str = "c") -> None:
        return None

    state = fake(["a", "b", "c", "d"], collection="crashy", return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    run = run.model_copy(update={"tags": ["notify:custom-webhook/no-such-block"]})
    with get_client(sync_client=True) as client:  # the flow renames its run once started; the hook's copy is older
        client.update_flow_run(run.id, name="index-crashy")
    with caplog.at_level(logging.INFO):
        log_crash(fake, run, Crashed(message="Flow run process exited with code -9 (SIGKILL)"))
    text = caplog.text + capfd.readouterr().err  # the run's logger: caught by caplog, or on stderr once Prefect set it up
    assert "run 'index-crashy' of collection 'crashy' ended Crashed" in text and "exited with code -9" in text
    assert "sources: a, b, c and 1 more" in text
    assert "could not send the failure notice through block 'custom-webhook/no-such-block'" in text
    # The UI's latest summary and failures say so: they were the previous run's, read as this one's.
    with get_client(sync_client=True) as client:
        latest = {a.key: a for a in client.read_latest_artifacts() if a.key.endswith("-crashy")}
    assert "ended Crashed" in latest["index-failures-crashy"].data
    assert "crashed" in str(latest["index-summary-crashy"].data)
    # On the run's own page too: made outside the run, they carried no flow run id, and its page showed none.
    assert {latest["index-failures-crashy"].flow_run_id, latest["index-summary-crashy"].flow_run_id} == {run.id}


def test_a_run_cancelled_by_a_shutting_down_serve_is_reported_as_a_failure_is(prefect_harness, caplog, capfd):
    """A reindex cancelled by `serve` shutting down (or from the UI) left a Cancelled state and nothing else:
    no summary in its logs and no notice through its block, though it had stopped part-way."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    from flows.evaluate import evaluate
    from flows.hooks import log_cancellation
    from flows.index_corpus import index_corpus
    from flows.train_reranker import train_reranker

    assert all(f.on_cancellation_hooks == [log_cancellation] for f in (index_corpus, evaluate, train_reranker))

    @flow(name="index-corpus")
    def fake(sources: list[str], collection: str = "c") -> None:
        return None

    state = fake(["a"], collection="cancelled", return_state=True)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    for state in (Cancelling(message="Runner is shutting down."), Cancelled(message="Runner is shutting down.")):
        caplog.clear()  # Prefect calls the hooks with Cancelling, whose result() raises UnfinishedRun
        capfd.readouterr()
        with caplog.at_level(logging.INFO):
            log_cancellation(fake, run, state)
        # Into the run's logger: caught by caplog, or (once Prefect has set its logging up) on stderr.
        text = caplog.text + capfd.readouterr().err
        assert "collection 'cancelled' ended Cancelled" in text
        assert "Runner is shutting down." in text and "UnfinishedRun" not in text
        assert "the next run resumes" in text


# --------------------------------------------------------------------------- CLI


def test_serve_refuses_bad_arguments_before_starting_any_server(monkeypatch, capsys):
    from corpus_search.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(SystemExit) as limit:
        main(["serve", "--limit", "-1"])
    assert limit.value.code == 2 and "--limit: must be a whole number >= 1" in capsys.readouterr().err
    assert main(["serve", "-c", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown collections/evaluations ['nope']" in err and "starting a local Prefect server" not in err


def test_cli_deploy_without_a_server_is_a_clear_error(monkeypatch, capsys):
    from corpus_search.cli import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert main(["deploy"]) == 2
    assert "no Prefect server reachable at PREFECT_API_URL=http://127.0.0.1:9/api" in capsys.readouterr().err


def test_cli_deploy_registers_the_deployments_on_a_server_and_work_pool(prefect_harness, tmp_path, notes, capsys):
    from prefect.client.orchestration import get_client

    from corpus_search.cli import main

    path = _write(tmp_path, 'db_uri = "db"\n[collections.tiny]\nsources = ["notes"]\ncron = "*/30 * * * *"\n'
                            'timezone = "Europe/Berlin"\nnotify_block = "slack-webhook/ops"\n')
    assert main(["deploy", "--config", str(path), "--work-pool", "test-pool"]) == 2
    assert "work pool 'test-pool' does not exist" in capsys.readouterr().err
    assert main(["deploy", "--config", str(path), "--work-pool", "test-pool", "--create-pool"]) == 0
    with get_client(sync_client=True) as client:
        d = client.read_deployment_by_name("index-corpus/reindex-tiny")
        assert d.work_pool_name == "test-pool"
        assert d.entrypoint == "flows.index_corpus.index_corpus"
        assert d.parameters == {"sources": [str(notes)], "collection": "tiny", "db_uri": str(tmp_path / "db")}
        assert d.schedules[0].schedule.cron == "*/30 * * * *" and d.schedules[0].schedule.timezone == "Europe/Berlin"
        assert d.concurrency_limit == 1 or d.global_concurrency_limit.limit == 1
        assert "notify:slack-webhook/ops" in d.tags and "collection:tiny" in d.tags


def test_cli_deploy_warns_about_a_renamed_deployment_still_registered_and_prune_deletes_it(
        prefect_harness, tmp_path, notes, capsys):
    """Registering only upserts: the old deployment of a renamed one kept its schedule, so two deployments
    reindexed one collection with different settings."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from corpus_search.cli import main

    base = 'db_uri = "db"\n[collections.tiny]\nsources = ["notes"]\ncron = "*/30 * * * *"\n'
    path = _write(tmp_path, base + 'deployment = "tiny-old"\n')
    assert main(["deploy", "--config", str(path), "--work-pool", "prune-pool", "--create-pool"]) == 0
    path = _write(tmp_path, base + 'deployment = "tiny-new"\n')
    capsys.readouterr()
    assert main(["deploy", "--config", str(path), "--work-pool", "prune-pool"]) == 0
    err = capsys.readouterr().err
    assert ("index-corpus/tiny-old is still registered in work pool 'prune-pool' with its schedule: collection "
            "'tiny' is now deployed as 'tiny-new'") in err and "--prune" in err
    with get_client(sync_client=True) as client:
        client.read_deployment_by_name("index-corpus/tiny-old")  # only warned about
    assert main(["deploy", "--config", str(path), "--work-pool", "prune-pool", "--prune"]) == 0
    assert "deleted index-corpus/tiny-old" in capsys.readouterr().err
    with get_client(sync_client=True) as client:
        client.read_deployment_by_name("index-corpus/tiny-new")
        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name("index-corpus/tiny-old")


def test_a_failed_evaluation_without_a_collection_names_its_default_collection_not_a_question_mark(tmp_path):
    from types import SimpleNamespace

    from flows.hooks import summary

    run = SimpleNamespace(parameters={"dataset": str(tmp_path / "cacm")}, tags=[], name="r", id="1", deployment_id=None)
    text = summary(SimpleNamespace(name="evaluate"), run, SimpleNamespace(name="Failed", message="no corpus.jsonl"))
    assert "of collection 'eval-cacm' ended Failed" in text


def test_a_configs_setting_values_are_checked_alone_never_against_this_shells_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORPUS_SEARCH_BATCH_SIZE", "64x")  # this shell's fault, not the config's
    path = _write(tmp_path, f'[collections.news]\nsources = ["a"]\ncron = "{CRON}"\nsettings = {{ min_paragraph_chars = 10 }}\n')
    assert load_config(path).collections["news"].settings == {"min_paragraph_chars": 10}


def test_a_failure_report_names_source_urls_without_their_passwords():
    from types import SimpleNamespace

    from flows.hooks import summary

    run = SimpleNamespace(parameters={"sources": ["https://ann:hunter2@example.com/page"], "collection": "c"},
                          tags=[], name="r", id="1", deployment_id=None)
    text = summary(SimpleNamespace(name="index-corpus"), run, SimpleNamespace(name="Failed", message="x"))
    assert "sources: https://example.com/page" in text and "hunter2" not in text


def test_artifact_keys_are_one_collections_own_and_a_failures_row_stays_on_one_line():
    from flows.summary import IndexSummary, artifact_key

    keys = {artifact_key("index-summary", c) for c in ("notes-a", "Notes_A", "notes_a", "notes.a")}
    assert len(keys) == 4 and "index-summary-notes-a" in keys  # a name the slug keeps is its own key, as before
    summary = IndexSummary(collection="c")
    summary.fail("line one\n# HEADING.txt", "binary content\nsecond line")
    rows = summary.failures_markdown().splitlines()
    assert rows[-1] == "| line one # HEADING.txt | binary content second line |"


def test_an_interrupted_runs_report_says_why_where_the_exception_has_no_text():
    from types import SimpleNamespace

    from flows.hooks import summary

    class Interrupted(SimpleNamespace):
        def result(self, raise_on_failure=False):
            return KeyboardInterrupt()

    run = SimpleNamespace(parameters={"collection": "c"}, tags=[], name="r", id="1", deployment_id=None)
    state = Interrupted(name="Crashed", message="Execution was aborted by an interrupt signal.")
    text = summary(SimpleNamespace(name="index-corpus"), run, state)
    assert "error:   KeyboardInterrupt: Execution was aborted by an interrupt signal." in text


def test_a_run_stopped_by_an_error_still_publishes_what_it_did(run_index, notes, tmp_path, monkeypatch):
    """A full disk at the index refresh failed the run with its error alone: no failures logged, no artifacts,
    though rows had been written."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.summary import artifact_key
    from tasks import stages

    def full_disk(settings):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages, "refresh_indexes", full_disk)
    missing = tmp_path / "unmounted-disk"
    with pytest.raises(OSError, match="No space left"):
        run_index([notes, missing], collection="stopped")
    with pytest.raises(OSError, match="No space left"):
        run_index([notes], collection="stopped-clean")  # no source failed: the stop itself is the failure
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=[artifact_key("index-failures", "stopped"), artifact_key("index-failures", "stopped-clean")])))
    by_key = {a.key: a.data for a in sorted(arts, key=lambda a: a.created)}
    assert str(missing) in by_key[artifact_key("index-failures", "stopped")]
    assert "the run stopped early (OSError" in by_key[artifact_key("index-failures", "stopped-clean")]
