"""Article → Paragraph records: blocks from HTML/markdown/text, short ones dropped, long ones split to fit the encoder.

Nothing is silently truncated: a block longer than the bi-encoder's ``max_seq_length`` (in tokens,
counting the title prefix) is split at sentence boundaries, and a single over-long sentence at word
boundaries.

Headings are context, not passages: a heading joins the first paragraph under it and a block that repeats
the title is dropped (:func:`passages`). Plain text and pre-split records (BEIR, Wikipedia dumps) have no
headings and split exactly as before. Each paragraph carries its article's metadata (``tasks/meta.py``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from query.hits import passage_text as encoded_text  # noqa: F401 - the bi-encoder reads what the re-ranker reads
from tasks.meta import clean_metadata, front_matter, merge_metadata, published_from
from tasks.records import Article, Paragraph, stable_hash
from tasks.text import normalize_ws

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+")
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(\*\*|__|`)")

#: The version of the rules that split structured bodies (headings as context, metadata from the body).
#: Part of every local file's stamp and of HTML and markdown fingerprints, so a rule change makes the
#: next run read and re-split them (only paragraphs whose text changed are encoded again).
SPLIT_RULES = "headings-as-context-1;short-documents-1"
#: Marks the fingerprint of a plain-text article or record whose every line is shorter than the minimum
#: paragraph length: such articles made no paragraph before short documents were kept whole, so the next
#: run splits them again, while every other article keeps its fingerprint.
SHORT_DOCUMENTS = "short-documents-1"
#: Marks the fingerprint of a dump record without a title, which had its id encoded as its title before.
UNTITLED_RECORDS = "untitled-records-1"

#: Counts tokens of many texts at once (without special tokens).
TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Block:
    """One block of an article's text; ``level`` 1-6 for a heading (``<h2>``, ``## x``), 0 for body text."""

    text: str
    level: int = 0


@dataclass(frozen=True)
class ParsedArticle:
    """An article reduced to its title, blocks and what its body says about itself."""

    title: str
    blocks: list[Block]
    metadata: dict[str, str] = field(default_factory=dict)
    published: datetime | None = None


_MD_ATX = re.compile(r"^\s{0,3}(#{1,6})(?:\s+|$)")
_MD_SETEXT = re.compile(r"^\s{0,3}(?:=+|-{2,})\s*$")


def markdown_document(body: str) -> ParsedArticle:
    """Markdown → title, blocks with heading levels, and YAML front matter as metadata.

    The title is the front matter's ``title:``, else the first ``# heading``. Blocks are split on blank lines
    and at heading lines (``#`` … ``######`` and setext underlines), list items are blocks of their own, and
    light syntax (emphasis, links, quotes) is removed. Front matter never becomes a block.
    """
    matter, body = front_matter(body)
    title = normalize_ws(str(matter.get("title") or "")) if not isinstance(matter.get("title"), dict | list) else ""
    blocks: list[Block] = []

    def add_text(items: list[str]) -> None:
        for part in " ".join(items).split("\n"):
            if text := _md_inline(part):
                blocks.append(Block(text))

    for raw in re.split(r"\n\s*\n", body):
        lines = raw.strip().splitlines()
        if not lines:
            continue
        fenced = lines[0].startswith("```")
        if fenced:  # code: no headings inside ("# comment" in a shell snippet)
            lines = [ln for ln in lines if not ln.startswith("```")]
        items: list[str] = []
        skip = False
        for i, line in enumerate(lines):
            if skip:
                skip = False
                continue
            atx = None if fenced else _MD_ATX.match(line)
            setext = (not fenced and i + 1 < len(lines) and _MD_SETEXT.match(lines[i + 1])
                      and not _MD_LIST.match(line) and line.strip())
            if atx or setext:
                add_text(items)
                items = []
                if atx:
                    level, text = len(atx.group(1)), _md_inline(line[atx.end():].rstrip().rstrip("#"))
                else:
                    level, text, skip = (1 if "=" in lines[i + 1] else 2), _md_inline(line), True
                if text:
                    if not title and level == 1:
                        title = text
                    blocks.append(Block(text, level))
                continue
            if _MD_LIST.match(line) and items:
                items.append("\n")  # list items become separate blocks
            items.append(_MD_LIST.sub("", line.lstrip("> ")))
        add_text(items)
    metadata = clean_metadata((k, v) for k, v in matter.items() if str(k).lower() != "title")
    return ParsedArticle(title, blocks, metadata, published_from(matter))


def _md_inline(text: str) -> str:
    return normalize_ws(_MD_EMPH.sub("", _MD_LINK.sub(r"\1", text)))


def markdown_blocks(body: str) -> tuple[str, list[str]]:
    """Markdown → (title, the text of every block, headings included); see :func:`markdown_document`."""
    doc = markdown_document(body)
    return doc.title, [b.text for b in doc.blocks]


def text_blocks(body: str) -> list[str]:
    """Plain text → paragraphs separated by blank lines."""
    return [b for b in (normalize_ws(p) for p in re.split(r"\n\s*\n", body)) if b]


def parse_article(article: Article, *, main_content: bool = True) -> ParsedArticle:
    """The title, blocks and body metadata of an article, whatever its kind."""
    if article.kind == "html":
        from tasks.html import extract_html

        doc = extract_html(article.body, main_content=main_content)
        levels = doc.levels or (0,) * len(doc.blocks)
        parsed = ParsedArticle(doc.title, [Block(t, lv) for t, lv in zip(doc.blocks, levels, strict=True)],
                               doc.metadata, doc.published)
    elif article.kind == "markdown":
        parsed = markdown_document(article.body)
    elif article.kind == "paragraphs":
        parsed = ParsedArticle(article.title, [Block(normalize_ws(p)) for p in article.paragraphs or []])
    else:
        parsed = ParsedArticle(article.title, [Block(b) for b in text_blocks(article.body)])
    title = normalize_ws(article.title or parsed.title)
    if not title and article.title_from_id and article.kind in ("markdown", "text", "html"):
        title = PurePosixPath(article.doc_id.rstrip("/")).stem.replace("-", " ").replace("_", " ")
    return ParsedArticle(title, [b for b in parsed.blocks if b.text], parsed.metadata, parsed.published)


def article_blocks(article: Article, *, main_content: bool = True) -> tuple[str, list[str]]:
    """The title and text blocks (headings included) of an article, whatever its kind."""
    parsed = parse_article(article, main_content=main_content)
    return parsed.title, [b.text for b in parsed.blocks]


def _same_text(a: str, b: str) -> bool:
    """Equal but for case and closing punctuation ("Glaciers." repeats the title "Glaciers")."""
    return a.casefold().rstrip(" .:;!?") == b.casefold().rstrip(" .:;!?")


def _with_headings(headings: Sequence[str], text: str) -> str:
    """ "Heading. Sub-heading. text": each heading closed by a full stop unless it has its own punctuation."""
    parts = [h if h[-1] in ".:;!?" else f"{h}." for h in headings]
    return " ".join([*parts, text])


def passages(title: str, blocks: Sequence[Block], min_chars: int, *, drop_title: bool = True,
             every: bool = False) -> list[str]:
    """Body blocks of at least ``min_chars``, each headed by the headings just above it; no heading stands alone.

    A heading is context, not a passage: it joins the first body block under it ("Cost. The work cost...").
    A heading with nothing under it before a heading of the same or a higher rank (or the end) is dropped;
    one followed by a deeper heading stays as its parent ("History. Early years. text"). A heading or a
    first block that repeats the title is dropped when ``drop_title`` (structured bodies: the title is encoded
    with every passage anyway; plain text and records keep every block, as they always did). The length rule applies to the block's own text, so the passages are the body blocks that counted before,
    headed or not.
    """
    out: list[str] = []
    pending: list[Block] = []  # headings waiting for the body block they head, outermost first
    for i, block in enumerate(blocks):
        if drop_title and title and _same_text(block.text, title) and (block.level or i == 0):
            continue
        if block.level:
            while pending and pending[-1].level >= block.level:
                pending.pop()  # a sibling or a higher heading: the previous section was empty
            pending.append(block)
            continue
        if len(block.text) < min_chars:
            continue
        out.append(_with_headings([h.text for h in pending], block.text) if pending else block.text)
        if not every:
            pending = []
    return out


def split_sentences(text: str) -> list[str]:
    """Split at sentence ends. Deliberately simple: precise enough to keep chunks readable."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def fit_to_budget(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Split ``text`` into pieces of at most ``budget`` tokens: whole sentences when possible, else words."""
    if budget < 8:
        raise ValueError(f"token budget {budget} is too small: shorten the title or raise max_seq_length")
    sentences = split_sentences(text)
    lengths = count(sentences)
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for sentence, n in zip(sentences, lengths, strict=True):
        if n > budget:  # one sentence alone is too long: split it by words
            if current:
                pieces.append(" ".join(current))
                current, used = [], 0
            pieces.extend(_split_words(sentence, budget, count))
            continue
        if used + n > budget and current:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(sentence)
        used += n
    if current:
        pieces.append(" ".join(current))
    return pieces


def _split_words(sentence: str, budget: int, count: TokenCounter) -> list[str]:
    words = sentence.split(" ")
    per_word = count(words)
    pieces, current, used = [], [], 0
    for word, n in zip(words, per_word, strict=True):
        if used + n > budget and current:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(word)  # a single word longer than the budget is left to the model's truncation
        used += n
    if current:
        pieces.append(" ".join(current))
    return pieces


@dataclass(frozen=True)
class SplitOptions:
    max_tokens: int  # the bi-encoder's max_seq_length, special tokens included
    min_chars: int = 30
    encode_title: bool = True
    main_content: bool = True
    special_tokens: int = 2  # [CLS] and [SEP]
    unit: str = "paragraph"  # "document": the whole article is one unit, left to the encoder's truncation
    # "first": a heading joins the first paragraph under it; "section": every paragraph of its section (measured
    # in benchmarks/RESULTS.md, "Headings are context": it changes far more paragraph ids and costs more tokens).
    heading_context: str = "first"


def split_article(article: Article, opts: SplitOptions, count: TokenCounter) -> list[Paragraph]:
    """Split one article into paragraphs with stable ids, each carrying the article's metadata.

    ``id = hash(source, doc_id, encoded text, occurrence)``: a paragraph keeps its id when others are
    inserted above it, so moving it never re-encodes it. Headings are context, never paragraphs of their
    own (see :func:`passages`); the heading text counts toward the token budget. ``metadata`` is the
    reader's (``article.metadata``: a dump record's fields) over the body's (``<meta>`` tags, front matter).
    """
    parsed = parse_article(article, main_content=opts.main_content)
    title = parsed.title
    structured = article.kind in _STRUCTURED_KINDS
    if opts.unit == "document":  # one unit per article, never split: the encoder truncates it
        kept = [b.text for i, b in enumerate(parsed.blocks)
                if not (structured and title and _same_text(b.text, title) and (b.level or i == 0))]
        kept = kept or [b.text for b in parsed.blocks] or ([title] if title and not article.title_from_id else [])
        blocks = [" ".join(kept)] if kept else []  # however short: the document is the unit
    else:
        blocks = passages(title, parsed.blocks, opts.min_chars, drop_title=structured,
                          every=opts.heading_context == "section")
        if not blocks:
            # The minimum length drops a longer document's fragments (a byline, a caption), never the whole
            # of a short one: a one-line note or a short record is still a document someone looks for. Then
            # its headings (a note that is one heading), then a record's own title (a record of a title alone).
            short = (passages(title, parsed.blocks, 0, drop_title=structured) or [b.text for b in parsed.blocks]
                     or ([title] if title and not article.title_from_id else []))
            blocks = [" ".join(short)] if short else []
    prefix = count([title])[0] + 1 if (opts.encode_title and title) else 0
    budget = opts.max_tokens - opts.special_tokens - prefix
    # A wordpiece token covers at least one character, so blocks no longer than the budget in
    # characters fit without tokenising; only the longer ones are counted.
    long_idx = [i for i, b in enumerate(blocks) if len(b) > budget] if opts.unit != "document" else []
    long_counts = dict(zip(long_idx, count([blocks[i] for i in long_idx]), strict=True)) if long_idx else {}
    texts: list[str] = []
    for i, block in enumerate(blocks):
        if long_counts.get(i, 0) > budget:
            texts.extend(fit_to_budget(block, budget, count))
        else:
            texts.append(block)
    metadata = merge_metadata(article.metadata or {}, parsed.metadata)
    published = article.published or parsed.published
    seen: dict[str, int] = {}
    paragraphs = []
    for position, text in enumerate(texts):
        enc = encoded_text(title, text, encode_title=opts.encode_title)
        occurrence = seen.get(enc, 0)
        seen[enc] = occurrence + 1
        paragraphs.append(
            Paragraph(
                # The origin, not the source: ids stay those of schema v1, whose source was the root.
                id=stable_hash(article.origin or article.source, article.doc_id, enc, str(occurrence)),
                doc_id=article.doc_id,
                source=article.source,
                title=title,
                position=position,
                text=text,
                encoded=enc,
                content_hash=stable_hash(enc),
                metadata=dict(metadata) if metadata else None,
                published=published,
                origin=article.origin or article.source,
            )
        )
    return paragraphs


def tokenizer_counter(tokenizer) -> TokenCounter:
    """A TokenCounter over a Hugging Face tokenizer (the caller's own copy: see ``query.bi_encoder.count_tokens``)."""
    from query.bi_encoder import count_tokens

    return functools.partial(count_tokens, tokenizer)


def body_fingerprint(article: Article, opts: SplitOptions) -> str:
    """Hash of everything that determines an article's paragraphs and their metadata: unchanged, nothing to do."""
    return stable_hash(
        article.kind,
        article.title,
        article.body,
        str(opts.max_tokens),
        str(opts.min_chars),
        str(opts.encode_title),
        str(opts.main_content),
        *([opts.unit] if opts.unit != "paragraph" else []),  # paragraph: fingerprints of existing indexes unchanged
        *([opts.heading_context] if opts.heading_context != "first" else []),
        # Fields outside the body (a dump record's metadata, its date) change the rows too; articles without
        # them keep the fingerprint they had.
        *([json.dumps(article.metadata, sort_keys=True, ensure_ascii=False)] if article.metadata else []),
        *([article.published.isoformat()] if article.published else []),
        # HTML and markdown are split by newer rules (headings as context, metadata from the body): such an
        # article is split again once; only paragraphs whose text changed are encoded again.
        *([SPLIT_RULES] if article.kind in _STRUCTURED_KINDS else []),
        *([SHORT_DOCUMENTS] if article.kind not in _STRUCTURED_KINDS and _all_lines_short(article.body, opts.min_chars)
          else []),
        # A record without a title was encoded with its id as the title: split (and encoded) again, once.
        *([UNTITLED_RECORDS] if not article.title_from_id and not article.title else []),
    )


def _all_lines_short(body: str, min_chars: int) -> bool:
    """No line reaches ``min_chars`` (cheap; a superset of the articles that made no paragraph before)."""
    return bool(body.strip()) and all(len(line.strip()) < min_chars for line in body.splitlines())


_STRUCTURED_KINDS = frozenset({"html", "markdown"})
