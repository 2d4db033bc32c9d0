"""Subcommands backed by Prefect flows (eval, serve, deploy), each in its own module, imported lazily."""

from __future__ import annotations

import importlib


def register(sub, common) -> None:
    """Add the flow-backed subcommands to the ``corpus-search`` parser.

    Each module exposes ``register(sub, common)`` and imports Prefect only inside its command
    functions, so ``corpus-search search`` stays free of Prefect.
    """
    for name in ("corpus_search.cli_eval", "corpus_search.cli_deploy", "corpus_search.cli_versions"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub, common)
