"""Every command-line option says what it does and what its default really is (issue 12 item 9)."""

from __future__ import annotations

import argparse

import pytest

from corpus_search.cli import build_parser


def _actions(parser: argparse.ArgumentParser, path: str = "corpus-search"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_and_argument_has_help_text():
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _actions(build_parser())
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert not missing, "options without help: " + ", ".join(missing)


def test_help_names_real_defaults_not_settings():
    vague = [f"{path} {a.option_strings or a.dest}: {a.help}" for path, a in _actions(build_parser())
             if "default: settings" in (a.help or "")]
    assert not vague, vague


def test_database_and_collection_help_show_the_values_in_effect(monkeypatch):
    from query.settings import get_settings

    monkeypatch.setenv("CORPUS_SEARCH_DB_URI", "/srv/search/db")
    get_settings.cache_clear()
    try:
        helps = {(path, tuple(a.option_strings)): a.help for path, a in _actions(build_parser())}
    finally:
        get_settings.cache_clear()
    assert "/srv/search/db" in helps[("corpus-search search", ("--db",))]
    assert "'default'" in helps[("corpus-search search", ("--collection", "-c"))]


ONE_COLLECTION = [("versions",), ("rollback", "--to", "1"), ("tag", "prod"), ("migrate",), ("drop", "--yes"),
                  ("delete", "--doc-id", "a.md")]


@pytest.mark.parametrize("command", ONE_COLLECTION, ids=lambda c: c[0])
def test_commands_on_one_collection_take_it_as_operand_or_as_dash_c(command, tmp_path, capsys):
    """`versions NAME` (the contract) and `versions -c NAME` (as search spells it) name the same collection."""
    from corpus_search.cli import main

    name, *rest = command
    (tmp_path / "db").mkdir()  # an empty database: every command gets as far as looking the collection up
    db = ["--db", str(tmp_path / "db")]
    for form in ([name, "nope", *rest], [name, "-c", "nope", *rest], [name, *rest, "--collection", "nope"]):
        assert main([*form, *db]) == 2
        assert "collection 'nope' does not exist" in capsys.readouterr().err, form
    for form, says in (([name, *rest], "the collection is required"),
                       ([name, "one", *rest, "-c", "two"], "two collections given")):
        with pytest.raises(SystemExit) as exc:
            main([*form, *db])
        assert exc.value.code == 2 and says in capsys.readouterr().err
