"""User errors print ``corpus-search: error: ...`` and exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from corpus_search import cli
from tests.conftest import REPO


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_an_internal_value_error_is_not_reported_as_a_user_error(monkeypatch, capsys):
    def broken(args):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr(cli, "cmd_search", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["search", "anything"])
    assert "corpus-search: error" not in capsys.readouterr().err


def test_an_internal_error_shows_its_traceback_from_the_command_line():
    code = ("import corpus_search.cli as c\n"
            "c.cmd_search = lambda args: int('not a number')\n"
            "raise SystemExit(c.main(['search', 'q']))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: invalid literal" in proc.stderr
    assert "corpus-search: error" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "ds", "--set", "min_paragraph_chars"], "--set 'min_paragraph_chars': use NAME=VALUE"),
        (["eval", "ds", "--modes", "dense,fuzzy"], "--modes 'dense,fuzzy': choose from"),
        (["search-document", "ftp://example.org/a.html", "q"], "only http:// and https:// URLs are fetched"),
        (["search-document", "/no/such/file.html", "q"], "does not exist"),
        (["index", "ftp://example.org/a.html", "https://example.org:99999/b"], "only http:// and https:// URLs"),
        (["index", "https://ann:secret@example.org/a", "/tmp"], "a user name or password in a URL is not sent"),
        (["search", "q", "--where", "=x"], "--where '=x': use KEY<op>VALUE"),
        # What `--where published>=2024-01-01` leaves once the shell took ">=2024-01-01" as a redirection.
        (["search", "q", "--where", "published"], "an unquoted < or > is a shell redirection: quote the whole filter"),
        (["deploy", "--config", "/no/such/collections.toml"], "cannot read the collections config"),
    ],
    ids=["eval-set-without-value", "eval-unknown-mode", "unsupported-scheme", "missing-file", "index-every-url-bad", "index-url-with-password", "bad-where",
         "where-eaten-by-the-shell", "missing-config"],
)
def test_each_user_error_prints_the_prefix_and_exits_2(argv, message, capsys):
    code, err = _run_main(argv, capsys)
    assert code == 2
    assert err.startswith("corpus-search: error: ") and message in err
    assert "Traceback" not in err


def test_an_invalid_setting_from_the_environment_is_a_user_error(monkeypatch, capsys):
    from query.settings import get_settings

    monkeypatch.setenv("CORPUS_SEARCH_CANDIDATES", "many")
    get_settings.cache_clear()
    try:
        code, err = _run_main(["search", "q"], capsys)
    finally:
        monkeypatch.delenv("CORPUS_SEARCH_CANDIDATES")
        get_settings.cache_clear()
    assert code == 2
    assert err.startswith("corpus-search: error: setting candidates (the CORPUS_SEARCH_CANDIDATES setting):")


@pytest.mark.parametrize("command", [["search", "q"], ["index", "notes"], ["collections"]])
def test_a_setting_the_environment_cannot_parse_as_json_is_a_user_error(monkeypatch, capsys, command):
    from query.settings import get_settings

    monkeypatch.setenv("CORPUS_SEARCH_STORAGE_OPTIONS", '{"allow_http": true')  # the closing brace lost
    get_settings.cache_clear()
    try:
        code, err = _run_main(command, capsys)
    finally:
        monkeypatch.delenv("CORPUS_SEARCH_STORAGE_OPTIONS")
        get_settings.cache_clear()
    assert code == 2 and "Traceback" not in err
    assert err.startswith("corpus-search: error: setting storage_options (the CORPUS_SEARCH_STORAGE_OPTIONS setting) cannot be "
                          "parsed: Expecting ',' delimiter"), err



def test_a_dotenv_file_in_the_working_directory_sets_settings_and_ignores_other_programs_keys(monkeypatch, tmp_path):
    from query.settings import Settings

    (tmp_path / ".env").write_text("OTHER_APP_TOKEN=abc\nCORPUS_SEARCH_CANDIDATES=42\nCORPUS_SEARCH_RRF_K=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORPUS_SEARCH_RRF_K", "9")  # the environment wins over .env
    settings = Settings()
    assert (settings.candidates, settings.rrf_k) == (42, 9)


def test_a_bad_dotenv_value_read_from_python_is_the_user_error_class_naming_its_variable(monkeypatch, tmp_path):
    """A program gets a CorpusSearchError it can catch with all others, not pydantic's ValidationError."""
    from query import Searcher
    from query.errors import CorpusSearchError, InvalidSettingError
    from query.settings import get_settings

    (tmp_path / ".env").write_text("CORPUS_SEARCH_CANDIDATES=many\n")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidSettingError, match=r"^setting candidates \(the CORPUS_SEARCH_CANDIDATES setting\): "):
            get_settings()
        with pytest.raises(CorpusSearchError, match="CORPUS_SEARCH_CANDIDATES"):
            Searcher(db_uri=str(tmp_path), collection="notes")
    finally:
        get_settings.cache_clear()


def test_an_empty_variable_still_overrides_dotenv_and_an_empty_model_name_from_python_is_refused(monkeypatch, tmp_path):
    from query import Searcher
    from query.errors import InvalidQueryError
    from query.settings import Settings

    (tmp_path / ".env").write_text("CORPUS_SEARCH_API_URL=http://127.0.0.1:9/\nCORPUS_SEARCH_FETCH_ALLOWED_HOSTS=a.example\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORPUS_SEARCH_API_URL", "")  # search locally for once, whatever .env says
    monkeypatch.setenv("CORPUS_SEARCH_FETCH_ALLOWED_HOSTS", "")  # lift .env's allow-list for one command
    settings = Settings()
    assert not settings.api_url and settings.fetch_allowed_hosts == []
    for blank in ("", "  "):
        with pytest.raises(InvalidQueryError, match="setting cross_encoder: names no model.*rerank=False"):
            Searcher(db_uri=str(tmp_path), collection="notes", cross_encoder=blank)


def test_a_misspelt_setting_in_dotenv_or_the_environment_is_named_in_one_warning(monkeypatch, capsys, tmp_path):
    from query.settings import UnknownSettingWarning, get_settings

    (tmp_path / ".env").write_text("CORPUS_SEARCH_CANDIDATE=42\nCORPUS_SEARCH_NOTIFY_BLOCK=slack\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORPUS_SEARCH_RRFK", "9")
    get_settings.cache_clear()
    try:
        with pytest.warns(UnknownSettingWarning) as caught:
            settings = get_settings()
        code, _ = _run_main(["collections", "--db", str(tmp_path)], capsys)
    finally:
        get_settings.cache_clear()
    named = sorted(str(w.message).split()[0] for w in caught if w.category is UnknownSettingWarning)
    assert named == ["CORPUS_SEARCH_CANDIDATE", "CORPUS_SEARCH_RRFK"]  # NOTIFY_BLOCK is a variable of its own
    assert settings.candidates == 100 and code == 0


def test_output_into_a_closed_pipe_ends_quietly_with_sigpipes_status(tmp_path):
    """`corpus-search collections | head -1`: the reader went away; no traceback, status 141 as the shell's tools."""
    db = tmp_path / "db"
    db.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "corpus_search.cli", "collections", "--db", str(db), "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_searcher_settings_from_python_are_checked_like_the_environments(tmp_path):
    from query.errors import InvalidQueryError
    from query.searcher import Searcher

    db = tmp_path / "db"
    db.mkdir()
    with pytest.raises(InvalidQueryError, match="no such setting: 'candidate'"):
        Searcher.from_settings(collection="c", db_uri=str(db), candidate=3)
    with pytest.raises(InvalidQueryError, match="setting candidates: Input should be a valid integer"):
        Searcher.from_settings(collection="c", db_uri=str(db), candidates="many")
    with pytest.raises(InvalidQueryError, match="setting rrf_k: Input should be greater than or equal to 1"):
        Searcher.from_settings(collection="c", db_uri=str(db), rrf_k=0)


def test_checked_settings_still_know_which_were_given():
    from query.settings import Settings, settings_with

    s = settings_with({"db_uri": "/tmp/x"}, Settings())
    assert "cross_encoder" not in s.model_fields_set and "db_uri" in s.model_fields_set


@pytest.mark.parametrize(("argv", "fragment"), [
    (["eval", "examples/beir-sample", "--split", "train"], "no qrels for split 'train'"),
    (["eval", "examples/beir-sample", "--depth", "0"], "--depth must be >= 1"),
    (["eval", "examples/beir-sample", "--tag", "12"], "tag '12' is not a valid tag name"),
    (["eval", "examples/no-such-dataset"], "not a directory"),
    (["eval", "examples/beir-sample", "--set", "STORAGE_OPTIONS=x"], "credentials cannot be a flow parameter"),
    (["eval", "examples/beir-sample", "--set", "candidatez=3"], "--set candidatez: no such setting"),
    (["eval", "examples/beir-sample", "--set", "candidates=abc"], "setting candidates"),
    (["eval", "examples/beir-sample", "--corpus-html", "no-such.tar.gz"], "no such archive or directory"),
    (["eval", "examples/beir-sample", "--out", "examples"], "--out examples is a directory: give the file to write"),
    (["eval", "examples/beir-sample", "--run-dir", "README.md"], "--run-dir README.md is a file: give a directory"),
    (["eval", "examples/beir-sample", "--qrels", "no-such.tsv"], "no-such.tsv: no such file (given as the qrels)"),
])
def test_eval_usage_errors_are_one_line_before_any_flow_starts(argv, fragment, tmp_path):
    """Inside the flow each printed a Prefect traceback and a report saying that indexed rows stay."""
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "corpus_search.cli", *argv, "--db", str(tmp_path / "db")], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr and "Rows its index step" not in proc.stderr


def test_credentials_never_become_a_flow_parameter_from_python_or_eval_set(tmp_path, capsys):
    """corpus_search.index() passed a password URL on to the flow (stored in its parameters, logged by the failure
    hook), and eval --set storage_options stored the secret in the evaluate run's parameters."""
    import corpus_search
    from corpus_search.cli import main
    from query.errors import CorpusSearchError

    with pytest.raises(CorpusSearchError, match="a user name or password in a URL is not sent") as err:
        corpus_search.index(["https://ann:hunter2@example.com/page"], collection="c", db_uri=str(tmp_path / "db"))
    assert "hunter2" not in str(err.value)
    assert main(["eval", "examples/beir-sample", "--db", str(tmp_path / "db"),
                 "--set", 'storage_options={"aws_secret_access_key": "S3CRET"}']) == 2
    assert "credentials cannot be a flow parameter" in capsys.readouterr().err
