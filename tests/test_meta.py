"""Article metadata and publication time: HTML <meta>/JSON-LD/<time>, markdown front matter, dump fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.fetch import parse_dump_line
from tasks.html import extract_html
from tasks.meta import (
    MAX_KEYS,
    MAX_VALUE_CHARS,
    clean_metadata,
    front_matter,
    merge_metadata,
    parse_published,
)
from tasks.records import Article
from tasks.split import SplitOptions, body_fingerprint, markdown_document, split_article


def words(texts):
    return [len(t.split()) for t in texts]


OPTS = SplitOptions(max_tokens=64, min_chars=10)
BODY = "<p>The bridge reopened on Monday after eight months of repairs, the council said today.</p>"


# ---------------------------------------------------------------- published


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-05T10:15:00Z", datetime(2024, 3, 5, 10, 15, tzinfo=UTC)),
        ("2024-03-05T10:15:00+02:00", datetime(2024, 3, 5, 8, 15, tzinfo=UTC)),
        ("2024-03-05T10:15:00.123456-05:00", datetime(2024, 3, 5, 15, 15, 0, 123456, tzinfo=UTC)),
        ("2024-03-05 10:15", datetime(2024, 3, 5, 10, 15, tzinfo=UTC)),  # no zone: UTC
        ("2024-03-05", datetime(2024, 3, 5, tzinfo=UTC)),  # a date: midnight UTC
        ("20240305", datetime(2024, 3, 5, tzinfo=UTC)),
        ("2024-03", datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("Tue, 05 Mar 2024 10:15:00 +0100", datetime(2024, 3, 5, 9, 15, tzinfo=UTC)),  # RFC 2822
        ("Tue, 05 Mar 2024 10:15:00 GMT", datetime(2024, 3, 5, 10, 15, tzinfo=UTC)),
        ("March 5, 2024", datetime(2024, 3, 5, tzinfo=UTC)),
        (1709633700, datetime(2024, 3, 5, 10, 15, tzinfo=UTC)),  # epoch seconds
        (1709633700000, datetime(2024, 3, 5, 10, 15, tzinfo=UTC)),  # epoch milliseconds
    ],
)
def test_published_dates_parse_to_aware_utc(raw, expected):
    assert parse_published(raw) == expected
    assert parse_published(raw).tzinfo == UTC


@pytest.mark.parametrize("raw", ["", "yesterday", "not a date", "March 5", "5", "2024-13-45", "9" * 200,
                                 None, True, 2020, [], {"a": 1}, float("nan")])
def test_garbage_dates_give_no_published_and_never_raise(raw):
    assert parse_published(raw) is None


# ---------------------------------------------------------------- cleaning rule


def test_metadata_values_are_text_and_keys_lower_case():
    assert clean_metadata([("Author", " Ann  Lee "), ("Tags", ["ice", "snow"]), ("Stats", {"b": 2, "a": [1]}),
                           ("views", 12), ("draft", False), ("empty", ""), ("none", None)]) == {
        "author": "Ann Lee", "tags": "ice, snow", "stats": '{"a": [1], "b": 2}', "views": "12", "draft": "false"}


def test_overlong_values_and_keys_past_the_cap_are_left_out():
    cleaned = clean_metadata([("long", "x" * (MAX_VALUE_CHARS + 1)), ("ok", "x" * MAX_VALUE_CHARS)]
                             + [(f"k{i}", "v") for i in range(2 * MAX_KEYS)])
    assert "long" not in cleaned and cleaned["ok"] == "x" * MAX_VALUE_CHARS
    assert len(cleaned) == MAX_KEYS


def test_reader_metadata_wins_over_the_body():
    assert merge_metadata({"author": "Reader"}, {"author": "Body", "keywords": "k"}) == {
        "author": "Reader", "keywords": "k"}


# ---------------------------------------------------------------- HTML


def _page(head: str, body: str = BODY) -> str:
    return f"<html lang='en'><head><title>Bridge</title>{head}</head><body><article>{body}</article></body></html>"


def test_meta_tags_become_metadata_and_published():
    doc = extract_html(_page("""
        <meta property="article:published_time" content="2024-03-05T10:15:00+01:00">
        <meta property="article:modified_time" content="2024-03-06T08:00:00Z">
        <meta name="author" content="Ann Lee">
        <meta name="keywords" content="bridge, repairs">
        <meta property="article:tag" content="ignored: keywords already given by a preferred name">
        <meta name="description" content="The bridge is open again.">
        <meta property="og:site_name" content="City News">
        <meta property="article:section" content="Local">
        <meta name="viewport" content="width=device-width">
        <meta property="fb:app_id" content="123">"""))
    assert doc.published == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    assert doc.metadata == {
        "published": "2024-03-05T10:15:00+01:00", "modified": "2024-03-06T08:00:00Z", "author": "Ann Lee",
        "keywords": "bridge, repairs", "description": "The bridge is open again.", "site_name": "City News",
        "section": "Local", "language": "en"}


def test_repeated_article_tags_are_joined():
    doc = extract_html(_page('<meta property="article:tag" content="bridge">'
                             '<meta property="article:tag" content="roads"><meta property="article:tag" content="bridge">'))
    assert doc.metadata["keywords"] == "bridge, roads"


def test_json_ld_gives_date_and_authors_when_meta_tags_do_not():
    ld = """<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [
        {"@type": "WebSite", "name": "City News"},
        {"@type": "NewsArticle", "datePublished": "2024-03-05", "dateModified": "2024-03-06",
         "author": [{"@type": "Person", "name": "Ann Lee"}, {"@type": "Person", "name": "Bo Chen"}],
         "publisher": {"@type": "Organization", "name": "City News"}, "keywords": ["bridge", "repairs"]}]}
        </script><script type="application/ld+json">{not json</script>"""
    doc = extract_html(_page(ld))
    assert doc.published == datetime(2024, 3, 5, tzinfo=UTC)
    assert doc.metadata["author"] == "Ann Lee, Bo Chen"
    assert doc.metadata["site_name"] == "City News"
    assert doc.metadata["keywords"] == "bridge, repairs"


def test_time_element_of_the_article_is_the_published_time():
    related = '<aside><time datetime="2020-01-01">old story</time></aside>'
    body = f'<header><time datetime="2024-03-05T10:15:00Z">5 March</time></header>{BODY}'
    doc = extract_html(f"<html><body>{related}<nav><time datetime='2019-01-01'>x</time></nav>"
                       f"<article>{body}</article></body></html>")
    assert doc.published == datetime(2024, 3, 5, 10, 15, tzinfo=UTC)
    assert doc.metadata["published"] == "2024-03-05T10:15:00Z"


def test_itemprop_date_published_wins_over_a_time_element():
    body = ('<time datetime="2023-01-01">other</time><span itemprop="datePublished" content="2024-03-05">'
            f'5 March</span>{BODY}')
    assert extract_html(_page("", body)).published == datetime(2024, 3, 5, tzinfo=UTC)


def test_an_unparseable_date_stays_as_text_without_published():
    doc = extract_html(_page('<meta property="article:published_time" content="sometime last week">'))
    assert doc.published is None
    assert doc.metadata["published"] == "sometime last week"


def test_paragraphs_of_an_html_page_carry_its_metadata():
    html = _page('<meta name="author" content="Ann Lee"><meta name="date" content="2024-03-05">')
    [p] = split_article(Article("b.html", "/src", "", html, "html"), OPTS, words)
    assert p.metadata == {"author": "Ann Lee", "published": "2024-03-05", "language": "en"}
    assert p.published == datetime(2024, 3, 5, tzinfo=UTC)


def test_a_page_without_metadata_gives_paragraphs_without_it():
    [p] = split_article(Article("b.html", "/src", "", f"<body>{BODY}</body>", "html"), OPTS, words)
    assert p.metadata is None and p.published is None


# ---------------------------------------------------------------- markdown front matter


FRONT = """---
title: Glacier notes
date: 2024-03-05
author: Ann Lee
tags: [ice, snow]
extra: {depth: 3, unit: m}
draft: false
---
# Glaciers

Glaciers are slow rivers of ice that shape the valleys they fill.
"""


def test_front_matter_is_metadata_and_never_a_paragraph_or_the_title_heading():
    doc = markdown_document(FRONT)
    assert doc.title == "Glacier notes"
    assert doc.published == datetime(2024, 3, 5, tzinfo=UTC)
    assert doc.metadata == {"date": "2024-03-05", "author": "Ann Lee", "tags": "ice, snow",
                            "extra": '{"depth": 3, "unit": "m"}', "draft": "false"}
    paras = split_article(Article("g.md", "/src", "", FRONT, "markdown"), OPTS, words)
    assert [p.text for p in paras] == ["Glaciers. Glaciers are slow rivers of ice that shape the valleys they fill."]
    assert paras[0].title == "Glacier notes"
    assert paras[0].metadata["author"] == "Ann Lee"


def test_hugos_toml_front_matter_is_metadata_too_and_a_broken_one_stays_text():
    # It was indexed as a paragraph ("+++ title = ..."), with no title and no date.
    doc = markdown_document('+++\r\ntitle = "Hugo Post"\r\ndate = 2024-03-05T10:00:00Z\r\ntags = ["ice", "snow"]\r\n'
                            '+++\r\n\r\nGlaciers are slow rivers of ice that shape the valleys they fill.\r\n')
    assert doc.title == "Hugo Post" and doc.published == datetime(2024, 3, 5, 10, tzinfo=UTC)
    assert doc.metadata["tags"] == "ice, snow" and not any("+++" in b.text for b in doc.blocks)
    broken = '+++\ntitle = "unclosed\n+++\nText after it.'
    assert front_matter(broken) == ({}, broken)


def test_a_dashed_rule_that_is_not_yaml_front_matter_stays_text():
    body = "---\n: [unbalanced\n---\nText after the rule is long enough."
    assert front_matter(body) == ({}, body)
    assert front_matter("Text first\n---\na: 1\n---\n") == ({}, "Text first\n---\na: 1\n---\n")


def test_front_matter_that_yaml_refuses_but_is_plain_key_value_lines_is_still_front_matter():
    doc = markdown_document("---\ntitle: Dated\nauthor: Ann\ndate: 2022-02-30\n---\nAn article about beavers building dams.\n")
    assert doc.title == "Dated" and doc.published is None  # February 30th is no date
    assert doc.metadata == {"author": "Ann", "date": "2022-02-30"}
    paras = split_article(Article("b.md", "/src", "", "---\ntitle: Dated\ndate: 2022-02-30\n---\nAn article about "
                                  "beavers building dams across the river.\n", "markdown"), OPTS, words)
    assert [p.text for p in paras] == ["An article about beavers building dams across the river."]


def test_bad_front_matter_date_keeps_the_text_without_published():
    doc = markdown_document("---\ndate: around easter\n---\nBody text that is long enough to keep.\n")
    assert doc.published is None and doc.metadata == {"date": "around easter"}


# ---------------------------------------------------------------- dumps


def test_extra_dump_fields_become_metadata_and_published():
    a = parse_dump_line({"_id": "d1", "title": "T", "text": "body", "url": "http://x", "year": 2019,
                         "authors": ["A", "B"], "published": "2024-03-05T10:15:00Z"}, source="s")
    assert a.metadata == {"url": "http://x", "year": "2019", "authors": "A, B", "published": "2024-03-05T10:15:00Z"}
    assert a.published == datetime(2024, 3, 5, 10, 15, tzinfo=UTC)


def test_beir_metadata_objects_are_flattened_and_top_level_fields_win():
    a = parse_dump_line({"_id": "d1", "title": "T", "text": "body", "source": "top",
                         "metadata": {"url": "http://x", "source": "nested", "date": "2020-01-02"}}, source="s")
    assert a.metadata == {"source": "top", "url": "http://x", "date": "2020-01-02"}
    assert a.published == datetime(2020, 1, 2, tzinfo=UTC)


def test_a_beir_record_with_empty_metadata_has_none():
    a = parse_dump_line({"_id": "d1", "title": "T", "text": "body", "metadata": {}}, source="s")
    assert a.metadata == {} and a.published is None


def test_bad_dump_metadata_never_fails_the_record():
    a = parse_dump_line({"id": "7", "title": "Ice", "paragraphs": ["p1"], "date": "garbage",
                         "weird": float("nan")}, source="s")
    assert a.paragraphs == ["p1"] and a.published is None and a.metadata == {"date": "garbage", "weird": "NaN"}


def test_dump_metadata_reaches_every_paragraph():
    a = parse_dump_line({"id": "7", "title": "Ice", "lang": "en", "date": "2024-03-05",
                         "paragraphs": ["Glaciers are slow rivers of ice.", "They carve valleys over time."]},
                        source="s")
    paras = split_article(a, OPTS, words)
    assert [p.metadata for p in paras] == [{"lang": "en", "date": "2024-03-05"}] * 2
    assert {p.published for p in paras} == {datetime(2024, 3, 5, tzinfo=UTC)}


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_changes_with_dump_metadata_or_published_only():
    BODY = "a body of more than ten characters"  # (a shorter one is a short document: marked, see test_split)
    plain = Article("d1", "/dump", "T", BODY, "text")
    # Articles without metadata keep the fingerprint they had (existing indexes re-encode nothing).
    from tasks.records import stable_hash

    assert body_fingerprint(plain, OPTS) == stable_hash("text", "T", BODY, "64", "10", "True", "True")
    tagged = Article("d1", "/dump", "T", BODY, "text", metadata={"lang": "en"})
    retagged = Article("d1", "/dump", "T", BODY, "text", metadata={"lang": "fr"})
    dated = Article("d1", "/dump", "T", BODY, "text", published=datetime(2024, 3, 5, tzinfo=UTC))
    fingerprints = {body_fingerprint(a, OPTS) for a in (plain, tagged, retagged, dated)}
    assert len(fingerprints) == 4
    same = Article("d1", "/dump", "T", BODY, "text", metadata={"lang": "en"})
    assert body_fingerprint(same, OPTS) == body_fingerprint(tagged, OPTS)


def test_placeholder_dates_and_profile_urls_give_way_to_better_sources():
    ld = ('<script type="application/ld+json">{"@type": "NewsArticle", "datePublished": "2019-11-19T08:00:00Z",'
          ' "author": {"@type": "Person", "name": "Meg James"}}</script>')
    doc = extract_html(_page('<meta property="article:published_time" content="0001-01-01T00:00:00Z">'
                             '<meta property="article:author" content="https://news.example/people/meg-james">' + ld))
    assert doc.published == datetime(2019, 11, 19, 8, tzinfo=UTC)
    assert doc.metadata["published"] == "2019-11-19T08:00:00Z"
    assert doc.metadata["author"] == "Meg James"
    assert parse_published("9999-12-31T23:59:59") is None


@pytest.mark.parametrize(("text", "utc"), [
    ("March 5, 2024 10:00 EST", "2024-03-05T15:00:00+00:00"),  # read as 10:00 UTC, five hours off
    ("5 March 2024 10:00 CET", "2024-03-05T09:00:00+00:00"),  # RFC 2822's parser took CET for UTC
    ("Tue, 05 Mar 2024 10:00:00 PDT", "2024-03-05T17:00:00+00:00"),
    ("Tue, 05 Mar 2024 10:00:00 +0100", "2024-03-05T09:00:00+00:00"),  # RFC 2822 as before
])
def test_a_written_date_with_a_zone_abbreviation_is_read_in_that_zone(text, utc):
    import warnings

    from tasks.meta import parse_published

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dateutil warned of each unknown zone name
        assert parse_published(text).isoformat() == utc


@pytest.mark.parametrize(("text", "language", "expected"), [
    ("5.3.2024", None, "2024-03-05"),  # dots: day first in every language that writes them (was May 3)
    ("05.03.2024", "en", "2024-03-05"),
    ("5.3.2024 10:00", "de", "2024-03-05"),
    ("05/03/2024", "en-GB", "2024-03-05"),  # slashes: the page's language decides
    ("05/03/2024", "fr_FR", "2024-03-05"),
    ("05/03/2024", "en-US", "2024-05-03"),
    ("05/03/2024", "en", "2024-05-03"),  # no region: month first, as before
    ("05/03/2024", None, "2024-05-03"),
    ("2024/03/05", "de", "2024-03-05"),  # year first is never read day first
    ("2024-03-05", "fr", "2024-03-05"),
    ("13/03/2024", "en-US", "2024-03-13"),  # only one reading exists
    ("05/03/2024", "eng", "2024-05-03"),  # ISO 639-2 for English
    ("05/03/2024", "English", "2024-05-03"),  # a name is no language tag: the old reading stays
    ("05/03/2024", "English (United States)", "2024-05-03"),
    ("05/03/2024", "deu", "2024-03-05"),
    ("05/03/2024", "en-GB,en;q=0.9", "2024-03-05"),
])
def test_a_numeric_date_is_read_in_the_order_its_language_writes_it(text, language, expected):
    assert parse_published(text, language).date().isoformat() == expected


def test_a_pages_language_orders_its_numeric_dates():
    import lxml.html

    from tasks.meta import html_metadata, published_from

    page = '<html lang="de-DE"><head><meta name="date" content="05/03/2024"></head><body><p>x</p></body></html>'
    assert html_metadata(lxml.html.fromstring(page))[1].date().isoformat() == "2024-03-05"
    assert published_from({"date": "05/03/2024", "language": "en-GB"}).date().isoformat() == "2024-03-05"
    assert published_from({"date": "05/03/2024"}).date().isoformat() == "2024-05-03"
