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

__all__ = ["ROW_CELL_CHARS", "definition_text", "heading_level", "parse_html", "row_text", "trafilatura_blocks",
           "trafilatura_levelled_blocks"]

#: A table row whose every cell is shorter than this is one block ("Pinatubo; Philippines; 1991"): one block
#: per cell left each under the minimum paragraph length, and the indexer dropped the whole table. A row
#: with a longer cell (a layout table, a cell of prose) keeps one block per cell, as before.
ROW_CELL_CHARS = 100
#: A table of more rows keeps one block per cell (which the indexer's length filter drops, as before): a
#: 2,000-row table of measurements made 2,000 passages of numbers, each encoded and returned by searches.
MAX_JOINED_ROWS = 50


def row_text(cells: list[str], row_header: bool = False) -> str:
    """One table row as one block, its cells in order: after the row's own header cell where it starts with
    one (an infobox's "Born: 1 May 1900"), else joined ("Pinatubo; Philippines; 1991").

    Column headers are not repeated into each row: the header row stays a block of its own (the heading
    above the table is each row's context), and the page's words keep their order. Labelled rows ("Name:
    Pinatubo; Year: 1991") cost 0.001 of F1, P and R on the extraction benchmark, whose 4-word shingles
    they break (benchmarks/RESULTS.md, stop 42).
    """
    kept = [cell for cell in cells if cell]
    if row_header and cells[0] and len(kept) > 1:
        return f"{_label(kept[0])}: " + "; ".join(kept[1:])
    return "; ".join(kept)


#: Consecutive short rows of one table are packed into blocks of about this many characters ("Vesuvius; Italy;
#: AD 79; 5 | Tambora; Indonesia; 1815; 7 | ..."): one block per row left most rows under the minimum paragraph
#: length too, so a table kept only its longest rows.
TABLE_BLOCK_CHARS = 400


def row_groups(rows: list[str]) -> list[list[int]]:
    """The rows (each one :func:`row_text`) of each packed block, in order: up to :data:`TABLE_BLOCK_CHARS`
    joined by " | "."""
    groups: list[list[int]] = []
    size = 0
    for i, row in enumerate(rows):
        if groups and size + 3 + len(row) <= TABLE_BLOCK_CHARS:
            groups[-1].append(i)
            size += 3 + len(row)
        else:
            groups.append([i])
            size = len(row)
    return groups


def pack_rows(rows: list[str]) -> list[str]:
    """Rows packed in order into blocks (:func:`row_groups`)."""
    return [" | ".join(rows[i] for i in group) for group in row_groups(rows)]


def _label(text: str) -> str:
    """A header or term without its own colon ("Born:" → "Born"), so that joining it adds only one."""
    return text.rstrip().rstrip(":：").rstrip() or text


def joinable_row(cells: list[str], links: list[bool] | None = None) -> bool:
    """Whether a row's cells make one block (:data:`ROW_CELL_CHARS`): two or more, all short, and not all
    links (``links``: whether each cell is wholly a link's text): an A-Z index, a pager or a menu laid out as
    a table is no passage."""
    kept = [i for i, cell in enumerate(cells) if cell]
    if len(cells) < 2 or any(len(cell) >= ROW_CELL_CHARS for cell in cells):
        return False
    return not (links and kept and all(links[i] for i in kept))


def definition_text(terms: list[str], definitions: list[str]) -> str:
    """A ``<dt>`` and its ``<dd>`` as one block ("Magma: Molten rock below the surface."): apart, a definition
    lost the term it defines, and the term alone was too short to be kept."""
    head = ", ".join(_label(t) for t in terms if t)
    body = " ".join(d for d in definitions if d)
    return f"{head}: {body}" if head and body else head or body

# Structural elements of trafilatura's XML that form one block each.
_BLOCK_ELEMENTS = frozenset({"head", "p", "item", "row", "quote", "code", "graphic"})
# Containers whose children are the blocks.
_CONTAINERS = frozenset({"main", "list", "table", "div", "body", "doc"})
# A cell's children that make it a layout cell of paragraphs (inline <code>, <hi>, <ref> do not).
_CELL_BLOCKS = frozenset({"head", "p", "item", "quote", "list", "table", "div", "main"})
# Elements whose text is never one word with what is beside it (not inline <code>, <hi>, <ref>).
_WORD_BREAKS = frozenset({"head", "p", "item", "row", "cell", "quote", "list", "table", "div", "main"})


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
            if node is not element and node.tag in _WORD_BREAKS:  # a cell's <p>s are words apart too
                parts.append(" ")
            parts.append(" " if node.tag == "lb" else node.text or "")
        elif node is not element:
            if node.tag in _WORD_BREAKS:
                parts.append(" ")
            if node.tail:
                parts.append(node.tail)
    return _normalise("".join(parts))


def heading_level(element: etree._Element) -> int:
    """1-6 for trafilatura's ``<head rend="hN">`` (2 when it gives no level), 0 for any other element."""
    if element.tag != "head":
        return 0
    rend = str(element.get("rend") or "")
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1] in "123456" else 2


def _table_rows(table: etree._Element, out: list[str], levels: list[int], links: frozenset[str]) -> bool:
    """A table of rows as blocks, short rows packed (:func:`row_text`, :func:`pack_rows`); False (nothing
    added) for any other shape, which the generic walk handles. ``links``: the page's link texts (a row of
    links stays apart)."""
    rows = [child for child in table if isinstance(child.tag, str)]
    if not rows or any(row.tag != "row" for row in rows):
        return False
    first = [(cell.get("role") == "head", bool(_text(cell))) for cell in rows[0] if isinstance(cell.tag, str)]
    # trafilatura marks header cells in the first row only: a first row that starts with a header cell and
    # goes on with data ("Born | 1 May 1900") makes the first column the rows' headers (an infobox). A
    # caption comes as a first row of one header cell and empty ones: no such row.
    header_column = len(first) > 1 and first[0] == (True, True) and any(not h and t for h, t in first[1:])
    joining = len(rows) <= MAX_JOINED_ROWS
    pending: list[str] = []

    def flush() -> None:
        packed = pack_rows(pending)
        out.extend(packed)
        levels.extend([0] * len(packed))
        pending.clear()

    for row in rows:
        cells = [cell for cell in row if isinstance(cell.tag, str)]
        texts = [_text(cell) for cell in cells]
        kept = [text for text in texts if text]
        heads = [cell.get("role") == "head" for cell in cells]
        if joining and len(kept) > 1 and joinable_row(texts, [text in links for text in texts]):
            if all(heads):  # a header row is a block of its own, before the rows it heads
                flush()
                out.append(row_text(texts))
                levels.append(0)
            else:
                pending.append(row_text(texts, header_column or heads[0]))
        else:
            flush()
            for cell, text in zip(cells, texts):
                if len(text) > ROW_CELL_CHARS and any(c.tag in _CELL_BLOCKS for c in cell):
                    # A layout cell that holds an article: its paragraphs stay paragraphs, not one block.
                    if cell.text and (lead := _normalise(cell.text)):
                        out.append(lead)
                        levels.append(0)
                    _walk(cell, out, levels, links)
                elif text:
                    out.append(text)
                    levels.append(0)
    flush()
    return True


def _definition_list(items: list[etree._Element], out: list[str], levels: list[int]) -> bool:
    """A ``<dl>``'s terms each with its definitions (:func:`definition_text`); False for any other list."""
    kinds = [str(item.get("rend") or "").split("-")[0] for item in items]
    if not items or any(item.tag != "item" or kind not in ("dt", "dd") for item, kind in zip(items, kinds)) or any(
            c.tag in {"p", "list"} for item in items for c in item):
        return False
    terms: list[str] = []
    definitions: list[str] = []

    def flush() -> None:
        if text := definition_text(terms, definitions):
            out.append(text)
            levels.append(0)
        terms.clear()
        definitions.clear()

    for item, kind in zip(items, kinds):
        if kind == "dt" and definitions:
            flush()
        (terms if kind == "dt" else definitions).append(_text(item))
    flush()
    return True


def _walk(element: etree._Element, out: list[str], levels: list[int], links: frozenset[str] = frozenset()) -> None:
    """Append the text of every block element under ``element`` in document order (``levels``: its heading level;
    ``links``: the page's link texts)."""
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments / processing instructions
        if child.tag == "table" and not (child.text or "").strip() and _table_rows(child, out, levels, links):
            pass
        elif child.tag == "list" and child.get("rend") == "dl" and not (child.text or "").strip() and \
                _definition_list([c for c in child if isinstance(c.tag, str)], out, levels):
            pass
        elif child.tag in _CONTAINERS or (child.tag in {"quote", "item"}
                                        and any(c.tag in {"p", "list"} for c in child)):
            # Nested structure (a list in a quote, paragraphs in an item): recurse so text is
            # neither merged into one block nor duplicated.
            if child.text and (text := _normalise(child.text)):
                out.append(text)
                levels.append(0)
            _walk(child, out, levels, links)
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
    # Link texts of the page, to keep a table row of links apart (trafilatura's XML no longer marks them).
    links = frozenset(_normalise(a.text_content()) for a in html.iter("a")) if isinstance(html, HtmlElement) \
        else frozenset()
    _walk(document.body, blocks, levels, links)
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
