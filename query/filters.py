"""Safe SQL filters for LanceDB: user values are always quoted literals, never raw SQL.

A filter is a mapping from a key to a condition:

- a key is a paragraph column (``source``, ``doc_id``, ``published``, ``indexed_at``...) or
  ``metadata.<name>``, one field of the article's own metadata (``metadata.author``);
- a condition is a value (``=``), a list or set of values (``IN``), ``None`` (``IS NULL``), or a mapping
  of operators to values: ``=, !=, <, <=, >, >=, in, not in, prefix`` (several are ANDed, so
  ``{"published": {">=": "2024-01-01", "<": "2025-01-01"}}`` is a range).

``!=`` and ``not in`` also match rows without a value (no ``published`` date, no such metadata
key), as a reader of "author is not Smith" expects. Dates are ISO 8601 text, ``datetime`` or
``date`` (a naive one is UTC). A date without a time on a date column is its whole (UTC) day:
``published=2024-03-05`` matches that day, ``<=`` includes it and ``>`` starts after it. A metadata
value is text: a number given as the value compares numerically (``{"metadata.year": {">=": 2020}}``),
text compares as text (ISO dates sort correctly).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from query.errors import InvalidQueryError
from query.schema import PARAGRAPH_FIELDS

#: Columns a filter may name: every paragraph column but the map itself (its keys are reached as
#: ``metadata.<name>``). The vector is not a paragraph field.
FILTERABLE = frozenset(f.name for f in PARAGRAPH_FIELDS) - {"metadata"}
#: The Arrow type of each filterable column, from the index contract: values are coerced to it.
COLUMN_TYPES: dict[str, pa.DataType] = {f.name: f.type for f in PARAGRAPH_FIELDS if f.name in FILTERABLE}
#: Columns that may hold no value: ``!=`` on them also matches the rows without one.
NULLABLE = frozenset(f.name for f in PARAGRAPH_FIELDS if f.nullable)
METADATA_PREFIX = "metadata."
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "prefix")
#: The most values one ``in`` / ``not in`` list may hold.
MAX_IN_VALUES = 10_000
#: Spellings accepted beside the canonical ones (Python's and Haystack's).
_ALIASES = {"==": "=", "<>": "!=", "eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=",
            "not_in": "not in", "nin": "not in", "starts_with": "prefix", "^=": "prefix"}


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
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (undecodable bytes from a shell or a JSON "\ud800")
            raise ValueError(f"filter value {value!r} is not valid Unicode text") from None
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)  # strftime's %Y does not pad years before 1000, which SQL refuses
        return f"TIMESTAMP {sql_literal(f'{utc.year:04d}-{utc:%m-%d %H:%M:%S.%f}+00:00')}"
    raise TypeError(f"filter value {value!r} has unsupported type {type(value).__name__}: use str, int, float or bool")


def in_list(column: str, values: Iterable[Any]) -> str:
    """``column IN (...)`` over quoted literals; an empty list matches nothing."""
    literals = [sql_literal(v) for v in values]
    if not literals:
        return "FALSE"
    return f"{column} IN ({', '.join(literals)})"


def parse_timestamp(value: Any, *, key: str = "") -> datetime:
    """``value`` (ISO 8601 text, ``datetime`` or ``date``) as an aware UTC datetime; naive means UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if _ZONED_DATE.fullmatch(text):  # Python reads "2023-05-04+02:00" as 02:00 that day: never what was meant
            raise InvalidQueryError(
                f"filter on {key!r}: {value!r} is a date with a time zone but no time: give the date alone (its whole "
                f"UTC day), or a time with its zone, e.g. '{key}>={text[:10]}T00:00{text[10:]}'")
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise InvalidQueryError(
                f"filter on {key!r} takes a date or time, got {value!r}: use ISO 8601, "
                f"e.g. --where '{key}>=2024-01-31' or '{key}<2024-01-31T12:00:00Z'"
            ) from None
    else:
        raise InvalidQueryError(
            f"filter on {key!r} takes a date or time, got {type(value).__name__} {value!r}: "
            "pass ISO 8601 text, a datetime or a date"
        )
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise InvalidQueryError(
            f"filter on {key!r}: {value!r} is out of range once converted to UTC: use a date between years 1 and 9999"
        ) from None


def coerce_value(column: str, value: Any) -> Any:
    """``value`` as the Python type of ``column``'s Arrow type; text from the command line becomes an int.

    A value that cannot be the column's type raises ``InvalidQueryError`` here, not as a LanceDB
    planner error ("Received literal Utf8...") later.
    """
    kind = COLUMN_TYPES[column]
    if pa.types.is_integer(kind):
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = int(value.strip())
        if number is None:
            raise InvalidQueryError(
                f"filter on {column!r} takes a whole number, got {value!r}: "
                f"e.g. --where {column}=0 or where={{{column!r}: 0}}"
            )
        # The planner refuses a literal wider than the column ("could not convert to literal of type Int32").
        bits = kind.bit_width - (1 if pa.types.is_signed_integer(kind) else 0)
        low = -(2**bits) if pa.types.is_signed_integer(kind) else 0
        if not low <= number < 2**bits:
            raise InvalidQueryError(
                f"filter on {column!r} takes a whole number from {low} to {2**bits - 1}, got {value!r}"
            )
        return number
    if pa.types.is_timestamp(kind):
        return parse_timestamp(value, key=column)
    if pa.types.is_string(kind):
        if isinstance(value, str):
            return value
        raise InvalidQueryError(
            f"filter on {column!r} takes text, got {type(value).__name__} {value!r}: pass it as a string, "
            f"e.g. where={{{column!r}: {str(value)!r}}}"
        )
    return value


def _metadata_value(key: str, value: Any) -> tuple[Any, bool]:
    """A metadata filter value and whether it compares numerically (metadata values are stored as text)."""
    if isinstance(value, bool):
        return ("true" if value else "false"), False
    if isinstance(value, (int, float)):
        return value, True
    if isinstance(value, datetime | date):
        return (parse_timestamp(value, key=key).isoformat() if isinstance(value, datetime) else value.isoformat()), False
    if isinstance(value, str):
        return value, False
    raise InvalidQueryError(f"filter on {key!r}: value {value!r} has unsupported type {type(value).__name__}")


def _operand(key: str) -> tuple[str, str | None]:
    """The SQL expression of a filter key, and the column it names (None for a metadata key)."""
    if key.startswith(METADATA_PREFIX) and len(key) > len(METADATA_PREFIX):
        name = key[len(METADATA_PREFIX):]
        return f"map_extract(metadata, {sql_literal(name)})[1]", None
    if key in FILTERABLE:
        return key, key
    raise InvalidQueryError(
        f"cannot filter on {key!r}: filterable columns are {', '.join(sorted(FILTERABLE))}, "
        f"and a field of the articles' metadata is named metadata.<field>, e.g. metadata.author"
    )


#: A date with a zone and no time: ambiguous, refused (see parse_timestamp).
_ZONED_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}(?:[Zz]|[+-]\d{2}(?::?\d{2})?)")


def _day(column: str | None, value: Any) -> tuple[str, str | None] | None:
    """A date without a time on a timestamp column as its UTC day's (start, end) literals (end None past
    year 9999), else None: ``published=2024-03-05`` means that day, not its first instant."""
    if column is None or not pa.types.is_timestamp(COLUMN_TYPES[column]) or isinstance(value, datetime):
        return None
    if isinstance(value, str):
        try:
            date.fromisoformat(value.strip())  # 2023-05-04, 20230504, 2023-W18-4: a date, no time
        except ValueError:
            return None
    elif not isinstance(value, date):
        return None
    start = parse_timestamp(value, key=column)
    try:
        end = sql_literal(start + timedelta(days=1))
    except OverflowError:
        end = None
    return sql_literal(start), end


def _on_day(expr: str, day: tuple[str, str | None]) -> str:
    start, end = day
    return f"({expr} >= {start} AND {expr} < {end})" if end else f"{expr} >= {start}"


def _condition(key: str, op: str, value: Any) -> str:
    expr, column = _operand(key)
    nullable = column is None or column in NULLABLE
    if value is None:
        if op == "=":
            return f"{expr} IS NULL"
        if op == "!=":
            return f"{expr} IS NOT NULL"
        raise InvalidQueryError(f"filter on {key!r}: {op!r} needs a value, not None")
    if op in ("=", "!=", "<=", ">") and (day := _day(column, value)) is not None:
        end = day[1]
        if op == "=":
            return _on_day(expr, day)
        if op == "!=":
            return f"({_on_day(expr, day)}) IS NOT TRUE"  # a row without a date is not on that day either
        if op == "<=":
            return f"{expr} < {end}" if end else f"{expr} IS NOT NULL"
        return f"{expr} >= {end}" if end else "FALSE"  # ">": from the next day on

    def one(v: Any) -> tuple[str, str]:  # (operand expression, literal) for one value
        if column is not None:
            return expr, sql_literal(coerce_value(column, v))
        v, numeric = _metadata_value(key, v)
        # TRY_CAST: a value that is not a number is no match, not a query error.
        return (f"TRY_CAST({expr} AS DOUBLE)" if numeric else expr), sql_literal(v)

    if op in ("in", "not in"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise InvalidQueryError(f"filter on {key!r}: {op!r} takes a list of values, got {value!r}")
        values = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        if len(values) > MAX_IN_VALUES:
            # Each value is a term of the scan's predicate: 200,000 held a query service's model thread for 9 s.
            raise InvalidQueryError(f"filter on {key!r}: {op!r} takes at most {MAX_IN_VALUES:,} values, got "
                                    f"{len(values):,}; filter on a shared prefix or metadata value instead")
        if not values:
            return "FALSE" if op == "in" else "TRUE"
        if any(_day(column, v) for v in values):  # each date its whole day
            clause = "(" + " OR ".join(_on_day(expr, d) if (d := _day(column, v)) else f"{expr} = {one(v)[1]}"
                                       for v in values) + ")"
            return clause if op == "in" else f"{clause} IS NOT TRUE"
        pairs = [one(v) for v in values]
        # Mixed numeric/text metadata values: one comparison per value, ORed.
        if len({e for e, _ in pairs}) == 1:
            clause = f"{pairs[0][0]} IN ({', '.join(lit for _, lit in pairs)})"
        else:
            clause = "(" + " OR ".join(f"{e} = {lit}" for e, lit in pairs) + ")"
        if op == "in":
            return clause
        # IS NOT TRUE, not NOT: a missing value, or a metadata value that is not a number (TRY_CAST's NULL),
        # is "not in" the list, as it is "!=" each value.
        return f"({clause}) IS NOT TRUE" if nullable else f"NOT {clause}"
    if op == "prefix":
        if not isinstance(value, str):
            raise InvalidQueryError(f"filter on {key!r}: 'prefix' takes text, got {value!r}")
        if column is not None and not pa.types.is_string(COLUMN_TYPES[column]):
            raise InvalidQueryError(f"filter on {key!r}: 'prefix' works on text columns and metadata fields only")
        return f"starts_with({expr}, {sql_literal(value)})"
    left, lit = one(value)
    if op == "!=":
        return f"({left} IS NULL OR {left} != {lit})" if nullable else f"{left} != {lit}"
    return f"{left} {op} {lit}"


def _clauses(key: str, condition: Any) -> list[str]:
    if isinstance(condition, Mapping):
        if not condition:
            raise InvalidQueryError(f"filter on {key!r}: empty condition; use e.g. {{'>=': '2024-01-01'}}")
        out = []
        for raw_op, value in condition.items():
            op = _ALIASES.get(str(raw_op).strip().lower(), str(raw_op).strip().lower())
            if op not in OPERATORS:
                raise InvalidQueryError(
                    f"filter on {key!r}: unknown operator {raw_op!r}; use one of {', '.join(OPERATORS)}"
                )
            out.append(_condition(key, op, value))
        return out
    if isinstance(condition, (list, tuple, set, frozenset)):
        return [_condition(key, "in", condition)]
    return [_condition(key, "=", condition)]


def where_sql(filters: Mapping[str, Any] | None) -> str | None:
    """Build a WHERE clause from ``{key: condition}`` (see the module docstring), ANDed.

    >>> where_sql({"source": "https://example.org/", "position": [0, 1]})
    "source = 'https://example.org/' AND position IN (0, 1)"
    >>> where_sql({"metadata.author": {"!=": "Ann"}})
    "(map_extract(metadata, 'author')[1] IS NULL OR map_extract(metadata, 'author')[1] != 'Ann')"
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidQueryError(
            f"where must be a mapping of column to value(s), e.g. {{'source': 'notes'}}; got {filters!r}"
        )
    clauses = []
    for key, condition in filters.items():
        if not isinstance(key, str):
            raise InvalidQueryError(f"filter keys are column names (text), got {key!r}")
        try:
            clauses.extend(_clauses(key, condition))
        except InvalidQueryError:
            raise
        except (ValueError, TypeError) as exc:  # NUL in a value, an unsupported type: say which filter
            raise InvalidQueryError(f"filter on {key!r}: {exc}") from exc
    return " AND ".join(clauses)


def _number(text: str) -> int | float | str:
    """``text`` as an int or a finite float when it is one, else unchanged."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, int) or math.isfinite(value):
            return value
    return text


#: ``--where`` operators, longest first so that ``>=`` is not read as ``>`` (``<>`` is ``!=``, as in SQL).
_CLI_OPS = ("!=", ">=", "<=", "<>", "^=", "=", "<", ">")


def parse_cli_conditions(items: Iterable[str]) -> dict[str, Any] | None:
    """``--where KEY<op>VALUE`` options as a filter mapping; values stay text (``where_sql`` coerces them).

    ``op`` is one of ``= != < <= > >= ^=`` (``^=``: starts with). A key given ``=`` several times
    means any of those values (IN); other operators on one key are ANDed (a range).
    """
    where: dict[str, dict[str, Any]] = {}
    for item in items:
        cut = min((i for i in (item.find(c) for c in "=!<>^") if i >= 0), default=-1)
        op = next((o for o in _CLI_OPS if item.startswith(o, cut)), None) if cut > 0 else None
        key = item[:cut].strip() if cut > 0 else ""
        if op is None or not key:
            # No operator at all: most likely a shell ate "<..." or ">..." as a redirection.
            shell = (" (an unquoted < or > is a shell redirection: quote the whole filter)"
                     if not any(o in item for o in _CLI_OPS) else "")
            raise InvalidQueryError(
                f"--where {item!r}: use KEY<op>VALUE with op one of = != < <= > >= ^= (starts with){shell}, e.g. "
                "--where source^=/home/me/notes/ --where 'published>=2024-01-01' --where metadata.author=Ann"
            )
        # Spaces around the operator are layout ('title = Coffee'), as they are around the key.
        value = item[cut + len(op):].strip()
        op = "!=" if op == "<>" else op
        conds = where.setdefault(key, {})
        if op == "=":
            conds.setdefault("in", []).append(value)
        elif op in conds:
            raise InvalidQueryError(f"--where: {key}{op} is given twice; give each bound once")
        else:
            if key.startswith(METADATA_PREFIX) and op in ("<", "<=", ">", ">="):
                value = _number(value)  # "year>=2020" on text values means the number
            conds["prefix" if op == "^=" else op] = value
    out: dict[str, Any] = {}
    for key, conds in where.items():
        values = conds.pop("in", None)
        if values is not None:
            conds["=" if len(values) == 1 else "in"] = values[0] if len(values) == 1 else values
        # A lone equality stays a plain value: the same mapping a Python caller would write.
        out[key] = conds[next(iter(conds))] if set(conds) in ({"="}, {"in"}) else conds
    return out or None
