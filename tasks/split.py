"""Article → Paragraph records: blocks from HTML/markdown/text, short ones dropped, long ones split to fit the encoder.

Nothing is silently truncated: a block longer than the bi-encoder's ``max_seq_length`` (in tokens,
counting the title prefix) is split at sentence boundaries (``. ! ?`` before whitespace, and the CJK
``。！？；…`` with or without it), a single over-long sentence at word boundaries, and a single over-long
word (text without spaces: Chinese, Japanese, a long URL) between characters, by token count. A title
longer than half of the budget is cut, for the encoded prefix only, to that many tokens.

Headings are context, not passages: a heading joins the first paragraph under it and a block that repeats
the title is dropped (:func:`passages`). Plain text and pre-split records (BEIR, Wikipedia dumps) have no
headings and are not affected by that rule. (One whose title is over half the budget splits differently since
titles are cut for the encoder; its fingerprint does not say so, so its old rows, valid as they are, stay until
it changes.) Each paragraph carries its article's metadata (``tasks/meta.py``).
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

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace, or at a CJK
# 。！？；｡ (idem), whitespace or not, unless more closing punctuation follows; at … only where CJK-like text
# goes on without a space ("Wait… what" in English text is no sentence end, as before).
_CJK_CLOSE = "\"'”’)\\]」』）】〕》〉"
_CJK_END = "。！？；｡"
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+"
    rf"|(?:(?<=[{_CJK_END}])|(?<=[{_CJK_END}][{_CJK_CLOSE}]))(?![{_CJK_END}…{_CJK_CLOSE}])\s*"
    rf"|(?:(?<=…)|(?<=…[{_CJK_CLOSE}]))(?=[^\x00-\x7f\s{_CJK_END}…{_CJK_CLOSE}])"
)
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")

#: The version of the rules that split structured bodies (headings as context, metadata from the body).
#: Part of every local file's stamp and of HTML and markdown fingerprints, so a rule change makes the
#: next run read and re-split them (only paragraphs whose text changed are encoded again).
SPLIT_RULES = "headings-as-context-1;short-documents-1;review-41;rows-and-terms-42;cells-43"
# 41: fenced code, titles, charsets, CJK. 42: a short table row and a term with its definition are one block each,
# numeric dates in the page language's order.
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
    light syntax (strong emphasis, links, quotes, code backticks) is removed. Front matter never becomes a block.
    Fenced code (``` or ~~~, closed by a fence of the same character at least as long) is followed line by
    line over the whole body: its lines are never headings (a ``# comment`` in a shell snippet, blank lines
    around it or not), its fence lines are dropped, and its text, like inline code, is kept as written.
    """
    matter, body = front_matter(_newlines(body))
    title = normalize_ws(str(matter.get("title") or "")) if not isinstance(matter.get("title"), dict | list) else ""
    blocks: list[Block] = []
    code: list[str] = []  # text kept as written: inline code and fenced lines, behind placeholders

    def add_text(items: list[str]) -> None:
        for part in " ".join(items).split("\n"):
            if text := _md_inline(part, code):
                blocks.append(Block(text))

    for group in _md_groups(body.replace("\x00", "\ufffd")):
        items: list[str] = []
        skip = False
        for i, (line, fenced) in enumerate(group):
            if skip:
                skip = False
                continue
            atx = None if fenced else _MD_ATX.match(line)
            setext = (not fenced and i + 1 < len(group) and not group[i + 1][1] and _MD_SETEXT.match(group[i + 1][0])
                      and not _MD_LIST.match(line) and line.strip())
            if atx or setext:
                add_text(items)
                items = []
                if atx:
                    level, text = len(atx.group(1)), _md_inline(line[atx.end():].rstrip().rstrip("#"), code)
                else:
                    level, text, skip = (1 if "=" in group[i + 1][0] else 2), _md_inline(line, code), True
                if text:
                    if not title and level == 1:
                        title = text
                    blocks.append(Block(text, level))
                continue
            if _MD_LIST.match(line) and items:
                items.append("\n")  # list items become separate blocks
            text = _MD_LIST.sub("", line.lstrip("> "))
            if fenced and text:
                code.append(text)
                text = f"\x00{len(code) - 1}\x00"
            items.append(text)
        add_text(items)
    metadata = clean_metadata((k, v) for k, v in matter.items() if str(k).lower() != "title")
    return ParsedArticle(title, blocks, metadata, published_from(matter))


_MD_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


def _md_groups(body: str) -> list[list[tuple[str, bool]]]:
    """The lines of ``body`` grouped at blank lines, each with whether it is inside fenced code; fence lines dropped.

    Fences are followed across blank lines (a snippet with an empty line is code to its closing fence, or to the
    end of the body when it is never closed), but blank lines still end a group, inside code as outside.
    """
    groups: list[list[tuple[str, bool]]] = []
    group: list[tuple[str, bool]] = []
    fence: tuple[str, int] | None = None  # the open fence's character and length
    for raw in body.split("\n"):
        if not raw.strip():
            if group:
                groups.append(group)
                group = []
            continue
        if m := _MD_FENCE.match(raw):
            mark, info = m.group(1), m.group(2)
            if fence is None and not (mark[0] == "`" and "`" in info):  # ```x``` on one line is inline code
                fence = (mark[0], len(mark))
                continue
            if fence is not None and mark[0] == fence[0] and len(mark) >= fence[1] and not info.strip():
                fence = None
                continue
        group.extend((line, fence is not None) for line in raw.splitlines())
    if group:
        groups.append(group)
    for group in groups:  # as a block's text was stripped before: its first line unindented, its last trimmed
        while group and not group[0][0].strip():
            group.pop(0)
        while group and not group[-1][0].strip():
            group.pop()
        if group:
            group[0] = (group[0][0].lstrip(), group[0][1])
            group[-1] = (group[-1][0].rstrip(), group[-1][1])
    return [g for g in groups if g]


# Inline code: a run of backticks to the next run of the same length.
_MD_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
# Strong emphasis that wraps text at word boundaries: **bold**, __bold__; never __init__.py or 2**10.
_MD_STRONG = re.compile(r"(?<![\w*])\*\*(?=\S)((?:(?!\*\*).)+?)(?<=\S)\*\*(?![\w*])"
                        r"|(?<![\w_])__(?=\S)((?:(?!__).)+?)(?<=\S)__(?![\w_])(?![./\\-]\w)", re.DOTALL)
_MD_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


def _md_inline(text: str, code: list[str] | None = None) -> str:
    """Markdown inline syntax removed (links to their text, strong emphasis and backticks), inline code kept as
    written; ``code``: text already set aside behind ``\\x00n\\x00`` placeholders (fenced lines)."""
    code = [] if code is None else code

    def keep(m: re.Match) -> str:
        code.append(m.group(2))
        return f"\x00{len(code) - 1}\x00"

    text = _MD_LINK.sub(r"\1", _MD_CODE.sub(keep, text))
    for _ in range(3):  # nested: **bold __and__ strong**
        stripped = _MD_STRONG.sub(lambda m: m.group(1) or m.group(2), text)
        if stripped == text:
            break
        text = stripped
    text = _MD_PLACEHOLDER.sub(lambda m: code[int(m.group(1))], text.replace("`", ""))
    return normalize_ws(text)


def markdown_blocks(body: str) -> tuple[str, list[str]]:
    """Markdown → (title, the text of every block, headings included); see :func:`markdown_document`."""
    doc = markdown_document(body)
    return doc.title, [b.text for b in doc.blocks]


def text_blocks(body: str) -> list[str]:
    """Plain text → paragraphs separated by blank lines."""
    return [b for b in (normalize_ws(p) for p in re.split(r"\n\s*\n", _newlines(body))) if b]


def _newlines(body: str) -> str:
    """Windows (CRLF) and old Mac (CR) line ends as ``\n``: a file of CR-only lines was one paragraph."""
    return body.replace("\r\n", "\n").replace("\r", "\n") if "\r" in body else body


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
    return [s for _, s in _sentences(text)]


def _sentences(text: str) -> list[tuple[str, str]]:
    """(what joins it to the sentence before: " " or "", sentence) for each sentence of ``text``: a CJK sentence
    that ends without a space is joined back without one."""
    out: list[tuple[str, str]] = []
    gap, start = "", 0
    for end in [*_SENTENCE_END.finditer(text), None]:
        part = text[start:end.start() if end else len(text)]
        if sentence := part.strip():
            out.append((" " if gap or part[:1].isspace() else "", sentence))
            gap = ""
        if part[-1:].isspace() or (end and end.group()):
            gap = " "
        if end:
            start = end.end()
    return out


def fit_to_budget(text: str, budget: int, count: TokenCounter) -> list[str]:
    """Split ``text`` into pieces of at most ``budget`` tokens: whole sentences when possible, else words, else
    (a word longer than the budget: text without spaces) pieces cut between characters by token count."""
    if budget < 8:
        raise ValueError(f"token budget {budget} is too small: shorten the title or raise max_seq_length")
    sentences = _sentences(text)
    lengths = count([s for _, s in sentences])
    pieces: list[str] = []
    current = ""
    used = 0
    for (gap, sentence), n in zip(sentences, lengths, strict=True):
        if n > budget:  # one sentence alone is too long: split it by words
            if current:
                pieces.append(current)
                current, used = "", 0
            pieces.extend(_split_words(sentence, budget, count))
            continue
        if used + n > budget and current:
            pieces.append(current)
            current, used = "", 0
        current = f"{current}{gap}{sentence}" if current else sentence
        used += n
    if current:
        pieces.append(current)
    return pieces


def _split_words(sentence: str, budget: int, count: TokenCounter) -> list[str]:
    words = sentence.split(" ")
    per_word = count(words)
    pieces, current, used = [], [], 0
    for word, n in zip(words, per_word, strict=True):
        if n > budget:  # a single word longer than the budget (CJK text, a long URL): cut it by tokens
            if current:
                pieces.append(" ".join(current))
                current, used = [], 0
            pieces.extend(_cut_by_tokens(word, budget, count))
            continue
        if used + n > budget and current:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(word)
        used += n
    if current:
        pieces.append(" ".join(current))
    return pieces


def _cut_by_tokens(text: str, budget: int, count: TokenCounter) -> list[str]:
    """``text`` cut between characters into pieces of at most ``budget`` tokens each, every piece counted.

    With a counter that has ``token_spans`` (:func:`tokenizer_counter`), ``text`` is tokenised once and cut at
    every ``budget``-th token's start; a piece that counts more on its own (a word's tail tokenised afresh) is cut
    again by search. Other counters: a search on prefixes (:func:`_longest_fitting_prefix`).
    """
    pieces = _cut_at_spans(text, budget, count)
    if pieces is None:
        return _cut_by_tokens_searching(text, budget, count)
    out: list[str] = []
    for piece, n in zip(pieces, count(pieces), strict=True):
        out.extend([piece] if n <= budget else _cut_by_tokens_searching(piece, budget, count))
    return out


def _cut_by_tokens_searching(text: str, budget: int, count: TokenCounter) -> list[str]:
    pieces: list[str] = []
    while text:
        k = _longest_fitting_prefix(text, budget, count, hint=len(pieces[-1]) if pieces else 0)
        pieces.append(text[:k])
        text = text[k:]
    return pieces


def _cut_at_spans(text: str, budget: int, count: TokenCounter) -> list[str] | None:
    """``text`` cut before every ``budget``-th token, from one tokenisation; None if the counter gives no spans."""
    spans_of = getattr(count, "token_spans", None)
    if spans_of is None:
        return None
    try:
        starts = [start for start, _ in spans_of(text)]
    except Exception:  # noqa: BLE001 - a slow tokenizer has no offsets: search instead
        return None
    pieces, pos, i = [], 0, 0
    while i + budget < len(starts):
        cut = starts[i + budget]  # the piece holds tokens i .. i+budget-1 (fewer if one character has several)
        if cut <= pos:
            return None  # a character of more than ``budget`` tokens: leave it to the search
        pieces.append(text[pos:cut])
        pos, i = cut, i + budget
        while i > 0 and starts[i - 1] >= cut:
            i -= 1
    pieces.append(text[pos:])
    return [p for p in pieces if p]


def _longest_fitting_prefix(text: str, budget: int, count: TokenCounter, hint: int = 0) -> int:
    """The longest prefix of ``text`` found to count at most ``budget`` tokens (at least one character).

    ``hint`` (the previous piece's length) is tried first, with one character more; failing that, the prefix
    grows from ``budget`` characters by doubling until it is over the budget, then the gap is narrowed with
    batches of 16 prefixes per call: a few counter calls, each on a few budgets' worth of text. Only prefixes
    actually counted are returned, so the piece fits whatever the tokenizer.
    """
    if 0 < hint < len(text):
        at_hint, past_hint = count([text[:hint], text[:hint + 1]])
        if at_hint <= budget < past_hint:
            return hint
    fits, over = 0, None
    k = min(len(text), max(budget, 1))
    while over is None:
        if count([text[:k]])[0] <= budget:
            fits = k
            if k == len(text):
                return k
            k = min(len(text), 2 * k)
        else:
            over = k
    while over - fits > 1:
        step = max(1, (over - fits) // 16)
        tries = list(range(fits + step, over, step))
        for k, n in zip(tries, count([text[:k] for k in tries]), strict=True):
            if n > budget:
                over = k
                break
            fits = k
    return max(fits, 1)


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
    encoded_title, prefix = _title_prefix(title, opts, count)
    budget = opts.max_tokens - opts.special_tokens - prefix
    # A token covers at least one byte of utf-8 (a wordpiece token at least one character, a byte-level BPE
    # token at least one byte), so blocks no longer than the budget in bytes fit without tokenising; only the
    # longer ones are counted. (Characters are no bound: a CJK character or an emoji is several BPE tokens.)
    long_idx = ([i for i, b in enumerate(blocks) if len(b) > budget or (not b.isascii() and len(b.encode()) > budget)]
                if opts.unit != "document" else [])
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
        enc = encoded_text(encoded_title, text, encode_title=opts.encode_title)
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


def _title_prefix(title: str, opts: SplitOptions, count: TokenCounter) -> tuple[str, int]:
    """(the title as encoded with every paragraph, the tokens it takes there, its separating space included).

    A title longer than half of ``max_tokens`` is cut to that many tokens for the encoder (at words when it has
    spaces): a long heading or a page's runaway ``<title>`` must leave the paragraphs room, not fail the
    article. The row keeps the whole title (what a reader sees, and what the re-ranker reads); a title within
    half the budget is encoded whole, as before (a long scientific title is no runaway).
    """
    if not (opts.encode_title and title):
        return title, 0
    n = count([title])[0]
    cap = max(opts.max_tokens // 2, 1)
    if n > cap:
        title = _split_words(title, cap, count)[0]
        n = count([title])[0]
    return title, n + 1


def tokenizer_counter(tokenizer) -> TokenCounter:
    """A TokenCounter over a Hugging Face tokenizer (the caller's own copy: see ``query.bi_encoder.count_tokens``)."""
    from query.bi_encoder import count_tokens

    counter = functools.partial(count_tokens, tokenizer)
    # (start, end) characters of each token of one text: text without spaces is cut from one tokenisation.
    counter.token_spans = functools.partial(_token_spans, tokenizer)
    return counter


def _token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False,
                     return_offsets_mapping=True)["offset_mapping"]


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
        # Text with long runs without spaces (Chinese, Japanese) was truncated by the encoder: split again, once.
        *([UNSPACED_TEXT] if article.kind not in _STRUCTURED_KINDS and _UNSPACED_RUN.search(article.body) else []),
    )


#: Marks the fingerprint of a plain-text article or record with a long run without spaces, which was left to
#: the encoder's truncation before such runs were cut by tokens.
UNSPACED_TEXT = "unspaced-text-1"
_UNSPACED_RUN = re.compile(r"[^\s]{200,}")


def _all_lines_short(body: str, min_chars: int) -> bool:
    """No line reaches ``min_chars`` (cheap; a superset of the articles that made no paragraph before)."""
    return bool(body.strip()) and all(len(line.strip()) < min_chars for line in body.splitlines())


_STRUCTURED_KINDS = frozenset({"html", "markdown"})
