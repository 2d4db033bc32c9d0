"""Edge cases of splitting and reading articles: text without spaces, long titles, fenced code, typed front matter,
byte-level tokenizers, markdown served as text/plain and utf-16 declared only by the Content-Type header.

Token budgets are checked with the real MiniLM WordPiece tokenizer (the bi-encoder's), as the index counts them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.records import Article
from tasks.split import (
    SplitOptions,
    fit_to_budget,
    markdown_document,
    split_article,
    split_sentences,
    tokenizer_counter,
)

MAX_TOKENS = 256


@pytest.fixture(scope="module")
def tokenizer():
    from tests._models import _tokenizer

    return _tokenizer()


@pytest.fixture(scope="module")
def count(tokenizer):
    return tokenizer_counter(tokenizer)


def encoded_tokens(tokenizer, text: str) -> int:
    """Tokens the bi-encoder sees for ``text``, [CLS] and [SEP] included."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])


def split(body: str, count, *, kind: str = "text", doc_id: str = "note.txt", title: str = "", max_tokens=MAX_TOKENS):
    return split_article(Article(doc_id, "/src", title, body, kind), SplitOptions(max_tokens=max_tokens), count)


# ------------------------------------------------------------------------------- text without spaces

# A Chinese sentence with commas but no full stop, repeated: 1,640 characters, one "word" to a space splitter.
ZH_CLAUSE = "大型语言模型在自然语言处理领域取得了显著进展，研究人员正在探索其在检索系统中的应用"


def test_chinese_text_without_spaces_is_split_within_the_token_budget(tokenizer, count):
    body = ZH_CLAUSE * 40
    paras = split(body, count, doc_id="zh.txt")
    assert len(paras) > 1
    assert all(encoded_tokens(tokenizer, p.encoded) <= MAX_TOKENS for p in paras)
    assert "".join(p.text for p in paras) == body  # nothing lost, nothing added


def test_chinese_and_japanese_sentences_end_at_their_own_punctuation_without_a_space():
    assert split_sentences("今天下雨了。我们在家！你呢？好；走吧") == ["今天下雨了。", "我们在家！", "你呢？", "好；", "走吧"]
    assert split_sentences("彼は「行く。」と言った。次") == ["彼は「行く。」", "と言った。", "次"]
    assert split_sentences("等一下……然后") == ["等一下……", "然后"]
    # English is split as before: an ellipsis followed by a space is no sentence end.
    assert split_sentences("Wait… what? Yes. No") == ["Wait… what?", "Yes.", "No"]


def test_a_long_japanese_paragraph_is_cut_at_sentence_ends_and_joined_back_without_spaces(tokenizer, count):
    sentence = "これは検索システムのための日本語の文章で、句読点で区切られています。"
    body = sentence * 30
    pieces = fit_to_budget(body, 100, count)
    assert len(pieces) > 1
    assert all(p.endswith("。") for p in pieces)  # whole sentences
    assert all(n <= 100 for n in count(pieces))
    assert "".join(pieces) == body


def test_a_word_longer_than_the_budget_is_cut_by_tokens_not_left_to_truncation(count):
    word = "".join(f"segment{i}-" for i in range(200))  # a long URL path, hyphenated identifiers...
    pieces = fit_to_budget(f"See {word} for details.", 64, count)
    assert len(pieces) > 2
    assert all(n <= 64 for n in count(pieces))
    assert "".join(pieces).replace(" ", "") == f"See{word}fordetails."


def test_cutting_by_tokens_also_works_with_a_counter_that_gives_no_offsets(tokenizer):
    from query.bi_encoder import count_tokens

    def plain(texts):  # a TokenCounter without token_spans: the prefix search
        return count_tokens(tokenizer, texts)

    body = ZH_CLAUSE * 12
    pieces = fit_to_budget(body, 50, plain)
    assert len(pieces) > 1 and all(n <= 50 for n in plain(pieces)) and "".join(pieces) == body


def test_english_text_is_split_exactly_as_before(count):
    text = " ".join(f"Sentence number {i} talks about glaciers and the valleys they carve slowly." for i in range(40))
    pieces = fit_to_budget(text, 60, count)
    assert " ".join(pieces) == text
    assert all(p.endswith("slowly.") for p in pieces)
    assert all(n <= 60 for n in count(pieces))


# ------------------------------------------------------------------------------- long titles


def test_a_markdown_note_whose_heading_is_longer_than_the_budget_still_indexes_its_paragraphs(tokenizer, count):
    heading = " ".join(["consensus"] * 60 + ["protocols"] * 200)
    body = f"# {heading}\n\nRaft elects a leader and replicates a log across servers reliably.\n"
    paras = split(body, count, kind="markdown", doc_id="n.md")
    assert [p.text for p in paras] == ["Raft elects a leader and replicates a log across servers reliably."]
    # The title is cut, for the encoded prefix only, to half the budget: the paragraph is encoded whole, and
    # the row keeps the whole title (what a reader sees).
    assert paras[0].title == heading
    prefix = paras[0].encoded[: -len(paras[0].text)].strip()
    assert heading.startswith(prefix) and count([prefix])[0] <= MAX_TOKENS // 2
    assert paras[0].encoded.endswith(paras[0].text)
    assert encoded_tokens(tokenizer, paras[0].encoded) <= MAX_TOKENS


def test_a_long_scientific_title_within_half_the_budget_is_encoded_whole(count):
    """SciFact has titles of ~90 tokens: a third of the budget cut one, which changed its paragraph ids."""
    title = " ".join(["Pharmacological characterization of a potent selective inhibitor"] * 9)
    assert MAX_TOKENS // 3 < count([title])[0] <= MAX_TOKENS // 2
    (para,) = split("Raft elects a leader and replicates a log across servers reliably.", count, title=title)
    assert para.title == title and para.encoded.startswith(title + " ")


def test_a_long_title_without_spaces_is_cut_by_tokens(count):
    title = ZH_CLAUSE * 10
    paras = split("Raft elects a leader and replicates a log across servers reliably.", count, title=title)
    assert len(paras) == 1 and paras[0].title == title
    prefix = paras[0].encoded[: -len(paras[0].text)].strip()
    assert title.startswith(prefix) and count([prefix])[0] <= MAX_TOKENS // 2


def test_a_short_title_is_encoded_whole(count):
    paras = split("Raft elects a leader and replicates a log across servers reliably.", count, title="Raft notes")
    assert paras[0].title == "Raft notes"
    assert paras[0].encoded == "Raft notes Raft elects a leader and replicates a log across servers reliably."


# ------------------------------------------------------------------------------- markdown code

DEPLOY = """---
title: Deploying the service
---

Intro paragraph explaining how the deploy script is used in production systems.

## Setup

```bash
# install the dependencies first
pip install -r requirements.txt

# then run the migrations against the production database
./manage.py migrate
```

The `__init__.py` file marks the package, and `__main__.py` runs it; see **bold** and __strong__ here.

~~~python
# a tilde fence with a comment
print("hi")
~~~

## Usage

Run the server with the default settings and check the logs for errors.
"""


def test_a_comment_in_fenced_code_with_a_blank_line_is_never_a_heading():
    doc = markdown_document(DEPLOY)
    assert doc.title == "Deploying the service"
    assert [b.text for b in doc.blocks if b.level] == ["Setup", "Usage"]
    assert [b.text for b in doc.blocks if not b.level] == [
        "Intro paragraph explaining how the deploy script is used in production systems.",
        "# install the dependencies first pip install -r requirements.txt",
        "# then run the migrations against the production database ./manage.py migrate",
        "The __init__.py file marks the package, and __main__.py runs it; see bold and strong here.",
        "# a tilde fence with a comment print(\"hi\")",
        "Run the server with the default settings and check the logs for errors.",
    ]


def test_a_shell_comment_in_code_never_becomes_the_document_title():
    note = ("Some notes about the deploy.\n\n```sh\nmake build\n\n# deploy to production\nmake deploy\n```\n\n"
            "More text about what deploy does after the build step.\n")
    assert markdown_document(note).title == ""


def test_a_longer_fence_is_closed_only_by_a_fence_at_least_as_long():
    md = "````md\n```\n# inside\n\n```\n````\n\n# Real title\n\nText."
    doc = markdown_document(md)
    assert doc.title == "Real title"
    assert [(b.text, b.level) for b in doc.blocks] == [("``` # inside", 0), ("```", 0), ("Real title", 1),
                                                       ("Text.", 0)]


def test_code_keeps_its_text_and_emphasis_is_stripped_only_at_word_boundaries():
    doc = markdown_document("Use `**kwargs` and `[x](y)`, not __init__.py or 2**10; **bold** and __strong__ go.\n\n"
                            "```python\ndef f(**kwargs): return `x`\n```\n")
    assert [b.text for b in doc.blocks] == [
        "Use **kwargs and [x](y), not __init__.py or 2**10; bold and strong go.",
        "def f(**kwargs): return `x`",
    ]


def test_markdown_without_code_splits_as_before():
    doc = markdown_document("# Glaciers\n\nSome **bold** and a [link](http://x) with `code`.\n\n- one item\n- two item\n")
    assert [(b.text, b.level) for b in doc.blocks] == [
        ("Glaciers", 1), ("Some bold and a link with code.", 0), ("one item", 0), ("two item", 0)]


# ------------------------------------------------------------------------------- byte-level tokenizers


def test_a_block_short_in_characters_but_long_in_byte_level_tokens_is_still_split():
    # A byte-level BPE counter at its worst: one token per utf-8 byte (a CJK character is three, an emoji four).
    def byte_tokens(texts):
        return [len(t.encode("utf-8")) for t in texts]

    body = ZH_CLAUSE + "😀" * 40  # 81 characters, 283 bytes
    opts = SplitOptions(max_tokens=128, encode_title=False)
    paras = split_article(Article("n.txt", "n.txt", "", body, "text"), opts, byte_tokens)
    assert len(paras) > 1
    assert all(n <= 126 for n in byte_tokens([p.text for p in paras]))
    assert "".join(p.text for p in paras) == body


# ------------------------------------------------------------------------------- YAML front matter


@pytest.mark.parametrize(("matter", "title", "metadata"), [
    ("title: No\ncountry: NO", "No", {"country": "NO"}),
    ("title: On", "On", {}),
    ("title: 12:30\nversion: 1.10", "12:30", {"version": "1.10"}),
    ("title: 0755\nzip: 02134", "0755", {"zip": "02134"}),
    ("title: Notes\ndraft: false\ndepth: 3\nratio: 1.5", "Notes", {"draft": "false", "depth": "3", "ratio": "1.5"}),
])
def test_front_matter_values_keep_the_text_they_were_written_as(matter, title, metadata):
    doc = markdown_document(f"---\n{matter}\n---\n\nSome body text long enough to be a paragraph of the note.\n")
    assert doc.title == title
    assert doc.metadata == metadata


def test_front_matter_dates_and_lists_still_work():
    doc = markdown_document("---\ntitle: T\ndate: 2024-03-05 10:15:00\ntags: [ice, snow]\n---\nBody text here.\n")
    assert doc.published == datetime(2024, 3, 5, 10, 15, tzinfo=UTC)
    assert doc.metadata == {"date": "2024-03-05T10:15:00", "tags": "ice, snow"}  # ISO, as before


def test_front_matter_booleans_and_times_read_as_before_only_yaml_11_surprises_stay_text():
    """A first version kept every value whose type read back differently (draft: True → True): a filter on
    metadata.draft=true missed it after the re-split."""
    doc = markdown_document("---\ndraft: True\nlive: FALSE\nanswer: yes\nat: 2024-03-05T10:00:00Z\n---\nBody text here.\n")
    assert doc.metadata == {"draft": "true", "live": "false", "answer": "yes", "at": "2024-03-05T10:00:00+00:00"}
    doc = markdown_document("---\ndate: 2024-03-05\n---\nBody text here.\n")
    assert doc.published == datetime(2024, 3, 5, tzinfo=UTC) and doc.metadata == {"date": "2024-03-05"}


def test_an_impossible_front_matter_date_no_longer_drops_the_other_fields():
    doc = markdown_document("---\ntitle: T\ndate: 2022-02-30\ntags: [ice, snow]\n---\nBody text here.\n")
    assert doc.title == "T" and doc.published is None
    assert doc.metadata == {"date": "2022-02-30", "tags": "ice, snow"}


# ------------------------------------------------------------------------------- over HTTP

RAFT_MD = ("---\ntitle: Raft notes\nauthor: Ann\ndate: 2024-03-01\n---\n\n# Leader election\n\n"
           "Raft elects a leader with randomized timeouts so that split votes are rare and resolve quickly.\n")


def _fetch(*urls):
    from tasks.http_fetch import HttpOptions, fetch_urls

    return fetch_urls(list(urls), {}, HttpOptions(allow_private=True, retries=0))


@pytest.mark.parametrize("path", ["/docs/raft.md", "/docs/RAFT.Markdown"])
def test_markdown_served_as_text_plain_is_read_as_markdown(site, count, path):
    (article,) = _fetch(site.page(path, RAFT_MD, content_type="text/plain; charset=utf-8"))
    assert article.kind == "markdown"
    paras = split_article(article, SplitOptions(max_tokens=MAX_TOKENS), count)
    assert [(p.title, p.text) for p in paras] == [
        ("Raft notes", "Leader election. Raft elects a leader with randomized timeouts so that split votes are rare and "
                       + "resolve quickly.")]
    assert paras[0].published == datetime(2024, 3, 1, tzinfo=UTC) and paras[0].metadata == {"author": "Ann",
                                                                                             "date": "2024-03-01"}


def test_other_text_plain_urls_stay_plain_text(site):
    (article,) = _fetch(site.page("/notes.txt", RAFT_MD, content_type="text/plain; charset=utf-8"))
    assert article.kind == "text"


PAGE = "<html><head><title>Hello</title></head><body><p>Raft elects a leader and replicates a log.</p></body></html>"


@pytest.mark.parametrize(("encoding", "charset"), [
    ("utf-16-le", "utf-16le"), ("utf-16-le", "utf-16"), ("utf-16-be", "utf-16be"), ("utf-32-le", "utf-32"),
    ("utf-16-le", '"UTF-16LE"'),
])
def test_a_page_declared_utf16_by_its_header_without_a_byte_order_mark_is_read(site, encoding, charset):
    (article,) = _fetch(site.page("/p.html", PAGE.encode(encoding), content_type=f"text/html; charset={charset}"))
    assert isinstance(article, Article), article
    assert article.body == PAGE


def test_nul_bytes_without_a_wide_charset_are_still_binary(site):
    (failure,) = _fetch(site.page("/p.html", PAGE.encode("utf-16-le"), content_type="text/html; charset=utf-8"))
    assert not isinstance(failure, Article)
    # The header's utf-8 wins over what the bytes look like (as in browsers): read so, it is half NULs.
    assert "binary content" in failure.error and "control characters" in failure.error


def test_plain_text_with_a_long_unspaced_run_is_split_again_once_and_other_text_keeps_its_fingerprint():
    """Text without spaces split before its runs were cut by tokens was truncated: the next run splits it again."""
    from tasks.records import Article
    from tasks.split import UNSPACED_TEXT, SplitOptions, body_fingerprint

    opts = SplitOptions(max_tokens=256, min_chars=10)
    chinese = Article(source="s", doc_id="zh.txt", title="zh", body="大型语言模型在自然语言处理领域取得了显著进展" * 20, kind="text")
    english = Article(source="s", doc_id="en.txt", title="en", body="Plain words with spaces. " * 40, kind="text")
    assert UNSPACED_TEXT in _fingerprint_parts(chinese, opts) and UNSPACED_TEXT not in _fingerprint_parts(english, opts)
    assert body_fingerprint(english, opts)  # unchanged rules: tested against its literal in test_split.py


def _fingerprint_parts(article, opts) -> list[str]:
    """The parts body_fingerprint hashes, captured from its call to stable_hash."""
    from tasks import split

    seen: list[str] = []
    real = split.stable_hash
    split.stable_hash = lambda *parts, **kw: seen.extend(parts) or real(*parts, **kw)
    try:
        split.body_fingerprint(article, opts)
    finally:
        split.stable_hash = real
    return seen


def test_a_text_file_with_binary_data_after_its_first_8_kb_is_binary_and_stray_nuls_are_not(tmp_path):
    import random

    from tasks.fetch import read_local_file

    text = ("Glaciers form where more snow falls each winter than melts in summer.\n\n" * 200).encode()  # 14 KB
    tail = random.Random(0).randbytes(20_000)  # a core dump, a zip: random bytes are 0.4 % NUL
    (tmp_path / "log.txt").write_bytes(text + tail)
    failure = read_local_file(tmp_path / "log.txt", doc_id="log.txt", source=str(tmp_path / "log.txt"))
    assert not isinstance(failure, Article) and "NUL bytes after the first 8 KB" in failure.error
    (tmp_path / "glitch.txt").write_bytes(text + b"\x00" * 3 + text)  # three stray NULs in 28 KB of text
    article = read_local_file(tmp_path / "glitch.txt", doc_id="glitch.txt", source=str(tmp_path / "glitch.txt"))
    assert isinstance(article, Article)


@pytest.mark.parametrize(("name", "codec"), [("notes.txt", "utf-16-le"), ("page.html", "utf-16-be")])
def test_a_utf16_file_without_a_byte_order_mark_is_read_as_text(tmp_path, name, codec):
    """Every other byte is NUL: it was refused as binary ("NUL bytes")."""
    from tasks.fetch import read_local_file

    text = PAGE if name.endswith(".html") else "Raft elects a leader and replicates a log. Crème brûlée, naïveté.\n" * 3
    (tmp_path / name).write_bytes(text.encode(codec))
    article = read_local_file(tmp_path / name, doc_id=name, source=str(tmp_path / name))
    assert isinstance(article, Article), article
    assert article.body == text


def test_nul_bytes_anywhere_else_are_still_binary(tmp_path):
    import random

    from tasks.fetch import read_local_file

    (tmp_path / "blob.txt").write_bytes(random.Random(1).randbytes(4000))
    assert not isinstance(read_local_file(tmp_path / "blob.txt", doc_id="b", source="b"), Article)
    # UTF-16 text, then binary data: the head alone looked like UTF-16, and the rest became garbage paragraphs.
    head = ("The quick brown fox jumps over the lazy dog. " * 200).encode("utf-16-le")
    (tmp_path / "tail.txt").write_bytes(head + random.Random(2).randbytes(200_000))
    assert not isinstance(read_local_file(tmp_path / "tail.txt", doc_id="t", source="t"), Article)


@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])  # both write a byte-order mark
def test_wide_text_with_a_byte_order_mark_then_binary_data_is_binary_and_long_wide_text_is_not(tmp_path, codec):
    """The byte-order mark let every NUL through as text: the binary tail was indexed as garbage paragraphs."""
    import codecs
    import random

    from tasks.fetch import read_local_file

    head = ("The quick brown fox jumps over the lazy dog. " * 200).encode(codec)
    (tmp_path / "tail.txt").write_bytes(head + random.Random(3).randbytes(200_000))
    failure = read_local_file(tmp_path / "tail.txt", doc_id="t", source="t")
    assert not isinstance(failure, Article) and "binary data in it" in failure.error
    # 8 KB of random bytes, all inside the head's sample, with no text before them.
    (tmp_path / "short.txt").write_bytes(codecs.BOM_UTF16_LE + random.Random(5).randbytes(8190))
    assert not isinstance(read_local_file(tmp_path / "short.txt", doc_id="s", source="s"), Article)
    # 120 KB of Chinese and of accented Latin text, with tabs and form feeds and a few U+FFFD of an earlier lossy
    # conversion: text of any script stays text.
    text = "大型语言模型在自然语言处理领域取得了显著进展。\n\n" * 2000 + "Crème brûlée,\tnaïveté.\f\n" * 2000 + "lost \ufffd " * 50
    (tmp_path / "long.txt").write_bytes(text.encode(codec))
    article = read_local_file(tmp_path / "long.txt", doc_id="l", source="l")
    assert isinstance(article, Article) and article.body == text


def test_a_page_declared_utf16_by_its_header_then_binary_data_is_binary(site):
    import random

    raw = (PAGE * 200).encode("utf-16-le") + random.Random(4).randbytes(100_000)
    (failure,) = _fetch(site.page("/p.html", raw, content_type="text/html; charset=utf-16le"))
    assert not isinstance(failure, Article) and "binary data in it" in failure.error
