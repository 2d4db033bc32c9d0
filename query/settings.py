"""One Settings object for the whole product (env prefix ``CORPUS_SEARCH_``)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from query.schema import validate_collection_name

# The one home of these vocabularies: everything else imports them (issue #9).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# The re-ranker also offers the bf16 -> exact fp32 cascade.
RerankPrecision = Literal["auto", "fp32", "bf16", "fp16", "bf16+fp32", "int8"]
# Where the re-ranker's forward passes run (query.backends): auto = the fastest measured here that agrees.
RerankBackend = Literal["auto", "torch", "onnx", "openvino"]
Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)

DEFAULT_BI_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Every knob of indexing and querying. Override with ``CORPUS_SEARCH_<NAME>`` or keyword arguments."""

    # A .env file in the working directory is read too (the environment wins over it). Only its lines
    # that name a setting are taken: other programs' keys in a shared .env are theirs. A misspelt
    # CORPUS_SEARCH_ name, there or in the environment, is warned about (get_settings).
    model_config = SettingsConfigDict(env_prefix="CORPUS_SEARCH_", extra="forbid", env_file=".env",
                                      env_file_encoding="utf-8", dotenv_filtering="only_existing")

    # storage
    db_uri: str = Field(".corpus_search/lancedb", description="LanceDB URI: a local directory or s3://bucket/path")
    collection: str = "default"
    # SecretStr: credentials never show in a repr, a log line or a dump of the settings.
    storage_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="object-store options for an s3:// (or gs://, az://) database, as JSON, e.g. "
        '{"aws_endpoint": "http://127.0.0.1:9000", "allow_http": "true"}; each overrides the standard '
        "environment variable LanceDB reads by itself (AWS_ENDPOINT or AWS_ENDPOINT_URL, AWS_REGION, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP)",
    )
    version_retention_days: float = Field(
        7.0, ge=0,
        description="index runs remove untagged table versions older than this many days (rollback and "
        "pinned readers can reach only versions that remain); tagged versions are always kept; "
        "0 keeps every version (no cleanup)",
    )

    writer_lease_s: float = Field(
        300.0, ge=60, description="object-store databases: the Prefect lease on a collection's writer slot "
        "(renewed while the run lives); a Prefect server frees the slot of a killed writer when it expires")
    writer_heartbeat_s: float = Field(
        10.0, gt=0, description="object-store databases: how often a writer shows it is alive; a writer silent "
        "for three beats is presumed dead and a waiting run frees its slot")

    # models
    bi_encoder: str = DEFAULT_BI_ENCODER
    cross_encoder: str = DEFAULT_CROSS_ENCODER
    device: str = Field("auto", description="auto (cuda > mps > cpu), or an explicit torch device")
    precision: Precision = Field("auto", description="auto: fp16 on cuda, bf16 on CPUs with native bf16, else fp32")
    batch_size: int = Field(64, ge=1, description="bi-encoder batch size")
    encode_chunk_size: int = Field(2048, ge=1, description="paragraphs encoded and written per chunk; bounds memory")
    trust_remote_code: bool = False

    # splitting
    min_paragraph_chars: int = Field(30, ge=0, description="shorter paragraphs are dropped (a byline, a caption), unless all of a document's are: then it is kept whole")
    encode_title: bool = Field(True, description="encode 'title: paragraph' instead of the paragraph alone")
    main_content: bool = Field(True, description="extract the main content of HTML pages (drop boilerplate)")
    split_unit: Literal["paragraph", "document"] = Field(
        "paragraph",
        description="paragraph: one row per block, long blocks split to the encoder's limit; "
        "document: one row per article (blocks joined), truncated by the encoder (as published BEIR runs)",
    )

    # fetching
    fetch_timeout_s: float = 20.0
    fetch_retries: int = Field(3, ge=0)
    fetch_concurrency: int = Field(8, ge=1)
    fetch_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    user_agent: str = "corpus-search/0.1 (+https://pypi.org/project/corpus-search/)"
    fetch_deadline_s: float = Field(60.0, gt=0, description="overall budget per URL: all attempts, redirects, waits")
    fetch_retry_after_max_s: float = Field(
        30.0, ge=0, description="longest Retry-After honoured on 429/503; a longer one fails the URL at once")
    fetch_allow_private: bool = Field(
        False, description="fetch loopback, private, link-local and cloud-metadata addresses (off: SSRF-safe)")
    # NoDecode: read "a.org,b.org" as well as a JSON list (see _host_list).
    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="if set, fetch only these hosts and their subdomains")
    fetch_denied_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="never fetch these hosts nor their subdomains")
    follow_symlinks: bool = Field(False, description="follow symbolic links that lead outside a directory source")

    @field_validator("storage_options", mode="before")
    @classmethod
    def _option_strings(cls, value):
        """Object-store options are strings: accept JSON true/false/numbers as their string form."""
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else v if isinstance(v, SecretStr) else str(v))
                    for k, v in value.items()}
        return value

    @field_validator("fetch_allowed_hosts", "fetch_denied_hosts", mode="before")
    @classmethod
    def _host_list(cls, value):
        """Accept a JSON list or a comma-separated string of host names."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [h.strip() for h in text.split(",") if h.strip()]
        return value

    # indexing
    # From benchmarks/ann_recall.py: exact search passes ~20 ms near 20k rows; IVF_SQ with sqrt(n)
    # partitions and 100 probes keeps Recall@100 >= 0.95 from 30k to 1M rows.
    ann_min_rows: int = Field(25_000, ge=1, description="build an ANN index once a collection has this many rows")
    ann_index_type: Literal["IVF_SQ", "IVF_FLAT", "IVF_PQ", "IVF_HNSW_SQ"] = "IVF_SQ"
    ann_nprobes: int = Field(100, ge=1, description="IVF partitions probed per query")
    max_delete_fraction: float = Field(
        0.5, ge=0.0, le=1.0,
        description="an index run that would delete more than this share of a collection's rows (articles that "
        "vanished from their sources) deletes nothing and says how to confirm (--allow-mass-delete)")
    not_found_grace_s: float = Field(
        86400.0, ge=0.0,
        description="an indexed page that answers HTTP 404 keeps its rows until it has answered 404 on every index "
        "run that fetched it for this long (a 404 may be a passing mistake; 410 deletes at once): 0 deletes on the "
        "first 404, a very large value never")

    # scaling out (issue #13): where an index run's fetch, split and encode shards run
    workers: int = Field(
        0, ge=0, description="index on a local Dask cluster of this many worker processes (prefect-dask); "
        "0: in this process (or one worker per GPU when there are two or more)")
    dask_address: str | None = Field(
        None, description="index on the running Dask cluster at this scheduler address (tcp://host:8786); "
        "its workers need this project installed and access to the database")
    pipeline_depth: int | None = Field(
        None, ge=0, description="batches in flight in an index run: later batches are read and split while one "
        "encodes; 0: one batch after another in the flow process; unset: 2 in one process, 2 per Dask worker")

    # querying
    candidates: int = Field(100, ge=1)
    rrf_k: int = Field(60, ge=1)
    rerank_batch_size: int = Field(32, ge=1)
    rerank_backend: RerankBackend = Field(
        "auto", description="where the cross-encoder runs on a CPU: torch, onnx (ONNX Runtime, fp32 or int8), "
        "openvino (pip install openvino), or auto: the fastest measured on this machine among those whose scores "
        "agree with fp32 (query.backends); cuda and mps always use torch")
    rerank_cache_size: int = Field(
        50_000, ge=0, description="(query, paragraph) scores kept per re-ranker in memory (a repeated query "
        "costs no model call); 0 turns the cache off")
    rerank_precision: RerankPrecision = Field(
        "auto", description="auto: fp16 on cuda; on CPUs with native bf16 the bf16+fp32 cascade (bf16 for all "
        "candidates, exact fp32 re-score of every candidate that could be in the top k); else fp32. int8: the "
        "int8 ONNX model without its agreement check (rerank_backend onnx, openvino or auto)")
    rerank_fusion: bool = Field(
        True, description="a collection's trained re-ranker mixes its score with the first stage's by the weight "
        "chosen on dev when it was trained; false: the cross-encoder's score alone")
    rerank_adaptive_depth: bool = Field(
        True, description="with a fused re-ranker, skip the candidates that cannot reach the top k whatever "
        "the cross-encoder says (query.fusion.fusion_reach); false: score every candidate")
    max_query_chars: int = Field(2000, ge=1)
    api_url: str | None = Field(
        None, description="URL of a running query service (corpus-search api): `corpus-search search` sends its "
        "queries there instead of loading models itself; unset: search locally")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        # A typo ('cdua') otherwise fails only when a model loads: an index run's whole fetch and split first.
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"device {value!r}: use auto, or a torch device type (cpu, cuda, mps, xpu, hpu, npu, ...) "
                             "with an optional index (cuda:1)")
        return value

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        # model_copy(update=...) skips validators, so Searcher and writer_lock check the name again themselves.
        return validate_collection_name(value)


#: Settings that hold credentials: never a flow or deployment parameter (Prefect stores and shows those).
SECRET_SETTINGS = frozenset({"storage_options"})


def refuse_secret_overrides(overrides: Mapping[str, Any] | None) -> None:
    """A flow's ``settings_overrides`` naming a credential setting is refused: give it by the environment.

    The CLI and the deployments config refuse it before any run exists; a flow called from Python can only
    refuse it here (its parameters are already stored), rather than run with credentials its writer lock and
    model uploads, which read the environment's settings, would not have.
    """
    from query.errors import InvalidQueryError

    if overrides and (named := sorted(k for k in overrides if str(k).lower() in SECRET_SETTINGS)):
        raise InvalidQueryError(f"settings_overrides {named[0]!r}: credentials are never a flow parameter (Prefect "
                                "stores and shows those): set AWS_* or CORPUS_SEARCH_STORAGE_OPTIONS in the environment")

#: The torch devices the ``device`` setting accepts (``auto`` picks one): types torch names, an optional index.
DEVICE_PATTERN = (r"auto|(cpu|mps|meta|cuda|xpu|hpu|npu|mtia|xla|ipu|hip|ve|maia|fpga|vulkan|lazy|mkldnn|opengl|"
                  r"opencl|ideep|privateuseone)(:\d+)?")

#: CORPUS_SEARCH_ variables that are not settings (read where they are used), so no misspelling either.
OTHER_VARIABLES = frozenset({"CORPUS_SEARCH_CACHE", "CORPUS_SEARCH_NOTIFY_BLOCK", "CORPUS_SEARCH_E2E_SCREENSHOTS"})


class UnknownSettingWarning(UserWarning):
    """A CORPUS_SEARCH_ variable that names no setting: most likely a misspelt one, which is ignored."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read from the environment and ``.env`` (cached).

    A CORPUS_SEARCH_ name that is no setting is ignored with one warning naming it, wherever it was set:
    a misspelt setting must not silently leave its default in force.
    """
    import os
    import warnings

    try:
        settings = Settings()
    except Exception as exc:
        if (user_error := settings_error(exc)) is None:
            raise
        raise user_error from None
    prefix = Settings.model_config["env_prefix"]
    known = {prefix + name.upper() for name in Settings.model_fields} | OTHER_VARIABLES
    names = {k.upper() for k in os.environ} | {k.upper() for k in _dotenv_names()}
    for name in sorted(n for n in names if n.startswith(prefix) and n not in known):
        warnings.warn(f"{name} is not a corpus-search setting (misspelt? the README's \"Settings\" section lists "
                      "them); it is ignored", UnknownSettingWarning, stacklevel=2)
    return settings


def settings_error(exc: Exception):
    """A pydantic error of ``Settings`` (e.g. a bad CORPUS_SEARCH_COLLECTION) as a one-line
    :class:`~query.errors.InvalidSettingError`, else None: a program gets the error class every user error has."""
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from query.errors import InvalidSettingError

    if isinstance(exc, SettingsError):  # a value the environment source cannot even parse (bad JSON)
        field = m.group(1) if (m := re.search(r'field "(\w+)"', str(exc))) else None
        why = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        return InvalidSettingError(f"setting {_named(field)} cannot be parsed{why}: give it as valid JSON")
    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    return InvalidSettingError(_messages(exc, lambda loc: _named(str(loc[0]) if loc else None, ".".join(map(str, loc)))))


def _messages(exc, name) -> str:
    """Pydantic's errors as one line, "setting NAME: why" each (``name``: how to call an error's location)."""
    return "; ".join(f"setting {name(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())


def _named(field: str | None, path: str | None = None) -> str:
    """"candidates (the CORPUS_SEARCH_CANDIDATES setting)": the setting and the variable a user sets. Never its
    value: storage options hold credentials."""
    if not field:
        return path or "?"
    return f"{path or field} (the {Settings.model_config['env_prefix']}{field.upper()} setting)"


def _dotenv_names() -> list[str]:
    from pathlib import Path

    path = Path(Settings.model_config["env_file"])
    if not path.is_file():
        return []
    from dotenv import dotenv_values

    return list(dotenv_values(path))


def settings_with(overrides: Mapping[str, Any], base: Settings | None = None) -> Settings:
    """``base`` (default: the environment's settings) with ``overrides``, each checked as a setting is.

    ``model_copy(update=...)`` checks nothing: a misspelt name was ignored and a bad value failed deep
    inside a search. Here either is an :class:`InvalidQueryError` that names the setting.
    """
    from pydantic import ValidationError

    from query.errors import InvalidQueryError

    if unknown := sorted(set(overrides) - set(Settings.model_fields)):
        raise InvalidQueryError(f"no such setting: {', '.join(map(repr, unknown))} (misspelt? the README's "
                                '"Settings" section lists them)')
    base = base or get_settings()  # a bad environment fails here, as the environment's error
    if not overrides:
        return base
    # An empty model name given here is a mistake (a flag or argument left blank), not a choice: it failed
    # only at the first search. (An empty variable keeps meaning what it did: an override of .env.)
    if blank := sorted(k for k in ("bi_encoder", "cross_encoder") if isinstance(overrides.get(k), str)
                       and not overrides[k].strip()):
        raise InvalidQueryError(f"setting {blank[0]}: names no model: give a hub name or a local model directory "
                                "(to search without re-ranking: --no-rerank, or rerank=False from Python)")
    try:
        checked = Settings(**{**base.model_dump(), **overrides})
    except ValidationError as exc:
        from query.errors import CorpusSearchError

        for error in exc.errors():  # a validator's own user error (e.g. InvalidNameError) says it best
            if isinstance(cause := (error.get("ctx") or {}).get("error"), CorpusSearchError):
                raise cause from None
        raise InvalidQueryError(_messages(exc, lambda loc: ".".join(map(str, loc)))) from None
    # The checked values, on a copy that remembers which settings were given (model_fields_set): a
    # cross-encoder given explicitly wins over a collection's promoted one, a default does not.
    return base.model_copy(update={name: getattr(checked, name) for name in overrides})
