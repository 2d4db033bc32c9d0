"""``corpus-search search --api URL``: send a query to a running query service and get its ``Answer``.

Imports only httpx and the standard library, so a remote search starts in a fraction of a second
(no torch, LanceDB or Prefect; ``tests/test_api.py`` checks it).
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

from corpus_search.answers import Answer
from corpus_search.errors import ServiceError

#: Response headers that carry the text output's first line and any warnings; the JSON body stays exactly
#: the ``--json`` object. Values are percent-encoded, since headers are Latin-1 and stages hold "→".
STAGES_HEADER = "X-Corpus-Search-Stages"
WARNINGS_HEADER = "X-Corpus-Search-Warnings"

#: Connecting is quick or never; an answer may wait behind other clients' queries on the model thread.
TIMEOUT_S = {"connect": 5.0, "read": 300.0, "write": 30.0, "pool": 30.0}


def encode_header(value: str) -> str:
    """A header value any text survives (the service side of :func:`decode_header`)."""
    return quote(value, safe=" /:,;()[]=+-_.'\"")


def decode_header(value: str | None) -> str:
    return unquote(value or "")


def post(api_url: str, path: str, body: dict) -> Answer:
    """POST ``body`` to ``api_url + path`` and return the service's answer; any failure is a ``ServiceError``."""
    import httpx

    url = api_url.rstrip("/") + path
    try:
        # trust_env=False: a service is usually on this machine or the LAN, where an HTTP(S)_PROXY from the
        # environment would only intercept it.
        with httpx.Client(timeout=httpx.Timeout(**TIMEOUT_S), trust_env=False) as client:
            response = client.post(url, json=body)
    except httpx.ConnectError as exc:
        raise ServiceError(
            f"cannot reach the query service at {api_url} ({exc}). Start one with: corpus-search api --db PATH "
            "(it listens on http://127.0.0.1:8000 by default), or search locally without --api and with "
            "CORPUS_SEARCH_API_URL unset"
        ) from None
    except httpx.TimeoutException as exc:
        raise ServiceError(f"the query service at {api_url} did not answer in time ({type(exc).__name__}); "
                           "is it overloaded or still starting? Check GET /healthz") from None
    except httpx.HTTPError as exc:
        raise ServiceError(f"cannot talk to the query service at {api_url}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200:
        message = data.get("error") if isinstance(data, dict) else None
        if response.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            # No route there: most often the endpoint given where the service's root belongs.
            message = (f"HTTP {response.status_code} ({message}) from {url}: give --api the service's root URL, "
                       "e.g. http://127.0.0.1:8000, not one of its endpoints")
        elif not isinstance(message, str) or not message:  # not our service, or a proxy in between
            message = f"HTTP {response.status_code} from {url}: {response.text[:300]!r}; is {api_url} a corpus-search api?"
        raise ServiceError(message)
    not_ours = ServiceError(f"{url} answered something that is not a search answer; is {api_url} a corpus-search api?")
    hits = data.get("hits") if isinstance(data, dict) else None
    if not isinstance(hits, list) or "reranked" not in data \
            or not all(isinstance(h, dict) and HIT_KEYS <= h.keys() for h in hits):
        raise not_ours
    try:
        warnings = json.loads(decode_header(response.headers.get(WARNINGS_HEADER)) or "[]")
    except ValueError:
        raise not_ours from None
    if not isinstance(warnings, list):
        raise not_ours
    return Answer(data, decode_header(response.headers.get(STAGES_HEADER)), [str(w) for w in warnings])


#: What every hit of an answer has (what the CLI prints): anything less is not our service's answer.
HIT_KEYS = frozenset({"rank", "score", "retrieval_score", "title", "text", "source", "doc_id"})
