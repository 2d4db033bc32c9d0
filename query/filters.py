"""Safe SQL filters for LanceDB: user values are always quoted literals, never raw SQL."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from query.schema import RESULT_COLUMNS

FILTERABLE = frozenset(RESULT_COLUMNS) - {"indexed_at"}


def sql_literal(value: Any) -> str:
    """Render one Python value as a SQL literal. Strings are single-quoted with quotes doubled."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"filter value {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("filter values cannot contain NUL characters")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"filter value {value!r} has unsupported type {type(value).__name__}: use str, int, float or bool")


def in_list(column: str, values: Iterable[Any]) -> str:
    """``column IN (...)`` over quoted literals; an empty list matches nothing."""
    literals = [sql_literal(v) for v in values]
    if not literals:
        return "FALSE"
    return f"{column} IN ({', '.join(literals)})"


def where_sql(filters: Mapping[str, Any] | None) -> str | None:
    """Build a WHERE clause from ``{column: value or [values]}``; columns must be known paragraph columns.

    >>> where_sql({"source": "https://example.org/", "position": [0, 1]})
    "source = 'https://example.org/' AND position IN (0, 1)"
    """
    if not filters:
        return None
    clauses = []
    for column, value in filters.items():
        if column not in FILTERABLE:
            raise ValueError(f"cannot filter on {column!r}: filterable columns are {', '.join(sorted(FILTERABLE))}")
        if isinstance(value, (list, tuple, set, frozenset)):
            clauses.append(in_list(column, sorted(value, key=str) if isinstance(value, (set, frozenset)) else value))
        else:
            clauses.append(f"{column} = {sql_literal(value)}")
    return " AND ".join(clauses)
