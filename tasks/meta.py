"""What an article says about itself: metadata (author, keywords, a dump's own fields...) and when it was published.

Three readers, one cleaning rule:

* HTML: ``<meta>`` tags, ``itemprop`` microdata, JSON-LD and ``<time datetime>``, read from the lxml tree that
  ``tasks/extract.py`` already parsed (a hand-written reader: on the 181 public benchmark pages it is ~13x
  cheaper than ``trafilatura.metadata.extract_metadata`` and finds the same day on 144 of the 157 pages where
  both find a date; see benchmarks/RESULTS.md, "Headings are context, not passages").
* Markdown: YAML front matter (a ``---`` block at the very top).
* JSONL dumps: every extra top-level field of a record (``tasks.fetch.parse_dump_line``).

Metadata is repeated on every paragraph row, so it is kept small: text values only (lists joined with ", ",
nested values as JSON), lower-case keys, at most :data:`MAX_KEYS` keys and :data:`MAX_VALUE_CHARS` characters
per value (a longer value is body text, not metadata, and is left out). Bad metadata never fails an article:
an unparseable date leaves ``published`` empty and keeps the raw text in the metadata.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from email.utils import parsedate_to_datetime

from tasks.text import normalize_ws

__all__ = [
    "MAX_KEYS", "MAX_VALUE_CHARS", "PUBLISHED_KEYS", "clean_metadata", "front_matter", "html_metadata",
    "merge_metadata", "metadata_text", "parse_published", "published_from", "record_metadata", "unread_published",
]

#: A value longer than this is left out: it would be repeated on every paragraph row of the article.
MAX_VALUE_CHARS = 1000
#: At most this many keys per article (the first ones win: the reader's own, then the body's).
MAX_KEYS = 64
#: Keys whose value is the publication time, in order of preference.
PUBLISHED_KEYS = ("published", "date", "pubdate", "published_at", "publication_date", "date_published",
                  "datepublished", "created")


# --------------------------------------------------------------------------------------------
# Values and dates
# --------------------------------------------------------------------------------------------


def metadata_text(value: object) -> str | None:
    """A metadata value as text: strings as they are, lists joined with ", ", mappings as JSON, None → None."""
    if value is None:
        return None
    if isinstance(value, str):
        return normalize_ws(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list | tuple | set):
        parts = [t for v in value if (t := metadata_text(v) if not isinstance(v, Mapping) else _json(v))]
        return ", ".join(parts)
    return _json(value)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def clean_metadata(items: Iterable[tuple[object, object]]) -> dict[str, str]:
    """Lower-case text keys and text values; empty values, over-long values and keys past the cap left out."""
    out: dict[str, str] = {}
    for key, value in items:
        name = normalize_ws(str(key)).lower()
        if not name or name in out:
            continue
        try:
            text = metadata_text(value)
        except (TypeError, ValueError):  # e.g. a NaN or a cyclic structure: not worth failing the article
            continue
        if not text or len(text) > MAX_VALUE_CHARS:
            continue
        out[name] = text
        if len(out) >= MAX_KEYS:
            break
    return out


def merge_metadata(reader: Mapping[str, str], body: Mapping[str, str]) -> dict[str, str]:
    """The reader's metadata (dump fields, a record's own) over what the body says: the reader wins on conflict."""
    return clean_metadata([*reader.items(), *((k, v) for k, v in body.items() if k.lower() not in reader)])


_YEAR = re.compile(r"\b\d{4}\b")
# Epoch numbers: seconds from 1e8 (1973) up to 1e11 (year 5138), milliseconds from there up to 1e14.
_EPOCH_MIN, _EPOCH_MS, _EPOCH_MAX = 1e8, 1e11, 1e14


#: Zone abbreviations a written date uses, as UTC offsets in seconds: dateutil knows none (it warned, and read
#: "10:00 EST" as 10:00 UTC, five hours off). Only unambiguous ones: IST, BST or CST-as-China stay unknown.
_ZONE_ABBREVIATIONS = {name: hours * 3600 for name, hours in {
    "UT": 0, "UTC": 0, "GMT": 0, "WET": 0, "WEST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7, "AKST": -9,
    "AKDT": -8, "HST": -10, "JST": 9, "KST": 9, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13}.items()}


#: A numeric day, month and year (``5.3.2024``, ``05/03/24``): the first two are in the writer's order.
_NUMERIC_DMY = re.compile(r"(?<![\d./-])\d{1,2}([./-])\d{1,2}\1(?:\d{4}|\d{2})(?![\d./-])")
#: Three-letter codes of the month-first languages' two-letter ones (``eng`` is ``en``).
_ISO_639_2 = {"eng": "en"}
#: Languages that write a numeric date month first; "en" without a region is read so too (the old default).
_MONTH_FIRST_LANGUAGES = frozenset({"en", "en-us", "en-ph", "en-ca", "en-as", "en-gu", "en-pr", "en-vi", "en-um"})


def day_first(text: str, language: str | None = None) -> bool:
    """Whether the numeric date in ``text`` gives its day before its month.

    With dots (``5.3.2024``) always: no language writes month.day.year. With slashes or dashes, by the
    page's ``language`` (``de``, ``en-GB``, ``fr_FR``), month first where it is unknown or US English.
    A year-first date (``2024/03/05``) is never read day first.
    """
    if not (found := _NUMERIC_DMY.search(text)):
        return False
    if found.group(1) == ".":
        return True
    lang = (language or "").strip().lower().replace("_", "-").split(",")[0].split(";")[0].strip()
    # Only a language tag decides ("de", "en-GB", "fra"): a name ("English") or anything else read is no
    # evidence, and the old month-first reading stays.
    if not re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*", lang):
        return False
    base, _, region = lang.partition("-")
    lang = _ISO_639_2.get(base, base) + (f"-{region}" if region else "")
    return lang not in _MONTH_FIRST_LANGUAGES


def parse_published(value: object, language: str | None = None) -> datetime | None:
    """A timezone-aware UTC datetime from ISO 8601, RFC 2822, a date, an epoch number or a common written date.

    A date without time is midnight UTC; a time without zone is taken as UTC. A numeric date is read in the
    order of ``language`` (:func:`day_first`). Anything else → None (never raises).
    """
    try:
        return _parse_published(value, language)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _parse_published(value: object, language: str | None) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):  # YAML front matter gives date objects for "2024-03-01"
        return _utc(datetime.combine(value, time(), tzinfo=UTC))
    if isinstance(value, int | float):
        seconds = float(value)
        if not _EPOCH_MIN <= abs(seconds) < _EPOCH_MAX:
            return None  # a bare year or a count, not a point in time
        if abs(seconds) >= _EPOCH_MS:
            seconds /= 1000
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        return None
    text = normalize_ws(value)
    if not text or len(text) > 100:
        return None
    iso = text.replace("Z", "+00:00").replace("z", "+00:00") if text[-1:] in "Zz" else text
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        pass
    else:
        return _utc(parsed)
    if re.fullmatch(r"\d{4}", text):  # a year alone: its first day
        return _utc(datetime(int(text), 1, 1, tzinfo=UTC))
    if re.fullmatch(r"\d{4}-\d{2}", text):
        year, month = text.split("-")
        return _utc(datetime(int(year), int(month), 1, tzinfo=UTC))
    if text.rsplit(" ", 1)[-1].upper() not in _ZONE_ABBREVIATIONS:  # email reads "10:00 CET" as 10:00 UTC
        try:
            return _utc(parsedate_to_datetime(text))  # RFC 2822: "Tue, 05 Mar 2024 10:00:00 +0100"
        except (TypeError, ValueError, IndexError):
            pass
    if not _YEAR.search(text):  # dateutil would fill a missing year (or everything) from today
        return None
    from dateutil import parser as dateutil_parser

    default = datetime(1, 1, 1)
    parsed = dateutil_parser.parse(text, default=default, tzinfos=_ZONE_ABBREVIATIONS,
                                   dayfirst=day_first(text, language))
    if parsed.year == 1:
        return None
    return _utc(parsed)


def _utc(value: datetime) -> datetime:
    if not _FIRST_YEAR <= value.year <= _LAST_YEAR:  # 0001-01-01 / 9999-12-31: a CMS's "no date" placeholder
        raise ValueError(f"implausible year {value.year}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_FIRST_YEAR, _LAST_YEAR = 1000, 2200


def published_from(metadata: Mapping[str, object]) -> datetime | None:
    """The first parseable value among :data:`PUBLISHED_KEYS` (keys compared lower-case)."""
    lowered = {str(k).lower(): v for k, v in metadata.items()}
    language = next((str(lowered[k]) for k in ("language", "lang", "locale", "inlanguage") if lowered.get(k)), None)
    for key in PUBLISHED_KEYS:
        if key in lowered and (when := parse_published(lowered[key], language)) is not None:
            return when
    return None


def unread_published(metadata: Mapping[str, object]) -> str | None:
    """``"key: value"`` of a publication-time field (:data:`PUBLISHED_KEYS`) that :func:`parse_published`
    could not read, for an article left without ``published``; None when it has no such field."""
    lowered = {str(k).lower(): v for k, v in metadata.items()}
    for key in PUBLISHED_KEYS:
        if (value := lowered.get(key)) not in (None, ""):
            return f"{key}: {value}"
    return None


def record_metadata(record: Mapping, *, exclude: Iterable[str]) -> tuple[dict[str, str], datetime | None]:
    """A dump record's fields besides ``exclude`` as (metadata, published); a nested ``metadata`` object is
    flattened (BEIR: ``{"metadata": {"url": ..., "pubmed_id": ...}}``; top-level fields win). Never raises."""
    try:
        skip = {*exclude, "metadata"}
        extra = [(k, v) for k, v in record.items() if k not in skip]
        nested = record.get("metadata")
        if isinstance(nested, Mapping):
            extra.extend(nested.items())
        elif nested is not None:
            extra.append(("metadata", nested))
        return clean_metadata(extra), published_from(dict(reversed(extra)))
    except Exception:  # noqa: BLE001 - metadata is a bonus: the record's text is still indexed
        return {}, None


# --------------------------------------------------------------------------------------------
# Markdown front matter
# --------------------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)
#: Hugo's and Zola's TOML front matter, between ``+++`` lines.
_TOML_FRONT_MATTER = re.compile(r"\A\ufeff?\+\+\+[ \t]*\r?\n(.*?)^\+\+\+[ \t]*(?:\r?\n|\Z)", re.S | re.M)


def front_matter(body: str) -> tuple[dict[str, object], str]:
    """(YAML front matter as a mapping, the body after it); ({}, body) when there is none or it is not YAML.
    TOML front matter between ``+++`` lines (Hugo, Zola) is read too.

    Plain values are read as YAML 1.2 reads them where PyYAML's YAML 1.1 surprises: ``title: No``,
    ``zip: 02134``, ``version: 1.10`` and ``time: 12:30`` stay those strings (not false, 1116, 1.1 and 750);
    ``draft: False``, ``depth: 3`` and ``date: 2024-03-05 10:00`` keep their types (false, 3, an ISO time).
    See :func:`_front_matter_loader`.
    """
    if toml := _TOML_FRONT_MATTER.match(body):  # Hugo, Zola: +++ ... +++
        import tomllib

        try:
            return tomllib.loads(toml.group(1)), body[toml.end():]
        except tomllib.TOMLDecodeError:
            return {}, body
    match = _FRONT_MATTER.match(body)
    if not match:
        return {}, body
    import yaml

    try:
        data = yaml.load(match.group(1), Loader=_front_matter_loader())  # a SafeLoader subclass
    except Exception:  # noqa: BLE001 - YAML refused it: plain "key: value" lines are still front matter
        data = _plain_pairs(match.group(1))
    if not isinstance(data, Mapping):
        return {}, body
    return dict(data), body[match.end():]


@functools.cache
def _front_matter_loader() -> type:
    """A ``yaml.SafeLoader`` that reads plain scalars as YAML 1.2 does where YAML 1.1 (PyYAML's) surprises.

    ``yes``/``no``/``on``/``off``/``y``/``n`` stay text (only ``true``/``false`` in any case are booleans);
    an integer with a leading zero, ``0x``/``0o``, ``_`` or a colon (``0755``, ``02134``, ``12:30``) stays text;
    a float that would not read back as written (``1.10`` → 1.1) stays text. Timestamps keep their type, and an
    impossible one (``2022-02-30``) is text rather than a reason to drop the block.
    """
    import yaml

    class FrontMatterLoader(yaml.SafeLoader):
        pass

    def typed_if(construct, keep_type):
        def construct_checked(loader, node):
            try:
                value = construct(loader, node)
            except (ValueError, OverflowError):
                return loader.construct_scalar(node)
            if node.style is None and not keep_type(node.value, value):  # plain (unquoted) scalars only
                return loader.construct_scalar(node)
            return value

        return construct_checked

    rules = {
        "bool": lambda text, _: text.lower() in ("true", "false"),
        "int": lambda text, _: bool(_YAML12_INT.fullmatch(text)),
        "float": lambda text, value: metadata_text(value) == text,
        "timestamp": lambda text, _: True,
    }
    for tag, keep_type in rules.items():
        name = f"tag:yaml.org,2002:{tag}"
        FrontMatterLoader.add_constructor(name, typed_if(yaml.SafeLoader.yaml_constructors[name], keep_type))
    return FrontMatterLoader


#: An integer as YAML 1.2's core schema reads one: decimal digits, no leading zero.
_YAML12_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")


_PAIR = re.compile(r"^([A-Za-z_][\w .-]*?)[ \t]*:(?:[ \t]+(.*?))?[ \t]*$")


def _plain_pairs(block: str) -> dict[str, str] | None:
    """A block YAML refuses (one impossible date, ``date: 2022-02-30``, fails it all) read as ``key: value``
    lines of text; None unless every line is one, so that a dashed rule around other text stays text."""
    pairs: dict[str, str] = {}
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not (m := _PAIR.match(line)):
            return None
        pairs[m.group(1)] = (m.group(2) or "").strip().strip("'\"")
    return pairs or None


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

# <meta name/property/itemprop> → our key, in order of preference within a key.
_META_KEYS: dict[str, tuple[str, ...]] = {
    "published": ("article:published_time", "og:article:published_time", "article:published", "datepublished", "date",
                  "dc.date.issued", "dcterms.issued", "dc.date", "dcterms.date", "dcterms.created",
                  "pubdate", "publishdate", "publish-date", "sailthru.date", "parsely-pub-date", "citation_date",
                  "citation_publication_date"),
    "modified": ("article:modified_time", "og:updated_time", "datemodified", "dcterms.modified", "last-modified"),
    "author": ("author", "article:author", "dc.creator", "dcterms.creator", "citation_author", "parsely-author",
               "sailthru.author", "byl"),
    "keywords": ("keywords", "news_keywords", "article:tag", "parsely-tags", "sailthru.tags"),
    "description": ("description", "og:description", "twitter:description", "dc.description"),
    "site_name": ("og:site_name", "application-name"),
    "section": ("article:section", "parsely-section"),
    "language": ("og:locale", "content-language", "dc.language"),
}
_META_LOOKUP = {name: (key, rank) for key, names in _META_KEYS.items() for rank, name in enumerate(names)}
# Names whose values add up (several <meta property="article:tag">); the rest take their first value.
_MULTI = frozenset({"article:tag", "article:author", "citation_author"})
_ARTICLE_TYPES = re.compile(r"article|posting|report|review|recipe|webpage|creativework|howto|qapage", re.I)
_CHROME = frozenset({"nav", "header", "footer", "aside"})


def html_metadata(tree) -> tuple[dict[str, str], datetime | None]:
    """(metadata, published) of a page from its lxml tree; never raises (bad markup → what could be read)."""
    try:
        return _html_metadata(tree)
    except Exception:  # noqa: BLE001 - metadata is a bonus: a reader bug must not lose the page
        return {}, None


def _html_metadata(tree) -> tuple[dict[str, str], datetime | None]:
    found: dict[str, tuple[int, list[str]]] = {}  # key → (rank of the name it came from, values)
    dates: list[tuple[int, str]] = []  # every published candidate: the best-ranked may be a placeholder

    def offer(name: str, value: str | None) -> None:
        if not value or (hit := _META_LOOKUP.get(name.strip().lower())) is None:
            return
        key, rank = hit
        value = normalize_ws(value)
        if not value or (key == "author" and _URL.match(value)):  # article:author is often a profile URL
            return
        if key == "published":
            dates.append((rank, value))
        current = found.get(key)
        if current is None or rank < current[0]:
            found[key] = (rank, [value])
        elif rank == current[0] and name.strip().lower() in _MULTI and value not in current[1]:
            current[1].append(value)

    for meta in tree.iter("meta"):
        attrs = meta.attrib
        if not (content := attrs.get("content")):
            continue
        # One tag may name several things: property="article:published" itemprop="datePublished dateCreated".
        for attr in ("property", "name", "itemprop", "http-equiv"):
            for name in (attrs.get(attr) or "").split():
                offer(name, content)
    # Microdata on other elements (<time itemprop="datePublished">); a bare @itemprop scan filtered here is
    # twice as fast as an XPath predicate on its value (measured on the 181 benchmark pages).
    for element in tree.xpath("//*[@itemprop]"):
        if element.tag != "meta" and (prop := element.get("itemprop")) in ("datePublished", "dateModified"):
            offer(prop, element.get("datetime") or element.get("content")
                  or normalize_ws(" ".join(element.itertext())))
    metadata = {key: ", ".join(values) for key, (_, values) in found.items()}
    json_ld = _json_ld(tree)
    for key, value in json_ld.items():
        metadata.setdefault(key, value)
    if "language" not in metadata and (lang := tree.get("lang") if hasattr(tree, "get") else None):
        metadata["language"] = lang
    candidates = [value for _, value in sorted(dates, key=lambda d: d[0])]
    candidates += [v for v in (json_ld.get("published"), _first_time(tree)) if v]
    published = None
    for value in candidates:  # the first that parses; its text is the metadata's (a placeholder is not)
        if (published := parse_published(value, metadata.get("language"))) is not None:
            metadata["published"] = value
            break
    return clean_metadata(metadata.items()), published


_URL = re.compile(r"https?://", re.I)


def _json_ld(tree) -> dict[str, str]:
    """datePublished, dateModified, author, keywords, description, publisher of the page's article object."""
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() != "application/ld+json":
            continue
        try:
            data = json.loads(script.text or "")
        except (ValueError, RecursionError):
            continue
        for item in _ld_items(data):
            kind = item.get("@type")
            kinds = " ".join(kind) if isinstance(kind, list) else str(kind or "")
            if not _ARTICLE_TYPES.search(kinds) or not item.get("datePublished") and not item.get("author"):
                continue
            out: dict[str, str] = {}
            for key, field in (("published", "datePublished"), ("modified", "dateModified"),
                               ("keywords", "keywords"), ("description", "description"), ("section", "articleSection")):
                if (text := metadata_text(item.get(field)) if not isinstance(item.get(field), Mapping) else None):
                    out[key] = text
            if (authors := _names(item.get("author"))):
                out["author"] = authors
            if (publisher := _names(item.get("publisher"))):
                out["site_name"] = publisher
            return out
    return {}


def _ld_items(data: object, depth: int = 0) -> Iterable[Mapping]:
    """Every JSON-LD object, top level first, through lists and ``@graph``, not deeper than a few levels."""
    if depth > 3:
        return
    if isinstance(data, list):
        for item in data:
            yield from _ld_items(item, depth + 1)
    elif isinstance(data, Mapping):
        yield data
        if "@graph" in data:
            yield from _ld_items(data["@graph"], depth + 1)


def _names(value: object) -> str:
    """A JSON-LD person/organisation (or a list of them) as names joined with ", "."""
    if isinstance(value, str):
        return normalize_ws(value)
    if isinstance(value, Mapping):
        name = value.get("name")
        return normalize_ws(name) if isinstance(name, str) else ""
    if isinstance(value, list):
        return ", ".join(n for v in value if (n := _names(v)))
    return ""


def _first_time(tree) -> str | None:
    """``datetime`` of the first ``<time>`` in ``<article>``/``<main>``, else the first outside page chrome."""
    times = [t for t in tree.iter("time") if t.get("datetime")]
    for scoped in (True, False):
        for element in times:
            ancestors = {a.tag for a in element.iterancestors()}
            if scoped and not ancestors & {"article", "main"}:
                continue
            # An article's own <header>/<footer> often holds its date; related links sit in nav/aside.
            if ancestors & ({"nav", "aside"} if scoped else _CHROME):
                continue
            return element.get("datetime")
    return None
