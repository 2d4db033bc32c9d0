"""Read side of collection versions: name rules, resolving a version number or tag, clear errors.

Every write to a LanceDB table makes a new version; a tag names one. A reader may pin a version
(``Searcher(..., version="prod")``) so that a bad reindex never reaches it. No Prefect, no tasks.
"""

from __future__ import annotations

import re

from query.errors import CorpusSearchError, InvalidNameError

#: Suffix of the small table that logs index runs, rollbacks and eval tags of a collection.
RUNS_SUFFIX = "__runs"
#: Companion tables are not collections: they hold a collection's article state and run log.
COMPANION_SUFFIXES = ("__articles", RUNS_SUFFIX)
#: Lance accepts these characters in a tag; an all-digit tag would read as a version number.
_TAG_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class VersionNotFoundError(CorpusSearchError, LookupError):
    """A version number or tag that the collection does not have (never made, or cleaned up)."""


def runs_table_name(collection: str) -> str:
    """The companion table logging the runs (index, rollback, eval tag) of ``collection``."""
    return f"{collection}{RUNS_SUFFIX}"


def is_companion_table(name: str) -> bool:
    """True for ``C__articles`` and ``C__runs``: tables that belong to a collection, not collections."""
    return name.endswith(COMPANION_SUFFIXES)


#: Longest tag name: Lance stores a tag as a file named after it (a file name is at most 255 bytes).
MAX_TAG_CHARS = 100


def check_tag_name(name: str) -> str:
    """Refuse tag names Lance rejects, and all-digit names that would be read as version numbers.

    Lance's refs follow git's rules beyond the characters: no leading or trailing dot, no "..", no ".lock" ending.
    """
    if (not isinstance(name, str) or not _TAG_RE.fullmatch(name) or name.isdigit() or name.startswith(".")
            or name.endswith(".") or ".." in name or name.endswith(".lock") or len(name) > MAX_TAG_CHARS):
        raise InvalidNameError(
            f"tag {name!r} is not a valid tag name: use up to {MAX_TAG_CHARS} letters, digits, '.', '-' or '_', "
            "with at least one non-digit, not starting or ending with '.', without '..' and not ending in '.lock' "
            "(e.g. prod, eval-2026-11-27)"
        )
    return name


def parse_version(value: int | str) -> int | str:
    """``"12"`` → 12 (a version number); any other text is a tag name."""
    if isinstance(value, bool) or not isinstance(value, int | str):  # True is an int, and version 1 to Python
        from query.errors import InvalidQueryError

        raise InvalidQueryError(f"a version is a number or a tag name, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def available_hint(table, *, recent: int = 5) -> str:
    """'recent versions: 14, 13, ...; tags: prod (v9), ...' for error messages."""
    versions = sorted((int(v["version"]) for v in table.list_versions()), reverse=True)
    tags = sorted(table.tags.list().items(), key=lambda kv: kv[1]["version"], reverse=True)
    shown = ", ".join(map(str, versions[:recent])) + (", ..." if len(versions) > recent else "")
    tag_text = ", ".join(f"{name} (v{info['version']})" for name, info in tags) or "none"
    return f"recent versions: {shown or 'none'}; tags: {tag_text}"


def resolve_version(table, version: int | str, *, collection: str) -> int:
    """The version number that ``version`` (a number or a tag) names; a clear error when there is none."""
    version = parse_version(version)
    if isinstance(version, str):
        tags = table.tags.list()
        if version in tags:
            return int(tags[version]["version"])
        raise VersionNotFoundError(
            f"collection {collection!r} has no tag {version!r} ({available_hint(table)}). "
            f"List them with: corpus-search versions {collection}"
        )
    if version in {int(v["version"]) for v in table.list_versions()}:
        return version
    raise VersionNotFoundError(
        f"collection {collection!r} has no version {version}: it was never made or was removed by "
        f"retention cleanup ({available_hint(table)}). List them with: corpus-search versions {collection}"
    )


def checkout(table, version: int | str, *, collection: str) -> int:
    """Pin ``table`` (in place) to ``version``; returns the version number. Writes through it then fail."""
    number = resolve_version(table, version, collection=collection)
    # The number, not the tag: a tag moved later (prod → a newer version) must not move this reader.
    table.checkout(number)
    return number
