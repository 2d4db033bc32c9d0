"""Sources → Article records: http(s) URLs (httpx), local files and directories, JSONL dumps.

Pure functions over plain data; the Prefect shells live in ``tasks/stages.py``. The HTTP side
lives in ``tasks/http_fetch.py`` (re-exported here); every source yields one outcome per article,
and a bad article is that article's FetchFailure, never an exception that stops the run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from query.errors import CorpusSearchError
from tasks.http_fetch import HTML_TYPES, RETRY_STATUS, TEXT_TYPES, FetchOutcome, HttpOptions, fetch_url, fetch_urls
from tasks.records import Article, FetchFailure
from tasks.sniff import binary_reason, binary_signature
from tasks.text import READ_ERRORS, open_text
from tasks.urls import canonical_url, has_credentials, url_origin, without_credentials

log = logging.getLogger(__name__)

LOCAL_SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}

__all__ = [
    "HTML_TYPES", "LOCAL_SUFFIXES", "RETRY_STATUS", "TEXT_TYPES", "FetchOutcome", "HttpOptions", "SourceError", "SourceSpec",
    "canonical_url", "classify_source", "fetch_url", "fetch_urls", "iter_directory", "iter_jsonl", "list_directory",
    "open_text", "parse_dump_line", "parse_dump_lines", "read_local_file", "url_origin",
]

SourceKind = Literal["url", "file", "directory", "jsonl"]


class SourceError(CorpusSearchError, ValueError):
    """A source argument that cannot be indexed as given (bad scheme, missing path, unsupported type)."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source argument. ``root`` is what the rows' ``source`` column holds for local sources."""

    spec: str
    kind: SourceKind
    root: str
    #: The identity root of the articles when it is not ``root``: ``records:...`` for ``index_records``,
    #: whose dump file is a temporary copy.
    origin: str = ""


def _bad_host(url: str) -> str | None:
    """Why the host of ``url`` can name no server (a space, a control character, an empty label), or None."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if not host:
        return "no host"
    if host.startswith("[") or ":" in host:  # an IPv6 literal: canonical_url has checked it
        return None
    if any(c.isspace() or ord(c) < 32 or c in '<>"{}|\\^`' for c in host):
        return f"the host {host!r} contains a character no host name has"
    try:
        host.encode("idna")  # empty or over-long labels ("a..b"), for ASCII and international names alike
    except UnicodeError:
        return f"the host {host!r} is not a valid host name"
    return None


def refuse_credential_urls(sources: Iterable[str]) -> None:
    """Raise ``classify_source``'s ``SourceError`` for the first URL with a user name or password: passed on to
    a flow, the password would reach its stored parameters, its logs and its notifications."""
    for s in sources:
        if "://" in s and has_credentials(s):
            classify_source(s)  # raises, naming the URL without them


def classify_source(spec: str) -> SourceSpec:
    """Say what kind of source ``spec`` is. Unknown URL schemes and missing paths are clear errors."""
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise SourceError(f"source {without_credentials(spec)!r}: only http:// and https:// URLs are fetched "
                              f"(got {scheme}://)")
        if has_credentials(spec):  # first: a parser's error could quote part of the password (as a "port")
            # Dropped from the URL, they were silently never sent: the server said 401.
            raise SourceError(f"source {without_credentials(spec)[:200]!r}: a user name or password in a URL is not "
                              "sent (nor stored in the index): corpus-search fetches public pages only")
        try:
            url = canonical_url(spec)
        except ValueError as exc:  # a bad port or IPv6 literal: say which source, not just why
            raise SourceError(f"source {without_credentials(spec)[:200]!r}: invalid URL ({exc}); check the host and "
                              "port") from exc
        if why := _bad_host(url):  # would be retried against DNS for seconds, then fail the whole run as a fetch
            raise SourceError(f"source {without_credentials(spec)[:200]!r}: invalid URL ({why}); check the host")
        return SourceSpec(url, "url", url_origin(url))
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"source {spec!r} does not exist: give a URL, a directory, a file, or a .jsonl(.gz) dump")
    root = str(path.resolve())
    if path.is_dir():
        return SourceSpec(spec, "directory", root)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return SourceSpec(spec, "jsonl", root)
    if path.suffix.lower() in LOCAL_SUFFIXES:
        return SourceSpec(spec, "file", root)
    if path.suffix.lower() == ".json":
        _refuse_unless_json_lines(spec, path)
        return SourceSpec(spec, "jsonl", root)
    raise SourceError(
        f"source {spec!r}: unsupported file type {path.suffix!r}; "
        f"supported: {', '.join(sorted(LOCAL_SUFFIXES))}, .jsonl, .jsonl.gz, .ndjson, .json (one record per line)"
    )


def _refuse_unless_json_lines(spec: str, path: Path) -> None:
    """A ``.json`` file is a dump when it holds one JSON record per line (many exports name theirs so).

    A JSON array, or one record spread over lines, would be read as nothing but broken lines: refused up
    front, saying how to convert it, rather than indexed as one failure per line. Its first record is read as
    a dump's would be (a byte-order mark dropped), however long; an empty file is an empty dump."""
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == b"\x1f\x8b":
                raise SourceError(f"source {spec!r} is gzip-compressed: name it {path.name}.gz (or .jsonl.gz) to index it "
                                  "as a compressed dump")
        with open_text(path) as fh:
            lead = fh.read(1)
            while lead.isspace():
                lead = fh.read(1)
            # A minified array is one line of the whole file: refused on its first character, not read whole.
            first = "" if lead in ("", "[") else lead + fh.readline()
    except READ_ERRORS as exc:
        raise SourceError(f"source {spec!r} cannot be read: {exc}") from exc
    if not lead:
        return
    try:
        record = json.loads(first) if lead == "{" else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        kind = "a JSON array" if lead == "[" else "not one JSON record per line"
        raise SourceError(
            f"source {spec!r}: a .json file is indexed as a dump of one JSON record per line, and this one is {kind}. "
            "Convert it, e.g. jq -c '.[]' in.json > out.jsonl (an array) or jq -c . in.json > out.jsonl, "
            "and index the .jsonl")


# --------------------------------------------------------------------------- local files


def _setting(name: str):
    """A setting's value from the environment, for callers that pass no explicit option."""
    from query.settings import get_settings

    return getattr(get_settings(), name)


def read_local_file(path: Path, *, doc_id: str, source: str, max_bytes: int | None = None,
                    origin: str = "") -> Article | FetchFailure:
    """Read one local file as an Article (bytes are decoded later, with charset detection for HTML).

    ``source`` is the file as a user opens it, ``origin`` the root it is indexed through (its failures
    carry the origin: that is the identity of the article, whose rows a failure keeps).

    Files over ``max_bytes`` (default: ``fetch_max_bytes``), non-regular files (a FIFO would block,
    a device never ends) and binary content are failures, so the file's old rows are kept.
    """
    name = source
    source = origin or source  # what failures carry (see above)
    kind = LOCAL_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return FetchFailure(doc_id, source, f"unsupported file type {path.suffix!r}")
    limit = _setting("fetch_max_bytes") if max_bytes is None else max_bytes
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return FetchFailure(doc_id, source, f"{path} is not a regular file")
        if info.st_size > limit:
            return FetchFailure(doc_id, source, f"{path} is {info.st_size} bytes, over the limit of {limit} "
                                "(raise CORPUS_SEARCH_FETCH_MAX_BYTES to index it)")
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)  # the file may have grown since stat()
    except OSError as exc:
        return FetchFailure(doc_id, source, f"cannot read {path}: {exc.strerror or exc}")
    if len(raw) > limit:
        return FetchFailure(doc_id, source, f"{path} is over the limit of {limit} bytes "
                            "(raise CORPUS_SEARCH_FETCH_MAX_BYTES to index it)")
    if why := binary_signature(raw):
        return FetchFailure(doc_id, source, f"{path}: binary content, not text ({why})")
    from tasks.html import decode_body, decode_text

    body = decode_body(raw) if kind == "html" else decode_text(raw)
    if why := binary_reason(raw, body):
        return FetchFailure(doc_id, source, f"{path}: binary content, not text ({why})")
    return Article(doc_id=doc_id, source=name, title="", body=body, kind=kind, origin=origin)  # type: ignore[arg-type]


def hidden_path(rel: Path) -> bool:
    """Whether a folder walk skips ``rel`` (relative to its root): a hidden file or folder (.git and friends)."""
    return any(part.startswith(".") for part in rel.parts)


def list_directory(root: Path, *, follow_symlinks: bool | None = None,
                   unreadable: list[str] | None = None) -> list[str]:
    """Relative POSIX paths of every supported file under ``root``, sorted; hidden files and folders skipped.

    A folder that cannot be listed, or a file that cannot be looked at (permission denied, a stale network
    mount), is added to ``unreadable`` (relative paths): its files are unknown, not gone, so the caller must
    keep their rows. An unreadable ``root`` raises its ``OSError``.

    Symbolic links that lead outside ``root`` are skipped (files) and not descended (folders) unless
    ``follow_symlinks`` (default: the ``follow_symlinks`` setting); links within the tree are fine.
    Walking never follows a folder link twice, so link loops end, and a file reached by several paths
    (a link to a file or folder of the tree) is listed once: under its own path when that is listed,
    else under its first path in sorted order.
    """
    follow = _setting("follow_symlinks") if follow_symlinks is None else follow_symlinks
    real_root = root.resolve()

    def inside(p: Path) -> bool:
        try:
            return follow or p.resolve().is_relative_to(real_root)
        except (OSError, RuntimeError):  # a broken or looping link
            return False

    found: dict[Path, list[str]] = {}  # a file's real path -> the paths that reach it
    visited: set[Path] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            real = folder.resolve()
        except (OSError, RuntimeError):
            continue
        if real in visited:  # a loop, or a second link to the same folder
            continue
        visited.add(real)
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=errors.append):
            base = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for d in dirnames:
                if (base / d).is_symlink() and inside(base / d):
                    stack.append(base / d)  # os.walk does not enter links: walk it on its own
            for name in filenames:
                p = base / name
                rel = p.relative_to(root)
                if p.suffix.lower() not in LOCAL_SUFFIXES or hidden_path(rel):
                    continue
                try:
                    regular = stat.S_ISREG(p.stat().st_mode)
                except OSError as exc:
                    if exc.errno not in _GONE:  # it is there, but cannot be looked at: unknown, not gone
                        _note(unreadable, rel)
                    continue
                if regular and inside(p):
                    try:
                        found.setdefault(p.resolve(), []).append(rel.as_posix())
                    except (OSError, RuntimeError):
                        continue
        for exc in errors:  # os.walk skips a folder it cannot list, silently unless asked
            where = Path(exc.filename) if exc.filename else folder
            if where == root:
                raise exc
            _note(unreadable, where.relative_to(root))
    return sorted(_one_path(real, paths, real_root) for real, paths in found.items())


#: ``stat`` errors that mean "no file here": removed meanwhile, a broken or looping link.
_GONE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


def vanished(path: Path) -> bool:
    """Whether nothing is at ``path`` any more (removed, or a link that now leads nowhere)."""
    try:
        path.stat()
    except OSError as exc:
        return exc.errno in _GONE
    return False


def _note(unreadable: list[str] | None, rel: Path) -> None:
    if unreadable is not None:
        unreadable.append(rel.as_posix())


def _one_path(real: Path, paths: list[str], real_root: Path) -> str:
    """The path a file is indexed under when links reach it by several: its own, so that removing a link
    never re-indexes the file under a new id."""
    own = real.relative_to(real_root).as_posix() if real.is_relative_to(real_root) else None
    return own if own in paths else min(paths)


def iter_directory(spec: SourceSpec) -> Iterator[Article | FetchFailure]:
    """Every supported file under the directory, in a stable order; doc_id is the relative POSIX path."""
    root = Path(spec.root)
    for rel in list_directory(root):
        yield read_local_file(root / rel, doc_id=rel, source=str(root / rel), origin=spec.root)


# --------------------------------------------------------------------------- JSONL dumps


#: The key of a line that stands for a record ``corpus_search.index_records`` could not take: read as that
#: record's failure (:func:`parse_dump_lines`, records only), so one bad record never aborts the call.
RECORD_ERROR_KEY = "__corpus_search_record_error__"


def record_id(obj: Mapping, names: tuple[str, ...] = ("_id", "id"), *, truthy: bool = False) -> str | None:
    """A record's id: the first of ``names`` that is given, as text (``str()``, as every version before wrote
    it, so a collection's ids stay what they are); None when none is.

    The text format (BEIR) reads ``_id`` before ``id``, the paragraphs format (Simple Wikipedia) ``id``
    before ``_id`` with ``truthy`` (a 0 or an empty id is no id there, and the title names the record):
    the rules of the versions that indexed the collections in use (taking ``id`` first re-keyed every record
    of a dump that has both, and deleted what it took for gone). A null is no id (it was the text "None",
    one id for every such record). Raises ``ValueError`` for an empty, blank or NUL-holding id.
    """
    for name in names:
        value = obj.get(name)
        if value is None or (truthy and not value):
            continue
        text = value if isinstance(value, str) else str(value)
        if not text.strip() or "\x00" in text:
            raise ValueError(f"'{name}' {text!r} cannot name a record: give it a non-empty '{name}'")
        return text
    return None


def _format_id(obj: Mapping) -> str | None:
    """:func:`record_id` by the rule of the record's format: ``id`` (truthy) before ``_id`` for the paragraphs
    format, ``_id`` before ``id`` for the text format."""
    return record_id(obj, ("id", "_id"), truthy=True) if "paragraphs" in obj else record_id(obj)


def _refuse_lone_surrogates(obj: object, where: str = "") -> None:
    """Raise ``ValueError`` naming the field that holds a lone surrogate (JSON's ``"\\udce9"``, a byte a
    broken export escaped): no UTF-8 can hold it, so the write of its whole batch failed."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where or 'a field'} holds {obj[exc.start:exc.end]!r}, half of a UTF-16 pair that "
                             "no text can hold (a broken export?): fix that field") from None
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _refuse_lone_surrogates(key, f"a key of {where or 'the record'}")
            _refuse_lone_surrogates(value, f"'{key}'" if not where else f"{where}.{key}")
    elif isinstance(obj, list):
        for value in obj:
            _refuse_lone_surrogates(value, where)


def parse_dump_line(obj: Mapping, *, source: str) -> Article:
    """One JSONL record → Article. Two formats: Simple-Wikipedia (title, paragraphs) and BEIR (_id, title, text).

    Every other top-level field of the record becomes the article's metadata (text; lists joined, other values
    as JSON), a BEIR ``metadata`` object's keys included; ``published`` / ``date`` give the publication time.
    The id is :func:`record_id`'s, by each format's rule.
    """
    doc_id = _format_id(obj)
    if "paragraphs" in obj:
        paragraphs = obj["paragraphs"]
        if not isinstance(paragraphs, list) or not all(isinstance(p, str) for p in paragraphs):
            raise ValueError("'paragraphs' must be a list of strings")
        title = str(obj.get("title") or "")
        doc_id = doc_id if doc_id is not None else title
        if not doc_id.strip():
            raise ValueError("a record needs 'id' or 'title'")
        article = Article(doc_id, source, title, "\n\n".join(paragraphs), "paragraphs", paragraphs=list(paragraphs))
    elif "text" in obj:
        if doc_id is None:
            raise ValueError("the record has 'text' but no 'id' or '_id': give it one (ids say which record a "
                             "later version replaces)")
        text = obj["text"]
        if not isinstance(text, str):
            raise ValueError("'text' must be a string")
        article = Article(doc_id, source, str(obj.get("title") or ""), text, "text")
    else:
        raise ValueError(
            "unknown record format: expected {'id', 'title', 'text'} (BEIR corpus.jsonl: '_id') or "
            "{'id', 'title', 'paragraphs': [...]} (Simple Wikipedia)"
        )
    from tasks.meta import record_metadata

    # Checked on the record as read, so the message names the field; metadata values are made from it.
    _refuse_lone_surrogates(obj)
    article.metadata, article.published = record_metadata(obj, exclude=("id", "_id", "title", "text", "paragraphs"))
    article.title_from_id = False  # a record without a title has none: its id is no title
    return article


def parse_dump_lines(
    spec: SourceSpec, lines: Iterable[tuple[int, str]], *, max_bytes: int | None = None
) -> list[Article | FetchFailure]:
    """Parse numbered JSONL lines of a dump; a malformed, oversized or too deeply nested line becomes a
    failure naming file:line, never an exception (the other lines are still indexed).

    A record that parsed and has an id fails under that id (``keyed``): its indexed rows are kept, and the
    rest of the dump is still compared with the table, so records gone from it are deleted.
    """
    path = Path(spec.root)
    limit = _setting("fetch_max_bytes") if max_bytes is None else max_bytes
    out: list[Article | FetchFailure] = []
    for lineno, line in lines:
        # Records given to index_records are named by their number, not by the temporary dump holding them.
        where = f"record {lineno}" if spec.origin else f"{path}:{lineno}"
        label = where if spec.origin else f"{path.name}:{lineno}"
        known: str | None = None
        try:
            if len(line) > limit:  # characters >= bytes/4: cheap, and a fair bound on work
                raise ValueError(f"line longer than the limit of {limit} characters (CORPUS_SEARCH_FETCH_MAX_BYTES): "
                                 "raise it to index this record")
            obj = json.loads(line)
            if not isinstance(obj, Mapping):
                raise ValueError(f"a record must be a JSON object, not {type(obj).__name__}")
            try:
                known = _format_id(obj)
                _refuse_lone_surrogates(known, "its id")
            except ValueError:
                known = None
            if spec.origin and isinstance(error := obj.get(RECORD_ERROR_KEY), str):
                raise ValueError(error.removeprefix(f"{where}: ").removeprefix(f"{where} "))
            article = parse_dump_line(obj, source=spec.root)
            # The dump (or the records' origin) is the identity; what a user opens is the record's own
            # URL or source when it names one, else the dump itself.
            article.origin = spec.origin or spec.root
            named = obj.get("url") or obj.get("source")
            article.source = named.strip() if isinstance(named, str) and named.strip() else article.origin
            article.replaced_bytes = "\ufffd" in line  # the dump is read with errors="replace"
            out.append(article)
        except RecursionError:
            out.append(FetchFailure(label, spec.origin or spec.root, f"{where}: JSON nested too deeply"))
        except Exception as exc:  # noqa: BLE001 - one bad line never aborts the dump
            if known is not None:
                out.append(FetchFailure(known, spec.origin or spec.root, f"{where} (id {known!r}): {exc}", keyed=True))
            else:
                out.append(FetchFailure(label, spec.origin or spec.root, f"{where}: {exc}"))
    return out


def iter_jsonl(spec: SourceSpec) -> Iterator[Article | FetchFailure]:
    """Stream a JSONL dump (plain or .gz) without loading it whole."""
    with open_text(Path(spec.root)) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield from parse_dump_lines(spec, [(lineno, line)])

