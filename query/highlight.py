"""Highlights: where the query's terms occur in a hit's text, matched the way the lexical index matches.

LanceDB's full-text index (``tasks/store.py``: ``FTS(stem=True, remove_stop_words=True, ascii_folding=True)``)
analyses text with Lance's tantivy-derived pipeline, in this order:

1. the "simple" tokenizer: maximal runs of Unicode Alphabetic or numeric characters (Rust's
   ``char::is_alphanumeric``: letters, and also the vowel signs of Devanagari, Thai...; not a virama);
2. tokens of 40 bytes (UTF-8) or more are dropped;
3. lower case;
4. the English Snowball stemmer (Porter2);
5. English stop words (NLTK's list) are dropped, compared after stemming;
6. ASCII folding ("café" -> "cafe").

A word of ``text`` is highlighted when its analysed term equals an analysed term of the query, so a
highlight marks exactly a word the lexical index would match ("indexing" marks "indexed"). Dense-only
hits get highlights too: they show which query words a paragraph shares with the question.

Cheap on purpose: it runs on the k returned hits only, needs ``snowballstemmer`` (pure Python) and the
standard library, and never imports torch.
"""

from __future__ import annotations

import threading
import unicodedata
from functools import lru_cache

import regex
import snowballstemmer

#: Lance's English stop words (lancedb 0.41): NLTK's English list without the negations ("no", "nor", "not")
#: and the pieces of contractions ("don", "won", "s", "t", "ll"...), which lancedb 0.40 still dropped. They are
#: compared with the *stemmed* token as Lance does, so "doing" (stem "do") is a stop word but "does" (stem
#: "doe") is not. Checked word by word against LanceDB's own FTS in tests/test_results.py: the list moves with
#: the lancedb version pinned in pyproject.toml.
_NLTK_ENGLISH = (
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "
    "herself it its itself they them their theirs themselves what which who whom this that these those am is "
    "are was were be been being have has had having do does did doing a an the and but if or because as until "
    "while of at by for with about against between into through during before after above below to from up "
    "down in out on off over under again further then once here there when where why how all any both each few "
    "more most other some such only own same so than too very can will just should now re"
)
ENGLISH_STOP_WORDS = frozenset(_NLTK_ENGLISH.split())

#: tantivy's RemoveLongFilter(40): tokens of this many UTF-8 bytes or more are not indexed.
MAX_TOKEN_BYTES = 40

#: The simple tokenizer's tokens: runs of Alphabetic or numeric characters. The standard ``re``'s ``\w`` split
#: "हिन्दी" at its vowel signs into single letters, which then marked letters inside unrelated words.
_TOKEN = regex.compile(r"[\p{Alphabetic}\p{N}]+")

#: Letters that Unicode does not decompose but ASCII folding maps (the common ones of Lucene's table).
_FOLD_EXTRA = str.maketrans({
    "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "đ": "d", "ð": "d", "þ": "th",
    "ł": "l", "ı": "i", "ŀ": "l", "ĸ": "q", "ŉ": "n", "ſ": "s", "ƒ": "f",
})

_local = threading.local()  # a snowball stemmer keeps state while it stems: one per thread


def _stem(word: str) -> str:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


@lru_cache(maxsize=4096)
def _fold_char(c: str) -> str:
    # Per character, like Lucene's folding table: a letter whose compatibility decomposition is ASCII once
    # its accents are dropped ("é" -> "e", "ﬁ" -> "fi"); anything else, a lone combining mark included, stays.
    if (mapped := c.translate(_FOLD_EXTRA)) != c:
        return mapped
    plain = "".join(d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d))
    return plain if plain and plain.isascii() else c


def fold(text: str) -> str:
    """ASCII folding: "café" -> "cafe", "Æon" -> "AEon"; characters without an ASCII form stay as they are."""
    return text if text.isascii() else "".join(map(_fold_char, text))


@lru_cache(maxsize=65536)
def term(token: str) -> str | None:
    """The index term of one token (``None``: a stop word or an over-long token, which the index drops)."""
    if len(token.encode("utf-8")) >= MAX_TOKEN_BYTES:
        return None
    stem = _stem(token.lower())
    if stem in ENGLISH_STOP_WORDS:
        return None
    return fold(stem)


def query_terms(query: str) -> frozenset[str]:
    """The index terms of ``query``: what the lexical index looks up, and what :func:`highlight` marks."""
    return frozenset(t for m in _TOKEN.finditer(query) if (t := term(m.group())) is not None)


def highlight(text: str, terms: frozenset[str] | set[str]) -> tuple[tuple[int, int], ...]:
    """``(start, end)`` character spans of the words of ``text`` whose index term is in ``terms``.

    Spans are sorted, never overlap, and ``text[start:end]`` is the matched word as written.
    """
    if not terms or not text:
        return ()
    return tuple(m.span() for m in _TOKEN.finditer(text) if term(m.group()) in terms)
