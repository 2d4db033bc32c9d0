"""Every command-line option says what it does and what its default really is (issue 12 item 9)."""

from __future__ import annotations

import argparse

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
