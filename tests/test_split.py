"""Splitting, ids and hashing: pure functions with exact expected outputs."""

from __future__ import annotations

import pytest

from tasks.records import Article, stable_hash
from tasks.split import (
    SplitOptions,
    body_fingerprint,
    encoded_text,
    fit_to_budget,
    markdown_blocks,
    normalize_ws,
    split_article,
    split_sentences,
    text_blocks,
)


def words(texts):
    """Token counter where one word is one token: exact and easy to reason about."""
    return [len(t.split()) for t in texts]


def opts(**kw) -> SplitOptions:
    return SplitOptions(**{"max_tokens": 64, "min_chars": 10, "encode_title": True, **kw})


def test_whitespace_is_collapsed_including_nbsp_and_newlines():
    assert normalize_ws("  a\u00a0 b\n\tc  ") == "a b c"


def test_markdown_blocks_take_the_title_and_strip_light_syntax():
    title, blocks = markdown_blocks("# Glaciers\n\nSome **bold** and a [link](http://x).\n\n- one item\n- two item\n")
    assert title == "Glaciers"
    assert blocks == ["Glaciers", "Some bold and a link.", "one item", "two item"]


def test_text_blocks_split_on_blank_lines():
    assert text_blocks("first para\nwraps here\n\n\nsecond") == ["first para wraps here", "second"]


def test_sentences_split_at_terminal_punctuation():
    assert split_sentences('One. Two? "Three!" Four') == ["One.", "Two?", '"Three!"', "Four"]


def test_long_text_is_split_at_sentence_boundaries_within_the_budget():
    text = "a b c d. e f g h. i j k l. m n."
    assert fit_to_budget(text, 8, words) == ["a b c d. e f g h.", "i j k l. m n."]


def test_one_overlong_sentence_is_split_at_words():
    assert fit_to_budget("a b c d e f g h i j", 8, words) == ["a b c d e f g h", "i j"]


def test_nothing_is_lost_when_splitting():
    text = " ".join(f"Sentence number {i} has five words." for i in range(40))
    pieces = fit_to_budget(text, 20, words)
    assert " ".join(pieces) == text
    assert all(len(p.split()) <= 20 for p in pieces)


def test_split_article_budget_counts_the_title_and_special_tokens():
    long = " ".join(f"Word{i} is here." for i in range(30))  # 90 words
    article = Article("a.txt", "/src", "Title Words", long, "text")
    paras = split_article(article, opts(max_tokens=32), words)
    # budget = 32 - 2 special - (2 title words + 1) = 27 words
    assert all(len(p.encoded.split()) <= 30 for p in paras)
    assert " ".join(p.text for p in paras) == long
    assert [p.position for p in paras] == list(range(len(paras)))


def test_short_paragraphs_are_dropped_by_the_min_chars_setting():
    article = Article("a.txt", "/src", "T", "tiny\n\nthis paragraph is long enough to keep", "text")
    assert [p.text for p in split_article(article, opts(min_chars=10), words)] == ["this paragraph is long enough to keep"]


def test_ids_survive_a_paragraph_inserted_above():
    a = Article("a.txt", "/src", "T", "first paragraph here\n\nsecond paragraph here", "text")
    b = Article("a.txt", "/src", "T", "a new paragraph on top\n\nfirst paragraph here\n\nsecond paragraph here", "text")
    ids_a = {p.text: p.id for p in split_article(a, opts(), words)}
    ids_b = {p.text: (p.id, p.position) for p in split_article(b, opts(), words)}
    assert ids_b["first paragraph here"] == (ids_a["first paragraph here"], 1)
    assert ids_b["second paragraph here"] == (ids_a["second paragraph here"], 2)


def test_repeated_paragraphs_get_distinct_ids_by_occurrence():
    a = Article("a.txt", "/src", "T", "same text repeated\n\nsame text repeated", "text")
    paras = split_article(a, opts(), words)
    assert len({p.id for p in paras}) == 2
    assert paras[0].id == stable_hash("/src", "a.txt", "T same text repeated", "0")


def test_encoded_text_follows_the_beir_title_convention():
    assert encoded_text("Paris", "is big", encode_title=True) == "Paris is big"
    assert encoded_text("Paris", "is big", encode_title=False) == "is big"
    assert encoded_text("", "is big", encode_title=True) == "is big"


def test_stable_hash_separates_parts():
    assert stable_hash("ab", "c") != stable_hash("a", "bc")
    assert stable_hash("x") == stable_hash("x") and len(stable_hash("x")) == 32


def test_fingerprint_changes_with_body_or_split_settings():
    a = Article("a.txt", "/src", "T", "body", "text")
    assert body_fingerprint(a, opts()) == body_fingerprint(Article("a.txt", "/src", "T", "body", "text"), opts())
    assert body_fingerprint(a, opts()) != body_fingerprint(a, opts(min_chars=11))
    assert body_fingerprint(a, opts()) != body_fingerprint(Article("a.txt", "/src", "T", "body2", "text"), opts())


def test_a_tiny_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        fit_to_budget("a b c", 3, words)


def test_pre_split_dump_paragraphs_keep_their_title():
    a = Article("1", "/dump", "Glacier", "", "paragraphs", paragraphs=["Glaciers are slow rivers of ice."])
    [p] = split_article(a, opts(), words)
    assert (p.title, p.text, p.encoded) == ("Glacier", "Glaciers are slow rivers of ice.", "Glacier Glaciers are slow rivers of ice.")
