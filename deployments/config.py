"""The collections config: which collections exist, what they index, and when they are reindexed.

Collections are declared once, in a small TOML file (``deployments/collections.toml``); the reindex
(and evaluation) deployments of both routes are generated from it:

``deployments/build.py`` turns it into deployments by one route (``deployment_specs``), for
``prefect.serve`` on a laptop (``corpus-search serve``), for a work pool (``corpus-search deploy``),
or, on demand, as a ``prefect.yaml`` (``corpus-search deploy --write-yaml PATH``).

Validation is strict and names the entry: unknown keys, invalid cron strings or time zones, an empty
source list, a malformed notification block name or duplicate deployment names are all errors.
This module does not import Prefect (cron strings are checked with a lazy import).
"""

from __future__ import annotations

import functools
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from flows.hooks import COLLECTION_TAG, NOTIFY_TAG
from query.errors import CorpusSearchError

#: The flows the deployments run (``file:function`` for prefect.yaml, ``module.function`` for workers).
INDEX_FLOW = "flows.index_corpus:index_corpus"
INDEX_FLOW_NAME = "index-corpus"
EVALUATE_FLOW = "flows.evaluate:evaluate"
EVALUATE_FLOW_NAME = "evaluate"
#: Logged into each run's Prefect logs as well: ``tasks.lock`` says when a run waits for another writer.
EXTRA_LOGGERS = "tasks"

DEFAULT_CONFIG = Path(__file__).resolve().parent / "collections.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BLOCK = re.compile(r"^[a-z0-9-]+/[A-Za-z0-9_.-]+$")


class ConfigError(CorpusSearchError, ValueError):
    """The collections config is invalid; the message names the file and the entry."""


def _check_cron(v: str) -> str:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=v)
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"invalid cron {v!r} (use five fields, e.g. '0 3 * * *' for 03:00 daily)") from exc
    if not v.strip().startswith("@") and len(v.split()) != 5:
        # Prefect takes a sixth field as seconds: a Quartz-style '0 0 3 * * *' runs every second of 03:00.
        raise ValueError(f"invalid cron {v!r}: {len(v.split())} fields; use five (minute hour day month weekday), "
                         "e.g. '0 3 * * *' for 03:00 daily")
    return v


def _check_deployment_name(v: str | None) -> str | None:
    if v is not None and (not v.strip() or any(c in v for c in "/%&<>")):
        raise ValueError(f"deployment name {v!r}: Prefect refuses an empty name and the characters / % & < >")
    return v


def _check_timezone(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')") from exc
    return v


def _check_block(v: str | None) -> str | None:
    if v is not None and not _BLOCK.match(v):
        raise ValueError(
            f"notify_block {v!r}: use '<block-type-slug>/<block-name>', e.g. 'slack-webhook/ops-alerts' "
            "(see `prefect block ls`)"
        )
    return v


@functools.cache
def _given_settings() -> type:
    """``Settings`` built from its arguments alone (no environment, no ``.env``): to check a config's values."""
    from query.settings import Settings

    class Given(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
            return (init_settings,)

    return Given


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Parameters of the evaluate flow that are paths: relative ones are resolved under base_dir.
EVALUATE_PATH_PARAMETERS = ("dataset", "corpus_html", "queries", "qrels", "out")


class _Scheduled(_Strict):
    """Checks shared by every scheduled entry (each subclass declares the fields): cron, time zone, block."""

    @field_validator("cron", check_fields=False)
    @classmethod
    def _cron(cls, v: str) -> str:
        return _check_cron(v)

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return _check_timezone(v)

    @field_validator("notify_block", check_fields=False)
    @classmethod
    def _block(cls, v: str | None) -> str | None:
        return _check_block(v)

    @field_validator("deployment", check_fields=False)
    @classmethod
    def _deployment(cls, v: str | None) -> str | None:
        return _check_deployment_name(v)


class EvaluationSpec(_Scheduled):
    """A scheduled evaluation (flow ``evaluate``): index a test collection, run its queries, score them."""

    dataset: str = Field(description="BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/); under base_dir")
    cron: str
    timezone: str | None = None
    db_uri: str | None = None
    notify_block: str | None = None
    deployment: str | None = Field(None, description="deployment name; default 'evaluate-<name>'")
    parameters: dict[str, Any] = Field(default_factory=dict, description="more parameters of the evaluate flow")
    paused: StrictBool = False  # strict: "yes" is a typo, not true

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(v) & {"dataset", "db_uri"})
        if clash:
            raise ValueError(f"{clash} are keys of the evaluation itself, not of its parameters")
        return v


class CollectionSpec(_Scheduled):
    """One collection: its sources and its reindex schedule."""

    sources: list[str] = Field(description="URLs, files, directories, JSONL dumps; relative paths are under base_dir")
    cron: str = Field(description="reindex schedule, five-field cron")
    timezone: str | None = None
    db_uri: str | None = None
    notify_block: str | None = None
    deployment: str | None = Field(None, description="deployment name; default 'reindex-<collection>'")
    batch_articles: StrictInt = Field(512, ge=1)  # strict: `true` is no batch size
    settings: dict[str, Any] = Field(default_factory=dict, description="Settings overrides, e.g. bi_encoder")
    paused: StrictBool = False  # strict: "yes" is a typo, not true

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        v = [s.strip() for s in v]
        if not v:
            raise ValueError("sources is empty: list at least one URL, file, directory or JSONL dump")
        if any(not s for s in v):
            raise ValueError("sources contains an empty string")
        from tasks.fetch import SourceError, refuse_credential_urls

        try:  # deployment parameters show in the Prefect UI and its logs: a password must never be one
            refuse_credential_urls(v)
        except SourceError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        from query.settings import SECRET_SETTINGS, Settings

        if set(v) & SECRET_SETTINGS:
            # Deployment parameters show in the Prefect UI: credentials must never be one.
            raise ValueError(
                "storage_options cannot be a deployment setting (its credentials would show as a deployment "
                "parameter in the Prefect UI): give the work pool's workers the AWS_* environment variables, "
                "or CORPUS_SEARCH_STORAGE_OPTIONS from a Prefect Secret block"
            )
        allowed = set(Settings.model_fields) - {"db_uri", "collection"}
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"unknown settings {unknown} (db_uri and collection are keys of the collection itself)")
        try:
            # The values too, here rather than in the first run at 03:00: those given only, never this shell's
            # CORPUS_SEARCH_* or .env (a bad one there is not the config's fault).
            _given_settings()(**v)
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"invalid settings: {bad}") from None
        return v


class DeployConfig(_Strict):
    """The whole file: defaults, then ``[collections.<name>]`` tables."""

    base_dir: str = Field(".", description="relative source paths and db_uri are under this (relative to the file)")
    db_uri: str | None = None
    timezone: str = "UTC"
    notify_block: str | None = None
    collections: dict[str, CollectionSpec]
    evaluations: dict[str, EvaluationSpec] = Field(default_factory=dict)
    #: Where the file was read from (not a TOML key).
    path: Path | None = Field(None, exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v)

    @field_validator("notify_block")
    @classmethod
    def _block(cls, v: str | None) -> str | None:
        return _check_block(v)

    @field_validator("collections")
    @classmethod
    def _names(cls, v: dict[str, CollectionSpec]) -> dict[str, CollectionSpec]:
        if not v:
            raise ValueError("no collections: add a [collections.<name>] table")
        return cls._check_names(v)

    @field_validator("evaluations")
    @classmethod
    def _eval_names(cls, v: dict[str, EvaluationSpec]) -> dict[str, EvaluationSpec]:
        return cls._check_names(v)

    @staticmethod
    def _check_names(v: dict) -> dict:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"collection name {name!r}: use letters, digits, '-', '_' and '.'")
        return v

    @field_validator("collections")
    @classmethod
    def _collection_names(cls, v: dict[str, CollectionSpec]) -> dict[str, CollectionSpec]:
        from query.errors import InvalidNameError
        from query.schema import validate_collection_name

        for name in v:  # the rule the index run applies ('news__articles' is collection news's article table)
            try:
                validate_collection_name(name)
            except InvalidNameError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _unique_deployments(self) -> DeployConfig:
        seen: dict[str, str] = {}
        entries = [(f"collections.{n}", f"{INDEX_FLOW_NAME}/{self.reindex_name(n)}") for n in self.collections]
        entries += [(f"evaluations.{n}", f"{EVALUATE_FLOW_NAME}/{self.evaluate_name(n)}") for n in self.evaluations]
        for entry, deployment in entries:
            if deployment in seen:
                raise ValueError(f"{seen[deployment]} and {entry} both define deployment {deployment!r}")
            seen[deployment] = entry
        return self

    # ---- derived values ---------------------------------------------------------------------------
    def root(self) -> Path:
        here = self.path.parent if self.path else Path.cwd()
        return (here / self.base_dir).resolve()

    def reindex_name(self, name: str) -> str:
        return self.collections[name].deployment or f"reindex-{name}"

    def evaluate_name(self, name: str) -> str:
        return self.evaluations[name].deployment or f"evaluate-{name}"

    def timezone_of(self, name: str) -> str:
        return self.collections[name].timezone or self.timezone

    def notify_block_of(self, name: str) -> str | None:
        return self.collections[name].notify_block or self.notify_block

    def _path(self, value: str, absolute: bool) -> str:
        if not absolute or "://" in value:
            return value
        return str((self.root() / Path(value).expanduser()).resolve())

    def db_uri_of(self, name: str, *, absolute: bool, evaluation: bool = False) -> str | None:
        """The database of ``name``: the config's (relative: under ``base_dir``), else, with ``absolute``,
        the deploying process's setting (its environment or ``.env``, else the default) made absolute.

        Never left to the flow run: its working directory is the worker's, a temporary folder that a process
        worker deletes after each run, so a relative default wrote every scheduled reindex where no search
        finds it, and each run encoded everything again.
        """
        spec = self.evaluations[name] if evaluation else self.collections[name]
        uri = spec.db_uri or self.db_uri
        if uri is not None:
            return self._path(uri, absolute)
        if not absolute:
            return None
        from query.settings import get_settings
        from query.storage import is_local_uri, local_path

        uri = get_settings().db_uri
        return str(local_path(uri).resolve()) if is_local_uri(uri) else uri

    def sources_of(self, name: str, *, absolute: bool) -> list[str]:
        """Sources of ``name``; with ``absolute``, local paths are resolved under ``base_dir``."""
        return [self._path(s, absolute) for s in self.collections[name].sources]

    def tags_of(self, name: str, *, evaluation: bool = False) -> list[str]:
        if evaluation:
            tags = ["corpus-search", "evaluation:" + name]
            block = self.evaluations[name].notify_block or self.notify_block
        else:
            tags = ["corpus-search", COLLECTION_TAG + name]
            block = self.notify_block_of(name)
        if block:
            tags.append(NOTIFY_TAG + block)
        return tags

    def index_parameters(self, name: str, *, absolute: bool = True) -> dict[str, Any]:
        spec = self.collections[name]
        params: dict[str, Any] = {"sources": self.sources_of(name, absolute=absolute), "collection": name}
        if (uri := self.db_uri_of(name, absolute=absolute)) is not None:
            params["db_uri"] = uri
        if spec.batch_articles != 512:
            params["batch_articles"] = spec.batch_articles
        if spec.settings:
            params["settings_overrides"] = dict(spec.settings)
        return params

    def evaluate_parameters(self, name: str, flow_fn=None, *, absolute: bool = True) -> dict[str, Any]:
        """Parameters of the evaluation ``name``; with ``flow_fn``, checked against its signature."""
        ev = self.evaluations[name]
        params: dict[str, Any] = {"dataset": ev.dataset, **ev.parameters}
        for key in EVALUATE_PATH_PARAMETERS:
            if isinstance(params.get(key), str):
                params[key] = self._path(params[key], absolute)
        if (uri := self.db_uri_of(name, absolute=absolute, evaluation=True)) is not None:
            params["db_uri"] = uri
        accepted = _parameter_names(flow_fn)
        if accepted is not None and not _has_var_kw(flow_fn):
            unknown = sorted(set(params) - accepted)
            if unknown:
                raise ConfigError(
                    f"evaluations.{name}.parameters: {unknown} are not parameters of the evaluate flow "
                    f"(it takes {sorted(accepted)})"
                )
        return params


def _parameter_names(flow_fn) -> set[str] | None:
    if flow_fn is None:
        return None
    fn = getattr(flow_fn, "fn", flow_fn)
    return set(inspect.signature(fn).parameters)


def _has_var_kw(flow_fn) -> bool:
    fn = getattr(flow_fn, "fn", flow_fn)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def _format_errors(path: Path | str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return f"{path}: invalid collections config\n" + "\n".join(lines)


def parse_config(data: dict[str, Any], path: Path | str = "<config>") -> DeployConfig:
    try:
        cfg = DeployConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc)) from None
    return cfg.model_copy(update={"path": Path(path).resolve()}) if str(path) != "<config>" else cfg


def load_config(path: str | Path | None = None) -> DeployConfig:
    """Read and validate a collections config (default: ``deployments/collections.toml``)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the collections config: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)
