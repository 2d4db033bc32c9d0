"""Main-content extraction with trafilatura, returned as our text blocks.

trafilatura is the better article extractor on the public ScrapingHub article-extraction
benchmark (see ``benchmarks/RESULTS.md``, "Extraction quality (public benchmark)").  The
indexer needs paragraphs and headings as separate blocks, not one flat string, so we ask for
its XML output (``<head>``, ``<p>``, ``<list><item>``, ``<table><row><cell>``, ``<quote>``,
``<code>``) and turn each structural element (each table cell) into one block. A ``<head>`` block keeps its
level (``rend="h2"`` → 2) so the splitter can use it as context for the paragraphs under it.
"""

from __future__ import annotations

import logging
import unicodedata

from lxml import etree
from lxml.html import HtmlElement

from tasks.text import normalize_ws

# trafilatura logs "discarding data: None" at WARNING when it finds no article; that None is an outcome
# trafilatura_levelled_blocks returns and its callers handle (the fallback extractor), so in an index run's
# log the line would only read as lost data. Set once here, not per page: setLevel clears every logger's cache.
logging.getLogger("trafilatura.core").setLevel(logging.ERROR)

__all__ = ["heading_level", "parse_html", "trafilatura_blocks", "trafilatura_levelled_blocks"]

# Structural elements of trafilatura's XML that form one block each.
_BLOCK_ELEMENTS = frozenset({"head", "p", "item", "row", "quote", "code", "graphic"})
# Containers whose children are the blocks.
_CONTAINERS = frozenset({"main", "list", "table", "div", "body", "doc"})


def _normalise(text: str) -> str:
    # NFC as trafilatura's own string output does, so a page's words compare equal.
    return unicodedata.normalize("NFC", normalize_ws(text))


def _text(element: etree._Element) -> str:
    """The element's text, normalised, with a line break (``<lb/>``, from ``<br>``) as a space.

    ``itertext`` would glue the words on either side of a ``<br>`` together ("repairsTraffic").
    """
    parts: list[str] = []
    for event, node in etree.iterwalk(element, events=("start", "end")):
        if event == "start":
            parts.append(" " if node.tag == "lb" else node.text or "")
        elif node is not element and node.tail:
            parts.append(node.tail)
    return _normalise("".join(parts))


def heading_level(element: etree._Element) -> int:
    """1-6 for trafilatura's ``<head rend="hN">`` (2 when it gives no level), 0 for any other element."""
    if element.tag != "head":
        return 0
    rend = str(element.get("rend") or "")
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1] in "123456" else 2


def _walk(element: etree._Element, out: list[str], levels: list[int]) -> None:
    """Append the text of every block element under ``element`` in document order (``levels``: its heading level)."""
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments / processing instructions
        if child.tag in _CONTAINERS or (child.tag in {"quote", "item"}
                                        and any(c.tag in {"p", "list"} for c in child)):
            # Nested structure (a list in a quote, paragraphs in an item): recurse so text is
            # neither merged into one block nor duplicated.
            if child.text and (text := _normalise(child.text)):
                out.append(text)
                levels.append(0)
            _walk(child, out, levels)
        elif child.tag in _BLOCK_ELEMENTS:
            if child.tag == "row":
                # One block per cell, as our own parser does for <td>/<th>: a row joined into
                # one line ("Mount St. Helens United States 1980 5") would pass the indexer's
                # length filter as a chunk that carries no words of its own, only the page title.
                cells = [text for cell in child if (text := _text(cell))]
                out.extend(cells)
                levels.extend([0] * len(cells))
            elif text := _text(child):
                out.append(text)
                levels.append(heading_level(child))
        elif text := _text(child):  # inline leftovers (hi, ref) directly under a container
            out.append(text)
            levels.append(0)
        if child.tail and (tail := _normalise(child.tail)) and element.tag not in {"row"}:
            out.append(tail)
            levels.append(0)


def trafilatura_blocks(html: str | HtmlElement, **options: object) -> list[str] | None:
    """The article's blocks as trafilatura sees them, or None when it finds no article (see below)."""
    found = trafilatura_levelled_blocks(html, **options)
    return found[0] if found else None


def trafilatura_levelled_blocks(html: str | HtmlElement, **options: object) -> tuple[list[str], list[int]] | None:
    """(the article's blocks, each one's heading level: 0 for text) as trafilatura sees them, or None.

    ``html`` may be an already parsed tree (``parse_html``), which trafilatura copies rather
    than modifies, so the caller can parse once and reuse the tree.  ``options`` go to
    ``trafilatura.bare_extraction`` (e.g. ``favor_precision=True``).  Comments are never
    included: they are not the article.
    """
    import trafilatura  # heavy import, only when a page needs it

    try:
        # bare_extraction hands back trafilatura's XML body as a tree: no serialise/re-parse.
        document = trafilatura.bare_extraction(html, output_format="xml", include_comments=False,
                                               with_metadata=False, **options)
    except Exception:  # an extractor bug must not take the page down; the caller falls back
        return None
    if document is None or document.body is None:
        return None
    blocks: list[str] = []
    levels: list[int] = []
    _walk(document.body, blocks, levels)
    return (blocks, levels) if blocks else None


def parse_html(html: str) -> HtmlElement | None:
    """The page as an lxml tree, parsed the way trafilatura parses it, or None for non-HTML.

    libxml2 stops at 256 levels of nesting and drops the rest of the page: a template that forgets one
    ``</div>`` per entry lost every entry after the 250th, and the text after them. Such a page is parsed by
    BeautifulSoup's Python parser instead (no depth limit), and converted into the same kind of tree.
    """
    from trafilatura.utils import HTML_PARSER, load_html

    try:
        tree = load_html(html)
    except Exception:  # lxml refuses a few pathological inputs; the caller falls back to bs4
        return None
    if tree is not None and any("Excessive depth" in e.message for e in HTML_PARSER.error_log):
        from lxml.html import soupparser

        try:
            return soupparser.fromstring(html, features="html.parser")
        except Exception:  # noqa: BLE001 - the cut tree is still better than none
            return tree
    return tree
