"""Collections you can manage: ``collections``, ``drop``, ``delete`` from the CLI (subprocess) and from Python.

One module-scoped database is indexed with the real flow and MiniLM (collection ``alpha`` from two
folders, ``beta`` from one), with a real tiny cross-encoder registered and promoted for ``alpha``;
each test works on its own copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, table_rows

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

NOTES = {
    "plain": {
        "bees.md": ("Honeybees", "Honeybees collect nectar from flowers and turn it into honey inside the hive."),
        "volcano.md": ("Volcanoes", "A volcano erupts when molten rock called magma rises through the crust."),
        "chess.md": ("Chess openings", "The Sicilian Defence is a chess opening that answers e4 with c5."),
    },
    # A quote in the folder name: the source prefix must be bound as a literal, never pasted into SQL.
    "o'brien notes": {
        "tides.md": ("Ocean tides", "Tides are caused by the gravitational pull of the Moon on the oceans."),
        "coffee.md": ("Coffee", "Espresso is brewed by forcing hot water through finely ground coffee beans."),
    },
    "beta": {
        "violin.md": ("Violins", "Stradivari built violins in Cremona that are still prized by soloists."),
    },
}


def write(root: Path, folder: str) -> Path:
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    for name, (title, text) in NOTES[folder].items():
        (d / name).write_text(f"# {title}\n\n{text}\n")
    return d


@pytest.fixture(scope="module")
def built(prefect_harness, tmp_path_factory):
    """(db, folders): alpha = plain + o'brien notes, beta = beta; a promoted re-ranker for alpha."""
    from flows.index_corpus import index_corpus
    from query.registry import RerankerEntry
    from tasks.rerank_registry import default_out_dir, new_model_id, record, stored_path
    from tests._models import build_cross_encoder

    root = tmp_path_factory.mktemp("collections")
    db = str(root / "db")
    folders = {f: write(root / "src", f) for f in NOTES}
    index_corpus([str(folders["plain"]), str(folders["o'brien notes"])], collection="alpha", db_uri=db)
    index_corpus([str(folders["beta"])], collection="beta", db_uri=db)
    model_id = new_model_id("judgments")
    out = default_out_dir(db, "alpha", model_id)
    build_cross_encoder(out, body="tiny-bert")
    record(db, "alpha", RerankerEntry(id=model_id, path=stored_path(db, out), created="2026-11-28T00:00:00Z",
                                      base="tiny-bert", signal="judgments", fingerprint="0", alpha=1.0), promote=True)
    return db, folders, model_id


@pytest.fixture
def db(built, tmp_path) -> str:
    """A private copy of the built database."""
    copy = tmp_path / "db"
    shutil.copytree(built[0], copy)
    return str(copy)


def cli(*argv: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corpus_search.cli", *argv], cwd=REPO, env=ENV, stdin=stdin,
                          capture_output=True, text=True, timeout=120)


def main_(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (cheaper than a subprocess): exit code, stdout, stderr."""
    from corpus_search.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_names(db: str) -> set[str]:
    import lancedb

    return set(lancedb.connect(db).list_tables(limit=1000).tables)


def search_doc_ids(db: str, collection: str, query: str) -> set[str]:
    """doc ids every retrieval mode returns for ``query`` (no re-ranking), from a fresh reader."""
    from query.searcher import Searcher

    searcher = Searcher(db_uri=db, collection=collection)
    return {h.doc_id for mode in ("dense", "lexical", "hybrid")
            for h in searcher.search(query, k=10, mode=mode, rerank=False)}


def test_collections_lists_rows_documents_encoder_last_run_size_version_and_reranker(built, db, capsys):
    from corpus_search import list_collections

    model_id = built[2]
    proc = cli("collections", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    assert [c["name"] for c in items] == ["alpha", "beta"]  # internal tables (alpha__articles...) are not listed
    alpha, beta = items
    assert {"name", "rows", "documents", "encoder", "last_indexed", "size_bytes", "version", "reranker"} <= set(alpha)
    assert alpha["rows"] == len(table_rows(db, "alpha")) > 0 and beta["rows"] == len(table_rows(db, "beta")) > 0
    assert (alpha["documents"], beta["documents"]) == (5, 1)
    assert "MiniLM" in alpha["encoder"] and alpha["dim"] == 384
    assert alpha["last_indexed"]["outcome"] == "ok" and alpha["last_indexed"]["at"].startswith("20")
    assert alpha["size_bytes"] > beta["size_bytes"] > 0
    assert isinstance(alpha["version"], int) and alpha["version"] > 1
    assert (alpha["reranker"], beta["reranker"]) == (model_id, None)
    assert list_collections(db_uri=db) == items  # the same from Python
    from query.searcher import Searcher

    assert Searcher(db_uri=db, collection="alpha").documents() == 5  # a reader counts them the same way

    code, out, _ = main_(capsys, "collections", "--db", db)
    assert code == 0
    header, first, second = out.splitlines()
    assert header.split()[:4] == ["name", "rows", "documents", "size"]
    assert first.startswith("alpha ") and second.startswith("beta ") and model_id in first
    assert "KiB" in first or "MiB" in first
    assert header.index("rows") + 4 == first.index(str(alpha["rows"])) + len(str(alpha["rows"]))  # right-aligned


def test_collections_of_an_empty_or_missing_database_and_search_of_a_missing_one(tmp_path, capsys):
    from corpus_search import list_collections

    empty = tmp_path / "empty"
    empty.mkdir()
    assert list_collections(str(empty)) == []
    assert json.loads(main_(capsys, "collections", "--db", str(empty), "--json")[1]) == []
    code, out, _ = main_(capsys, "collections", "--db", str(empty))
    assert code == 0 and "no collections" in out
    code, _, err = main_(capsys, "collections", "--db", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "nope").exists()
    # A reader with a mistyped --db says so, the same way, and leaves no empty database behind.
    code, _, err = main_(capsys, "search", "q", "-c", "notes", "--db", str(tmp_path / "nope" / "deeper"), "--no-rerank")
    assert code == 2 and f"the database {str(tmp_path / 'nope' / 'deeper')!r} does not exist: check --db" in err
    assert not (tmp_path / "nope").exists()


def test_drop_refuses_without_a_terminal_then_removes_tables_and_rerankers_and_open_searchers_say_so(built, db, capsys):
    from corpus_search import drop_collection, list_collections
    from query.errors import CollectionNotFoundError

    rerankers = Path(db) / "_rerankers" / "alpha"
    assert (rerankers / built[2]).is_dir()
    refused = cli("drop", "alpha", "--db", db)  # stdin is /dev/null: nobody can answer
    assert refused.returncode == 2 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
    assert "alpha" in table_names(db)

    code, _, err = main_(capsys, "drop", "gamma", "--db", db, "--yes")
    assert code == 2 and "collection 'gamma' does not exist" in err

    from query.searcher import Searcher

    open_before = Searcher(db_uri=db, collection="alpha")  # e.g. the query service's, open across the drop
    assert open_before.search("violin", rerank=False)
    from tasks.versions import tag_version

    tag_version(db, "alpha", "prod")  # a saved point goes with the tables: the answer says so
    dropped = cli("drop", "alpha", "--db", db, "--yes", "--json")
    assert dropped.returncode == 0, dropped.stderr
    for mode in ("hybrid", "dense", "lexical"):  # a user error (404 from the service), not a lance traceback
        for rerank in (False, True, "require"):  # the re-ranker's registry was read first: a 500 (lance error)
            with pytest.raises(CollectionNotFoundError, match="collection 'alpha' no longer exists"):
                open_before.search("violin", mode=mode, rerank=rerank)
    result = json.loads(dropped.stdout)
    assert sorted(result["tables_dropped"]) == ["alpha", "alpha__articles", "alpha__runs"]
    assert result["tags_dropped"] == ["prod"]
    assert not rerankers.exists()
    assert not any(n.startswith("alpha") for n in table_names(db))
    assert [c["name"] for c in list_collections(db)] == ["beta"]  # the other collection is untouched
    assert search_doc_ids(db, "beta", "violin makers of Cremona")

    drop_collection("beta", db_uri=db)  # the same from Python
    assert table_names(db) == set() and list_collections(db) == []
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        drop_collection("beta", db_uri=db)


def test_searchers_open_across_a_drop_and_a_new_collection_of_that_name_follow_it_or_say_so(built, db, run_index):
    from corpus_search import drop_collection
    from query.errors import CollectionNotFoundError
    from query.searcher import Searcher

    version = Searcher(db_uri=db, collection="beta").table.version
    pinned, unpinned = Searcher(db_uri=db, collection="beta", version=version), Searcher(db_uri=db, collection="beta")
    assert unpinned.meta.encode_title
    drop_collection("beta", db_uri=db)
    run_index([built[1]["plain"]], collection="beta", db=db, settings_overrides={"encode_title": False})
    hits = unpinned.search("honey from the hive", k=3, rerank=False)  # the new table, read by its own contract
    assert hits[0].doc_id == "bees.md" and unpinned.meta.encode_title is False
    with pytest.raises(CollectionNotFoundError, match="or the collection was dropped and made again, after this search"):
        pinned.search("honey from the hive", k=3, rerank=False)


def test_a_search_while_a_tables_files_are_half_gone_is_collection_not_found_not_a_lance_error(built, db, run_index):
    """A drop in progress: the table is still listed, its version files already gone (seen under concurrent
    searches and drops as a raw "lance error: Not found")."""
    import shutil

    from query.errors import CollectionNotFoundError
    from query.searcher import Searcher

    run_index([built[1]["plain"]], collection="half", db=db)
    pinned = Searcher(db_uri=db, collection="half", version=Searcher(db_uri=db, collection="half").table.version)
    unpinned = Searcher(db_uri=db, collection="half")
    for part in (Path(db) / "half.lance").iterdir():  # the directory stays: the table is still listed
        shutil.rmtree(part)
    for mode in ("hybrid", "dense", "lexical"):
        with pytest.raises(CollectionNotFoundError, match="'half' is being dropped or made again .* search again"):
            unpinned.search("honey from the hive", k=3, rerank=False, mode=mode)
        with pytest.raises(CollectionNotFoundError, match="retention cleanup removed it"):
            pinned.search("honey from the hive", k=3, rerank=False, mode=mode)


def test_removing_models_deletes_only_directories_under_the_databases_rerankers_directory(tmp_path):
    from query.registry import remove_models

    db, outside = tmp_path / "db", tmp_path / "user-model"
    for d in (db / "_rerankers" / "c" / "a", db / "_rerankers" / "c" / "b", db / "mine" / "m", db / "c.lance",
              outside):
        d.mkdir(parents=True)
    (db / "_rerankers" / "link").symlink_to(outside, target_is_directory=True)
    removed = remove_models(str(db), ["_rerankers/c/a", "_rerankers/c", "mine/m/", "c.lance", str(outside),
                                      "../user-model", "_rerankers/../c.lance", ".", "", "_rerankers",
                                      "_rerankers/link", "_rerankers/gone"])
    # The collection's directory once (its models went with it); never a directory this project did not
    # write (a model saved with --out, a table), an absolute path, a way out through ".." or a symlink,
    # the models root itself, nor what is not there.
    assert removed == [str((db / "_rerankers" / "c").resolve())]
    assert not (db / "_rerankers" / "c").exists()
    assert (db / "mine" / "m").is_dir() and (db / "c.lance").is_dir() and outside.is_dir()
    assert (db / "_rerankers" / "link").is_symlink() and (db / "_rerankers").is_dir()
    # A database whose models directory is a link to another disk: its models are still the project's.
    other, linked = tmp_path / "big-disk", tmp_path / "db2"
    (other / "c" / "a").mkdir(parents=True)
    linked.mkdir()
    (linked / "_rerankers").symlink_to(other, target_is_directory=True)
    assert remove_models(str(linked), ["_rerankers/c/a"]) == [str((other / "c" / "a").resolve())]
    assert not (other / "c" / "a").exists() and (other / "c").is_dir()


def test_drop_asks_on_a_terminal_and_only_the_name_or_yes_confirms(built, db):
    """A real pseudo-terminal as stdin: 'n' keeps the collection, its name drops it; the question names its tags."""
    import pty

    from tasks.versions import tag_version

    tag_version(db, "beta", "before-upgrade")

    for answer, code, kept in (("n", 1, True), ("beta", 0, False)):
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", "drop", "beta", "--db", db],
                                    cwd=REPO, env=ENV, stdin=follower, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            os.write(leader, f"{answer}\n".encode())
            out, err = proc.communicate(timeout=120)
        finally:
            os.close(leader)
            os.close(follower)
        assert proc.returncode == code, err
        assert "Type the collection name" in err and "1 documents" in err
        assert "its 1 tagged version(s) (before-upgrade)" in err
        if not kept:
            assert "tags before-upgrade went with them" in out
        assert ("beta" in table_names(db)) is kept


def test_delete_by_doc_id_removes_rows_and_state_search_never_returns_them_and_reindex_restores(
        built, db, run_index, capsys):
    from corpus_search import delete_documents

    folders = built[1]
    before = table_rows(db, "alpha")
    bees = [r for r in before if r["doc_id"] == "bees.md"]
    assert bees and "bees.md" in search_doc_ids(db, "alpha", "honey from nectar in the hive")

    proc = cli("delete", "alpha", "--doc-id", "bees.md", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"collection": "alpha", "rows_deleted": len(bees), "articles_deleted": 1}
    assert len(table_rows(db, "alpha")) == len(before) - len(bees)
    assert "bees.md" not in search_doc_ids(db, "alpha", "honey from nectar in the hive")

    from tasks.collections import NothingDeletedWarning

    with pytest.warns(NothingDeletedWarning, match="no document with those ids"):  # deleted already: 0, and said
        again = main_(capsys, "delete", "alpha", "--doc-id", "bees.md", "--doc-id", "no-such-doc", "--db", db, "--json")
    assert again[0] == 0 and json.loads(again[1]) == {"collection": "alpha", "rows_deleted": 0, "articles_deleted": 0}
    with pytest.warns(NothingDeletedWarning):
        assert delete_documents("alpha", doc_ids=["nothing"], db_uri=db)["rows_deleted"] == 0

    # The article state went too, so the next index run of the same folders brings exactly that document back.
    result = run_index([folders["plain"], folders["o'brien notes"]], collection="alpha", db=db)
    assert (result["articles_fetched"], result["paragraphs_encoded"]) == (1, len(bees))
    assert sorted(r["id"] for r in table_rows(db, "alpha")) == sorted(r["id"] for r in before)
    assert "bees.md" in search_doc_ids(db, "alpha", "honey from nectar in the hive")


def test_a_doc_id_under_two_roots_deletes_nothing_until_origin_says_which(db, run_index, tmp_path, capsys):
    roots = []
    for name, text in (("work", "The quarterly report is due on Friday for the finance team."),
                       ("home", "The garden needs watering twice a week in the summer heat.")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.md").write_text(f"# {name}\n\n{text}\n")
        roots.append(tmp_path / name)
    run_index(roots, collection="gamma", db=db)
    before = table_rows(db, "gamma")

    code, _, err = main_(capsys, "delete", "gamma", "--doc-id", "index.md", "--db", db)
    assert code == 2 and "under more than one root" in err and "nothing was deleted" in err and "--origin" in err
    assert str(roots[0]) in err and str(roots[1]) in err
    assert len(table_rows(db, "gamma")) == len(before)

    code, out, _ = main_(capsys, "delete", "gamma", "--doc-id", "index.md", "--origin", str(roots[0]) + "/",
                         "--db", db, "--json")
    assert code == 0 and json.loads(out)["articles_deleted"] == 1
    assert {r["source"] for r in table_rows(db, "gamma")} == {str(roots[1] / "index.md")}
    # Deleting 0 rows says why: the id is under another root, or a full path is not a doc id.
    from tasks.collections import NothingDeletedWarning

    with pytest.warns(NothingDeletedWarning, match=f"under --origin .* there is none of them, but 1 of them are "
                      f"under '{roots[1]}': give one of those as --origin"):
        code, out, _ = main_(capsys, "delete", "gamma", "--doc-id", "index.md", "--origin", str(roots[0]), "--db", db)
    assert code == 0 and "deleted 0 rows" in out
    with pytest.warns(NothingDeletedWarning, match="holds no document with that id .*a doc id is a path under the root "
                      "it was indexed through, e.g. 'index.md'"):
        main_(capsys, "delete", "gamma", "--doc-id", str(roots[1] / "nope.md"), "--db", db)
    with pytest.warns(NothingDeletedWarning, match=f"'{roots[1] / 'index.md'}' is a document's source .*: delete it "
                      f"with --source {roots[1] / 'index.md'}"):  # a full path given as a doc id
        main_(capsys, "delete", "gamma", "--doc-id", str(roots[1] / "index.md"), "--db", db)
    with pytest.warns(NothingDeletedWarning) as said:  # a folder is no document's source: no --source hint for it
        main_(capsys, "delete", "gamma", "--doc-id", str(roots[1]), "--db", db)
    assert "is a document's source" not in str(said[0].message) and "a doc id is a path" in str(said[0].message)
    assert len(table_rows(db, "gamma")) == len(before) - 1
    # Only the work root's article state went: reindexing both brings back that one document alone.
    assert run_index(roots, collection="gamma", db=db)["articles_fetched"] == 1

    code, _, err = main_(capsys, "delete", "gamma", "--source", str(roots[0]), "--origin", str(roots[0]), "--db", db)
    assert code == 2 and "--origin says which root a --doc-id is under" in err


def test_a_doc_id_whose_other_root_holds_only_an_article_state_is_ambiguous_too(db, run_index, tmp_path, capsys):
    """The check read the paragraph rows only: another root's empty index.md (a state, no rows) lost its state."""
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    (tmp_path / "e1" / "index.md").write_text("# E\n\nSome text about badgers and the setts they dig in woods.\n")
    (tmp_path / "e2" / "index.md").write_text("")
    (tmp_path / "e2" / "other.md").write_text("# F\n\nOther text about moles and the hills they leave in lawns.\n")
    run_index([tmp_path / "e1", tmp_path / "e2"], collection="delta", db=db)
    code, _, err = main_(capsys, "delete", "delta", "--doc-id", "index.md", "--db", db)
    assert code == 2 and "under more than one root" in err and str(tmp_path / "e2") in err
    code, out, _ = main_(capsys, "delete", "delta", "--doc-id", "index.md", "--origin", str(tmp_path / "e1"),
                         "--db", db, "--json")
    assert code == 0 and json.loads(out) == {"collection": "delta", "rows_deleted": 1, "articles_deleted": 1}


def test_a_file_name_that_is_not_utf8_is_deleted_by_the_name_the_shell_gives(db, run_index, tmp_path, capsys):
    import os

    notes = tmp_path / "notes"
    notes.mkdir()
    with open(os.fsencode(notes) + b"/bad\xff.md", "wb") as fh:
        fh.write(b"# W\n\nOwls hunt at night over the fields and hedges of the valley.\n")
    (notes / "good.md").write_text("# G\n\nGeese fly south in long skeins every autumn over the marsh.\n")
    run_index([notes], collection="eps", db=db)
    shell = os.fsdecode(b"bad\xff.md")  # what a shell (tab completion) hands over: a surrogate escape
    code, out, _ = main_(capsys, "delete", "eps", "--doc-id", shell, "--db", db, "--json")
    assert code == 0 and json.loads(out)["rows_deleted"] == 1
    run_index([notes], collection="eps", db=db)
    code, out, _ = main_(capsys, "delete", "eps", "--source", os.fsdecode(os.fsencode(notes) + b"/bad\xff.md"),
                         "--db", db, "--json")
    assert code == 0 and json.loads(out)["rows_deleted"] == 1
    assert {r["doc_id"] for r in table_rows(db, "eps")} == {"good.md"}


@pytest.mark.parametrize("slash", ["/", ""])
def test_delete_by_source_directory_deletes_every_document_under_it(built, db, run_index, slash):
    from corpus_search import delete_documents, list_collections

    folders = built[1]
    quoted = folders["o'brien notes"]
    before = table_rows(db, "alpha")
    under = [r for r in before if r["doc_id"] in NOTES["o'brien notes"]]
    assert len(under) >= 2

    result = delete_documents("alpha", sources=[str(quoted) + slash], db_uri=db)
    assert result == {"collection": "alpha", "rows_deleted": len(under), "articles_deleted": 2}
    left = table_rows(db, "alpha")
    assert {r["doc_id"] for r in left} == set(NOTES["plain"])  # the sibling folder is untouched
    assert not {"tides.md", "coffee.md"} & search_doc_ids(db, "alpha", "the Moon pulls the oceans; espresso coffee")
    assert next(c for c in list_collections(db) if c["name"] == "alpha")["documents"] == 3

    back = run_index([folders["plain"], quoted], collection="alpha", db=db)
    assert back["articles_fetched"] == 2 and len(table_rows(db, "alpha")) == len(before)


def test_a_url_source_to_delete_also_matches_the_form_the_indexer_stored():
    from tasks.collections import source_predicate

    where = source_predicate("HTTPS://Example.org:443/a.html#intro")
    assert "source = 'https://example.org/a.html'" in where and "source = 'HTTPS://Example.org:443/a.html#intro'" in where
    assert "starts_with(source, 'https://example.org/docs/')" in source_predicate("https://Example.org/docs/")
    # A fragment is no directory: 'https://site/blog#/' is that page, never every URL that starts with it.
    for page in ("https://example.org/blog#/", "https://example.org/#/", "https://example.org/blog?x=/"):
        where = source_predicate(page)
        assert "starts_with(source, 'https://example.org/')" not in where, where
        assert "starts_with(source, 'https://example.org/blog')" not in where, where
    from tasks.collections import _predicates

    assert "'http://example.org/a'" in _predicates(["HTTP://Example.org/a#top"], [])[0]  # a doc id as given to index


def test_delete_by_exact_source_value_and_bad_requests(built, db, capsys):
    """``--source`` matches the ``source`` column exactly (a file path or URL once sources name documents)."""
    before = table_rows(db, "beta")
    value = before[0]["source"]
    code, out, _ = main_(capsys, "delete", "beta", "--source", value, "--db", db)
    assert code == 0
    assert f"deleted {len([r for r in before if r['source'] == value])} rows" in out
    assert all(r["source"] != value for r in table_rows(db, "beta"))

    with pytest.raises(SystemExit) as both:  # argparse: --doc-id and --source are one choice
        main_(capsys, "delete", "alpha", "--doc-id", "x", "--source", "y", "--db", db)
    assert both.value.code == 2 and "not allowed with" in capsys.readouterr().err
    code, _, err = main_(capsys, "delete", "gamma", "--doc-id", "x", "--db", db)
    assert code == 2 and "collection 'gamma' does not exist" in err

    from corpus_search import delete_documents
    from query.errors import InvalidQueryError

    with pytest.raises(InvalidQueryError, match="say which documents"):
        delete_documents("alpha", db_uri=db)
    with pytest.raises(InvalidQueryError, match="take lists"):
        delete_documents("alpha", doc_ids="bees.md", db_uri=db)
    import lancedb

    lancedb.connect(db).create_table("plain", data=[{"a": 1}])  # a table some other program wrote
    code, _, err = main_(capsys, "delete", "plain", "--doc-id", "x", "--db", db)
    assert code == 2 and "has no corpus-search metadata" in err


def test_delete_waits_for_the_writer_lock(built, db):
    from tasks.lock import writer_lock

    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with writer_lock(db, "alpha"):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", "delete", "alpha", "--doc-id",
                                 "chess.md", "--db", db, "--json"], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(4)  # long enough for the subprocess to start and reach the lock
        assert proc.poll() is None and any(r["doc_id"] == "chess.md" for r in table_rows(db, "alpha"))
    finally:
        release.set()
        holder.join(10)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["articles_deleted"] == 1


def test_dropping_a_collection_leaves_the_tables_of_one_whose_name_extends_it_with_an_underscore(run_index, db_uri,
                                                                                                   tmp_path):
    from corpus_search import drop_collection

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Violins\n\nA violin has four strings tuned in perfect fifths, G D A E.")
    run_index([notes], collection="a")
    run_index([notes], collection="a_")
    before = set(table_names(db_uri))
    assert {"a_", "a___articles", "a___runs"} <= before
    drop_collection("a", db_uri=db_uri)
    assert set(table_names(db_uri)) == before - {"a", "a__articles", "a__runs"}
    assert run_index([notes], collection="a_")["articles_unchanged"] == 1  # its article state is intact


def test_a_delete_cut_short_between_its_two_tables_is_healed_by_the_next_index_run(run_index, db_uri, tmp_path,
                                                                                    monkeypatch):
    """The rows went first: a crash before the article state went left documents the next run took for
    unchanged, never indexed again. The state goes first now: the next run reads them again."""
    import lancedb.table

    from corpus_search import delete_documents

    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("d1", "d2"):
        (notes / f"{name}.md").write_text(f"# {name}\n\nNote {name} is about violins, their strings and bows.")
    run_index([notes])
    real = lancedb.table.LanceTable.delete

    def crash_on_rows(self, where):  # the process dies after the first table's delete
        if self.name == "test":
            raise KeyboardInterrupt
        return real(self, where)

    monkeypatch.setattr(lancedb.table.LanceTable, "delete", crash_on_rows)
    with pytest.raises(KeyboardInterrupt):
        delete_documents("test", doc_ids=["d1.md"], db_uri=db_uri)
    monkeypatch.undo()
    summary = run_index([notes])
    assert summary["articles_fetched"] == 1 and summary["paragraphs_encoded"] == 0
    assert delete_documents("test", doc_ids=["d1.md"], db_uri=db_uri)["rows_deleted"] == 1
    assert run_index([notes])["articles_fetched"] == 1 and {r["doc_id"] for r in table_rows(db_uri)} == {"d1.md", "d2.md"}


def test_a_row_matched_by_two_delete_predicates_counts_once(run_index, db_uri, tmp_path):
    from corpus_search import delete_documents

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "d1.md").write_text("# d1\n\nNote d1 is about violins.\n\nIts second paragraph is about their bows.")
    run_index([notes])
    rows = len(table_rows(db_uri))
    result = delete_documents("test", doc_ids=["d1.md"], sources=[str(notes)], db_uri=db_uri)
    assert rows and result["rows_deleted"] == rows and not table_rows(db_uri)


def test_a_site_root_that_is_also_a_page_is_deleted_only_as_the_reading_the_user_names(run_index, db_uri, site,
                                                                                       capsys):
    from tests.conftest import html_page

    # The home page 'URL/' is a page and the root of the others: `--source URL/` deleted the whole site.
    home = site.page("/", html_page("Home", ["Welcome to the volcano society, where members meet every month."]))
    pages = [site.page(f"/p{i}", html_page(f"Page {i}", [f"Page {i} tells of eruption number {i} in some detail."]))
             for i in range(2)]
    run_index([home, *pages], collection="site", db=db_uri)
    before = table_rows(db_uri, "site")
    assert {r["source"] for r in before} == {home, *pages}

    code, _, err = main_(capsys, "delete", "site", "--source", home, "--db", db_uri)
    assert code == 2 and "is an indexed page and the root of other pages" in err
    assert f"--doc-id {home}" in err and f"--source '{home}*'" in err
    assert len(table_rows(db_uri, "site")) == len(before)  # nothing deleted

    code, _, _ = main_(capsys, "delete", "site", "--source", home + "*", "--db", db_uri)
    assert code == 0 and {r["source"] for r in table_rows(db_uri, "site")} == {home}  # the pages under it, not it
    code, _, _ = main_(capsys, "delete", "site", "--source", home, "--db", db_uri)
    assert code == 0 and table_rows(db_uri, "site") == []  # nothing under it now: the page alone, no refusal


def test_a_run_killed_between_deleting_a_vanished_files_rows_and_its_state_reads_it_again_when_it_returns(
        run_index, db_uri, tmp_path, monkeypatch):
    """The rows went, the state stayed and said "unchanged": a file restored with its old size and time
    (cp -p, rsync -a, a snapshot) was skipped unread by every later run, and lost to search for good."""
    import os

    import lancedb.table

    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("d1", "d2"):
        (notes / f"{name}.md").write_text(f"# {name}\n\nNote {name} is about violins, their strings and bows.")
    run_index([notes])
    kept = (notes / "d1.md").read_bytes(), os.stat(notes / "d1.md")
    (notes / "d1.md").unlink()
    real = lancedb.table.LanceTable.delete

    def killed_after_the_rows(self, where):
        if self.name == "test__articles" and "d1.md" in where:
            raise KeyboardInterrupt  # the process dies after the rows went, before the state
        return real(self, where)

    monkeypatch.setattr(lancedb.table.LanceTable, "delete", killed_after_the_rows)
    with pytest.raises(BaseException):  # noqa: B017 - the run dies here, however Prefect wraps it
        run_index([notes])
    monkeypatch.undo()
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"d2.md"}
    # The state left behind counts no paragraphs (a file back empty is not "held" with rows it has not).
    import lancedb

    states = lancedb.connect(db_uri).open_table("test__articles").to_lance().to_table().to_pylist()
    [state] = [r for r in states if r["doc_id"] == "d1.md"]
    assert state["paragraphs"] == 0 and state["body_hash"] == "deleting" and state["file_stamp"] is None
    (notes / "d1.md").write_bytes(kept[0])
    os.utime(notes / "d1.md", ns=(kept[1].st_atime_ns, kept[1].st_mtime_ns))  # restored as it was
    summary = run_index([notes])
    assert summary["articles_fetched"] == 1 and {r["doc_id"] for r in table_rows(db_uri)} == {"d1.md", "d2.md"}
    # Gone for good instead: the next run finishes the delete.
    (notes / "d1.md").unlink()
    run_index([notes])
    assert {r["doc_id"] for r in table_rows(db_uri)} == {"d2.md"}
    assert run_index([notes])["articles_deleted"] == 0


def test_a_source_that_matches_nothing_says_what_a_source_can_be(built, db, capsys):
    from tasks.collections import NothingDeletedWarning, delete_documents

    _, folders, _ = built
    with pytest.warns(NothingDeletedWarning, match=r"no document's source is .*\*\.md.*a shell pattern such as \*\.md"):
        result = delete_documents("alpha", sources=[str(folders["plain"]) + "/*.md"], db_uri=db)
    assert result["rows_deleted"] == 0
