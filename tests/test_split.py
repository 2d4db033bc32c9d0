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
    markdown_document,
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
    # Windows and old Mac line ends: a file of CR-only lines was one paragraph, in plain text and markdown.
    for end in ("\r\n", "\r"):
        assert text_blocks(f"first para{end}wraps here{end}{end}second") == ["first para wraps here", "second"]
        assert [b.text for b in markdown_document(f"# T{end}{end}first{end}{end}second{end}").blocks] == [
            "T", "first", "second"]


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


@pytest.mark.parametrize(("kind", "body", "expected"), [
    ("text", "Buy milk.", ["Buy milk."]),
    ("text", "Call Ann\n\nat noon", ["Call Ann at noon"]),  # every block short: the document, whole
    ("markdown", "# Todo\n\nCall Ann", ["Call Ann"]),  # the heading is the title, encoded with every passage
    ("markdown", "## Shopping list\n", ["Shopping list"]),  # a note that is one heading
    ("html", "<html><head><title>T</title></head><body><h1>Only a heading here</h1></body></html>",
     ["Only a heading here"]),
    ("text", "  \n\n ", []),  # no text at all is still nothing (an emptied file keeps its rows)
])
def test_a_document_whose_every_paragraph_is_short_is_kept_whole(kind, body, expected):
    article = Article("a", "/src", "", body, kind)
    assert [p.text for p in split_article(article, opts(min_chars=20), words)] == expected
    assert [p.text for p in split_article(article, opts(min_chars=20, unit="document"), words)] == expected


def test_a_record_of_a_title_alone_is_its_title_and_is_split_again_once():
    from tasks.fetch import parse_dump_line
    from tasks.split import UNTITLED_RECORDS

    record = parse_dump_line({"_id": "r1", "title": "Only a title", "text": ""}, source="/d/corpus.jsonl")
    assert [p.text for p in split_article(record, opts(), words)] == ["Only a title"]
    untitled = parse_dump_line({"_id": "r2", "text": "a passage long enough to keep"}, source="/d/corpus.jsonl")
    assert body_fingerprint(untitled, opts()) == stable_hash("text", "", "a passage long enough to keep", "64", "10",
                                                            "True", "True", UNTITLED_RECORDS)


def test_the_fingerprint_moves_for_short_plain_articles_only():
    """Short plain-text articles made no paragraph before, so their fingerprint moves once; the others stay."""
    from tasks.split import SHORT_DOCUMENTS

    short, long = (Article("a", "/src", "T", body, "text") for body in ("Buy milk.", "this line is long enough"))
    assert body_fingerprint(short, opts()) == stable_hash("text", "T", "Buy milk.", "64", "10", "True", "True",
                                                         SHORT_DOCUMENTS)
    assert body_fingerprint(long, opts()) == stable_hash("text", "T", "this line is long enough", "64", "10", "True",
                                                        "True")


def test_a_record_without_a_title_gets_none_while_a_file_is_named_by_its_name():
    from tasks.fetch import parse_dump_line

    record = parse_dump_line({"_id": "8841823", "text": "How do I learn to cook rice well?"}, source="/d/corpus.jsonl")
    [p] = split_article(record, opts(), words)
    assert (p.title, encoded_text(p.title, p.text, encode_title=True)) == ("", "How do I learn to cook rice well?")
    [f] = split_article(Article("notes/rice-cooking.txt", "/src", "", "How do I learn to cook rice well?", "text"),
                        opts(), words)
    assert f.title == "rice cooking"


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


# ---------------------------------------------------------------- headings are context, not passages


def test_beir_and_wikipedia_records_split_exactly_as_before_headings():
    """Ids and texts recorded with the code before headings-as-context (commit 3d91f0f): byte-identical."""
    from tasks.fetch import parse_dump_line

    beir = {"_id": "4983", "title": "Microstructural development of white matter", "metadata": {},
            "text": "Alterations of the architecture of cerebral white matter can affect cortical development.  "
                    "A line scan diffusion-weighted MRI sequence was applied to measure the apparent diffusion "
                    "coefficient in 17 preterm infants. Anisotropy was higher in central white matter. Diffusion "
                    "tensor imaging shows promise for the assessment of white matter development.\n\n"
                    "A second paragraph of the abstract."}
    wiki = {"id": "7", "title": "Ice", "paragraphs": [
        "Ice is water frozen into a solid state.", "short", "Ice   appears transparent or an opaque bluish-white color."]}
    got = [(p.id, p.position, p.text) for r in (beir, wiki)
           for p in split_article(parse_dump_line(r, source="/d/corpus.jsonl"), opts(max_tokens=24), words)]
    assert got == [
        ("c9dda0ed0dd3f2ae54b05504a4a7e74a", 0,
         "Alterations of the architecture of cerebral white matter can affect cortical development."),
        ("f01310946c31fca997fed1d26829c90f", 1,
         "A line scan diffusion-weighted MRI sequence was applied to measure the apparent diffusion coefficient in 17"),
        ("8e7449f542663fab62e79aba302a08b6", 2, "preterm infants."),
        ("964d3cb602b71e47ec329b25512d77d1", 3, "Anisotropy was higher in central white matter."),
        ("d9e49c76b54961a7353b117cc3e2a374", 4,
         "Diffusion tensor imaging shows promise for the assessment of white matter development."),
        ("1e754cfa67320ec6bad86bbc90c6287c", 5, "A second paragraph of the abstract."),
        ("5085ea3f9b32d29e2eaf52d1032234bb", 0, "Ice is water frozen into a solid state."),
        ("02833ef63c8f27ec4d5554a26ed9e44c", 1, "Ice appears transparent or an opaque bluish-white color."),
    ]


def test_plain_text_keeps_a_first_block_equal_to_the_title():
    # Only structured bodies (HTML, markdown) know a block is a heading or the page's title line.
    a = Article("1", "/dump", "Glaciers of the Alps", "Glaciers of the Alps\n\nThey are melting quickly now.", "text")
    assert [p.text for p in split_article(a, opts(), words)] == ["Glaciers of the Alps", "They are melting quickly now."]


MD = """# Glaciers

## Formation

Snow falls and compacts into firn over many winters.

Firn becomes glacial ice under its own weight.

## Empty section

## Movement
### Speed

Most glaciers move a few metres per day.

## Trailing heading
"""


def test_markdown_headings_join_the_first_paragraph_under_them_and_never_stand_alone():
    paras = split_article(Article("g.md", "/src", "", MD, "markdown"), opts(), words)
    assert [p.text for p in paras] == [
        "Formation. Snow falls and compacts into firn over many winters.",
        "Firn becomes glacial ice under its own weight.",
        "Movement. Speed. Most glaciers move a few metres per day.",
    ]
    assert paras[0].title == "Glaciers"  # the "# Glaciers" line is the title, not a passage
    assert paras[0].encoded == "Glaciers Formation. Snow falls and compacts into firn over many winters."


def test_markdown_document_keeps_heading_levels():
    from tasks.split import Block, markdown_document

    doc = markdown_document("Title\n=====\n\nIntro text here.\n\nPart two\n--------\n## Own line\ntext under it\n"
                            "\n```\n# not a heading\n```\n")
    assert doc.title == "Title"
    assert doc.blocks == [Block("Title", 1), Block("Intro text here."), Block("Part two", 2), Block("Own line", 2),
                          Block("text under it"), Block("# not a heading")]


def test_headings_end_in_their_own_punctuation():
    md = "## What is firn?\n\nFirn is old snow that has not yet become ice.\n\n## Note:\n\nIt is porous and light."
    assert [p.text for p in split_article(Article("f.md", "/src", "Firn", md, "markdown"), opts(), words)] == [
        "What is firn? Firn is old snow that has not yet become ice.", "Note: It is porous and light."]


def test_heading_context_counts_toward_the_token_budget_and_nothing_is_lost():
    heading = "A heading of exactly eight words long here"
    body = " ".join(f"Sentence {i} has four." for i in range(12))  # 48 words
    paras = split_article(Article("h.md", "/src", "T", f"## {heading}\n\n{body}", "markdown"), opts(max_tokens=24), words)
    # budget = 24 - 2 special - (1 title word + 1) = 20 words, heading included
    assert all(len(p.text.split()) <= 20 for p in paras)
    assert " ".join(p.text for p in paras) == f"{heading}. {body}"
    assert paras[0].text.startswith(heading) and not paras[1].text.startswith(heading)


def test_a_first_html_block_repeating_the_title_is_dropped():
    html = ("<html><head><title>Glacier notes</title></head><body><p>Glacier notes.</p>"
            "<p>Glaciers are slow rivers of ice.</p><p>Glacier notes</p></body></html>")
    paras = split_article(Article("g.html", "/src", "", html, "html"), opts(), words)
    # The first block is the page's title line; a later identical paragraph is content and stays.
    assert [p.text for p in paras] == ["Glaciers are slow rivers of ice.", "Glacier notes"]


def test_fingerprint_of_html_and_markdown_moves_to_the_heading_rules_once():
    from tasks.split import SPLIT_RULES

    for kind in ("html", "markdown"):
        a = Article("a", "/src", "T", "body", kind)
        assert body_fingerprint(a, opts()) == stable_hash(kind, "T", "body", "64", "10", "True", "True", SPLIT_RULES)


def test_section_heading_context_heads_every_paragraph_of_its_section():
    paras = split_article(Article("g.md", "/src", "", MD, "markdown"), opts(heading_context="section"), words)
    assert [p.text for p in paras] == [
        "Formation. Snow falls and compacts into firn over many winters.",
        "Formation. Firn becomes glacial ice under its own weight.",
        "Movement. Speed. Most glaciers move a few metres per day.",
    ]
