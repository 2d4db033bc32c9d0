"""The query service (``corpus-search api``) and ``search --api``, against real servers on 127.0.0.1.

One tiny collection is written by the indexing stages' own functions with the real MiniLM bi-encoder
(no Prefect server: the harness alone takes ~30 s here); the re-ranker is a real tiny BERT cross-encoder.
Two real servers: uvicorn in a thread (``create_app``) and the ``corpus-search api`` command in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deployments.serve import free_port
from tests.conftest import EXAMPLES, REPO

COLLECTION = "notes"
MARKUP_COLLECTION = "markup"  # one paragraph alone: the page must show it whatever the (random) re-ranker says
NOTES = ("tides.txt", "penguins.txt", "rainbows.md", "earthquakes.md")
#: A paragraph whose text is markup: the page must show it as text. Its source is an http URL: a link.
MARKUP = ("Rainbow markup test: <img src=x onerror=\"document.title='pwned'\"> and <b>bold</b> & co "
          "must appear as plain text on the search page, never as markup.")
MARKUP_URL = "https://example.org/markup"
QUERIES = ["Why are there two high tides a day?", "How do penguins keep warm?", "what makes a rainbow",
           "earthquake faults", "moon gravity ocean bulge"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ENV.pop("CORPUS_SEARCH_API_URL", None)


def _index(db_uri: str, collection: str, articles: list) -> None:
    """Write a collection as the index flow's stages do (split, encode, one merge_insert, FTS refresh)."""
    import pyarrow as pa

    from query.models import bi_encoder_from_settings
    from query.settings import Settings
    from tasks import store
    from tasks.encode import encode_in_chunks
    from tasks.split import split_article, tokenizer_counter
    from tasks.stages import index_metadata, split_options

    settings = Settings(db_uri=db_uri, collection=collection)
    enc = bi_encoder_from_settings(settings)
    table = store.open_paragraph_table(store.connect(db_uri), collection, index_metadata(settings))
    count = tokenizer_counter(enc.tokenizer)
    paragraphs = [p for a in articles for p in split_article(a, split_options(settings), count)]
    plan = store.plan_batch(paragraphs, pa.table({"id": pa.array([], pa.string())}), [])
    vectors, _ = encode_in_chunks(enc, [p.encoded for p in plan.new], settings.encode_chunk_size)
    store.apply_batch(table, plan, vectors, enc.dim)
    store.refresh_indexes(table, ann_min_rows=settings.ann_min_rows, retention_days=0)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    from tasks.fetch import read_local_file
    from tasks.records import Article

    uri = str(tmp_path_factory.mktemp("api") / "lancedb")
    _index(uri, COLLECTION,
           [read_local_file(EXAMPLES / "notes" / n, doc_id=n, source=str(EXAMPLES / "notes")) for n in NOTES])
    _index(uri, MARKUP_COLLECTION,
           [Article(doc_id=MARKUP_URL, source=MARKUP_URL, title="Markup <i>title</i>", body=MARKUP, kind="text")])
    return uri


@pytest.fixture(scope="module")
def ce_path(tmp_path_factory) -> str:
    from tests._models import build_cross_encoder

    return str(build_cross_encoder(tmp_path_factory.mktemp("api-ce") / "model", body="tiny-bert"))


@pytest.fixture(scope="module")
def settings(db, ce_path):
    from query.settings import Settings

    return Settings(db_uri=db, collection=COLLECTION, cross_encoder=ce_path)


def _wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> list[int]:
    """Poll ``/healthz`` until 200; the statuses seen on the way (connection refused is not one)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"corpus-search api exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(url + "/healthz", timeout=2)
            seen.append(r.status_code)
            if r.status_code == 200:
                return seen
            assert r.status_code == 503 and r.json()["status"] == "warming", r.text
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}/healthz not 200 after {timeout_s}s (seen {seen})"
                         + (f"\n{log.read_text()[-3000:]}" if log else ""))


@contextlib.contextmanager
def serving(settings, **app_options):
    """``create_app(settings)`` under a real uvicorn server in a background thread; yields its URL once healthy."""
    import uvicorn

    from corpus_search.api import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings, **app_options), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, 120)
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def server(settings):
    with serving(settings) as url:
        yield url


@pytest.fixture(scope="module")
def api_command(db, ce_path, tmp_path_factory):
    """The real ``corpus-search api`` command in a subprocess; yields (url, statuses seen until healthy)."""
    port = free_port()
    log = tmp_path_factory.mktemp("api-log") / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corpus_search.cli", "api", "--db", db, "--port", str(port),
             "--cross-encoder", ce_path, "--collection", COLLECTION],
            cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, _wait_healthy(url, 120, proc, log)
    finally:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def local_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``corpus-search`` in this process (its models are the ones the thread server warmed)."""
    from corpus_search.cli import main

    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corpus_search.cli", *argv], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=120)


def assert_same_answer(got: dict, want: dict) -> None:
    """Equal JSON answers: the same keys, hits and order; scores equal within 1e-6."""
    assert {k: v for k, v in got.items() if k != "hits"} == {k: v for k, v in want.items() if k != "hits"}
    assert len(got["hits"]) == len(want["hits"])
    for g, w in zip(got["hits"], want["hits"], strict=True):
        assert list(g) == list(w)
        assert {k: v for k, v in g.items() if "score" not in k} == {k: v for k, v in w.items() if "score" not in k}
        assert g["score"] == pytest.approx(w["score"], abs=1e-6)
        assert g["retrieval_score"] == pytest.approx(w["retrieval_score"], abs=1e-6)


# ---------------------------------------------------------------- the service answers what the CLI prints


def test_the_api_command_is_503_while_warming_and_200_once_ready(api_command):
    url, seen = api_command
    # The port opens before torch is even imported (warm-up runs on the model thread), so a poller
    # every 0.1 s sees the warming state first.
    assert seen[-1] == 200 and 503 in seen, seen
    health = httpx.get(url + "/healthz").json()
    assert health["status"] == "ok" and health["collections"] == [COLLECTION]
    # --collection restricts warm-up only: every collection of the database is listed and answers.
    assert httpx.get(url + "/collections").json() == {"collections": [MARKUP_COLLECTION, COLLECTION]}
    r = httpx.post(url + "/search", json={"query": "markup", "collection": MARKUP_COLLECTION}, timeout=60)
    assert r.status_code == 200 and r.json()["hits"][0]["source"] == MARKUP_URL


@pytest.mark.parametrize(("body", "flags"), [
    ({"query": QUERIES[0]}, []),
    ({"query": QUERIES[1], "k": 3, "mode": "lexical", "rerank": False}, ["-k", "3", "--mode", "lexical", "--no-rerank"]),
    ({"query": QUERIES[2], "k": 2, "mode": "dense", "candidates": 4, "rerank": "require",
      "where": {"doc_id": ["rainbows.md", "tides.txt"]}},
     ["-k", "2", "--mode", "dense", "--candidates", "4", "--require-rerank", "--where", "doc_id=rainbows.md",
      "--where", "doc_id=tides.txt"]),
])
def test_search_answers_exactly_the_json_of_the_cli(server, settings, capsys, body, flags):
    r = httpx.post(server + "/search", json={"collection": COLLECTION, **body}, timeout=60)
    assert r.status_code == 200, r.text
    rc, out, _ = local_cli(capsys, "search", body["query"], "--json", "--db", settings.db_uri, "-c", COLLECTION,
                           "--cross-encoder", settings.cross_encoder, *flags)
    assert rc == 0
    want = json.loads(out)
    assert want["hits"], "the query should find something"
    assert_same_answer(r.json(), want)


@pytest.mark.parametrize(("body", "flags"), [({}, []), ({"rerank": False}, ["--no-rerank"])])
def test_search_document_answers_the_json_of_the_cli(server, settings, capsys, body, flags):
    source = str(EXAMPLES / "notes" / "rainbows.md")
    r = httpx.post(server + "/search-document", json={"source": source, "query": "what makes a rainbow", "k": 2,
                                                      **body}, timeout=60)
    assert r.status_code == 200, r.text
    rc, out, _ = local_cli(capsys, "search-document", source, "what makes a rainbow", "-k", "2", "--json",
                           "--cross-encoder", settings.cross_encoder, *flags)
    assert rc == 0
    assert r.json()["mode"] == "document" and len(r.json()["hits"]) == 2
    assert r.json()["reranked"] is body.get("rerank", True)  # False: the bi-encoder ranked them
    assert_same_answer(r.json(), json.loads(out))


def test_a_service_without_local_files_refuses_a_path_with_403_and_says_how_to_allow_it(settings):
    with serving(settings, collections=["no-such-collection"], local_files=False) as url:
        r = httpx.post(url + "/search-document", json={"source": str(EXAMPLES / "notes" / "rainbows.md"),
                                                       "query": "rainbow"}, timeout=60)
    assert r.status_code == 403
    assert "--allow-local-files" in r.json()["error"]


@pytest.mark.parametrize(("body", "status", "cli_flags"), [
    ({"query": "   "}, 400, []),
    ({"query": "tides", "collection": "no-such-notes"}, 404, []),
    ({"query": "tides", "where": {"colour": "red"}}, 400, ["--where", "colour=red"]),
    ({"query": "tides", "mode": "fuzzy"}, 400, None),
    ({"query": "tides", "k": 0}, 400, None),
    ({"query": "tides", "candidates": 10**9}, 400, None),
])
def test_bad_input_is_a_4xx_with_the_message_the_cli_prints(server, settings, capsys, body, status, cli_flags):
    from corpus_search.answers import search_answer
    from query.errors import CorpusSearchError
    from query.searcher import Searcher

    body = {"collection": COLLECTION, **body}
    r = httpx.post(server + "/search", json=body, timeout=60)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    if cli_flags is not None:  # what the CLI says, word for word
        rc, _, err = local_cli(capsys, "search", body["query"], "--db", settings.db_uri, "-c", body["collection"],
                               "--cross-encoder", settings.cross_encoder, *cli_flags)
        assert rc == 2 and err.strip() == f"corpus-search: error: {message}"
    else:  # options argparse refuses earlier on the command line: the query module's own message
        args = {k: v for k, v in body.items() if k not in ("query", "collection")}
        with pytest.raises(CorpusSearchError) as exc:
            search_answer(Searcher(collection=COLLECTION, settings=settings), body["query"], **args)
        assert message == str(exc.value)


@pytest.mark.parametrize(("content", "fragment"), [
    (b'{"query": "tides", ', "not valid JSON"),
    (b'{"collection": "notes"}', "query: Field required"),
    (b'{"query": "tides", "collection": "notes", "k": "five"}', "k: Input should be a valid integer"),
    (b'{"query": "tides", "collection": "notes", "top_k": 3}', "top_k: Extra inputs are not permitted"),
])
def test_malformed_requests_are_422_with_a_readable_message(server, content, fragment):
    r = httpx.post(server + "/search", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert fragment in r.json()["error"] and '"query": "How do glaciers form?"' in r.json()["error"]


def test_every_error_the_service_gives_has_the_one_error_shape(server):
    as_text = httpx.post(server + "/search", content=b'{"query": "tides", "collection": "notes"}',
                         headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 422 and "Content-Type: application/json" in as_text.json()["error"]
    not_utf8 = httpx.post(server + "/search", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert not_utf8.status_code == 400 and "cannot be read as JSON text" in not_utf8.json()["error"]
    wrong_method = httpx.get(server + "/search")
    assert wrong_method.status_code == 405 and "send POST with a JSON body" in wrong_method.json()["error"]
    assert "allow" in wrong_method.headers
    assert set(httpx.get(server + "/no-such-path").json()) == {"error"}


def test_no_cross_encoder_is_503_under_require_and_a_warned_retrieval_answer_otherwise(settings, tmp_path):
    from corpus_search.api_client import WARNINGS_HEADER, decode_header

    missing = str(tmp_path / "no-such-cross-encoder")
    with serving(settings.model_copy(update={"cross_encoder": missing})) as url:
        health = httpx.get(url + "/healthz").json()
        assert health["status"] == "ok" and any(missing in w for w in health["warnings"]), health
        required = httpx.post(url + "/search", json={"query": "tides", "collection": COLLECTION, "rerank": "require"})
        assert required.status_code == 503 and missing in required.json()["error"]
        fallback = httpx.post(url + "/search", json={"query": "tides", "collection": COLLECTION})
        assert fallback.status_code == 200 and fallback.json()["reranked"] is False and fallback.json()["hits"]
        warned = json.loads(decode_header(fallback.headers[WARNINGS_HEADER]))
        assert len(warned) == 1 and warned[0].startswith("re-ranking did not run") and missing in warned[0]


def test_with_two_model_threads_each_answer_carries_its_own_warnings(settings, tmp_path):
    """catch_warnings is process-wide: with 2 model threads a reviewer saw 11 of 40 answers with another
    request's warnings, or none."""
    from corpus_search.api_client import WARNINGS_HEADER, decode_header

    missing = str(tmp_path / "no-such-cross-encoder")
    with serving(settings.model_copy(update={"cross_encoder": missing}), model_threads=2) as url:
        def ask(i: int) -> tuple[int, list[str]]:
            # even: no model loads, one warning; 1 mod 4: a query cut for the bi-encoder (slow), one other
            # warning; 3 mod 4: no warning at all
            query = QUERIES[i % len(QUERIES)] + (" tide" * 3000 if i % 4 == 1 else "")
            r = httpx.post(url + "/search", json={"query": query, "collection": COLLECTION, "rerank": i % 2 == 0},
                           timeout=120)
            assert r.status_code == 200, r.text
            return i, json.loads(decode_header(r.headers[WARNINGS_HEADER])) if WARNINGS_HEADER in r.headers else []

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(80)))
    wrong = []
    for i, warned in answers:
        if i % 2 == 0:
            ok = len(warned) == 1 and warned[0].startswith("re-ranking did not run")
        elif i % 4 == 1:
            ok = bool(warned) and all("truncated" in w for w in warned)  # cut to 2,000 characters, then tokens
        else:
            ok = warned == []
        if not ok:
            wrong.append((i, warned))
    assert wrong == []


def test_a_database_the_service_cannot_open_is_a_503_not_the_clients_400(tmp_path):
    from query.settings import Settings

    not_a_dir = tmp_path / "db-file"
    not_a_dir.write_text("x")
    with serving(Settings(db_uri=str(not_a_dir), collection=COLLECTION)) as url:
        listed = httpx.get(url + "/collections")
        assert listed.status_code == 503 and "is a file, not a directory" in listed.json()["error"]
        searched = httpx.post(url + "/search", json={"query": "tides", "collection": COLLECTION, "rerank": False})
        assert searched.status_code == 503


def test_eight_concurrent_clients_get_correct_answers(server):
    expected = {}
    for q in QUERIES:
        r = httpx.post(server + "/search", json={"query": q, "collection": COLLECTION}, timeout=60)
        assert r.status_code == 200
        expected[q] = r.json()

    def client(i: int) -> list[tuple[str, dict]]:
        with httpx.Client(timeout=120) as c:
            out = []
            for j in range(5):
                q = QUERIES[(i + j) % len(QUERIES)]
                r = c.post(server + "/search", json={"query": q, "collection": COLLECTION})
                assert r.status_code == 200, r.text
                out.append((q, r.json()))
            return out

    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(client, range(8)) for a in part]
    assert len(answers) == 40
    for q, got in answers:
        assert_same_answer(got, expected[q])


# ---------------------------------------------------------------- search --api


def _mask_timings(text: str) -> str:
    return re.sub(r"\[(load models \d+ ms, )?encode \d+ ms, retrieve \d+ ms, re-rank \d+ ms\]", "[timings]", text)


#: Runs the CLI, then reports which heavy modules it imported (on stderr, after the CLI's own output).
NO_HEAVY = textwrap.dedent("""
    import json, sys
    from corpus_search.cli import main
    rc = main(sys.argv[1:])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "lancedb", "prefect", "sentence_transformers",
                                                             "transformers"})
    print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
    sys.exit(rc)
""")


def test_search_api_prints_what_a_local_search_prints_without_loading_torch(api_command, settings, capsys):
    url, _ = api_command
    query = QUERIES[4]
    local_args = ["--db", settings.db_uri, "--cross-encoder", settings.cross_encoder]
    for fmt in ([], ["--json"]):
        remote = subprocess.run([sys.executable, "-c", NO_HEAVY, "search", query, "-c", COLLECTION, "-k", "3",
                                 "--api", url, *fmt], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert remote.returncode == 0, remote.stderr
        assert remote.stderr.strip().splitlines()[-1] == "HEAVY=[]", remote.stderr
        rc, out, _ = local_cli(capsys, "search", query, "-c", COLLECTION, "-k", "3", *local_args, *fmt)
        assert rc == 0
        if fmt:
            assert_same_answer(json.loads(remote.stdout), json.loads(out))
        else:
            # Same stages line (timings aside), same hits, same layout; scores print with 3-4 decimals.
            assert _mask_timings(remote.stdout) == _mask_timings(out)
            assert remote.stdout.startswith("stages: retrieve (hybrid, 100 candidates) → re-rank (")


def test_search_api_errors_print_as_cli_errors_and_exit_2(api_command):
    url, _ = api_command
    unknown = cli("search", "tides", "-c", "no-such-notes", "--api", url)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.startswith("corpus-search: error: collection 'no-such-notes' does not exist"), unknown.stderr

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = cli("search", "tides", "-c", COLLECTION, env={**ENV, "CORPUS_SEARCH_API_URL": dead})
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert f"cannot reach the query service at {dead}" in unreachable.stderr
    assert "corpus-search api --db" in unreachable.stderr

    mixed = cli("search", "tides", "--db", "/somewhere", "--api", url)
    assert mixed.returncode == 2 and "--db cannot be used with the query service" in mixed.stderr


def test_the_api_command_on_a_taken_port_is_a_one_line_error(db):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = cli("api", "--db", db, "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "corpus-search: error: cannot listen on 127.0.0.1:" in proc.stderr and "--port" in proc.stderr


def test_the_api_command_refuses_a_database_that_does_not_exist_instead_of_serving_an_empty_new_one(tmp_path):
    typo = tmp_path / "no-such-dir" / "lancedb"
    proc = cli("api", "--db", str(typo), "--port", str(free_port()))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "corpus-search index" in proc.stderr
    assert not typo.parent.exists()


# ---------------------------------------------------------------- cold start (issue #11 part 4)


def test_a_lexical_cli_search_without_rerank_loads_neither_torch_nor_a_model(db):
    code = textwrap.dedent(f"""
        import sys
        from corpus_search.cli import main
        assert main(["search", "tides moon", "--mode", "lexical", "--no-rerank", "--db", {db!r}, "-c", "notes"]) == 0
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "sentence_transformers", "transformers",
                                                                  "prefect"}})
        print("HEAVY=" + ",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1. [" in out.stdout  # it found something
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


# ---------------------------------------------------------------- the page, in headless Chromium


@pytest.mark.e2e
def test_the_search_page_shows_ranked_paragraphs_with_sources_as_text(server, tmp_path):
    from tests.test_e2e_ui import CHROMIUM, CHROMIUM_ARGS, _need_chromium

    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(server + "/")
            expect(page.locator("#collection option")).to_have_text([MARKUP_COLLECTION, COLLECTION])
            page.select_option("#collection", COLLECTION)
            page.fill("#q", "Why are there two high tides a day?")
            page.press("#q", "Enter")
            first = page.locator("li.hit").first
            expect(first).to_be_visible()
            expect(page.locator("#status")).to_contain_text("re-ranked")
            expect(page.locator("li.hit .source").first).to_contain_text(str(EXAMPLES / "notes"))

            page.select_option("#collection", MARKUP_COLLECTION)
            page.fill("#q", "markup as plain text")
            page.click("button[type=submit]")
            markup = page.locator("li.hit", has_text="Rainbow markup test")
            expect(markup).to_be_visible()
            # Markup in the index stays text: no <img>/<b> elements, the title unchanged, the source a link.
            expect(markup.locator(".text")).to_have_text(MARKUP)
            expect(markup.locator(".title")).to_have_text("Markup <i>title</i>")
            assert markup.locator("img, b, i").count() == 0
            expect(markup.locator(".source a")).to_have_attribute("href", MARKUP_URL)
            assert page.title() == "corpus-search"
            page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
        finally:
            context.close()


def test_the_service_and_its_client_never_import_prefect_flows_or_deployments():
    from tests.test_layers import _imports

    for name in ("api.py", "api_client.py", "answers.py", "cli_api.py"):
        assert _imports(REPO / "corpus_search" / name) & {"prefect", "flows", "deployments"} == set(), name


@pytest.mark.parametrize(("status", "body", "headers", "expected"), [
    (200, {"query": "q", "mode": "hybrid", "reranked": False, "hits": []}, {"X-Corpus-Search-Warnings": "not-json"},
     "not a search answer"),
    (200, {"hits": [{"rank": 1}]}, {}, "not a search answer"),
    (200, {"query": "q", "mode": "hybrid", "reranked": False, "hits": None}, {}, "not a search answer"),
    (400, {"error": {"msg": "x"}}, {}, "HTTP 400 from"),
    (404, {"error": "Not Found"}, {}, "give --api the service's root URL"),
])
def test_search_api_reports_an_answer_it_cannot_read_as_a_service_error_never_a_traceback(status, body, headers,
                                                                                          expected):
    """A JSONDecodeError, KeyError or TypeError (exit 1, a traceback) from an answer the client did not expect."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from corpus_search.api_client import ServiceError, post

    class Odd(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"content-type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ServiceError, match=re.escape(expected)):
            post(f"http://127.0.0.1:{srv.server_address[1]}", "/search", {"query": "q", "collection": "c"})
    finally:
        srv.shutdown()
        srv.server_close()


def test_wrong_method_and_body_errors_name_each_endpoints_own_method_and_example(server):
    wrong = httpx.post(server + "/healthz")
    assert wrong.status_code == 405 and "read it with GET" in wrong.json()["error"]
    missing = httpx.post(server + "/search-document", json={"query": "q"})
    assert missing.status_code == 422 and '"source": "https://example.org/page.html"' in missing.json()["error"]


def test_search_document_checks_the_question_and_page_before_reading_the_source(server):
    for body, fragment in [({"source": "/no/such/page.html", "query": "", "k": 5}, "query is empty"),
                           ({"source": "/no/such/page.html", "query": "q", "k": 0}, "k must be a whole number"),
                           ({"source": "", "query": "q"}, "source is empty")]:
        r = httpx.post(server + "/search-document", json=body)
        assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_a_request_whose_client_gave_up_is_skipped_when_the_model_thread_reaches_it(settings):
    """Starlette does not cancel the work of a client that disconnected: abandoned slow requests queued up on the
    model thread before everyone else's (six of them made a search wait 7.8 s)."""
    import asyncio

    from corpus_search.answers import Answer
    from corpus_search.api import QueryService

    service = QueryService(settings)
    release, ran = threading.Event(), []

    class GaveUp:  # the client side of a request whose client closed its connection
        async def is_disconnected(self) -> bool:
            return True

    async def scenario():
        busy = asyncio.create_task(service.run(lambda: release.wait(10) and Answer({"hits": []}, "busy")))
        abandoned = asyncio.create_task(service.run(lambda: ran.append(1) or Answer({"hits": []}, "x"), GaveUp()))
        await asyncio.sleep(0.5)  # the watcher sees the disconnect while the model thread is busy
        release.set()
        return await busy, await abandoned

    try:
        busy, abandoned = asyncio.run(scenario())
    finally:
        service.executor.shutdown(wait=False)
    assert busy.status_code == 200 and abandoned.status_code == 499 and ran == []


def test_the_services_always_filter_is_in_place_only_while_a_request_records_its_warnings():
    """It stayed for the life of the process after the first request, overriding libraries' own filters."""
    import warnings

    from corpus_search.api import _ALWAYS, _ThreadWarnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _ThreadWarnings() as caught:
            assert _ALWAYS in warnings.filters
            warnings.warn("inside a request", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["inside a request"]
        assert _ALWAYS not in warnings.filters and warnings.filters[0][0] == "ignore"
