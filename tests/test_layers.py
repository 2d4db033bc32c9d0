"""Layers point one way: corpus_search → deployments → flows → tasks → query; ``query`` never imports Prefect."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

LAYERS = ["corpus_search", "deployments", "flows", "tasks", "query"]


def _imports(path) -> set[str]:
    """Top-level package names a module imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    above = set(LAYERS[: LAYERS.index(layer)])
    bad = {
        str(path.relative_to(REPO)): sorted(_imports(path) & above)
        for path in sorted((REPO / layer).glob("*.py"))
        if _imports(path) & above
    }
    assert bad == {}, f"{layer} must not import the layers above it"


def test_query_never_imports_prefect():
    assert [p.name for p in sorted((REPO / "query").glob("*.py")) if "prefect" in _imports(p)] == []


def test_nothing_calls_lancedbs_deprecated_table_names():
    """LanceDB deprecated ``table_names()``: a test suite run with warnings as errors would fail on it."""
    import re

    calls = [f"{p}:{n}" for p in REPO.glob("*/*.py") if p.parts[-2] in ("query", "tasks", "flows", "corpus_search")
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.table_names\(", line)]
    assert not calls, calls
