"""SQL filters (quoting, injection) and array-only ranking cores against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from query.filters import sql_literal, where_sql
from query.fusion import rank_order, rrf, top_k_cosine


def test_string_literals_double_their_quotes():
    assert sql_literal("it's") == "'it''s'"
    assert sql_literal("' OR 1=1 --") == "''' OR 1=1 --'"


def test_where_builds_equality_and_in_clauses():
    assert where_sql({"source": "a", "position": [0, 1]}) == "source = 'a' AND position IN (0, 1)"
    assert where_sql({}) is None
    assert where_sql({"doc_id": []}) == "FALSE"


def test_unknown_filter_columns_are_refused():
    with pytest.raises(ValueError, match="cannot filter on 'vector'"):
        where_sql({"vector": 1})
    with pytest.raises(ValueError, match="cannot filter on '1=1 OR source'"):
        where_sql({"1=1 OR source": "x"})


def test_unsupported_filter_values_are_refused():
    with pytest.raises(TypeError, match="unsupported type"):
        sql_literal(object())
    with pytest.raises(ValueError, match="finite"):
        sql_literal(float("nan"))


def test_rrf_matches_the_formula_by_hand():
    ids, scores = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    expect = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert ids == ["a", "c", "b", "d"]
    np.testing.assert_allclose(scores, [expect[i] for i in ids])


def test_rrf_ties_break_by_best_rank_then_id():
    ids, _ = rrf([["x", "y"], ["y", "x"]], k=60)
    assert ids == ["x", "y"]  # equal scores, equal best rank → id order
    ids, _ = rrf([["b"], ["a"]], k=60, limit=1)
    assert ids == ["a"]


def test_rank_order_is_descending_and_stable_on_ties():
    assert rank_order(np.array([0.2, 0.9, 0.2, 0.5])).tolist() == [1, 3, 0, 2]


def test_top_k_cosine_matches_full_sort():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(200, 16)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = m[3]
    idx, sims = top_k_cosine(m, q, 10)
    full = np.argsort(-(m @ q), kind="stable")[:10]
    assert idx.tolist() == full.tolist() and idx[0] == 3
    assert np.all(np.diff(sims) <= 0)


def test_an_in_list_longer_than_the_limit_is_a_query_error_naming_it():
    from query.errors import InvalidQueryError
    from query.filters import MAX_IN_VALUES

    assert where_sql({"doc_id": {"in": [f"d{i}" for i in range(MAX_IN_VALUES)]}})  # the limit itself is fine
    with pytest.raises(InvalidQueryError, match="takes at most 10,000 values, got 10,001"):
        where_sql({"doc_id": {"not in": [f"d{i}" for i in range(MAX_IN_VALUES + 1)]}})
