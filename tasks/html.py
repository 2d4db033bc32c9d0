"""HTML → (title, paragraph blocks), with optional main-content extraction.

The indexer turns every fetched page into a list of text blocks (roughly: paragraphs) that
later stages split, filter by length and embed.  Everything here is a pure function of the
input bytes/text, never raises on broken markup or broken charsets, and uses
beautifulsoup4 (lxml parser), trafilatura, and charset_normalizer as a last-resort guesser.

Main-content extraction: the page is parsed once with lxml; trafilatura decides what the
article is (``tasks/extract.py``; it measures better on the public benchmark, see
``benchmarks/RESULTS.md``), while a readability-style scorer over our own bs4 blocks runs only
where trafilatura is weak: small pages (kept whole when they show no chrome at all), and
pages where it keeps a small share of the text.  Charset sniffing (BOM, ``<meta>``) is bs4's
``EncodingDetector``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import lxml.html
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.dammit import EncodingDetector
from bs4.element import PreformattedString
from lxml.html import HtmlElement

from tasks.extract import (
    MAX_JOINED_ROWS,
    ROW_CELL_CHARS,
    definition_text,
    joinable_row,
    parse_html,
    row_groups,
    row_text,
    trafilatura_levelled_blocks,
)
from tasks.meta import html_metadata
from tasks.sniff import utf16_without_bom
from tasks.text import normalize_ws

__all__ = ["HtmlDocument", "decode_body", "extract_html"]


@dataclass(frozen=True)
class HtmlDocument:
    """A page reduced to what the indexer needs."""

    title: str  # <title> (site suffix stripped when an <h1> agrees), else first <h1>, else ""
    blocks: list[str]  # whitespace-normalised text blocks in document order
    # Heading level of each block (1-6 for <h1>-<h6> / trafilatura's <head>, 0 for text); empty: all text.
    # Not part of equality, like the metadata: two documents with the same text are the same document.
    levels: tuple[int, ...] = field(default=(), compare=False)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)  # see tasks/meta.py
    published: datetime | None = field(default=None, compare=False)


# --------------------------------------------------------------------------------------------
# Charset decoding
# --------------------------------------------------------------------------------------------

_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([\w.:-]+)""", re.I)
# Browsers (WHATWG Encoding standard) decode some labels with a superset of the codec Python names by them,
# and pages so labelled really use the superset: latin-1 and ascii are read as windows-1252 (curly quotes and
# dashes in 0x80-0x9F), gb2312 as gb18030, shift_jis as cp932 (Windows' extensions), euc-kr as cp949, and so
# on. Python's strict codecs turned those characters into replacement characters or C1 controls. Keyed by
# Python's codec name, so that every spelling of a label (ISO_8859-1, l1, cp819, ...) maps.
_WHATWG_SUPERSETS = {"iso8859-1": "cp1252", "ascii": "cp1252", "iso8859-9": "cp1254", "tis-620": "cp874",
                     "iso8859-11": "cp874", "gb2312": "gb18030", "gbk": "gb18030", "shift_jis": "cp932",
                     "euc_kr": "cp949", "big5": "big5hkscs"}
# Labels browsers know that Python's codec registry does not.
_WHATWG_LABELS = {"windows-874": "cp874", "x-sjis": "cp932", "x-gbk": "gb18030", "x-mac-roman": "mac-roman",
                  "x-mac-cyrillic": "mac-cyrillic", "x-cp1252": "cp1252", "x-user-defined": "cp1252"}
# Share of replacement characters after a utf-8 decode above which we ask charset_normalizer.
_MAX_UTF8_ERROR_RATE = 0.01


def _codec(label: str | None, *, in_document: bool = False) -> str | None:
    """Python codec name for a charset label, or None if unknown (so the caller falls through).

    ``in_document``: the label comes from the bytes themselves (``<meta>``, ``<?xml?>``). A page cannot declare
    itself utf-16 in ASCII-compatible ``<meta>``, so browsers use utf-8 then; a Content-Type header can.
    """
    if not label:
        return None
    label = label.strip().lower()
    label = _WHATWG_LABELS.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    name = _WHATWG_SUPERSETS.get(name, name)
    wide = name.startswith("utf-16") or name.startswith("utf-32")
    return "utf-8" if wide and in_document else name


def decode_body(body: bytes, content_type: str | None = None, *, html: bool = True) -> str:
    """Decode bytes with the right charset.

    Order (WHATWG's): a byte-order mark, then the charset of the Content-Type header, then (``html``)
    ``<meta charset>`` / ``<meta http-equiv>`` / ``<?xml encoding?>`` near the start (both
    found by bs4's ``EncodingDetector``), then utf-8 or, failing that, a guess (:func:`decode_text`).
    Bad bytes are replaced (never raises).
    """
    stripped, bom_codec = EncodingDetector.strip_byte_order_mark(body)
    if bom_codec:
        return stripped.decode(bom_codec, errors="replace")
    if content_type and (match := _HEADER_CHARSET.search(content_type)):
        if codec := _codec(match.group(1)):
            return body.decode(codec, errors="replace").lstrip("\ufeff")
    declared = EncodingDetector.find_declared_encoding(body, is_html=True) if html else None
    if codec := _codec(declared, in_document=True):
        return body.decode(codec, errors="replace")
    return decode_text(body)


def decode_text(body: bytes) -> str:
    """Decode undeclared text (a ``.txt`` or ``.md`` file, an undeclared page): a byte-order mark, else utf-8.

    charset_normalizer is consulted only when the bytes fail utf-8 badly, since guessing is slow and wrong
    on short texts (which is also why ``UnicodeDammit`` does not guess before utf-8 is tried). Bad bytes are
    replaced (never raises).
    """
    stripped, bom_codec = EncodingDetector.strip_byte_order_mark(body)
    if bom_codec:
        return stripped.decode(bom_codec, errors="replace")
    if wide := utf16_without_bom(body):  # as utf-8, every other character would be a NUL
        return body.decode(wide, errors="replace")
    text = body.decode("utf-8", errors="replace")
    errors = text.count("\ufffd") - body.count(b"\xef\xbf\xbd")  # replacements made, not ones in the text
    # Legacy text: every non-ASCII byte is invalid utf-8 (a cp1252 note with four curly quotes in 2,000
    # characters was kept with U+FFFD, under the error rate). Real utf-8 with a few bad bytes has valid
    # multi-byte characters too, and stays utf-8 unless the bad bytes are many.
    legacy = errors > 0 and not any(ord(c) > 127 and c != "\ufffd" for c in text)
    if legacy and (western := _western_text(body)) is not None:
        return western
    if legacy or errors > _MAX_UTF8_ERROR_RATE * max(len(text), 1):
        try:
            from charset_normalizer import from_bytes

            matches = from_bytes(body)
            best = matches.best()
            if best is not None and best.encoding:
                # On short texts the guesser's language coherence is noise: it picked cp1250 over
                # cp1252 on a tie ("crème" → "crčme") and Baltic cp775 for French ("naïveté" →
                # "na’vetķ"). cp1252 is the WHATWG default for undeclared legacy text, so it wins
                # whenever it decodes as cleanly (no more chaos) as the guess.
                for match in matches:
                    if match.encoding == "cp1252" and match.chaos <= best.chaos:
                        best = match
                return body.decode(best.encoding, errors="replace")
        except Exception:  # a guesser must never take the page down with it
            pass
    return text


#: A Latin-1 symbol (¡-¿, ×, ÷) between two letters: what cp1250's ż, ł, ą become in cp1252 ("Za¿ó³æ").
_SYMBOL_IN_WORD = re.compile(r"[^\W\d_][\u00a1-\u00bf\u00d7\u00f7][^\W\d_]")


def _western_text(body: bytes) -> str | None:
    """Legacy bytes as cp1252 when they read as Western European text there, else None (the guesser decides).

    charset_normalizer scored short cp1252 notes cleaner as cp1250, cp850 or cp1006 ("café’s" came back as
    "cafÚÆs", "Über" as "ﻎber"). cp1252 is the WHATWG default for undeclared legacy text, and Western text
    is told apart cheaply: most of its letters are ASCII, and its non-ASCII bytes are letters or typographic
    punctuation. Cyrillic, Greek or Hebrew bytes read as cp1252 are nearly all non-ASCII letters
    ("Ïðèâåò"), and Central European ones put symbols inside words ("Za¿ó³æ"): both go to the guesser.
    """
    try:
        text = body.decode("cp1252")
    except UnicodeDecodeError:  # bytes cp1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d)
        return None
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(ord(c) > 127 for c in letters) > 0.3 * len(letters) or _SYMBOL_IN_WORD.search(text):
        return None
    return text


# --------------------------------------------------------------------------------------------
# Parsing into blocks
# --------------------------------------------------------------------------------------------

# Never content: code, media, interactive widgets and page chrome.
_DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "iframe", "nav", "header", "footer",
    "aside", "form", "button", "select", "input", "textarea", "option", "canvas", "video",
    "audio", "object", "embed", "map", "dialog", "head", "title", "meta", "link",
})
# Tags whose text forms one block each.
_BLOCK_TAGS = frozenset({
    "p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "td", "th", "dd", "dt",
    "figcaption",
})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# Containers: they break text flow, and text directly inside them becomes its own block.
_CONTAINER_TAGS = frozenset({
    "html", "body", "div", "section", "article", "main", "ul", "ol", "dl", "table", "thead",
    "tbody", "tfoot", "tr", "caption", "figure", "center", "address", "hr", "details",
    "summary", "fieldset", "legend", "hgroup", "menu", "search", "picture",
})
_BREAKING = _BLOCK_TAGS | _CONTAINER_TAGS
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v\xa0]*\n")


@dataclass(frozen=True)
class _Block:
    text: str
    element: Tag  # the block tag, or the container whose direct text this is
    link_chars: int  # characters of the text that sit inside <a>

    @property
    def link_density(self) -> float:
        return self.link_chars / max(len(self.text), 1)


def _is_hidden(attrs: Mapping[str, object] | None) -> bool:
    """hidden / aria-hidden / inline display:none, from a bs4 or lxml element's attributes.

    ``hidden="until-found"`` is not hidden: the browser finds and shows it (MediaWiki's collapsed mobile
    sections, accordions), and trafilatura keeps it too.
    """
    attrs = attrs or {}
    hidden = attrs.get("hidden")
    if (hidden is not None and str(hidden).strip().lower() != "until-found") \
            or str(attrs.get("aria-hidden", "")).strip().lower() == "true":
        return True
    style = attrs.get("style")
    return isinstance(style, str) and bool(_HIDDEN_STYLE.search(style))


def _parse(html: str) -> BeautifulSoup:
    try:
        return BeautifulSoup(html, "lxml")
    except Exception:  # lxml refuses a few pathological inputs; the stdlib parser never does
        return BeautifulSoup(html, "html.parser")


# A <form> holding more than this share of the page's text is the page, not a search box or
# signup form: ASP.NET wraps every page in one (2 of 181 benchmark pages came back empty).
_PAGE_FORM_SHARE = 0.5


def _drop_boilerplate_tags(soup: BeautifulSoup) -> None:
    doomed = []
    page_chars: int | None = None
    for tag in soup.find_all(True):
        if tag.name == "form":
            if page_chars is None:
                page_chars = len(soup.get_text())
            if len(tag.get_text()) > _PAGE_FORM_SHARE * page_chars:
                continue
        if tag.name in _DROP_TAGS or _is_hidden(tag.attrs):
            doomed.append(tag)
    for tag in doomed:
        if not tag.decomposed:  # an ancestor may already have taken it down
            tag.decompose()


def _pre_blocks(pre: Tag) -> Iterator[str]:
    """A <pre> is one block per blank-line-separated chunk (CACM pages are one big <pre>)."""
    parts: list[str] = []
    for node in pre.descendants:
        if isinstance(node, Tag) and node.name == "br":
            parts.append("\n")
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            parts.append(str(node))
    for chunk in _PARAGRAPH_BREAK.split("".join(parts)):
        if text := normalize_ws(chunk):
            yield text


def _blocks(root: Tag) -> list[_Block]:
    """Walk the tree once, in document order, cutting text into blocks at breaking tags.

    Each text node lands in exactly one buffer, so nested blocks (<li><p>…</p></li>) never
    duplicate text.  The walk is iterative because real pages nest deeper than Python's
    recursion limit.
    """
    blocks: list[_Block] = []
    parts: list[str] = []
    link_chars = 0
    owners: list[Tag] = [root]  # innermost breaking element owns the buffered text
    link_depth = 0

    def flush() -> None:
        nonlocal parts, link_chars
        if parts:
            text = normalize_ws("".join(parts))
            if text:
                blocks.append(_Block(text, owners[-1], min(link_chars, len(text))))
        parts, link_chars = [], 0

    stack: list[tuple[object, bool]] = [(child, False) for child in reversed(root.contents)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            assert isinstance(node, Tag)
            if node.name == "a":
                link_depth -= 1
            elif node.name in _BREAKING:
                flush()
                owners.pop()
            continue
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctype, CDATA
                parts.append(str(node))
                if link_depth:
                    link_chars += len(normalize_ws(node))
            continue
        if not isinstance(node, Tag):
            continue
        if node.name == "br":
            parts.append(" ")
            continue
        if node.name == "pre":
            flush()
            blocks.extend(_Block(text, node, 0) for text in _pre_blocks(node))
            continue
        if node.name in _BREAKING:
            flush()
            owners.append(node)
        elif node.name == "a":
            link_depth += 1
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
    flush()
    return blocks


def _short_cells(blocks: list[_Block]) -> list[_Block]:
    """The blocks of one short table cell (``<td><p>1815</p></td>``) as one block of the cell, so that its
    row is judged and joined as a row of bare cells is.

    A cell whose text is long (a layout table holding an article) or that holds a heading or ``<pre>``
    keeps its blocks: merging them would glue the article's paragraphs into one."""
    out: list[_Block] = []
    i = 0
    while i < len(blocks):
        cell = _cell_of(blocks[i].element)
        j = i + 1
        while cell is not None and j < len(blocks) and _cell_of(blocks[j].element) is cell:
            j += 1
        group = blocks[i:j]
        text = " ".join(b.text for b in group)
        if (cell is not None and any(b.element is not cell for b in group) and len(text) <= ROW_CELL_CHARS
                and not any(b.element.name in _HEADINGS or b.element.name == "pre" for b in group)):
            out.append(_Block(text, cell, min(sum(b.link_chars for b in group), len(text))))
        else:
            out.extend(group)
        i = j
    return out


def _cell_of(element: Tag) -> Tag | None:
    """The innermost ``<td>``/``<th>`` of a row that holds ``element`` (itself included), else None."""
    cell = element if element.name in ("td", "th") else element.find_parent(("td", "th"))
    return cell if cell is not None and cell.parent is not None and cell.parent.name == "tr" else None


def _term_group(element: Tag) -> Tag | None:
    """The ``<dl>``, or the ``<div>`` inside one (HTML's way to group a term with its definitions), that
    holds a ``<dt>``/``<dd>``; None for any other element."""
    parent = element.parent
    if element.name not in ("dt", "dd") or parent is None:
        return None
    if parent.name == "dl" or (parent.name == "div" and parent.parent is not None and parent.parent.name == "dl"):
        return parent
    return None


def _rows_and_terms(blocks: list[_Block]) -> list[_Block]:
    """Short table rows as blocks, packed, and a ``<dt>`` with its ``<dd>``, as the trafilatura path makes
    them (``tasks.extract.row_text``, ``row_groups``, ``definition_text``); other blocks as they are."""
    blocks = _short_cells(blocks)
    out: list[_Block] = []
    rows_in: dict[int, int] = {}  # id(table) → its rows
    pending: list[_Block] = []  # joined rows of one table, to pack
    pending_table = None  # the table they are of

    def flush() -> None:
        if pending:
            # Each packed block keeps the element of its first row, and the link characters of its rows.
            for members in row_groups([b.text for b in pending]):
                group = [pending[i] for i in members]
                text = " | ".join(b.text for b in group)
                out.append(_Block(text, group[0].element, min(sum(b.link_chars for b in group), len(text))))
            pending.clear()

    i = 0
    while i < len(blocks):
        block = blocks[i]
        name = block.element.name
        if name in ("td", "th") and (row := block.element.parent) is not None and row.name == "tr":
            j = i
            while j < len(blocks) and blocks[j].element.name in ("td", "th") and blocks[j].element.parent is row:
                j += 1
            group = blocks[i:j]
            cells = [b.text for b in group]
            table = row.find_parent("table")
            if table is not None and id(table) not in rows_in:
                rows_in[id(table)] = len(table.find_all("tr"))
            if table is not pending_table:
                flush()
                pending_table = table
            if (rows_in.get(id(table), 0) <= MAX_JOINED_ROWS and len(cells) > 1
                    and joinable_row(cells, [b.link_chars >= len(b.text) for b in group])):
                heads = [b.element.name == "th" for b in group]
                text = row_text(cells, heads[0] and not all(heads))  # a header row is no row header
                joined = _Block(text, block.element, min(sum(b.link_chars for b in group), len(text)))
                if all(heads):  # a header row is a block of its own, before the rows it heads
                    flush()
                    out.append(joined)
                else:
                    pending.append(joined)
            else:
                flush()
                out.extend(group)
            i = j
            continue
        flush()
        pending_table = None
        if (dl := _term_group(block.element)) is not None:
            j = i
            while j < len(blocks) and _term_group(blocks[j].element) is dl \
                    and not (blocks[j].element.name == "dt" and j > i and blocks[j - 1].element.name == "dd"):
                j += 1
            group = blocks[i:j]
            text = definition_text([b.text for b in group if b.element.name == "dt"],
                                   [b.text for b in group if b.element.name == "dd"])
            out.append(_Block(text, block.element, min(sum(b.link_chars for b in group), len(text))))
            i = j
        else:
            out.append(block)
            i += 1
    flush()
    return out


# --------------------------------------------------------------------------------------------
# Title
# --------------------------------------------------------------------------------------------

_TITLE_SEPARATORS = re.compile(r"\s+(?:\||-|–|—|::|·|•|»|/)\s+")


def _title(tree: HtmlElement | None) -> str:
    """<title>, minus a site name when an <h1> or the page's ``og:title`` confirms which part is its own title.

    ``og:title`` is asked first (an ``<h1>`` can be the site's logo), a part equal to ``og:site_name`` is never
    the title, and a ``<title>`` that is only the site name gives way to ``og:title``.
    """
    if tree is None:
        return ""
    h1s = [text for h in tree.iter("h1") if (text := normalize_ws(" ".join(h.itertext())))]
    title_tag = next((t for t in tree.iter("title")
                      if not any(a.tag == "svg" for a in t.iterancestors())), None)
    title = normalize_ws(" ".join(title_tag.itertext())) if title_tag is not None else ""
    og, site = _meta_property(tree, "og:title", "twitter:title"), _meta_property(tree, "og:site_name")
    h1s = [h for h in h1s if h.casefold() != site.casefold()]  # a site's logo in an <h1>
    if not title or (site and title.casefold() == site.casefold()):
        return og if og and og.casefold() != site.casefold() else h1s[0] if h1s else title
    if title.casefold() in {h.casefold() for h in h1s}:
        return title
    cuts = list(_TITLE_SEPARATORS.finditer(title))
    parts = [title[: c.start()] for c in cuts] + [title[c.end():] for c in cuts]  # "Page | Site", "Site - Page"
    parts += [title[a.end(): b.start()] for i, a in enumerate(cuts) for b in cuts[i + 1:]]  # "Site | Page | Section"
    for wanted in h1s + ([og] if og else []):
        for part in parts:
            if part.casefold() == wanted.casefold() and part.casefold() != site.casefold():
                return part
    return title


def _meta_property(tree: HtmlElement, *names: str) -> str:
    """The first non-empty ``<meta property|name=NAME content>`` of ``names``, whitespace-normalised."""
    found: dict[str, str] = {}
    for m in tree.iter("meta"):
        key = (m.get("property") or m.get("name") or "").strip().lower()
        if key in names and key not in found and (content := normalize_ws(m.get("content") or "")):
            found[key] = content
    return next((found[n] for n in names if n in found), "")


def _lxml_tree(text: str) -> HtmlElement | None:
    """The page parsed once with lxml (as trafilatura parses it); None when nothing parses."""
    tree = parse_html(text)
    if tree is None and text.strip():
        # trafilatura rejects fragments without an <html> ("<body><p>…"); the title still
        # comes from a plain lxml parse of them.
        try:
            tree = lxml.html.document_fromstring(text)
        except Exception:  # empty or non-HTML input: no title
            return None
    return tree


# Dropped tags that are page chrome (the rest of _DROP_TAGS is code, media and metadata).
_CHROME_TAGS = frozenset({"nav", "header", "footer", "aside", "form", "dialog"})


def _page_profile(tree: HtmlElement) -> tuple[int, bool]:
    """(visible characters, whether any element looks like page chrome).

    Characters are whitespace-normalised text outside never-content and hidden elements: a
    cheap measure of how much text the page shows, to judge trafilatura's share of it without
    running the scorer.  Chrome is a chrome tag or a chrome role/class/id hint; a small page
    with none is kept whole.  Iterative: pages nest deeper than the recursion limit.
    """
    count = 0
    chrome = False
    stack = [tree]
    while stack:
        element = stack.pop()
        if element is not tree and element.tail:  # the tail is the parent's text
            count += len(normalize_ws(element.tail))
        tag = element.tag
        if not isinstance(tag, str):
            continue  # comments, processing instructions
        attrs = element.attrib
        if not chrome and (tag in _CHROME_TAGS or (attrs and _is_negative(tag, attrs))):
            chrome = True
        # A <form>'s text counts: a page-wide ASP.NET <form> is the page (see _PAGE_FORM_SHARE),
        # and a search box adds next to nothing.
        if (tag in _DROP_TAGS and tag != "form") or _is_hidden(attrs):
            continue
        if element.text:
            count += len(normalize_ws(element.text))
        stack.extend(element)
    return count, chrome


# --------------------------------------------------------------------------------------------
# Main content
# --------------------------------------------------------------------------------------------

# class/id/role fragments of page chrome.  Matched on the element's own attributes; positive
# hints on the same element win (e.g. "post-body" vs "post-share").
_NEGATIVE = re.compile(
    r"ad-slot|ad-label|adspot|\bads?\b|\bad[-_]|advert|sponsor|banner|breadcrumb|crumb|"
    r"comment|disqus|discussion|respond|replies|cookie|consent|gdpr|onetrust|cmplz|"
    r"\bcc-|share|sharing|social|like|follow|newsletter|subscri|signup|sign-up|"
    r"related|recommend|more-?from|read-?more|most-?(?:viewed|popular|read)|popular|"
    r"top-?stories|onward|teaser|promo|epic|cta|sidebar|rail|widget|sidenav|"
    r"menu|navigation|navbar|\bnav\b|masthead|header|footer|byline|author|meta\b|"
    r"submeta|tags?\b|keywords|categor|catlinks|pager|pagination|next-prev|post-navigation|"
    r"toolbar|toc\b|vector-toc|navbox|infobox|hatnote|reflist|references|citation|"
    r"editsection|noprint|print|skip|jump|modal|popup|overlay|dialog|notice|"
    r"rights|license|copyright|quiz|video|identifiers|standfirst|excerpt|subtitle",
    re.I,
)
_POSITIVE = re.compile(
    r"article|body|content|entry|main|page|post|text|blog|story|markup|parser-output|"
    r"paragraph|storytext|reading",
    re.I,
)
_NEGATIVE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "dialog",
                             "alertdialog", "search", "menu", "menubar"})
_NEVER_NEGATIVE = frozenset({"html", "body", "main"})
_GOOD_BLOCK_CHARS = 25  # shorter blocks don't vote for a container (captions, dates, buttons)


def _hints(attrs: Mapping[str, object]) -> str:
    """class, id and data-component (bs4 or lxml attributes), as one string for the regexes."""
    classes = attrs.get("class") or []
    if isinstance(classes, str):
        classes = [classes]
    return " ".join([*classes, str(attrs.get("id") or ""), str(attrs.get("data-component") or "")])


def _is_negative(name: str, attrs: Mapping[str, object]) -> bool:
    """Whether an element looks like page chrome by its role or class/id hints."""
    if name in _NEVER_NEGATIVE:
        return False
    if str(attrs.get("role") or "").lower() in _NEGATIVE_ROLES:
        return True
    hints = _hints(attrs)
    return bool(_NEGATIVE.search(hints)) and not _POSITIVE.search(hints)


def _class_weight(tag: Tag) -> float:
    hints = _hints(tag.attrs)
    weight = 0.0
    if _NEGATIVE.search(hints):
        weight -= 25
    if _POSITIVE.search(hints):
        weight += 25
    if tag.name in {"article", "main"}:
        weight += 10
    return weight


_TAG_WEIGHT = {"div": 5, "article": 5, "section": 3, "td": 3, "blockquote": 3, "pre": 3,
               "ol": -3, "ul": -3, "dl": -3, "li": -3, "dd": -3, "form": -3, "th": -5}


def _ancestors(tag: Tag) -> list[Tag]:
    chain: list[Tag] = []
    node = tag.parent
    while isinstance(node, Tag) and node.name != "[document]":
        chain.append(node)
        node = node.parent
    return chain


def _main_content(blocks: list[_Block]) -> list[_Block]:
    """Select the article's blocks, readability style.

    1. Long, link-poor blocks outside chrome vote for their ancestors (decaying with distance),
       weighted by commas and length; containers get a class/id hint bonus and are damped by
       their link density.
    2. The best container wins, then grows upwards while its parent adds mostly long,
       link-poor text (an article split over one <div> per paragraph).
    3. Inside the winner, blocks under chrome-hinted elements and linked blocks are dropped.
    Each step was measured on the public benchmark with and without (RESULTS.md).
    """
    if not blocks:
        return blocks
    chains = [[b.element, *_ancestors(b.element)] for b in blocks]

    # Text and link totals per container, for link density.
    total: dict[int, int] = {}
    linked: dict[int, int] = {}
    for block, chain in zip(blocks, chains):
        for tag in chain:
            total[id(tag)] = total.get(id(tag), 0) + len(block.text)
            linked[id(tag)] = linked.get(id(tag), 0) + block.link_chars
    page_chars = sum(len(b.text) for b in blocks)
    negative_cache: dict[int, bool] = {}

    def negative(tag: Tag) -> bool:
        # A chrome-looking wrapper that holds most of the page ("layout-with-sidebar") is the
        # page, not chrome; without this guard a whole article could lose its vote.
        key = id(tag)
        if key not in negative_cache:
            negative_cache[key] = (_is_negative(tag.name, tag.attrs)
                                   and total.get(key, 0) < 0.6 * page_chars)
        return negative_cache[key]

    scores: dict[int, float] = {}
    tags: dict[int, Tag] = {}
    for block, chain in zip(blocks, chains):
        if len(block.text) < _GOOD_BLOCK_CHARS or block.link_density > 0.33:
            continue
        if any(negative(tag) for tag in chain):
            continue
        score = 1 + block.text.count(",") + min(len(block.text) / 100, 3)
        # A block tag votes for its parents; text directly in a container votes for it too.
        voters = chain[1:6] if block.element.name in _BLOCK_TAGS else chain[:5]
        for level, tag in enumerate(voters):
            if id(tag) not in scores:
                tags[id(tag)] = tag
                scores[id(tag)] = _TAG_WEIGHT.get(tag.name, 0) + _class_weight(tag)
            scores[id(tag)] += score / (1 if level == 0 else 2 if level == 1 else level * 3)
    if not scores:
        return blocks

    def final(key: int) -> float:
        return scores[key] * (1 - linked.get(key, 0) / max(total.get(key, 1), 1))

    top = tags[max(scores, key=final)]

    # Walk up while the parent adds mostly good text (a paragraph outside the first <div>),
    # but not when it would mostly add short or linked chrome.
    def good_and_all(root: Tag) -> tuple[int, int]:
        good = every = 0
        for block, chain in zip(blocks, chains):
            if any(t is root for t in chain) and not any(negative(t) for t in chain):
                every += len(block.text)
                if len(block.text) >= _GOOD_BLOCK_CHARS and block.link_density <= 0.33:
                    good += len(block.text)
        return good, every

    good, every = good_and_all(top)
    while isinstance(top.parent, Tag) and top.parent.name not in {"[document]", "html"}:
        parent = top.parent
        if negative(parent):
            break
        parent_good, parent_every = good_and_all(parent)
        if parent_good <= good or parent_good - good < 0.5 * (parent_every - every):
            break
        top, good, every = parent, parent_good, parent_every

    kept: list[_Block] = []
    for block, chain in zip(blocks, chains):
        try:
            depth = next(i for i, tag in enumerate(chain) if tag is top)
        except StopIteration:
            continue
        inner = chain[:depth]  # elements between the block and the content root
        if any(negative(tag) for tag in inner):
            continue
        if block.link_density > 0.5 and block.element.name not in _HEADINGS:
            continue
        kept.append(block)
    return kept or blocks


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _chars(texts: Iterable[str]) -> int:
    return sum(len(t) for t in texts)


# A trafilatura block whose text is mostly link text is a "related stories" entry or a
# link list that slipped through (trafilatura's XML carries no link marks unless asked, and
# asking for them changes what it extracts; so links are matched by text).
_MAX_LINK_SHARE = 0.7


def _without_link_blocks(found: list[str], tree: HtmlElement, levels: list[int] | None = None) -> list[int]:
    """Indices of ``found`` minus blocks made mostly of the page's link texts (never all of them).

    A heading (``levels`` > 0) is not made a link block by a table of contents' links (to a fragment of
    the page, or in a ``<nav>``): it is the article's own section heading, and dropping it cost every
    passage of the section its context. (A related story's heading, linked elsewhere, still goes.)
    """
    # Link texts of two words or more: a one-word link ("Home", "in") would match inside
    # ordinary prose (measured the same on the benchmark: F1 0.9725 vs 0.9722 for any length).
    links = [(text, a) for a in tree.iter("a") if " " in (text := normalize_ws(" ".join(a.itertext())))]
    if not links:
        return list(range(len(found)))
    anchors = {text for text, _ in links}
    in_headings = {text for text, a in links if not _points_into_page(a)}
    joined = "\n".join(found)
    covered, heading_covered = _covered(joined, anchors), _covered(joined, in_headings)
    levels = levels or [0] * len(found)
    kept: list[int] = []
    offset = 0
    for i, block in enumerate(found):
        marks = heading_covered if levels[i] > 0 else covered
        if marks.count(1, offset, offset + len(block)) < _MAX_LINK_SHARE * len(block):
            kept.append(i)
        offset += len(block) + 1
    return kept or list(range(len(found)))


def _points_into_page(a: HtmlElement) -> bool:
    """A table of contents' link: to a fragment of this page, or in a ``<nav>`` (a docs sidebar's sections)."""
    return (a.get("href") or "").strip().startswith("#") or any(
        isinstance(p.tag, str) and p.tag.lower() == "nav" for p in a.iterancestors())


def _covered(joined: str, anchors: set[str]) -> bytearray:
    """1 for every character of ``joined`` inside an occurrence of one of ``anchors``.

    Each character is marked once: one str.find scan per link text over the joined blocks, rather than a
    search per (block, link) pair.
    """
    covered = bytearray(len(joined))
    for anchor in anchors:
        start = joined.find(anchor)
        while start != -1:
            covered[start:start + len(anchor)] = b"\x01" * len(anchor)
            start = joined.find(anchor, start + len(anchor))
    return covered


# trafilatura's article is taken as it is when it holds at least this share of the page's
# visible text; below it the scorer runs too, and wins when trafilatura kept less than
# _SCORER_SHARE of what the scorer found (trafilatura then missed most of the article).
# Chosen on the public benchmark with a 2-fold check (benchmarks/RESULTS.md).
_PAGE_SHARE = 0.4
_SCORER_SHARE = 0.5
# Below this much visible text trafilatura's thresholds (its own minimum extracted size is
# 250 characters) don't apply; the scorer judges such small pages (it keeps them whole when
# no block stands out).
_MIN_ARTICLE_CHARS = 250


def extract_html(
    html: str | bytes,
    *,
    content_type: str | None = None,
    main_content: bool = True,
    extractor: Literal["trafilatura", "scorer"] = "trafilatura",
) -> HtmlDocument:
    """Parse a page into its title, text blocks (with their heading levels) and metadata.

    ``main_content=True`` keeps only the article (boilerplate such as menus, cookie banners,
    share buttons, related links and comments is dropped); a page with text never comes back
    empty.  The article is found by trafilatura (precision mode, without its slower
    readability/jusText comparison), which measures better on the public benchmark; the
    readability-style scorer below runs only when trafilatura finds nothing or keeps a small
    share of the page, and wins when it finds much more (``extractor="scorer"`` forces it, for
    the benchmark).  The page is parsed once with lxml for trafilatura and the title; the bs4
    parse behind the scorer and ``main_content=False`` happens only when they run.  The page's
    metadata and publication time come from that same tree (``tasks.meta.html_metadata``).
    """
    text = decode_body(html, content_type) if isinstance(html, bytes) else html
    tree = _lxml_tree(text)
    title = _title(tree)
    metadata, published = html_metadata(tree) if tree is not None else ({}, None)

    def document(blocks: list[str], levels: Iterable[int]) -> HtmlDocument:
        return HtmlDocument(title=title, blocks=blocks, levels=tuple(levels), metadata=metadata,
                            published=published)

    def trafilatura_document(found: tuple[list[str], list[int]]) -> HtmlDocument:
        assert tree is not None
        kept = _without_link_blocks(found[0], tree, found[1])
        return document([found[0][i] for i in kept], (found[1][i] for i in kept))

    found: tuple[list[str], list[int]] | None = None
    if main_content and extractor == "trafilatura" and tree is not None:
        visible, chrome = _page_profile(tree)
        if visible < _MIN_ARTICLE_CHARS:
            # Too small for trafilatura; with nothing that looks like chrome, nothing to remove:
            # keep short paragraphs and lists too.  (A large page without chrome hints still
            # goes to trafilatura: its chrome may just carry no telling names, as on Medium.)
            main_content = main_content and chrome
        else:
            found = trafilatura_levelled_blocks(tree, favor_precision=True, fast=True)
            if found and _chars(found[0]) >= _PAGE_SHARE * visible:
                return trafilatura_document(found)
    soup = _parse(text)
    _drop_boilerplate_tags(soup)
    blocks = _rows_and_terms(_blocks(soup))
    if main_content:
        blocks = _main_content(blocks)
        if found and _chars(found[0]) >= _SCORER_SHARE * _chars(b.text for b in blocks):
            return trafilatura_document(found)
    return document([b.text for b in blocks], (_level(b.element.name) for b in blocks))


def _level(name: str) -> int:
    """1-6 for <h1>-<h6>, 0 for any other block."""
    return int(name[1]) if name in _HEADINGS else 0
