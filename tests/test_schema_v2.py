"""Index schema v2 (issue 12): source = the file or URL, origin = the root, metadata and published,
operator filters, index_records, overlapping roots stored once, unchanged files skipped unread, migration."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from query.errors import InvalidQueryError
from query.filters import parse_cli_conditions, where_sql
from query.schema import METADATA_KEY, IndexContractError
from tests.conftest import table_rows

TEXT = "The raft consensus algorithm elects one leader among the servers of a cluster, term by term."


def _tree(root: Path) -> Path:
    (root / "blog").mkdir(parents=True)
    (root / "blog" / "raft.md").write_text(f"# Raft\n\n{TEXT}\n")
    (root / "blog" / "paxos.md").write_text("# Paxos\n\nPaxos reaches agreement among acceptors with two phases of ballots.\n")
    (root / "glaciers.txt").write_text("Glaciers form where snow accumulates over many years and compacts into ice.\n")
    return root


def _rows(db_uri: str, collection: str = "test", columns=("id", "doc_id", "source", "origin")) -> list[dict]:
    t = lancedb.connect(db_uri).open_table(collection)
    return t.to_lance().to_table(columns=list(columns)).to_pylist()


# --------------------------------------------------------------------------- filters (no index needed)


def test_operator_filters_render_bound_literals_for_columns_dates_and_metadata():
    sql = where_sql({
        "published": {">=": "2024-01-01", "<": datetime(2025, 1, 1, tzinfo=UTC)},
        "metadata.author": {"!=": "O'Brien"},
        "doc_id": {"prefix": "blog/"},
        "metadata.year": {">": 2019},
        "position": [0, 1],
    })
    assert "published >= TIMESTAMP '2024-01-01 00:00:00.000000+00:00'" in sql
    assert "published < TIMESTAMP '2025-01-01 00:00:00.000000+00:00'" in sql
    # != also keeps rows without the key; the value is a quoted literal.
    assert "(map_extract(metadata, 'author')[1] IS NULL OR map_extract(metadata, 'author')[1] != 'O''Brien')" in sql
    assert "starts_with(doc_id, 'blog/')" in sql
    assert "TRY_CAST(map_extract(metadata, 'year')[1] AS DOUBLE) > 2019" in sql
    assert "position IN (0, 1)" in sql
    # A metadata key is a literal too, never SQL.
    assert "map_extract(metadata, 'a'') OR 1=1 --')[1] = 'x'" == where_sql({"metadata.a') OR 1=1 --": "x"})


@pytest.mark.parametrize("where, says", [
    ({"author": "x"}, "metadata.<field>"),
    ({"published": {">=": "last year"}}, "ISO 8601"),
    ({"published": {"~": "2024"}}, "unknown operator"),
    ({"position": {"prefix": "1"}}, "text columns"),
    ({"source": {"in": "abc"}}, "list of values"),
    ({"position": {"<": 3_000_000_000}}, "from -2147483648 to 2147483647"),  # wider than the Int32 column
    ({"position": "99999999999999999999999"}, "from -2147483648 to 2147483647"),
    ({"published": {">=": "9999-12-31T23:59:59-05:00"}}, "out of range once converted to UTC"),
    ({"indexed_at": {"<": "0001-01-01T00:00:00+05:00"}}, "out of range once converted to UTC"),
])
def test_bad_filters_are_clear_errors(where, says):
    with pytest.raises(InvalidQueryError, match=says):
        where_sql(where)


@pytest.mark.parametrize("where", [{"source": "caf\udce9"}, {"metadata.caf\udce9": "x"}, {"source": {"in": ["\ud800"]}}])
def test_a_filter_value_or_key_that_is_not_valid_unicode_is_a_clear_error(where):
    with pytest.raises(InvalidQueryError, match="not valid Unicode text"):
        where_sql(where)


def test_filters_agree_on_real_rows_not_in_with_not_equal_and_dates_before_year_1000(tmp_path):
    """Run on LanceDB itself: SQL that renders is not SQL that answers right."""
    import pyarrow as pa

    meta = pa.map_(pa.string(), pa.string())
    table = lancedb.connect(str(tmp_path)).create_table("t", pa.table({
        "id": ["a", "b", "c", "d"],
        "metadata": pa.array([[("year", "2020")], [("year", "unknown")], [("year", "2019")], []], type=meta),
        "published": pa.array([datetime(999, 5, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC), None,
                               datetime(1500, 1, 1, tzinfo=UTC)], type=pa.timestamp("us", tz="UTC")),
    }))

    def ids(where) -> list[str]:
        return sorted(table.search().where(where_sql(where)).to_arrow()["id"].to_pylist())

    assert ids({"metadata.year": {"not in": [2020]}}) == ids({"metadata.year": {"!=": 2020}}) == ["b", "c", "d"]
    assert ids({"metadata.year": {"not in": [2020, "unknown"]}}) == ["c", "d"]
    assert ids({"published": {"<": "1000-01-01"}}) == ["a"]  # "999-05-01" was refused by LanceDB's parser
    assert ids({"published": {">=": "0999-01-01", "<": "1600-01-01"}}) == ["a", "d"]


def test_a_date_without_a_time_is_its_whole_day_on_real_rows(tmp_path):
    """published=2023-05-04 matched only midnight UTC, so a page of that afternoon was never found, and
    published<=2023-05-04 left that whole day out."""
    import pyarrow as pa
    from datetime import date

    table = lancedb.connect(str(tmp_path)).create_table("t", pa.table({
        "id": ["midnight", "afternoon", "next", "undated"],
        "published": pa.array([datetime(2023, 5, 4, tzinfo=UTC), datetime(2023, 5, 4, 15, 30, tzinfo=UTC),
                               datetime(2023, 5, 5, tzinfo=UTC), None], type=pa.timestamp("us", tz="UTC")),
    }))

    def ids(where) -> list[str]:
        return sorted(table.search().where(where_sql(where)).to_arrow()["id"].to_pylist())

    assert ids(parse_cli_conditions(["published=2023-05-04"])) == ids({"published": date(2023, 5, 4)}) == [
        "afternoon", "midnight"]
    assert ids(parse_cli_conditions(["published!=2023-05-04"])) == ["next", "undated"]
    assert ids(parse_cli_conditions(["published<=2023-05-04"])) == ["afternoon", "midnight"]
    assert ids(parse_cli_conditions(["published>2023-05-04"])) == ["next"]
    assert ids(parse_cli_conditions(["published<2023-05-04"])) == []
    assert ids({"published": {"in": ["2023-05-05", "2023-05-04T15:30:00Z"]}}) == ["afternoon", "next"]
    assert ids({"published": {"not in": ["2023-05-04"]}}) == ["next", "undated"]
    assert ids({"published": "2023-05-04T00:00:00Z"}) == ["midnight"]  # a time given is that instant
    assert ids(parse_cli_conditions(["published<=9999-12-31"])) == ["afternoon", "midnight", "next"]
    assert ids(parse_cli_conditions(["published=20230504"])) == ids({"published": "2023-W18-4"}) == [
        "afternoon", "midnight"]  # ISO's other date forms too
    with pytest.raises(InvalidQueryError, match="a date with a time zone but no time"):
        where_sql(parse_cli_conditions(["published=2023-05-04+02:00"]))  # Python reads it as 02:00: no row matched


def test_cli_conditions_parse_operators_ranges_and_repeated_equalities():
    assert parse_cli_conditions(["source=a", "source=b", "published>=2024-01-01", "published<2025-01-01",
                                 "metadata.year>=2020", "doc_id^=blog/", "title!=x"]) == {
        "source": ["a", "b"], "published": {">=": "2024-01-01", "<": "2025-01-01"},
        "metadata.year": {">=": 2020}, "doc_id": {"prefix": "blog/"}, "title": {"!=": "x"},
    }
    with pytest.raises(InvalidQueryError, match="KEY<op>VALUE"):
        parse_cli_conditions([">=3"])
    # Spaces around the operator are layout, and SQL's <> is !=: both gave no hits, silently.
    assert parse_cli_conditions(["title = Coffee", "metadata.author <> Zoë"]) == {
        "title": "Coffee", "metadata.author": {"!=": "Zoë"}}


# --------------------------------------------------------------------------- files: source, origin, overlap


def test_source_is_the_files_full_path_and_origin_the_root(run_index, db_uri, tmp_path):
    root = _tree(tmp_path / "notes")
    run_index([root])
    rows = _rows(db_uri)
    assert {r["doc_id"] for r in rows} == {"blog/raft.md", "blog/paxos.md", "glaciers.txt"}
    for r in rows:
        assert r["origin"] == str(root.resolve())
        assert r["source"] == str(root.resolve() / r["doc_id"]) and Path(r["source"]).is_file()


@pytest.mark.parametrize("order", ["outer-first", "inner-first"])
def test_overlapping_roots_store_each_document_once_in_one_run_and_across_runs(run_index, db_uri, tmp_path, order):
    root = _tree(tmp_path / "notes")
    roots = [root, root / "blog"] if order == "outer-first" else [root / "blog", root]
    first = run_index(roots)
    rows = _rows(db_uri)
    per_file = {}
    for r in rows:
        per_file.setdefault(r["source"], set()).add(r["doc_id"])
    assert len(per_file) == 3 and all(len(ids) == 1 for ids in per_file.values()), per_file
    assert len({r["id"] for r in rows}) == len(rows) == first["rows"]
    # The outer root names the files (paths relative to it), whichever order the roots came in.
    assert {r["doc_id"] for r in rows} == {"blog/raft.md", "blog/paxos.md", "glaciers.txt"}
    # Later runs through either root alone, or both: nothing duplicated, nothing re-encoded or deleted.
    for again in ([root / "blog"], [root], [root / "blog", root]):
        summary = run_index(again)
        assert summary["paragraphs_encoded"] == 0 and summary["articles_deleted"] == 0, (again, summary)
        assert sorted(r["id"] for r in _rows(db_uri)) == sorted(r["id"] for r in rows)
    # A file deleted under the inner root vanishes when the outer root is indexed.
    (root / "blog" / "paxos.md").unlink()
    summary = run_index([root])
    assert summary["articles_deleted"] == 1
    assert {r["doc_id"] for r in _rows(db_uri)} == {"blog/raft.md", "glaciers.txt"}


def test_an_unchanged_file_is_not_even_read_a_touched_one_is_read_once(run_index, db_uri, tmp_path):
    root = _tree(tmp_path / "notes")
    run_index([root])
    path = root / "glaciers.txt"
    before = path.stat()
    # Same size and mtime, other bytes: the stamp matches, so the run does not read the file.
    path.write_text(path.read_text().replace("snow", "SNOW"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    summary = run_index([root])
    assert summary["articles_unchanged"] == 3 and summary["articles_fetched"] == 0
    assert all("SNOW" not in r["text"] for r in table_rows(db_uri))
    # Touched (new mtime, same bytes as indexed): read and found unchanged, then stamped again...
    path.write_text(path.read_text().replace("SNOW", "snow"))
    summary = run_index([root])
    assert summary["articles_unchanged"] == 3 and summary["paragraphs_encoded"] == 0
    # ...so the next run skips it unread again, even with other bytes of the same size.
    stamped = path.stat()
    path.write_text(path.read_text().replace("snow", "SNOW"))
    os.utime(path, ns=(stamped.st_atime_ns, stamped.st_mtime_ns))
    run_index([root])
    assert all("SNOW" not in r["text"] for r in table_rows(db_uri))
    # A real change (new mtime) is read and indexed.
    path.write_text("Glaciers carve valleys over thousands of years as the ice slowly flows downhill.\n")
    summary = run_index([root])
    assert summary["articles_fetched"] == 1 and summary["paragraphs_encoded"] == 1


# --------------------------------------------------------------------------- records from Python


RECORDS = [
    {"id": "r1", "title": "Raft", "text": TEXT, "author": "Ann", "published": "2024-03-01T10:00:00Z", "year": 2024},
    {"id": "r2", "title": "Paxos", "text": "Paxos reaches agreement among acceptors with two phases of ballots.",
     "author": "Bob", "date": "2021-06-15", "year": 2021, "url": "https://example.org/paxos"},
    "Glaciers form where snow accumulates over many years and compacts into ice.",
]


def test_index_records_keeps_metadata_and_published_and_reruns_encode_nothing(prefect_harness, db_uri):
    from corpus_search import index_records
    from query import Searcher

    first = index_records(RECORDS, "recs", db_uri=db_uri)
    assert first["outcome"] == "ok" and first["paragraphs_encoded"] == 3
    assert index_records(RECORDS, "recs", db_uri=db_uri)["paragraphs_encoded"] == 0
    rows = {r["doc_id"]: r for r in _rows(db_uri, "recs", ("doc_id", "source", "origin", "published", "metadata"))}
    assert rows["r1"]["published"] == datetime(2024, 3, 1, 10, tzinfo=UTC)
    assert dict(rows["r1"]["metadata"])["author"] == "Ann" and dict(rows["r1"]["metadata"])["year"] == "2024"
    assert rows["r2"]["published"] == datetime(2021, 6, 15, tzinfo=UTC)
    assert rows["r2"]["source"] == "https://example.org/paxos" and rows["r1"]["source"] == "records"
    assert {r["origin"] for r in rows.values()} == {"records"}

    s = Searcher(db_uri=db_uri, collection="recs")
    ids = lambda where: {h.doc_id for h in s.search("agreement leader ice", k=10, rerank=False, where=where)}  # noqa: E731
    assert ids({"published": {">=": "2022-01-01"}}) == {"r1"}
    assert ids({"published": {"<": datetime(2022, 1, 1)}}) == {"r2"}
    assert ids({"metadata.author": {"!=": "Ann"}}) == {"r2", next(d for d in rows if d not in ("r1", "r2"))}
    assert ids({"metadata.year": {">=": 2022}}) == {"r1"}
    assert ids({"metadata.author": ["Ann", "Bob"]}) == {"r1", "r2"}
    assert ids({"indexed_at": {"<=": datetime.now(UTC)}}) == set(rows)
    assert ids({"indexed_at": {">": datetime.now(UTC)}}) == set()
    hit = next(h for h in s.search("agreement", k=3, rerank=False) if h.doc_id == "r2")
    assert hit.metadata["author"] == "Bob" and hit.published == datetime(2021, 6, 15, tzinfo=UTC)
    assert json.loads(json.dumps(hit.to_dict()))["published"].startswith("2021-06-15")


def test_a_publication_date_that_cannot_be_read_is_indexed_without_it_and_the_run_says_so(
        prefect_harness, db_uri, tmp_path):
    from corpus_search import index_records
    from flows.summary import IndexSummary

    records = [{"id": "a", "text": "Raft elects a leader by randomised timeouts.", "published": "next Tuesday"},
               {"id": "b", "text": "Paxos agrees in two phases of ballots.", "date": "05/03/2024"},
               {"id": "c", "text": "Glaciers form where snow compacts into ice over years.", "date": "soon"}]
    result = index_records(records, "undated", db_uri=db_uri)
    assert result["outcome"] == "ok" and result["articles_failed"] == 0  # a note, never a failure
    (notice,) = result["notices"]
    assert notice.startswith("2 article(s) give a publication date that could not be read, e.g. a (published: next "
                             "Tuesday); c (date: soon)")
    assert "--where published filter never matches them" in notice
    assert "note: 2 article(s)" in IndexSummary.from_result(result).to_text()
    rows = {r["doc_id"]: r for r in _rows(db_uri, "undated", ("doc_id", "published", "metadata"))}
    assert rows["a"]["published"] is None and dict(rows["a"]["metadata"])["published"] == "next Tuesday"
    assert rows["b"]["published"] is not None
    assert index_records(records, "undated", db_uri=db_uri)["notices"] == []  # said once, when they are indexed

    # A note's front matter is the user's too; a page's own <meta> dates are a site's business: no notice.
    (tmp_path / "note.md").write_text("---\ndate: 5th of March, last year\n---\n# Ice\n\nIce sheets flow slowly "
                                      "under their own weight, spreading out from the centre.\n")
    (tmp_path / "page.html").write_text('<html><head><title>T</title><meta name="date" content="someday">'
                                        "</head><body><p>Ice sheets flow slowly under their own weight.</p></body></html>")
    from flows.index_corpus import index_corpus

    notices = index_corpus([str(tmp_path / "note.md"), str(tmp_path / "page.html")], collection="undated",
                           db_uri=db_uri)["notices"]
    assert len(notices) == 1 and notices[0].startswith("1 article(s) give a publication date that could not be read, "
                                                       "e.g. note.md (date: 5th of March, last year)"), notices


def test_index_records_updates_changed_records_and_deletes_vanished_only_when_complete(prefect_harness, db_uri):
    from corpus_search import index_records

    index_records(RECORDS, "recs", db_uri=db_uri)
    index_records([{"id": "other", "text": "A record of another origin, kept whatever the records do."}],
                  "recs", db_uri=db_uri, origin="crm")
    changed = [dict(RECORDS[0], author="Ann Lee"), RECORDS[1]]
    summary = index_records(changed, "recs", db_uri=db_uri)  # not complete: the text record stays
    assert summary["paragraphs_encoded"] == 0 and summary["articles_deleted"] == 0
    rows = {r["doc_id"]: r for r in _rows(db_uri, "recs", ("doc_id", "metadata", "origin"))}
    assert len(rows) == 4 and dict(rows["r1"]["metadata"])["author"] == "Ann Lee"  # metadata updated, not re-encoded
    summary = index_records(changed, "recs", db_uri=db_uri, complete=True)
    assert summary["articles_deleted"] == 1
    assert {r["doc_id"] for r in _rows(db_uri, "recs")} == {"r1", "r2", "other"}
    # A complete set of none deletes nothing unless told so, as an empty directory does (named by its origin).
    summary = index_records([], "recs", db_uri=db_uri, complete=True)
    assert summary["articles_deleted"] == 0 and summary["failures"][0]["doc_id"] == "records"
    assert "no records were given for origin 'records'" in summary["failures"][0]["error"]
    summary = index_records([], "recs", db_uri=db_uri, complete=True, allow_empty_source=True)
    assert summary["articles_deleted"] == 2 and {r["doc_id"] for r in _rows(db_uri, "recs")} == {"other"}
    bulk = [{"id": f"b{i}", "text": f"Bulk record {i} about the tides, the moon and the harbour at dawn."}
            for i in range(4)]
    index_records(bulk, "recs", db_uri=db_uri, origin="bulk")
    summary = index_records(bulk[:1], "recs", db_uri=db_uri, complete=True, origin="bulk")  # 3 of 5 rows would go
    assert summary["articles_deleted"] == 0 and "--allow-mass-delete" in summary["failures"][0]["error"]
    summary = index_records(bulk[:1], "recs", db_uri=db_uri, complete=True, origin="bulk", allow_mass_delete=True)
    assert summary["articles_deleted"] == 3


def test_a_record_index_records_cannot_take_is_that_records_failure_and_the_others_are_indexed(prefect_harness,
                                                                                                db_uri):
    from corpus_search import index_records
    from corpus_search.indexing import RecordError

    with pytest.raises(RecordError, match="not int"):  # the call's own argument: refused whole
        index_records(5, "recs", db_uri=db_uri)
    fed: list[int] = []

    def records():  # a generator cannot be replayed: a raise after record 3 lost the call (it raised before)
        for i, record in enumerate([
            {"id": "a", "text": "The tides rise and fall twice a day with the pull of the moon."},
            42,
            {"id": "x", "title": "only a title"},
            {"id": "nul", "text": None},  # a database NULL
            {"id": "s", "text": "A broken export.", "author": "Jos\udce9"},  # a lone surrogate
            {(1, 2): "a tuple key", "text": "Not JSON at all."},
            {"id": "b", "text": "Glaciers carve valleys as they move slowly down the mountain side."},
        ]):
            fed.append(i)
            yield record

    summary = index_records(records(), "recs", db_uri=db_uri)
    assert fed == list(range(7)) and summary["articles_fetched"] == 2
    failures = {f["doc_id"]: f["error"] for f in summary["failures"]}
    assert failures["record 2"].startswith("record 2: ") and "is a int" in failures["record 2"]
    assert "record 3 (id 'x')" in failures["x"] and "no 'text'" in failures["x"]
    assert "no 'text'" in failures["nul"]
    assert "'author' holds '\\udce9'" in failures["s"]
    assert "cannot be written as JSON" in failures["record 6"]
    # A record the dump reader refuses is named by its id, or its number, never by the temporary file.
    summary = index_records(["fine text about the tides and the moon", {"id": "p", "paragraphs": [1, None]},
                             {"paragraphs": [1]}], "recs", db_uri=db_uri)
    failures = {f["doc_id"]: f["error"] for f in summary["failures"]}
    assert failures["p"].startswith("record 2 (id 'p'): 'paragraphs' must be a list")
    [hashed] = [error for error in failures.values() if error.startswith("record 3 (id '")]  # named by its hash
    assert "'paragraphs' must be a list" in hashed
    assert "corpus-search-records" not in json.dumps(summary)


def test_index_takes_a_pathlib_path_and_refuses_what_is_not_a_source(prefect_harness, db_uri, tmp_path):
    from corpus_search import index
    from query.errors import InvalidQueryError

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "tides.txt").write_text("The tides rise and fall twice a day with the pull of the moon.")
    assert index(tmp_path / "notes", "paths", db_uri=db_uri)["paragraphs_encoded"] == 1
    with pytest.raises(InvalidQueryError, match="a source is a path or URL"):
        index([tmp_path / "notes", 5], "paths", db_uri=db_uri)


# --------------------------------------------------------------------------- migration from v1


def _downgrade_to_v1(db_uri: str, collection: str, old_uri: str) -> None:
    """Write ``collection`` as schema v1 had it: source = the root, no origin/published/metadata."""
    db, old = lancedb.connect(db_uri), lancedb.connect(old_uri)
    t = db.open_table(collection).to_arrow()
    meta = json.loads(t.schema.metadata[METADATA_KEY])
    meta["schema_version"] = 1
    t = t.set_column(t.schema.get_field_index("source"), "source", t["origin"])
    t = t.drop_columns(["origin", "published", "metadata"]).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    old.create_table(collection, t)
    a = db.open_table(f"{collection}__articles").to_arrow()
    a = a.set_column(a.schema.get_field_index("source"), "source", a["origin"]).drop_columns(["origin", "file_stamp"])
    old.create_table(f"{collection}__articles", a)


def test_a_version_from_before_the_migration_says_so_and_a_rollback_to_it_is_upgraded(run_index, db_uri, tmp_path):
    """A tag made before `migrate` was refused with "run migrate", which changed nothing; a rollback to it made
    the whole collection unreadable until migrate ran again."""
    from query import Searcher
    from tasks.migrate import migrate_collection
    from tasks.versions import rollback, tag_version

    root = _tree(tmp_path / "notes")
    run_index([root])
    old_uri = str(tmp_path / "old")
    _downgrade_to_v1(db_uri, "test", old_uri)
    tag_version(old_uri, "test", "oldprod")
    migrate_collection(old_uri, "test")
    with pytest.raises(IndexContractError, match="before the collection was upgraded.*rollback test --to oldprod"):
        Searcher(db_uri=old_uri, collection="test", version="oldprod")
    result = rollback(old_uri, "test", "oldprod")
    assert result["migrated_from"] == 1
    hits = Searcher(db_uri=old_uri, collection="test").search("leader election", k=1, rerank=False)
    assert hits[0].source == str(root.resolve() / "blog" / "raft.md")


def test_a_v1_collection_is_refused_with_the_migration_command_and_migrates_in_place(run_index, db_uri, tmp_path):
    from query import Searcher
    from tasks.migrate import migrate_collection

    root = _tree(tmp_path / "notes")
    run_index([root])
    old_uri = str(tmp_path / "old")
    _downgrade_to_v1(db_uri, "test", old_uri)
    with pytest.raises(IndexContractError, match=f"corpus-search migrate test --db {old_uri}"):
        Searcher(db_uri=old_uri, collection="test")
    result = migrate_collection(old_uri, "test")
    assert (result["from_version"], result["to_version"], result["sources_updated"]) == (1, 2, result["rows"])
    assert migrate_collection(old_uri, "test")["sources_updated"] == 0  # a second run has nothing to do
    from tasks.store import fts_unindexed_rows

    # Every row was rewritten: the full-text index is brought up to them, not left for the next index run.
    assert fts_unindexed_rows(lancedb.connect(old_uri).open_table("test")) == 0
    key = lambda r: r["id"]  # noqa: E731
    cols = ("id", "doc_id", "source", "origin", "vector")
    assert sorted(_rows(old_uri, "test", cols), key=key) == sorted(_rows(db_uri, "test", cols), key=key)
    # The next index run re-encodes nothing (ids and article keys did not change).
    summary = run_index([root], db=old_uri)
    assert summary["paragraphs_encoded"] == 0 and summary["articles_deleted"] == 0
    hits = Searcher(db_uri=old_uri, collection="test").search("leader election", k=1, rerank=False)
    assert hits[0].source == str(root.resolve() / "blog" / "raft.md")
    assert pa.types.is_map(lancedb.connect(old_uri).open_table("test").schema.field("metadata").type)
