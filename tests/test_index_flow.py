"""The index-corpus flow end to end: real HTTP server, real MiniLM, real LanceDB, real Prefect harness."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import lancedb
import pytest

from flows.summary import JSON_KEYS, NothingIndexedError
from tasks.store import fts_unindexed_rows
from tests.conftest import html_page, table_rows

PARIS = [
    "Paris is the capital and most populous city of France, on the river Seine.",
    "The Eiffel Tower was completed in 1889 as the entrance arch of the World Fair.",
    "The Louvre is the most visited art museum in the world and holds the Mona Lisa.",
]
GLACIER = [
    "Glaciers form where more snow falls each winter than melts during the summer.",
    "Over decades the weight of fresh snow compacts older layers into dense blue ice.",
]


def _fts(db_uri: str, word: str, collection: str = "test") -> list[str]:
    from lancedb.query import MatchQuery

    t = lancedb.connect(db_uri).open_table(collection)
    return [r["text"] for r in t.search(MatchQuery(word, "text"), query_type="fts").limit(10).to_list()]


def test_summary_has_exactly_the_documented_json_keys(run_index, site):
    summary = run_index([site.page("/paris.html", html_page("Paris", PARIS))])
    assert set(JSON_KEYS) <= set(summary)
    assert summary["articles_fetched"] == 1 and summary["paragraphs_added"] == 3 and summary["rows"] == 3


def test_second_run_reencodes_nothing_and_keeps_the_same_rows(run_index, site, db_uri, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "glacier.md").write_text("# Glaciers\n\n" + "\n\n".join(GLACIER))
    sources = [site.page("/paris.html", html_page("Paris", PARIS)), notes]
    first = run_index(sources)
    rows_before = sorted(r["id"] for r in table_rows(db_uri))
    second = run_index(sources)
    assert first["paragraphs_encoded"] == 5
    assert second["paragraphs_encoded"] == 0 and second["paragraphs_added"] == 0
    assert second["articles_unchanged"] == 2 and second["articles_fetched"] == 0
    assert sorted(r["id"] for r in table_rows(db_uri)) == rows_before
    assert site.not_modified.get("/paris.html") == 1  # the ETag saved the download


def test_editing_a_page_reencodes_only_its_new_paragraphs_and_moves_the_rest(run_index, site, db_uri):
    url = site.page("/paris.html", html_page("Paris", PARIS))
    run_index([url])
    before = {r["text"]: (r["id"], r["position"]) for r in table_rows(db_uri)}
    new = "Paris hosted the Summer Olympic Games in 1900, 1924 and again in 2024."
    site.page("/paris.html", html_page("Paris", [new, PARIS[0], PARIS[1]]))  # insert on top, drop the last
    summary = run_index([url])
    assert summary["paragraphs_encoded"] == 1 and summary["paragraphs_added"] == 1
    assert summary["paragraphs_moved"] == 2 and summary["paragraphs_deleted"] == 1
    after = {r["text"]: (r["id"], r["position"]) for r in table_rows(db_uri)}
    assert set(after) == {new, PARIS[0], PARIS[1]}
    assert after[PARIS[0]] == (before[PARIS[0]][0], 1)  # same id, new position
    assert after[PARIS[1]] == (before[PARIS[1]][0], 2)


def _vectors(db_uri: str) -> dict[tuple[str, str], list[float]]:
    t = lancedb.connect(db_uri).open_table("test")
    return {(r["doc_id"], r["text"]): r["vector"] for r in t.search().limit(None).to_list()}


def _indexed_notes(run_index, tmp_path, glacier_in: str = "old"):
    """notes/<glacier_in>/glacier.md (2 paragraphs) and notes/paris.md (3), indexed."""
    notes = tmp_path / "notes"
    (notes / glacier_in).mkdir(parents=True)
    (notes / glacier_in / "glacier.md").write_text("# Glaciers\n\n" + "\n\n".join(GLACIER))
    (notes / "paris.md").write_text("# Paris\n\n" + "\n\n".join(PARIS))
    run_index([notes])
    return notes


def test_a_renamed_or_moved_file_copies_its_stored_vectors_and_encodes_nothing(run_index, db_uri, tmp_path):
    notes = _indexed_notes(run_index, tmp_path)
    before = _vectors(db_uri)
    (notes / "old").rename(notes / "new")  # a folder renamed
    (notes / "paris.md").rename(notes / "france.md")  # a file renamed
    summary = run_index([notes])
    assert summary["paragraphs_added"] == 5 and summary["paragraphs_reused"] == 5
    assert summary["paragraphs_encoded"] == 0 and summary["encode_seconds"] == 0
    assert summary["articles_deleted"] == 2 and summary["rows"] == 5
    after = _vectors(db_uri)
    assert {d for d, _ in after} == {"new/glacier.md", "france.md"}
    for (doc, text), vector in after.items():
        old_doc = {"new/glacier.md": "old/glacier.md", "france.md": "paris.md"}[doc]
        assert vector == before[(old_doc, text)]  # the very vector, copied


def test_a_batch_that_fails_keeps_every_vanished_file_of_its_folder_so_a_renamed_file_keeps_its_text(
        run_index, db_uri, tmp_path, monkeypatch):
    """Only a dump's failed batch stopped deletions: in a folder, a renamed file's old name was deleted while the
    batch of its new name failed, and its text was indexed nowhere."""
    from tasks import stages

    notes = _indexed_notes(run_index, tmp_path, glacier_in="")
    (notes / "paris.md").rename(notes / "france.md")
    real = stages.write_batch

    def refuses_france(plan, vectors, changed, settings, meta=None):  # a value the table refuses, in that batch only
        if any(row["doc_id"] == "france.md" for row in changed.unquote()):
            raise ValueError("a value the table refuses")
        return real(plan, vectors, changed, settings, meta)

    monkeypatch.setattr(stages, "write_batch", refuses_france)
    summary = run_index([notes], batch_articles=1)
    assert summary["articles_deleted"] == 0 and summary["outcome"] == "partial"
    assert any("no article of it was taken for deleted this run" in n for n in summary["notices"])
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"glacier.md", "paris.md"}  # paris.md's text stays
    monkeypatch.undo()
    again = run_index([notes])  # fixed: the new name is written and the old one goes
    assert again["articles_deleted"] == 1 and {r["doc_id"] for r in table_rows(db_uri)} == {"glacier.md", "france.md"}


def test_settings_the_collection_was_not_indexed_with_stop_the_run_before_any_deletion(run_index, db_uri, tmp_path):
    notes = _indexed_notes(run_index, tmp_path, glacier_in="")
    (notes / "paris.md").rename(notes / "france.md")
    from query.schema import IndexContractError

    with pytest.raises(IndexContractError, match="encode_title"):
        run_index([notes], settings_overrides={"encode_title": False})
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"glacier.md", "paris.md"}
    # The CLI: exit 2 with the fix, and --json still prints its one object.
    import contextlib
    import io

    from corpus_search.cli import main
    from query.settings import get_settings

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORPUS_SEARCH_ENCODE_TITLE", "false")
        get_settings.cache_clear()  # read from the environment once per process
        try:
            code = main(["index", str(notes), "--collection", "test", "--db", db_uri, "--json"])
        finally:
            mp.delenv("CORPUS_SEARCH_ENCODE_TITLE")
            get_settings.cache_clear()
    said = json.loads(out.getvalue().strip().splitlines()[-1])
    assert code == 2 and said["outcome"] == "stopped" and "IndexContractError" in said["error"]
    assert "CORPUS_SEARCH_ENCODE_TITLE" in err.getvalue()


def test_the_mass_delete_guard_counts_only_rows_whose_text_is_indexed_nowhere_else(run_index, db_uri, tmp_path):
    notes = _indexed_notes(run_index, tmp_path)
    (notes / "old").rename(notes / "new")  # 2 rows: their text is indexed again, under the new name
    (notes / "paris.md").unlink()  # 3 of 5 rows gone for good: over the 50 % limit
    summary = run_index([notes])
    [(_, error)] = [(f["doc_id"], f["error"]) for f in summary["failures"]]
    assert "would delete 3 of 5 rows (60%)" in error and "not counting 2 whose text stays indexed" in error
    assert summary["articles_deleted"] == 0 and summary["rows"] == 7  # nothing deleted: the new rows are added


def test_a_paragraph_two_files_share_is_encoded_once_and_both_rows_get_its_vector(run_index, db_uri, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    # The same title (a title is encoded with each paragraph) and the same first paragraph.
    (notes / "a.md").write_text("\n\n".join(["# Notes", GLACIER[0], PARIS[0]]))
    (notes / "b.md").write_text("\n\n".join(["# Notes", GLACIER[0], PARIS[1]]))
    first = run_index([notes])
    assert first["paragraphs_added"] == 4 and first["paragraphs_encoded"] == 3 and first["paragraphs_reused"] == 1
    vectors = _vectors(db_uri)
    assert vectors[("a.md", GLACIER[0])] == vectors[("b.md", GLACIER[0])]
    # A new file later: its paragraph that the collection holds is copied; the new one alone is encoded.
    (notes / "c.md").write_text("\n\n".join(["# Notes", PARIS[1], PARIS[2]]))
    second = run_index([notes])
    assert second["paragraphs_added"] == 2 and second["paragraphs_encoded"] == 1 and second["paragraphs_reused"] == 1
    assert _vectors(db_uri)[("c.md", PARIS[1])] == vectors[("b.md", PARIS[1])]


def test_a_page_that_answers_410_gone_is_deleted_and_one_that_answers_404_keeps_its_rows_for_a_grace(
        run_index, site, db_uri):
    """An indexed page removed for good kept its rows forever, and failed every scheduled run (exit 3)."""
    from tasks.versions import load_runs
    from tasks.collections import connect_existing

    paris = site.page("/paris.html", html_page("Paris", PARIS))
    glacier = site.page("/glacier.html", html_page("Glaciers", GLACIER))
    lyon = site.page("/lyon.html", html_page("Lyon", [p.replace("Paris", "Lyon") for p in PARIS]))
    run_index([paris, glacier, lyon])
    site.page("/paris.html", b"gone", status=410, etag=False)
    site.page("/glacier.html", b"not here", status=404, etag=False)
    summary = run_index([paris, glacier, lyon])
    assert summary["articles_deleted"] == 1 and summary["paragraphs_deleted"] == 3
    # A 404 is no word that it is gone for good: the page's failure says until when its rows are kept.
    [(doc, error)] = [(f["doc_id"], f["error"]) for f in summary["failures"]]
    assert doc == glacier and "HTTP 404 (not found) since" in error and "deleted if it still answers 404" in error
    assert any("answered HTTP 410 (gone: removed for good)" in n and paris in n for n in summary["notices"])
    assert {r["source"] for r in table_rows(db_uri)} == {glacier, lyon}
    first_404 = load_runs(connect_existing(db_uri), "test")[-1]["summary"]["not_found"]
    assert list(first_404) == [glacier]
    # A run that does not fetch the page carries its first 404 on; one past the grace deletes it as a 410 page.
    run_index([lyon])
    assert load_runs(connect_existing(db_uri), "test")[-1]["summary"]["not_found"] == first_404
    past = run_index([glacier, lyon], settings_overrides={"not_found_grace_s": 0.5})
    assert past["articles_deleted"] == 1 and past["failures"] == []
    assert any("answered HTTP 404 (not found) on every run" in n and glacier in n for n in past["notices"])
    assert {r["source"] for r in table_rows(db_uri)} == {lyon}
    # A page that comes back ends its streak.
    site.page("/lyon.html", b"oops", status=404, etag=False)
    with pytest.raises(NothingIndexedError, match="lyon.html: HTTP 404"):  # its only source failed: the run did
        run_index([lyon])
    assert list(load_runs(connect_existing(db_uri), "test")[-1]["summary"]["not_found"]) == [lyon]  # recorded all the same
    site.page("/lyon.html", html_page("Lyon", [p.replace("Paris", "Lyon") for p in PARIS]))
    assert run_index([lyon])["failures"] == []
    assert load_runs(connect_existing(db_uri), "test")[-1]["summary"]["not_found"] == {}
    # A page never indexed that answers 410 is that URL's failure: nothing to delete.
    new = site.page("/new.html", b"gone", status=410, etag=False)
    with pytest.raises(NothingIndexedError, match=r"new.html: HTTP 410 \(gone\).*nothing of it is indexed"):
        run_index([new])
    assert len(table_rows(db_uri)) == 3


def test_a_site_that_answers_410_to_most_of_its_pages_deletes_none_though_the_collection_is_larger(
        run_index, site, db_uri, tmp_path):
    """The guard counted the whole collection: a site's every page went when local files outweighed it."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(4):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\n" + "\n\n".join(GLACIER + PARIS))
    urls = [site.page(f"/p{i}.html", html_page(f"Page {i}", [PARIS[i]])) for i in range(3)]
    run_index([notes, *urls])
    for i in range(2):
        site.page(f"/p{i}.html", b"gone", status=410, etag=False)
    summary = run_index([notes, *urls])
    assert summary["articles_deleted"] == 0 and summary["outcome"] == "partial"
    assert any("2 of the 3 indexed pages of" in f["error"] and "--allow-mass-delete" in f["error"]
               for f in summary["failures"])
    assert run_index([notes, *urls], allow_mass_delete=True)["articles_deleted"] == 2


def test_a_page_split_under_other_settings_is_fetched_whole_once_though_its_server_would_answer_304(
        run_index, site, db_uri):
    """A 304 skips the split: conditional requests for pages split otherwise left them with the old paragraphs."""
    short = "A short paragraph of exactly sixty-odd characters in all."
    url = site.page("/paris.html", html_page("Paris", [*PARIS, short]))
    run_index([url])
    assert short in {r["text"] for r in table_rows(db_uri)}
    stricter = {"settings_overrides": {"min_paragraph_chars": 70}}
    summary = run_index([url], **stricter)
    assert site.not_modified.get("/paris.html", 0) == 0 and summary["paragraphs_deleted"] == 1
    assert short not in {r["text"] for r in table_rows(db_uri)}
    assert run_index([url], **stricter)["articles_unchanged"] == 1 and site.not_modified["/paris.html"] == 1


def test_a_url_that_still_redirects_to_the_same_page_gets_a_304_there_and_one_that_moves_on_does_not(
        run_index, site, db_uri):
    """Validators go only to the URL that gave them: the redirect target the page's stamp names."""
    target = site.page("/paris.html", html_page("Paris", PARIS))
    old = site.page("/old", b"", status=301, etag=False, headers={"Location": target})
    first = run_index([old])
    assert first["paragraphs_encoded"] == 3
    again = run_index([old])  # it downloaded /paris.html whole on every run, sending no validators
    assert again["articles_unchanged"] == 1 and site.not_modified.get("/paris.html") == 1
    elsewhere = site.page("/glaciers.html", html_page("Glaciers", GLACIER))
    site.page("/old", b"", status=301, etag=False, headers={"Location": elsewhere})
    moved = run_index([old])
    assert moved["articles_fetched"] == 1 and site.not_modified.get("/glaciers.html", 0) == 0
    assert {r["text"] for r in table_rows(db_uri)} == set(GLACIER)
    assert run_index([old])["articles_unchanged"] == 1 and site.not_modified.get("/glaciers.html") == 1
    # Moved again, to a server that sends no validators: /glaciers.html's ETag must not follow it there.
    bare = site.page("/bare.html", html_page("Glaciers", GLACIER), etag=False)
    site.page("/old", b"", status=301, etag=False, headers={"Location": bare})
    assert run_index([old])["articles_unchanged"] == 1 and run_index([old])["articles_unchanged"] == 1
    assert "if-none-match" not in site.last_headers["/bare.html"]


def test_a_new_etag_for_the_same_text_is_remembered_so_the_next_run_gets_a_304(run_index, site, db_uri):
    from query.schema import articles_table_name

    url = site.page("/p", html_page("Paris", PARIS), etag=False, headers={"ETag": '"a"'})
    run_index([url])
    site.page("/p", html_page("Paris", PARIS), etag=False, headers={"ETag": '"b"'})  # e.g. a server redeploy
    assert run_index([url])["articles_unchanged"] == 1
    stored = lancedb.connect(db_uri).open_table(articles_table_name("test")).to_arrow().to_pylist()
    assert [r["etag"] for r in stored] == ['"b"']  # it kept sending "a", and downloaded the page on every run


def test_a_page_with_no_text_is_no_failure_but_the_run_says_so_once(run_index, site, db_uri):
    shell = "<html><head><title>App</title><script src='/app.js'></script></head><body><div id=root></div></body></html>"
    url = site.page("/app", shell)
    first = run_index([url, site.page("/paris.html", html_page("Paris", PARIS))])
    assert first["outcome"] == "ok" and first["articles_failed"] == 0
    (notice,) = first["notices"]
    assert notice.startswith(f"1 article(s) have no text to index, e.g. {url}: ") and "scripts draw" in notice
    assert run_index([url])["notices"] == []


@pytest.mark.parametrize("title, error", [
    ("404", True), ("Error 503 - Backend fetch failed", True), ("Example – Sign in", True), ("Just a moment...", True),
    ("HTTP 404 - Not Found", True), ("500 Days of Summer", False), ("Error correction codes", False),
    ("Sign in with Apple", False),
    # nginx's own error pages ("503 Service Temporarily Unavailable", 200 behind some proxies) replaced articles.
    ("503 Service Temporarily Unavailable", True), ("504 Gateway Time-out", True),
    ("Service Temporarily Unavailable", True), ("408 Request Timeout", True), ("Temporarily Unavailable Items", False)])
def test_error_page_titles_are_whole_title_parts_or_status_lines(title, error):
    from tasks.records import Article, Paragraph
    from tasks.stages import error_page

    page = Article("https://x.org/a", "https://x.org/a", "", "<p>x</p>", "html")
    text = "A short page."
    paragraphs = [Paragraph("i", page.doc_id, page.source, title, 0, text, text, "h")]
    assert (error_page(page, paragraphs, "Paris") is not None) == error  # an indexed article came back like this
    assert error_page(page, paragraphs, title) is None  # under its own indexed title: the page, not an error


def test_an_indexed_page_turned_into_an_error_or_sign_in_page_keeps_its_rows(run_index, site, db_uri):
    urls = [site.page("/paris.html", html_page("Paris", PARIS)), site.page("/ice", html_page("Ice", GLACIER))]
    run_index(urls)
    before = sorted(r["text"] for r in table_rows(db_uri))
    site.page("/login", html_page("Sign in | Example", ["Enter your e-mail address and password to continue."]))
    site.page("/paris.html", b"", status=302, etag=False, headers={"Location": "/login"})  # a session expired
    summary = run_index(urls)
    assert summary["outcome"] == "partial" and "error or sign-in page, not the article (title 'Sign in | Example'" \
        in summary["failures"][0]["error"]
    site.page("/paris.html", html_page("Example - Page not found", ["The page you asked for does not exist."]))
    assert "any rows indexed before are kept" in run_index(urls)["failures"][0]["error"]
    assert sorted(r["text"] for r in table_rows(db_uri)) == before
    # Real short pages under such titles (a song, an API's doc) are indexed, and updated under their title.
    song = site.page("/song", html_page("Error 404", ["A song by the band about a page that was not found."]))
    login = site.page("/api", html_page("Login", ["POST /login with a user name and a password returns a token."]))
    first = run_index([song, login])
    assert first["outcome"] == "ok" and first["notices"] == [  # new pages: indexed as they are, and said
        f"2 article(s) look like a server's error or sign-in page, not an article, e.g. {song}; {login}: they are "
        "indexed as they are (new pages; an indexed page that turns into one keeps its rows). Check that they are "
        "public, or index the pages they stand for"]
    site.page("/song", html_page("Error 404", ["A song by the band about a page that was never found again."]))
    assert run_index([song, login])["outcome"] == "ok" and any("never found again" in r["text"] for r in table_rows(db_uri))


def test_deleting_a_file_from_a_directory_source_deletes_its_rows(run_index, db_uri, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "glacier.md").write_text("# Glaciers\n\n" + "\n\n".join(GLACIER))
    (notes / "paris.txt").write_text("\n\n".join(PARIS))
    run_index([notes])
    (notes / "paris.txt").unlink()
    summary = run_index([notes], allow_mass_delete=True)  # 3 of 5 rows: past the default 50 % guard
    assert summary["articles_deleted"] == 1 and summary["paragraphs_deleted"] == 3
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"glacier.md"}


@pytest.mark.parametrize("failure", ["http500", "timeout"])
def test_a_failing_url_is_reported_and_its_old_rows_are_kept(run_index, site, db_uri, failure):
    from tests.conftest import Route

    url = site.page("/paris.html", html_page("Paris", PARIS))
    run_index([url])
    if failure == "http500":
        site.routes["/paris.html"] = Route(body=b"oops", status=500, etag=False)
    else:
        site.routes["/paris.html"] = Route(body=b"late", delay_s=3.0, etag=False)
    with pytest.raises(NothingIndexedError) as err:  # the only source failed: the run is Failed
        run_index([url], settings_overrides={"fetch_timeout_s": 0.5, "fetch_retries": 1})
    summary = err.value.summary
    assert summary["articles_failed"] == 1
    assert summary["failures"][0]["doc_id"] == url
    assert ("500" in summary["failures"][0]["error"]) == (failure == "http500")
    assert len(table_rows(db_uri)) == 3  # nothing indexed before was deleted
    if failure == "http500":
        assert site.hits["/paris.html"] == 1 + 2  # first run, then one try plus one retry


def test_non_html_and_oversized_responses_are_clear_per_article_errors(run_index, site, db_uri):
    ok = site.page("/paris.html", html_page("Paris", PARIS))
    pdf = site.page("/doc.pdf", b"%PDF-1.4 binary", content_type="application/pdf")
    big = site.page("/big.html", html_page("Big", ["word " * 5000]))
    summary = run_index([ok, pdf, big], settings_overrides={"fetch_max_bytes": 4096})
    errors = {f["doc_id"]: f["error"] for f in summary["failures"]}
    assert "unsupported content type 'application/pdf'" in errors[pdf]
    assert "exceeds the limit of 4096" in errors[big]
    assert summary["articles_fetched"] == 1 and summary["rows"] == 3


def test_broken_charset_and_markup_are_extracted_cleanly(run_index, site, db_uri):
    latin1 = "<html><head><meta charset='iso-8859-1'><title>Café</title></head><body><p>Le café de Besançon est très apprécié par les étudiants.</p>"
    broken = b"<html><body><p>Bad bytes \xff\xfe are replaced, not fatal, in this paragraph.<p>Unclosed <b>tags keep their text too in the second one.</div></td>"
    a = site.page("/latin1.html", latin1.encode("latin-1"), content_type="text/html")
    b = site.page("/broken.html", broken, content_type="text/html; charset=utf-8")
    summary = run_index([a, b])
    assert summary["articles_failed"] == 0
    texts = {r["text"] for r in table_rows(db_uri)}
    assert "Le café de Besançon est très apprécié par les étudiants." in texts
    assert any(t.startswith("Bad bytes \ufffd\ufffd are replaced") for t in texts)


def test_full_text_index_finds_a_word_only_the_second_run_added_and_covers_every_row(run_index, site, db_uri):
    url = site.page("/paris.html", html_page("Paris", PARIS))
    run_index([url])
    assert _fts(db_uri, "zeppelin") == []
    site.page("/paris.html", html_page("Paris", [*PARIS, "A zeppelin once moored above the city during the fair."]))
    run_index([url])
    assert _fts(db_uri, "zeppelin") == ["A zeppelin once moored above the city during the fair."]
    assert fts_unindexed_rows(lancedb.connect(db_uri).open_table("test")) == 0


def test_jsonl_dumps_in_simplewiki_gz_and_beir_formats_are_indexed(run_index, db_uri, tmp_path):
    wiki = tmp_path / "simplewiki.jsonl.gz"
    with gzip.open(wiki, "wt") as fh:
        fh.write(json.dumps({"id": "1", "title": "Glacier", "paragraphs": GLACIER}) + "\n")
        fh.write("{not json\n")
    beir = tmp_path / "corpus.jsonl"
    beir.write_text(json.dumps({"_id": "d1", "title": "Paris", "text": PARIS[0]}) + "\n")
    summary = run_index([wiki, beir])
    assert summary["articles_fetched"] == 2 and summary["rows"] == 3
    assert summary["articles_failed"] == 1
    assert "simplewiki.jsonl.gz:2" in summary["failures"][0]["error"]
    rows = table_rows(db_uri)
    assert {(r["doc_id"], r["title"]) for r in rows} == {("1", "Glacier"), ("d1", "Paris")}


def test_a_missing_source_path_is_reported_and_deletes_nothing(run_index, db_uri, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "paris.txt").write_text("\n\n".join(PARIS))
    run_index([notes])
    with pytest.raises(NothingIndexedError) as err:  # nothing could be indexed: the run is Failed
        run_index([tmp_path / "gone"])
    summary = err.value.summary
    assert summary["articles_failed"] == 1 and "does not exist" in summary["failures"][0]["error"]
    assert len(table_rows(db_uri)) == 3


def test_an_unknown_url_scheme_alone_fails_the_run_and_writes_nothing(run_index, db_uri):
    with pytest.raises(NothingIndexedError, match="only http:// and https://"):
        run_index(["ftp://example.org/file.txt"])
    assert not Path(db_uri, "test.lance").exists()


@pytest.mark.parametrize("bad", ["ftp://example.org/file.txt", "https://example.org:99999/a",
                                 "https://ann:secret@example.org/private",
                                 "http://exa mple.com/",  # was retried against DNS, then a fetch failure (exit 4)
                                 "http://a..b/"])
def test_a_malformed_url_in_a_list_is_that_urls_failure_and_the_other_pages_are_indexed(run_index, site, bad):
    url = site.page("/paris.html", html_page("Paris", PARIS))
    summary = run_index([bad, url])
    assert summary["outcome"] == "partial" and summary["articles_fetched"] == 1
    ((source, error),) = [(f["doc_id"], f["error"]) for f in summary["failures"]]
    assert source == bad.replace("ann:secret@", "") and "source " in error
    assert "secret" not in source + error  # the failure is logged and stored with the run


def test_the_table_records_the_encoder_and_refuses_a_different_one(run_index, site, db_uri):
    from query.schema import IndexContractError, IndexMetadata

    url = site.page("/paris.html", html_page("Paris", PARIS))
    run_index([url])
    meta = IndexMetadata.from_schema(lancedb.connect(db_uri).open_table("test").schema)
    assert (meta.encoder, meta.dim, meta.normalized) == ("sentence-transformers/all-MiniLM-L6-v2", 384, True)
    with pytest.raises(IndexContractError, match="all-MiniLM-L6-v2.*other-encoder"):
        from query.searcher import Searcher

        Searcher(db_uri=db_uri, collection="test", bi_encoder="acme/other-encoder")


def test_past_the_row_threshold_an_ann_index_is_built_and_dense_search_keeps_its_recall(run_index, db_uri):
    import numpy as np

    from query import Searcher
    from query.fusion import top_k_cosine
    from tests.conftest import EXAMPLES

    summary = run_index([EXAMPLES / "articles", EXAMPLES / "notes"], settings_overrides={"ann_min_rows": 50})
    table = lancedb.connect(db_uri).open_table("test")
    assert summary["rows"] >= 50
    assert any("vector" in idx.columns for idx in table.list_indices())
    t = table.to_lance().to_table(columns=["id", "vector"])
    vecs = np.asarray(t["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(t.num_rows, -1)
    searcher = Searcher(db_uri=db_uri, collection="test")
    recalls = []
    for q in ["How do glaciers form?", "volcano eruption", "printing press inventor", "heart blood pump"]:
        idx, _ = top_k_cosine(vecs, searcher.bi_encoder.encode([q])[0], 10)
        exact = {t["id"][int(i)].as_py() for i in idx}
        got = {h.id for h in searcher.search(q, k=10, mode="dense", candidates=10, rerank=False)}
        recalls.append(len(exact & got) / 10)
    assert np.mean(recalls) >= 0.95


def test_one_page_indexed_under_two_urls_is_one_hit_per_paragraph_but_a_shared_line_in_two_pages_is_two(
        run_index, site, db_uri):
    from query.searcher import Searcher

    notice = "This article is licensed under the Creative Commons Attribution license, version four."
    page = html_page("Paris", [*PARIS, notice])
    urls = [site.page("/paris.html", page), site.page("/paris.html?ref=home", page),
            site.page("/glaciers.html", html_page("Glaciers", [*GLACIER, notice]))]
    run_index(urls)
    assert len(table_rows(db_uri)) == 4 + 4 + 3
    hits = Searcher(db_uri=db_uri, collection="test").search("Paris Eiffel Louvre license", k=20, rerank=False)
    texts = [(h.title, h.text) for h in hits]
    assert len(texts) == len(set(texts)) == 4 + 3  # each Paris paragraph once; the notice under each title
    assert [h.rank for h in hits] == list(range(1, 8))
    searcher = Searcher(db_uri=db_uri, collection="test")
    for mode in ("dense", "hybrid"):  # pages of 2 from pools of 2: the repeated copies must not leave them short
        pages = [searcher.search("Paris Eiffel Louvre license", k=2, offset=o, candidates=2, rerank=False, mode=mode)
                 for o in (0, 2, 4, 6)]
        assert [len(p) for p in pages] == [2, 2, 2, 1], mode
        if mode == "dense":  # a bigger pool can reorder hybrid ranks (README), never the cosine order
            assert len({(h.title, h.text) for p in pages for h in p}) == 7
    pages = [searcher.search("Paris Eiffel Louvre license", k=2, offset=o, candidates=8, rerank=False)
             for o in (0, 2, 4, 6)]  # within candidates: one pool, whatever the page, so no repeats
    assert [len(p) for p in pages] == [2, 2, 2, 1] and len({(h.title, h.text) for p in pages for h in p}) == 7
    kept = searcher.search("Paris Eiffel Louvre license", k=20, rerank=False, distinct=False)
    assert len(kept) == 11  # an evaluation keeps every copy


def test_a_subfolder_that_cannot_be_listed_keeps_its_articles_and_is_the_runs_failure(run_index, db_uri, tmp_path,
                                                                                        monkeypatch):
    """os.walk skips a folder it cannot list: its files looked deleted, and their rows went with outcome ok."""
    import os

    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "paris.txt").write_text("\n\n".join(PARIS))
    (notes / "sub" / "glacier.txt").write_text("\n\n".join(GLACIER))
    run_index([notes])
    real = os.scandir

    def scandir(path="."):  # what EACCES or a stale network mount looks like (the tests run as root: no chmod)
        if str(path).endswith("/notes/sub"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    summary = run_index([notes])
    assert summary["outcome"] == "partial" and summary["articles_deleted"] == 0
    assert [f["doc_id"] for f in summary["failures"]] == [f"{notes}/sub"]
    assert len(table_rows(db_uri)) == 5
    with pytest.raises(NothingIndexedError):  # nor may the root's own failure look like an empty disk
        run_index([notes / "sub"], allow_empty_source=True)
    assert len(table_rows(db_uri)) == 5


def test_a_hidden_file_or_folder_given_as_its_own_source_is_not_deleted_by_the_folder_around_it(run_index, db_uri,
                                                                                                 tmp_path):
    notes = tmp_path / "notes"
    (notes / ".drafts").mkdir(parents=True)
    (notes / ".archive").mkdir()
    (notes / "paris.txt").write_text("\n\n".join(PARIS))
    (notes / ".drafts" / "x.md").write_text("\n\n".join(GLACIER))
    (notes / ".archive" / "old.txt").write_text("An archived note about the river Rhine and its many old bridges.")
    sources = [notes, notes / ".drafts" / "x.md", notes / ".archive"]
    assert run_index(sources)["articles_fetched"] == 3
    again = run_index(sources)  # the walk of notes/ skips hidden paths: they looked deleted, on every other run
    assert again["articles_deleted"] == 0 and again["articles_unchanged"] == 3
    assert run_index([notes])["articles_deleted"] == 0 and len(table_rows(db_uri)) == 3 + 2 + 1


def _nested_roots(tmp_path, inner: str, files: int) -> tuple:
    """``notes/`` with 6 notes, and ``notes/<inner>/`` inside it with ``files`` more: two overlapping roots."""
    notes = tmp_path / "notes"
    (notes / inner).mkdir(parents=True)
    for i in range(6):
        (notes / f"n{i}.txt").write_text(f"Note number {i} is about the history of bridges and their engineering.")
    for i in range(files):
        (notes / inner / f"b{i}.txt").write_text(f"Post {i} is about cooking pasta with fresh tomatoes and basil.")
    return notes, notes / inner


def test_a_file_gone_from_two_overlapping_roots_is_counted_once(run_index, db_uri, tmp_path):
    notes, blog = _nested_roots(tmp_path, "blog", 4)
    run_index([notes, blog])
    for i in range(3):
        (blog / f"b{i}.txt").unlink()
    summary = run_index([notes, blog])  # 3 of 10 rows: counted twice, 6 of 10, the mass-delete guard refused
    assert summary["outcome"] == "ok" and summary["articles_deleted"] == 3 and summary["paragraphs_deleted"] == 3
    assert len(table_rows(db_uri)) == 7


@pytest.mark.parametrize("order", ["outer-first", "inner-first"])
def test_an_inner_source_that_is_now_empty_keeps_its_articles_though_its_parent_is_indexed_too(run_index, db_uri,
                                                                                           tmp_path, order):
    """`index notes notes/mnt` with notes/mnt unmounted (empty): the parent judged the mount's files deleted and
    deleted them, while the mount itself was reported as "nothing to index"."""
    notes, mnt = _nested_roots(tmp_path, "mnt", 2)
    roots = [notes, mnt] if order == "outer-first" else [mnt, notes]
    run_index(roots)
    for f in mnt.iterdir():
        f.unlink()
    summary = run_index(roots)
    assert summary["articles_deleted"] == 0 and len(table_rows(db_uri)) == 8
    assert any("its 2 indexed articles are kept" in f["error"] for f in summary["failures"]), summary["failures"]
    summary = run_index(roots, allow_empty_source=True)  # said so: now they go
    assert summary["articles_deleted"] == 2 and len(table_rows(db_uri)) == 6


def test_a_run_whose_every_source_fails_is_in_an_existing_collections_run_log(run_index, db_uri, tmp_path):
    from tasks.versions import load_runs

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "paris.txt").write_text("\n\n".join(PARIS))
    run_index([notes])
    with pytest.raises(NothingIndexedError):
        run_index([tmp_path / "unmounted"])
    import lancedb as ldb

    runs = load_runs(ldb.connect(db_uri), "test")
    assert len(runs) == 2 and runs[-1]["summary"]["outcome"] == "failed"


@pytest.mark.parametrize(("error", "calls"), [(ValueError("a bug in the splitter"), 1),
                                              (OSError("a busy network mount"), 2)])
def test_a_local_files_batch_is_retried_on_an_io_error_only(run_index, tmp_path, monkeypatch, error, calls):
    """Retries belong on I/O: a deterministic failure ran the whole prepare shard (read, split, plan) twice."""
    from flows.summary import NothingIndexedError
    from tasks import stages

    seen = []

    def failing_split(*args, **kwargs):
        seen.append(1)
        raise error

    monkeypatch.setattr(stages, "split_articles", failing_split)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("A paragraph long enough to be indexed as a passage of its own.")
    with pytest.raises(NothingIndexedError):
        run_index([notes])
    assert len(seen) == calls


def test_log_lines_of_the_fetch_pool_reach_the_runs_logs_in_prefect(prefect_harness, site, tmp_path):
    """A helper thread's log line had no run context: Prefect dropped the fetcher's "retrying URL" warnings (and the
    writer heartbeat's errors) from the run's logs in the UI, where the deployments route them."""
    import os
    import subprocess
    import sys
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import REPO, Route

    site.routes["/flaky.html"] = Route(status=503, headers={"Retry-After": "0"},
                                       then=Route(body=html_page("Paris", ["Paris is the capital of France."]).encode()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks", "CORPUS_SEARCH_FETCH_ALLOW_PRIVATE": "true"}
    proc = subprocess.run([sys.executable, "-m", "corpus_search.cli", "index", site.url("/flaky.html"), "-c", "flaky",
                           "--db", str(tmp_path / "db")], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    deadline, messages = time.monotonic() + 15, []
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["index-corpus"])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)
        while time.monotonic() < deadline and not any("retrying" in m for m in messages):
            messages = [log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))]
            time.sleep(0.5)
    assert any(m.startswith("retrying " + site.url("/flaky.html")) for m in messages), messages


def test_a_run_whose_worker_cannot_see_the_database_stops_with_the_fix_and_changes_nothing(run_index, db_uri,
                                                                                            tmp_path, monkeypatch):
    """A Dask worker on another machine given a local --db path saw no collection: it planned every article as
    new, so edited articles kept their old paragraphs beside the new ones, for good. The run stops instead."""
    from query.errors import DatabaseLocationError
    from tasks import stages

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# A\n\nThe violin has four strings tuned in perfect fifths, G D A E.")
    run_index([notes])
    before = table_rows(db_uri)
    (notes / "a.md").write_text("# A\n\nThe viola has four strings tuned in perfect fifths, C G D A.")
    monkeypatch.setattr(stages, "table_names", lambda db: [])  # what the blind worker sees
    with pytest.raises(DatabaseLocationError, match="a Dask worker cannot see the database .* same path"):
        run_index([notes])
    monkeypatch.undo()
    assert table_rows(db_uri) == before
    assert run_index([notes])["articles_fetched"] == 1 and [r["text"] for r in table_rows(db_uri)] == [
        "The viola has four strings tuned in perfect fifths, C G D A."]


def test_a_full_disk_stops_the_run_with_exit_5_instead_of_failing_every_article_after_it(prefect_harness, db_uri,
                                                                                        tmp_path, monkeypatch, capsys):
    """ENOSPC in a batch's write was that batch's articles' failure: the run went on writing to a full disk,
    failed every later article and ended Completed with exit 3 (exit 4 when nothing had been written)."""
    import errno

    from corpus_search.cli import main
    from tasks import stages

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\nThe violin number {i} has four strings tuned in perfect fifths.")
    real, calls = stages.write_batch, []

    def disk_fills(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "write_batch", disk_fills)
    code = main(["index", str(notes), "--collection", "test", "--db", db_uri, "--batch-articles", "2"])
    err = capsys.readouterr().err
    assert code == 5 and "the run stopped part-way: OSError: [Errno 28] No space left on device" in err, err[-2000:]
    assert "n5.md" not in err  # no article was failed for it
    monkeypatch.undo()
    assert len(table_rows(db_uri)) == 2  # the first batch's rows stay
    # A source of one batch (its last batch) stopped nothing: the error was taken for the source's read error.
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.md").write_text("# A\n\nThe viola has four strings tuned in perfect fifths, C G D A.")
    monkeypatch.setattr(stages, "write_batch", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    assert main(["index", str(one), "--collection", "test", "--db", db_uri]) == 5
    assert "cannot read source" not in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["index", str(notes), "--collection", "test", "--db", db_uri]) == 0 and len(table_rows(db_uri)) == 6


def test_a_database_that_refuses_writes_stops_the_run_and_a_value_it_refuses_fails_only_that_batch(
        prefect_harness, db_uri, tmp_path, monkeypatch, capsys):
    """Permission denied on the table's files failed each batch's articles, unchanged ones included: a nightly
    run ended Completed (exit 3) while writing nothing, or blamed every article."""
    from corpus_search.cli import main
    from tasks import stages

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(6):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\nThe cello number {i} has four strings tuned in perfect fifths.")
    real, calls = stages.write_batch, []

    def refused(error):
        def write(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:  # what lance raised when the table's folder could not be written (chattr +i)
                raise RuntimeError(error)
            return real(*args, **kwargs)
        return write

    denied = ('lance error: LanceError(IO): Operation not permitted (os error 1) at path "db/test.lance/data/.tmp1", '
              "rust/lance-io/src/object_store.rs:42")
    monkeypatch.setattr(stages, "write_batch", refused(denied))
    code = main(["index", str(notes), "--collection", "test", "--db", db_uri, "--batch-articles", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 5 and "DatabaseWriteError: cannot write collection 'test'" in err and "may write the database" in err
    said = json.loads(out.strip().splitlines()[-1])  # what it did before it stopped, not nulls
    assert said["outcome"] == "stopped" and said["articles_fetched"] == 2 and said["rows"] == 2
    assert "failed: n" not in err  # no article was blamed
    assert len(table_rows(db_uri)) == 2  # the first batch's rows stay
    # The UI's latest summary says the run stopped, and counts the rows there are (it read 0: a wiped collection).
    import asyncio

    from prefect.client.orchestration import get_client

    async def latest():
        async with get_client() as client:
            return [a for a in await client.read_latest_artifacts() if a.key == "index-summary-test"]

    [artifact] = asyncio.run(latest())
    rows = {r["metric"]: r["value"] for r in (json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data)}
    assert rows["outcome"] == "stopped" and rows["rows"] == 2
    calls.clear()
    monkeypatch.setattr(stages, "write_batch", refused("lance error: Invalid user input: a value the table refuses"))
    for p in notes.iterdir():
        p.write_text(p.read_text() + "\n\nA second paragraph, so that every note changed since the last run.")
    code = main(["index", str(notes), "--collection", "test", "--db", db_uri, "--batch-articles", "2"])
    assert code == 3  # the batches the table refused are their articles' failures; the first batch was written
    monkeypatch.undo()
    assert main(["index", str(notes), "--collection", "test", "--db", db_uri]) == 0


def test_a_worker_that_cannot_load_the_model_stops_the_run_with_the_fix_not_one_batch_after_another(
        prefect_harness, db_uri, tmp_path, monkeypatch, capsys):
    """A Dask worker without the model failed its share of the batches, every run, each as its articles'
    failures (exit 3 each night)."""
    from corpus_search.cli import main
    from query.errors import ModelUnavailableError
    from tasks import stages

    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(4):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\nThe violin number {i} has four strings tuned in perfect fifths.")

    def no_model(settings):
        raise ModelUnavailableError("bi-encoder 'x' is unavailable: no such local directory on this worker")

    monkeypatch.setattr(stages, "bi_encoder_from_settings", no_model)  # what an encode shard loads
    code = main(["index", str(notes), "--collection", "test", "--db", db_uri, "--batch-articles", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.rstrip().endswith("no such local directory on this worker"), err[-2000:]
    assert "failed: n" not in err  # no article was failed for it


def test_storage_errors_are_told_from_an_articles_own_as_lance_and_the_os_word_them():
    import errno

    from tasks.store import storage_exhausted

    assert storage_exhausted(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_exhausted(RuntimeError("lance error: LanceError(IO): File too large (os error 27), rust/lance/..."))
    assert storage_exhausted(ValueError("wrapped").with_traceback(None)) is False
    wrapped = ValueError("while writing")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert storage_exhausted(wrapped)
    assert not storage_exhausted(RuntimeError("lance error: Invalid user input: a bad value"))
    assert not storage_exhausted(OSError(errno.ENOENT, "No such file or directory"))
    assert not storage_exhausted(FileNotFoundError(errno.ENOENT, "No such file", "/notes/Read-only file system.md"))


def test_a_run_stopped_by_its_store_exits_5_with_one_line_and_the_next_run_resumes(prefect_harness, db_uri, tmp_path,
                                                                                   monkeypatch, capsys):
    """An object store that went away mid-run ended in a page of traceback and exit 1, outside the exit codes
    that cron jobs read."""
    from corpus_search.cli import main
    from tasks import stages

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# A\n\nThe violin has four strings tuned in perfect fifths, G D A E.")

    def store_gone(settings):
        raise RuntimeError("lance error: LanceError(IO): Generic S3 error: error sending request, after 3 retries")

    monkeypatch.setattr(stages, "refresh_indexes", store_gone)
    code = main(["index", str(notes), "--collection", "test", "--db", db_uri])
    err = capsys.readouterr().err
    assert code == 5, err
    last = err.strip().splitlines()[-2:]  # the last word is ours: what stopped it, and what to do
    assert last[0].startswith("corpus-search: error: the run stopped part-way: RuntimeError: lance error")
    assert "the next run resumes" in last[1]
    # A script that parses --json gets one object, not an empty stdout (it got nothing before).
    assert main(["index", str(notes), "--collection", "test", "--db", db_uri, "--json"]) == 5
    stopped = json.loads(capsys.readouterr().out)
    assert stopped["outcome"] == "stopped" and stopped["error"].startswith("RuntimeError: lance error")
    # What it did before it stopped: the rows there are, and the stop itself as the run's failure.
    assert stopped["collection"] == "test" and stopped["rows"] == 1
    assert [f["error"][:30] for f in stopped["failures"]] == ["the run stopped early (Runtime"]

    def bug(settings):
        raise TypeError("a bug of ours")

    monkeypatch.setattr(stages, "refresh_indexes", bug)
    with pytest.raises(TypeError):  # a bug keeps its traceback (exit 1), never "rerun"
        main(["index", str(notes), "--collection", "test", "--db", db_uri])
    monkeypatch.undo()
    assert main(["index", str(notes), "--collection", "test", "--db", db_uri]) == 0
    assert [r["doc_id"] for r in table_rows(db_uri)] == ["a.md"]
