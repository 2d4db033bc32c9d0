"""Dump records (JSONL files and index_records) that a reader cannot take: one record's failure, never its
batch's, and never a reason to stop deleting what the dump no longer holds."""

from __future__ import annotations

import json

import pytest

from tests.conftest import table_rows


def _lines(*records: object) -> list[tuple[int, str]]:
    return [(i, r if isinstance(r, str) else json.dumps(r)) for i, r in enumerate(records, start=1)]


def _parse(*records: object):
    from tasks.fetch import SourceSpec, parse_dump_lines

    return parse_dump_lines(SourceSpec("d.jsonl", "jsonl", "/data/d.jsonl"), _lines(*records), max_bytes=10_000)


@pytest.mark.parametrize(("record", "doc_id"), [
    # The rules of the versions that indexed the collections in use: a dump with both keeps its ids.
    ({"id": "x1", "_id": "y1", "text": "t"}, "y1"),  # the text format (BEIR): '_id' first
    ({"id": "x1", "_id": "y1", "paragraphs": ["p"]}, "x1"),  # the paragraphs format: 'id' first
    ({"_id": None, "id": "real", "text": "t"}, "real"),  # a null is no id (it was the text "None" of all such)
    ({"id": 0, "title": "Zero", "paragraphs": ["p"]}, "Zero"),  # paragraphs: a falsy id gives way to the title
    ({"_id": {"$oid": "65a1"}, "text": "t"}, "{'$oid': '65a1'}"),  # str(), as before: a Mongo export keeps its ids
    ({"id": 7, "text": "t"}, "7"),
    ({"_id": True, "text": "t"}, "True"),
    ({"title": "Only a title", "paragraphs": ["p"]}, "Only a title"),  # Simple Wikipedia: the title names it
])
def test_a_records_id_follows_its_formats_rule_as_before(record, doc_id):
    [article] = _parse(record)
    assert article.doc_id == doc_id


@pytest.mark.parametrize(("record", "message"), [
    ({"_id": "", "text": "t"}, "cannot name a record"),  # stored, then no delete could name it
    ({"_id": "  ", "text": "t"}, "cannot name a record"),
    ({"title": "No id", "text": "t"}, "has 'text' but no 'id' or '_id'"),
])
def test_a_record_without_a_usable_id_is_that_lines_failure_saying_so(record, message):
    [failure] = _parse(record)
    assert failure.doc_id == "d.jsonl:1" and message in failure.error and not failure.keyed


def test_a_failed_copy_of_a_record_does_not_hide_a_good_copy_after_it():
    from tasks.stages import PreparedBatch  # noqa: F401 - the batch logic is tested through the flow below

    failed, good = _parse({"id": "a", "text": None}, {"id": "a", "text": "fine"})
    assert failed.keyed and good.doc_id == "a" and failed.key == good.key


def test_a_lone_surrogate_anywhere_is_that_records_failure_named_by_its_id_and_field():
    # JSON's "\udce9" parses to a string no UTF-8 can hold: the write of the whole batch raised, every night.
    good, bad, url = _parse({"id": "g", "text": "fine"}, '{"id": "b", "text": "t", "author": "Jos\\udce9"}',
                            '{"id": "u", "text": "t", "url": "http://x/\\ud800"}')
    assert good.doc_id == "g"
    assert bad.keyed and bad.doc_id == "b" and "d.jsonl:2 (id 'b')" in bad.error and "'author' holds" in bad.error
    assert url.keyed and "'url' holds" in url.error
    valid_pair = _parse('{"id": "e", "text": "an emoji \\ud83d\\ude00 is a valid pair"}')[0]
    assert valid_pair.doc_id == "e" and "\U0001f600" in valid_pair.body


def test_an_oversized_line_says_its_limit_in_characters():
    from tasks.fetch import SourceSpec, parse_dump_lines

    [failure] = parse_dump_lines(SourceSpec("d.jsonl", "jsonl", "/d.jsonl"), [(1, "x" * 101)], max_bytes=100)
    assert "line longer than the limit of 100 characters (CORPUS_SEARCH_FETCH_MAX_BYTES)" in failure.error


def test_a_dump_with_a_bad_record_still_deletes_what_it_no_longer_holds(prefect_harness, run_index, db_uri,
                                                                          tmp_path):
    dump = tmp_path / "d.jsonl"
    texts = {f"r{i}": f"Record {i} tells how the river {i} floods the valley every spring." for i in range(4)}
    dump.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))
    run_index([dump], collection="dump")
    assert {r["doc_id"] for r in table_rows(db_uri, "dump")} == set(texts)

    # r3 is withdrawn; r0's new version is broken (text null) and r1's has a lone surrogate in a field.
    dump.write_text(json.dumps({"id": "r0", "text": None}) + "\n"
                    + '{"id": "r1", "text": "changed", "author": "Jos\\udce9"}\n'
                    + json.dumps({"id": "r2", "text": texts["r2"] + " Changed."}) + "\n")
    summary = run_index([dump], collection="dump")
    assert summary["articles_deleted"] == 1 and summary["articles_fetched"] == 1  # r3 went; r2 was updated
    assert {f["doc_id"] for f in summary["failures"]} == {"r0", "r1"}
    rows = {r["doc_id"]: r["text"] for r in table_rows(db_uri, "dump")}
    assert set(rows) == {"r0", "r1", "r2"} and rows["r0"] == texts["r0"]  # the failed records keep their rows
    assert not summary.get("notices")

    # A line that is no record at all could be any record: nothing is taken for deleted, and the summary says so.
    dump.write_text("{not json\n" + json.dumps({"id": "r2", "text": texts["r2"] + " Changed."}) + "\n")
    summary = run_index([dump], collection="dump")
    assert summary["articles_deleted"] == 0 and {r["doc_id"] for r in table_rows(db_uri, "dump")} == {"r0", "r1", "r2"}
    [notice] = summary["notices"]
    assert "no article of it was taken for deleted" in notice and str(dump) in notice


def test_a_dump_with_bytes_that_are_not_utf8_says_so_in_a_notice(prefect_harness, run_index, db_uri, tmp_path):
    # Read with U+FFFD in their place, silently: ids and texts changed with nothing to say why.
    dump = tmp_path / "latin1.jsonl"
    dump.write_bytes(json.dumps({"id": "ok", "text": "Plain text about rivers and their floods in spring."}).encode()
                     + b"\n" + '{"id": "cafe", "text": "Caf\xe9 au lait is served in the morning by the river."}\n'
                     .encode("latin-1"))
    summary = run_index([dump], collection="latin")
    [notice] = summary["notices"]
    assert notice.startswith("1 article(s) of a dump held bytes that are not UTF-8, e.g. cafe") and "iconv" in notice
    assert summary["articles_fetched"] == 2 and not summary["failures"]


def test_a_dump_whose_first_copy_of_a_record_fails_indexes_the_good_copy(prefect_harness, run_index, db_uri,
                                                                          tmp_path):
    dump = tmp_path / "dup.jsonl"
    dump.write_text(json.dumps({"id": "a", "text": None}) + "\n"
                    + json.dumps({"id": "a", "text": "The good copy of record a, about rivers and floods."}) + "\n"
                    + json.dumps({"id": "b", "text": "Record b tells of glaciers carving their valleys."}) + "\n")
    summary = run_index([dump], collection="dup")
    assert {r["doc_id"] for r in table_rows(db_uri, "dup")} == {"a", "b"}
    assert [f["doc_id"] for f in summary["failures"]] == ["a"] and "'text' must be a string" in summary["failures"][0]["error"]
