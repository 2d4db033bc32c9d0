"""Shared fixtures: offline models, the real Prefect test harness, a real local HTTP server, real LanceDB dirs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Before anything imports huggingface_hub or prefect: never touch the network, never share ~/.prefect.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="corpus-search-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from deployments.prefect_env import prefect_environment  # noqa: E402  (standard library only)

prefect_environment()

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """The real Prefect test harness (a temporary API + database), started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    etag: bool = True
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0  # pause before each byte of the body: a slow-loris server
    raw: bytes | None = None  # sent verbatim instead of a response (status line and headers included)
    then: Route | None = None  # served from the next request on (e.g. a 429, then the page)


class Site:
    """A real HTTP server on 127.0.0.1 whose pages tests can change between index runs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.not_modified: dict[str, int] = {}
        self.last_headers: dict[str, dict[str, str]] = {}  # the last request's headers, per path
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                site.hits[self.path] = site.hits.get(self.path, 0) + 1
                site.last_headers[self.path] = {k.lower(): v for k, v in self.headers.items()}
                route = site.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.then is not None:
                    site.routes[self.path] = route.then
                if route.delay_s:
                    threading.Event().wait(route.delay_s)
                if route.raw is not None:
                    self.close_connection = True
                    self.send_bytes(route.raw, route.drip_s)
                    return
                etag = '"' + hashlib.sha1(route.body).hexdigest() + '"'
                if route.etag and route.status == 200 and self.headers.get("If-None-Match") == etag:
                    site.not_modified[self.path] = site.not_modified.get(self.path, 0) + 1
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                if route.etag:
                    self.send_header("ETag", etag)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.send_bytes(route.body, route.drip_s)

            def send_bytes(self, data: bytes, drip_s: float) -> None:
                """Write ``data`` at once, or byte by byte ``drip_s`` apart; a client that hung up ends it."""
                step = 1 if drip_s else max(len(data), 1)
                try:
                    for i in range(0, len(data), step):
                        if drip_s:
                            threading.Event().wait(drip_s)
                        self.wfile.write(data[i : i + step])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval: close() waits for it, once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def page(self, path: str, body: str | bytes, **kw) -> str:
        self.routes[path] = Route(body=body.encode() if isinstance(body, str) else body, **kw)
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture
def db_uri(tmp_path: Path) -> str:
    return str(tmp_path / "lancedb")


def html_page(title: str, paragraphs: list[str]) -> str:
    """A simple, well-formed article page with some boilerplate around it."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<html><head><title>{title}</title></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        "<footer>Copyright 2026 Example Site. All rights reserved.</footer></body></html>"
    )


@pytest.fixture
def run_index(prefect_harness, db_uri):
    """Run the real index-corpus flow and return its summary dict (private addresses allowed, for ``site``)."""
    from flows.index_corpus import index_corpus

    def run(sources: list[str], collection: str = "test", **kw) -> dict:
        # Tests fetch from their own 127.0.0.1 server, which the safe default refuses: allow it here.
        kw["settings_overrides"] = {"fetch_allow_private": True, **(kw.get("settings_overrides") or {})}
        return index_corpus([str(s) for s in sources], collection=collection, db_uri=kw.pop("db", db_uri), **kw)

    return run


def table_rows(db_uri: str, collection: str = "test") -> list[dict]:
    import lancedb

    t = lancedb.connect(db_uri).open_table(collection)
    return t.to_lance().to_table(columns=["id", "doc_id", "source", "title", "position", "text"]).to_pylist()


# --------------------------------------------------------------------------- a real S3 API server


class S3Server:
    """moto's S3 API server (``python -m moto.server``) on 127.0.0.1, one per session, stopped by process group."""

    #: moto accepts any credentials until IAM authentication is switched on (``require_auth``).
    ACCESS_KEY = "corpus-search-test-key"
    SECRET_KEY = "s3cr3t-never-printed-0123456789"  # tests.test_s3.S3_SECRET

    def __init__(self) -> None:
        import signal
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # A new session: the server and anything it forks form one process group, stopped together.
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._signal = signal
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start on {self.endpoint}") from None
                time.sleep(0.1)
        self._buckets = 0

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS_* variables that point LanceDB (and boto3) at this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.ACCESS_KEY,
                            aws_secret_access_key=self.SECRET_KEY, region_name="us-east-1")

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent on the shared server)."""
        self._buckets += 1
        name = f"test-bucket-{self._buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    @contextlib.contextmanager
    def require_auth(self):
        """Switch on moto's IAM authentication: unknown access keys are refused (InvalidAccessKeyId)."""
        import urllib.request

        def reset(count: str) -> None:
            # text/plain: a form content type would make the server parse the body as a form and see no count.
            urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(),
                                                          headers={"Content-Type": "text/plain"}, method="POST"),
                                   timeout=10).close()

        reset("0")
        try:
            yield
        finally:
            reset("inf")

    def stop(self) -> None:
        import os

        try:
            os.killpg(self.proc.pid, self._signal.SIGTERM)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        except Exception:  # noqa: BLE001 - it did not stop in time: make sure it is gone
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self._signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_db(s3_server, monkeypatch) -> str:
    """An ``s3://`` database URI in a fresh bucket, with the AWS_* environment set for this process."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return f"s3://{s3_server.new_bucket()}/lancedb"


def kill_after_first_batch(cli, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 240) -> None:
    """Start `corpus-search index ARGS` (``cli.env`` plus ``env``), SIGKILL it right after its first batch
    was written."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", *args], cwd=REPO,
                            env={**cli.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            if "batch:" in line:
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "no batch was written in time"
    finally:
        proc.kill()
        proc.wait(30)


def hook_summary(run_id) -> str:
    """The failure hook's one summary in the run's logs (logs arrive asynchronously: wait up to 20 s)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline, logs = time.monotonic() + 20, []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]
            if any("ended Failed" in m for m in logs):
                break
            time.sleep(0.5)
    (summary,) = [m for m in logs if "ended Failed" in m]
    return summary
