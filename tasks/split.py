"""Article → Paragraph records: blocks from HTML/markdown/text, short ones dropped, long ones split to fit the encoder.

Nothing is silently truncated: a block longer than the bi-encoder's ``max_seq_length`` (in tokens,
counting the title prefix) is split at sentence boundaries, and a single over-long sentence at word
boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from query.hits import passage_text as encoded_text  # noqa: F401 - the bi-encoder reads what the re-ranker reads
from tasks.records import Article, Paragraph, stable_hash
from tasks.text import normalize_ws

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_MD_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_EMPH = re.compile(r"(\*\*|__|`)")

#: The version of the splitting rules. Part of every local file's stamp, so a rule change makes the
#: next run read and re-split every file (only paragraphs whose text changed are re-encoded).
SPLIT_RULES = "1"

#: Counts tokens of many texts at once (without special tokens).
TokenCounter = Callable[[Sequence[str]], list[int]]


def markdown_blocks(body: str) -> tuple[str, list[str]]:
    """Markdown → (title from the first ``# heading``, blocks split on blank lines, light syntax removed)."""
    title, blocks = "", []
    for raw in re.split(r"\n\s*\n", body):
        lines = raw.strip().splitlines()
        if not lines:
            continue
        if lines[0].startswith("```"):
            lines = [ln for ln in lines if not ln.startswith("```")]
        if not title and re.match(r"^\s{0,3}#\s+", lines[0]):
            title = normalize_ws(_MD_HEADING.sub("", lines[0]))
        items: list[str] = []
        for line in lines:
            if _MD_LIST.match(line) and items:
                items.append("\n")  # list items become separate blocks
            items.append(_MD_LIST.sub("", _MD_HEADING.sub("", line.lstrip("> "))))
        for part in " ".join(items).split("\n"):
            text = normalize_ws(_MD_EMPH.sub("", _MD_LINK.sub(r"\1", part)))
            if text:
                blocks.append(text)
    return title, blocks


def text_blocks(body: str) -> list[str]:
    """Plain text → paragraphs separated by blank lines."""
    return [b for b in (normalize_ws(p) for p in re.split(r"\n\s*\n", body)) if b]


def article_blocks(article: Article, *, main_content: bool = True) -> tuple[str, list[str]]:
    """The title and text blocks of an article, whatever its kind."""
    if article.kind == "html":
        from tasks.html import extract_html

        doc = extract_html(article.body, main_content=main_content)
        title, blocks = doc.title, doc.blocks
    elif article.kind == "markdown":
        title, blocks = markdown_blocks(article.body)
    elif article.kind == "paragraphs":
        title, blocks = article.title, [normalize_ws(p) for p in article.paragraphs or []]
    else:
        title, blocks = article.title, text_blocks(article.body)
    title = normalize_ws(article.title or title)
    if not title and article.kind in ("markdown", "text", "html"):
        title = PurePosixPath(article.doc_id.rstrip("/")).stem.replace("-", " ").replace("_", " ")
    return title, [b for b in blocks if b]


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


def split_article(article: Article, opts: SplitOptions, count: TokenCounter) -> list[Paragraph]:
    """Split one article into paragraphs with stable ids.

    ``id = hash(source, doc_id, encoded text, occurrence)``: a paragraph keeps its id when others are
    inserted above it, so moving it never re-encodes it.
    """
    title, blocks = article_blocks(article, main_content=opts.main_content)
    if opts.unit == "document":  # one unit per article, never split: the encoder truncates it
        blocks = [" ".join(blocks)] if blocks else []
    blocks = [b for b in blocks if len(b) >= opts.min_chars]
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
                metadata=dict(article.metadata) or None,
                published=article.published,
                origin=article.origin or article.source,
            )
        )
    return paragraphs


def tokenizer_counter(tokenizer) -> TokenCounter:
    """A TokenCounter over a Hugging Face tokenizer (fast tokenizers count thousands of texts per call)."""

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    return count


def body_fingerprint(article: Article, opts: SplitOptions) -> str:
    """Hash of everything that determines an article's paragraphs: unchanged fingerprint, nothing to do."""
    return stable_hash(
        article.kind,
        article.title,
        article.body,
        str(opts.max_tokens),
        str(opts.min_chars),
        str(opts.encode_title),
        str(opts.main_content),
        *([opts.unit] if opts.unit != "paragraph" else []),  # paragraph: fingerprints of existing indexes unchanged
    )
