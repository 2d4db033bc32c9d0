"""Source parsing and reading: URLs, files, directories, dumps (pure functions)."""

from __future__ import annotations

import json

import pytest

from tasks.fetch import canonical_url, classify_source, iter_directory, iter_jsonl, parse_dump_line, url_origin
from tasks.records import Article, FetchFailure


def test_canonical_url_lowercases_host_and_drops_fragment_and_default_port():
    assert canonical_url("HTTP://Example.ORG:80/a/b?x=1#frag") == "http://example.org/a/b?x=1"
    # Dot segments are the path the server is asked for: ./ and ../ were doc_ids of their own, indexed again.
    assert canonical_url("https://x.org/docs/./?s=0") == canonical_url("https://x.org/docs/?s=0") == "https://x.org/docs/?s=0"
    assert canonical_url("https://x.org/a/b/../c/.") == "https://x.org/a/c/"
    assert canonical_url("https://x.org/../a/...") == "https://x.org/a/..."
    # An IPv6 literal keeps its brackets (its colons read as a port made every such URL fail).
    assert canonical_url("http://[::1]:8080/v6#x") == "http://[::1]:8080/v6"
    assert canonical_url("HTTPS://[FE80::1]:443/") == "https://[fe80::1]/"


def test_a_url_with_credentials_is_refused_not_fetched_without_them():
    from tasks.fetch import SourceError

    with pytest.raises(SourceError, match="a user name or password in a URL is not sent") as refused:
        classify_source("https://ann:secret@example.org/private")
    assert "secret" not in str(refused.value)
    assert classify_source("https://example.org/a@b").kind == "url"  # an @ in the path is no credential
    assert classify_source("https://medium.com/@user/post").kind == "url"
    assert classify_source("https://example.org:8080/a@b").kind == "url"  # a port is no password
    # A password with an unencoded '/' ended the authority early: read as a host and a "port", it was quoted in
    # the error ("Port could not be cast ... 'hun'") and the URL passed as one without credentials.
    with pytest.raises(SourceError, match="a user name or password") as refused:
        classify_source("https://ann:hun/ter2@example.com/p")
    assert "hun" not in str(refused.value) and "ter2" not in str(refused.value)
    assert canonical_url("https://example.org") == "https://example.org/"
    assert canonical_url("http://127.0.0.1:8080/p") == "http://127.0.0.1:8080/p"
    assert url_origin("https://example.org/a/b") == "https://example.org/"


@pytest.mark.parametrize("spec", ["ftp://x.org/a", "file:///etc/passwd", "javascript://alert(1)"])
def test_only_http_and_https_urls_are_accepted(spec):
    with pytest.raises(ValueError, match="only http:// and https://"):
        classify_source(spec)


def test_sources_are_classified_by_kind(tmp_path):
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "d.jsonl.gz").write_bytes(b"")
    assert classify_source(str(tmp_path)).kind == "directory"
    assert classify_source(str(tmp_path / "a.md")).kind == "file"
    assert classify_source(str(tmp_path / "d.jsonl.gz")).kind == "jsonl"
    assert classify_source("https://example.org/x").kind == "url"
    with pytest.raises(ValueError, match="does not exist"):
        classify_source(str(tmp_path / "missing"))
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValueError, match="unsupported file type '.pdf'"):
        classify_source(str(tmp_path / "x.pdf"))


def test_a_json_file_of_one_record_per_line_is_a_dump_and_an_array_is_refused_with_its_conversion(tmp_path):
    """A .json source was refused outright, though many exports name their JSON lines so."""
    (tmp_path / "lines.json").write_text('\n{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n')
    assert classify_source(str(tmp_path / "lines.json")).kind == "jsonl"
    (tmp_path / "array.json").write_text('[{"id": "a", "text": "x"}]')
    with pytest.raises(ValueError, match=r"a JSON array.*jq -c '\.\[\]'"):
        classify_source(str(tmp_path / "array.json"))
    (tmp_path / "pretty.json").write_text('{\n  "id": "a",\n  "text": "x"\n}\n')
    with pytest.raises(ValueError, match="not one JSON record per line.*jq -c \\."):
        classify_source(str(tmp_path / "pretty.json"))
    # Read as a dump reads it: a byte-order mark dropped, a first record of any length; an empty one is empty.
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + b'{"id": "a", "text": "' + b"x" * (2 << 20) + b'"}\n')
    (tmp_path / "empty.json").write_bytes(b"")
    assert classify_source(str(tmp_path / "bom.json")).kind == classify_source(str(tmp_path / "empty.json")).kind == "jsonl"
    import gzip

    (tmp_path / "packed.json").write_bytes(gzip.compress(b'{"id": "a", "text": "x"}\n'))
    with pytest.raises(ValueError, match="gzip-compressed: name it packed.json.gz"):
        classify_source(str(tmp_path / "packed.json"))


def test_directories_yield_supported_files_with_relative_ids_and_skip_hidden(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "a.html").write_text("<p>a</p>")
    (tmp_path / "c.pdf").write_text("no")
    (tmp_path / ".git" / "d.md").write_text("no")
    docs = list(iter_directory(classify_source(str(tmp_path))))
    assert [(d.doc_id, d.kind) for d in docs] == [("a.html", "html"), ("sub/b.txt", "text")]


def test_dump_records_in_both_formats_parse():
    wiki = parse_dump_line({"id": "7", "title": "Ice", "paragraphs": ["p1", "p2"]}, source="s")
    assert (wiki.doc_id, wiki.title, wiki.paragraphs, wiki.kind) == ("7", "Ice", ["p1", "p2"], "paragraphs")
    beir = parse_dump_line({"_id": "d1", "title": "T", "text": "body"}, source="s")
    assert (beir.doc_id, beir.title, beir.body, beir.kind) == ("d1", "T", "body", "text")
    with pytest.raises(ValueError, match="unknown record format"):
        parse_dump_line({"foo": 1}, source="s")


def test_a_malformed_dump_line_names_the_file_and_line(tmp_path):
    dump = tmp_path / "d.jsonl"
    dump.write_text(json.dumps({"_id": "1", "text": "ok"}) + "\n\n" + "{broken\n")
    out = list(iter_jsonl(classify_source(str(dump))))
    assert isinstance(out[0], Article)
    assert isinstance(out[1], FetchFailure) and out[1].error.endswith(f"{dump}:3: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")
