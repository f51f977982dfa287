"""SQL text for the statements `StatementPool` sends as written (PostgreSQL): many rows travel
as one JSON document per table, each row tagged with the call it belongs to (`i`), and are read
back with the table's own column types (`json_to_recordset`). Built once, at import, from the
tables' definitions; every value stays a bound parameter."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, String, Table
from sqlalchemy.dialects import postgresql

_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def _pg_type(column: Column[Any]) -> str:
    """The column's type for a parameter's cast; strings as `text`, so a value longer than the
    column fails on the column's own check (a cast to `varchar(n)` would cut it silently)."""
    if isinstance(column.type, String):
        return "text"
    return str(column.type.compile(dialect=_POSTGRESQL))


def _record_of(table: Table, alias: str, columns: Sequence[str]) -> str:
    """`AS alias(i integer, column type, …)`: the column definition list that reads a JSON
    document's fields as `table`'s columns (and `i`, the call the row belongs to)."""
    return f"AS {alias}(i integer, {', '.join(f'{c} {_pg_type(table.c[c])}' for c in columns)})"


def recordset(table: Table, alias: str, columns: Sequence[str], param: str) -> str:
    """`json_to_recordset(…) AS alias(…)`: the JSON document `param` read as rows of `table`'s
    `columns` (and `i`), for a FROM clause."""
    return f"json_to_recordset(%({param})s::json) {_record_of(table, alias, columns)}"


def insert_from_recordset(
    table: Table,
    alias: str,
    columns: Sequence[str],
    param: str,
    calls: str,
    *,
    computed: Mapping[str, str] | None = None,
    join: str = "",
) -> str:
    """INSERT into `table` the rows of the JSON document `param` whose call is one of `calls`
    (a subquery of `i`s). A column of `computed` takes that SQL expression instead of the
    document's field (over `alias` and what `join`, a join clause, adds)."""
    fields = ", ".join((computed or {}).get(c, f"{alias}.{c}") for c in columns)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)})\n"  # noqa: S608 - names, not values
        f"    SELECT {fields}\n"
        f"      FROM {recordset(table, alias, columns, param)}\n"
        + (f"      {join}\n" if join else "")
        + f"     WHERE {alias}.i IN ({calls})"
    )


def numbered_placeholders(statement: str, parameters: Sequence[str]) -> bytes:
    """`statement` with PostgreSQL's own placeholders ($1 for `parameters[0]`, …) for the pool's
    raw cursors: psycopg converts `%(name)s` placeholders again on every call for a statement
    this long (it keeps the conversion only for short ones)."""
    return re.sub(r"%\((\w+)\)s", lambda m: f"${parameters.index(m[1]) + 1}", statement).encode()
