"""The query service (``corpus-search api``): FastAPI over one process's warm models.

* ``GET /healthz``: 200 once the models are warm, 503 (JSON) while warming up.
* ``POST /search`` and ``POST /search-document``: exactly the JSON of ``search --json`` and
  ``search-document --json`` (both built by ``corpus_search.answers``).
* ``GET /collections``: the collections of the database; ``GET /``: a small search page.

All model work (encode, retrieve, re-rank, fetch-and-split) runs on ONE dedicated thread by default: a
Hugging Face fast tokenizer used from two threads at once raises "Already borrowed", and on a few CPU
cores two forward passes only contend for them. The event loop keeps accepting requests meanwhile;
they queue for the model thread. ``model_threads > 1`` exists to measure that claim (benchmarks/RESULTS.md,
"The query service": a second model thread measured no better).

Errors are JSON ``{"error": message}`` with the message the CLI prints after ``corpus-search: error:``.
At the CLI layer: imports ``query`` and ``tasks.document``, never Prefect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict

from corpus_search.answers import Answer, document_answer, search_answer
from corpus_search.api_client import STAGES_HEADER, WARNINGS_HEADER, encode_header
from query.errors import CollectionNotFoundError, CorpusSearchError, DatabaseLocationError, ModelUnavailableError
from query.settings import Settings
from query.storage import table_names

log = logging.getLogger("corpus_search.api")

#: Warm-up opens at most this many collections (each one's searcher and re-ranker stay in memory).
WARM_MAX_COLLECTIONS = 5
WARM_QUERY = "warm up"


class SearchRequest(BaseModel):
    """The body of ``POST /search``; values are checked by the query module, which words the errors."""

    # strict: 5.0 or "5" is not a k; forbid: a misspelt field ("top_k") is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str
    collection: str
    k: int = 5
    mode: str = "hybrid"
    candidates: int | None = None
    rerank: bool | Literal["require"] = True
    where: dict[str, Any] | None = None
    offset: int = 0
    score_threshold: float | None = None


class DocumentRequest(BaseModel):
    """The body of ``POST /search-document``: one URL or file the service can read, and the question."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: str
    query: str
    k: int = 5
    rerank: bool | Literal["require"] = True
    offset: int = 0
    score_threshold: float | None = None


def error_status(exc: CorpusSearchError) -> int:
    """HTTP status of an error: unknown collection 404; 503 for what the client cannot fix (no model under
    ``rerank="require"``, a database the service cannot open, a collection made again with another bi-encoder
    since it was opened); else 400 (the request's fault)."""
    from query.schema import IndexContractError

    if isinstance(exc, CollectionNotFoundError):
        return 404
    if isinstance(exc, ModelUnavailableError | DatabaseLocationError | IndexContractError):
        return 503
    return 400


#: A good /search body, quoted by the errors that a malformed request gets.
EXAMPLE_BODY = '{"query": "How do glaciers form?", "collection": "docs", "k": 5}'
#: The same for each POST endpoint.
EXAMPLE_BODIES = {"/search": EXAMPLE_BODY,
                  "/search-document": '{"source": "https://example.org/page.html", "query": "How do glaciers form?", "k": 5}'}
#: The endpoints read with GET.
GET_PATHS = frozenset({"/healthz", "/collections", "/"})


def _validation_message(exc: RequestValidationError, path: str = "/search") -> str:
    """FastAPI's list of body errors as one readable line, with an example of a good body."""
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))})")
        elif not loc and e.get("type") in ("model_attributes_type", "dict_type"):
            parts.append("the request body must be a JSON object, sent with Content-Type: application/json")
        else:
            parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
    return "; ".join(parts) + f". Send JSON such as {EXAMPLE_BODIES.get(path, EXAMPLE_BODY)}"


def _user_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The messages meant for users (re-ranking skipped, a query cut), once each; library deprecations are not."""
    return list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))


# ``warnings.catch_warnings`` is process-wide: with several model threads, one request's warnings reached
# another's answer or were lost (a reviewer measured 29 of 40 right with 2 threads). Each model thread
# records into its own list instead, through one dispatcher in place of ``warnings.showwarning``.
_sink = threading.local()
_install_lock = threading.Lock()
_previous_showwarning: Callable[..., None] | None = None


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    caught = getattr(_sink, "caught", None)
    if caught is not None:
        caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))
    elif _previous_showwarning is not None:
        _previous_showwarning(message, category, filename, lineno, file, line)


class _ThreadWarnings:
    """Record the warnings raised on this thread while inside (each one, every time: a filter "always").

    The "always" filter is in place only while some thread records, as ``catch_warnings`` had it: outside
    requests, the process's own filters (a library's "ignore", "once per location") apply again.
    """

    _recording = 0  # threads inside, under _install_lock

    def __enter__(self) -> list[warnings.WarningMessage]:
        global _previous_showwarning
        with _install_lock:
            if warnings.showwarning is not _show:  # first use, or a test's catch_warnings restored the old one
                _previous_showwarning, warnings.showwarning = warnings.showwarning, _show
            if _ThreadWarnings._recording == 0 or _ALWAYS not in warnings.filters:
                warnings.simplefilter("always", UserWarning)
            _ThreadWarnings._recording += 1
        self.caught: list[warnings.WarningMessage] = []
        _sink.caught = self.caught
        return self.caught

    def __exit__(self, *exc) -> None:
        _sink.caught = None
        with _install_lock:
            _ThreadWarnings._recording -= 1
            if _ThreadWarnings._recording == 0 and _ALWAYS in warnings.filters:
                warnings.filters.remove(_ALWAYS)
                warnings._filters_mutated()  # noqa: SLF001 - what warnings.filterwarnings itself calls


#: The filter entry ``warnings.simplefilter("always", UserWarning)`` adds.
_ALWAYS = ("always", None, UserWarning, None, 0)


class QueryService:
    """The warm state of one process: settings, searchers per collection, and the model thread."""

    def __init__(self, settings: Settings, collections: Sequence[str] | None = None, model_threads: int = 1) -> None:
        self.settings = settings
        self.warm_collections = list(collections) if collections else None
        self.executor = ThreadPoolExecutor(max_workers=model_threads, thread_name_prefix="corpus-search-model")
        self._searchers: dict[str, Any] = {}
        self._lock = threading.Lock()  # guards the cache; opening is rare and cheap next to a search
        self.ready = False
        self.warmed: list[str] = []
        self.warm_errors: list[str] = []

    # ---------------------------------------------------------------- runs on the model thread

    def collection_names(self) -> list[str]:
        """The collections of the database (internal tables left out), sorted."""
        from query.schema import is_internal_table
        from query.storage import check_db_uri, connect

        db = connect(check_db_uri(self.settings.db_uri), self.settings)
        return sorted(n for n in table_names(db) if not is_internal_table(n))

    def searcher(self, collection: str):
        """The collection's Searcher, opened on first use and kept (it sees later index runs by itself)."""
        from query.searcher import Searcher

        with self._lock:
            s = self._searchers.get(collection)
            if s is None:
                s = self._searchers[collection] = Searcher(collection=collection, settings=self.settings)
            return s

    def forget_searcher(self, collection: str) -> None:
        """Close a collection's cached searcher (the collection was made again under it); the next request
        reopens it. The other collections' warm searchers stay."""
        with self._lock:
            self._searchers.pop(collection, None)

    def warm(self) -> None:
        """Open the collections to serve (at most a handful) and run one tiny search each: loads the models."""
        try:
            names = self.warm_collections
            if names is None:
                names = self.collection_names()[:WARM_MAX_COLLECTIONS]
            for name in names:
                try:
                    with _ThreadWarnings() as caught:
                        self.searcher(name).search(WARM_QUERY, k=1)
                    self.warm_errors += [f"{name}: {m}" for m in _user_warnings(caught)]
                    self.warmed.append(name)
                except CorpusSearchError as exc:
                    self.warm_errors.append(f"{name}: {exc}")
            # search-document uses the configured cross-encoder; a collection may have used its own re-ranker.
            from query.models import reranker_from_settings

            try:
                reranker_from_settings(self.settings)
            except ModelUnavailableError as exc:
                self.warm_errors.append(f"search-document: {exc}")
        except Exception:  # noqa: BLE001 - a broken warm-up must not keep the service at 503 forever
            log.exception("warm-up failed; the service answers anyway and loads models on first use")
            self.warm_errors.append("warm-up failed (see the service log)")
        finally:
            for message in self.warm_errors:
                log.warning("warm-up: %s", message)
            log.info("ready: warm collections %s", ", ".join(self.warmed) or "(none)")
            self.ready = True

    # ---------------------------------------------------------------- called from the event loop

    async def run(self, fn: Callable[[], Answer], request: Request | None = None,
                  collection: str | None = None) -> JSONResponse:
        """Run ``fn`` on the model thread; its answer, or its error as JSON with the right status.

        A request whose client has gone by the time the model thread reaches it is skipped: Starlette does not
        cancel the work of a client that gave up, so abandoned slow requests queued up before everyone else's.
        """
        gone = threading.Event()

        def call() -> tuple[Answer, list[str]] | None:
            if gone.is_set():
                return None
            with _ThreadWarnings() as caught:  # this request's warnings, whatever the other model threads do
                answer = fn()
            return answer, _user_warnings(caught)

        watcher = asyncio.create_task(_watch_disconnect(request, gone)) if request is not None else None
        try:
            done = await asyncio.get_running_loop().run_in_executor(self.executor, call)
            if done is None:
                log.info("skipped a request whose client had disconnected")
                return JSONResponse({"error": "the client disconnected before its turn"}, status_code=499)
            answer, caught = done
        except CorpusSearchError as exc:
            from query.schema import IndexContractError

            if isinstance(exc, IndexContractError) and collection is not None:
                self.forget_searcher(collection)  # made again with another bi-encoder: the next request reopens it
            return JSONResponse({"error": str(exc)}, status_code=error_status(exc))
        except Exception as exc:  # noqa: BLE001 - the boundary: a bug is a 500 and a traceback in the log
            log.exception("internal error while answering a query")
            return JSONResponse({"error": f"internal error ({type(exc).__name__}: {exc}); see the service log"},
                                status_code=500)
        finally:
            if watcher is not None:
                watcher.cancel()
        for message in caught:
            log.warning("%s", message)
        headers = {STAGES_HEADER: encode_header(answer.stages)}
        if caught:
            headers[WARNINGS_HEADER] = encode_header(json.dumps(caught, ensure_ascii=False))
        return JSONResponse(answer.payload, headers=headers)


async def _watch_disconnect(request: Request, gone: threading.Event) -> None:
    """Set ``gone`` once the client of ``request`` disconnects (checked every 0.1 s until cancelled)."""
    while not gone.is_set():
        if await request.is_disconnected():
            gone.set()
            return
        await asyncio.sleep(0.1)


def create_app(settings: Settings | None = None, collections: Sequence[str] | None = None, *,
               model_threads: int = 1, local_files: bool = True) -> FastAPI:
    """The service's FastAPI app. ``collections`` restricts warm-up (default: the first few of the database).

    ``local_files=False``: ``POST /search-document`` takes http(s) URLs only (403 for a path), so that a
    service reachable from other machines does not read this machine's files for them.
    """
    from query.settings import get_settings

    service = QueryService(settings or get_settings(), collections, model_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Warm up on the model thread without awaiting it: /healthz answers 503 meanwhile, and searches
        # that arrive early queue behind the warm-up instead of loading models a second time.
        loop = asyncio.get_running_loop()
        warming = loop.run_in_executor(service.executor, service.warm)
        try:
            yield
        finally:
            warming.cancel()
            service.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="corpus-search", summary="retrieve and re-rank paragraphs", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc, request.url.path)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (405, 404 for an unknown path, 400 for a body it cannot parse) in the
        # service's one error shape.
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        path = request.url.path
        if exc.status_code == 405 and path in GET_PATHS:
            detail += f" ({request.method} {path}); read it with GET"
        elif exc.status_code == 405:
            detail += f" ({request.method} {path}); send POST with a JSON body, e.g. {EXAMPLE_BODIES.get(path, EXAMPLE_BODY)}"
        elif exc.status_code == 400 and "parsing the body" in detail:
            detail = (f"the request body cannot be read as JSON text (is it UTF-8?). Send e.g. "
                      f"{EXAMPLE_BODIES.get(path, EXAMPLE_BODY)}")
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"status": "warming", "error": "the service is loading its models; retry shortly"},
                                status_code=503)
        return JSONResponse({"status": "ok", "collections": service.warmed, "warnings": service.warm_errors})

    @app.get("/collections")
    async def collections_() -> JSONResponse:
        # Not on the model thread: listing tables is quick and must not wait behind queued searches.
        from starlette.concurrency import run_in_threadpool

        try:
            names = await run_in_threadpool(service.collection_names)
        except CorpusSearchError as exc:
            return JSONResponse({"error": str(exc)}, status_code=error_status(exc))
        return JSONResponse({"collections": names})

    @app.post("/search")
    async def search(body: SearchRequest, request: Request) -> JSONResponse:
        return await service.run(lambda: search_answer(
            service.searcher(body.collection), body.query, k=body.k, mode=body.mode, candidates=body.candidates,
            rerank=body.rerank, where=body.where, score_threshold=body.score_threshold, offset=body.offset), request,
            body.collection)

    @app.post("/search-document")
    async def search_document(body: DocumentRequest, request: Request) -> JSONResponse:
        if not local_files and not body.source.lower().startswith(("http://", "https://")):
            return JSONResponse({"error": f"{body.source!r} is not an http(s) URL: this service reads no local files "
                                 "for its clients (it listens beyond loopback); start it with --allow-local-files "
                                 "to allow that"}, status_code=403)
        return await service.run(lambda: document_answer(body.source, body.query, k=body.k, settings=service.settings,
                                                         score_threshold=body.score_threshold, offset=body.offset,
                                                         rerank=body.rerank), request)

    page = resources.files("corpus_search").joinpath("static/search.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app
