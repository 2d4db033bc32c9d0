"""Safe SQL filters for LanceDB: user values are always quoted literals, never raw SQL."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from query.errors import InvalidQueryError
from query.schema import PARAGRAPH_FIELDS, RESULT_COLUMNS

FILTERABLE = frozenset(RESULT_COLUMNS) - {"indexed_at"}
#: The Arrow type of each filterable column, from the index contract: values are coerced to it.
COLUMN_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in PARAGRAPH_FIELDS if f.name in FILTERABLE}


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


def coerce_value(column: str, value: Any) -> Any:
    """``value`` as the Python type of ``column``'s Arrow type; text from the command line becomes an int.

    A value that cannot be the column's type raises ``InvalidQueryError`` here, not as a LanceDB
    planner error ("Received literal Utf8...") later.
    """
    kind = COLUMN_TYPES[column]
    if pa.types.is_integer(kind):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InvalidQueryError(
            f"filter on {column!r} takes a whole number, got {value!r}: "
            f"e.g. --where {column}=0 or where={{{column!r}: 0}}"
        )
    if pa.types.is_string(kind):
        if isinstance(value, str):
            return value
        raise InvalidQueryError(
            f"filter on {column!r} takes text, got {type(value).__name__} {value!r}: pass it as a string, "
            f"e.g. where={{{column!r}: {str(value)!r}}}"
        )
    return value


def where_sql(filters: Mapping[str, Any] | None) -> str | None:
    """Build a WHERE clause from ``{column: value or [values]}``; columns must be known paragraph columns.

    >>> where_sql({"source": "https://example.org/", "position": [0, 1]})
    "source = 'https://example.org/' AND position IN (0, 1)"
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidQueryError(
            f"where must be a mapping of column to value(s), e.g. {{'source': 'notes'}}; got {filters!r}"
        )
    clauses = []
    for column, value in filters.items():
        if column not in FILTERABLE:
            raise InvalidQueryError(
                f"cannot filter on {column!r}: filterable columns are {', '.join(sorted(FILTERABLE))}"
            )
        try:
            if isinstance(value, (list, tuple, set, frozenset)):
                values = [coerce_value(column, v) for v in value]
                clauses.append(in_list(column, sorted(values) if isinstance(value, (set, frozenset)) else values))
            else:
                clauses.append(f"{column} = {sql_literal(coerce_value(column, value))}")
        except InvalidQueryError:
            raise
        except ValueError as exc:  # NUL in a value: say which filter
            raise InvalidQueryError(f"filter on {column!r}: {exc}") from exc
    return " AND ".join(clauses)
