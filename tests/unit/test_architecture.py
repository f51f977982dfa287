"""The shape docs/architecture.md promises, checked over the source's syntax trees.

Five rules, each a function from one module's source to the places that break it:

- `sql-outside-repositories`: statements are built and run only in `*/repository.py`, `ledger/`
  and `db/` (no `select`/`insert`/`update`/`delete`/`text` import, no `.execute(`/`.scalar(`/
  `.scalars(` call elsewhere);
- `service-opens-unit-of-work`: a service (`*/service.py`, `ledger/`, the issuance package's
  use cases) never opens a unit of work or a session (`.unit_of_work()`,
  `.run_in_unit_of_work()`, `.reader()`, `.snapshot_reader()`, `Session(...)`): the boundary
  (routes, the worker's task runner, the CLI) opens it and hands the session down;
- `dialect-outside-db`: `psycopg`, `sqlite3` and `sqlalchemy.dialects` are imported, and the
  dialect is asked for (`.dialect`, `.is_sqlite`, `.is_postgresql`), only in `db/`;
- `web-in-domain`: `ledger/`, services and repositories import neither FastAPI nor Starlette;
- `ledger-write-outside-ledger`: ledger rows are inserted and balances changed only in `ledger/`
  (`insert(LedgerEntry)`, `LedgerEntry(...)`, `balance_miles` assigned or set in SQL).

`DRIFT` lists the places that break a rule today, each with what moves it; the test fails on a
new violation and on an entry that no longer applies, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
# Mutation testing runs the tests from mutmut's copy (mutants/), whose source holds every mutant
# of the money modules side by side: the shape checked is the real source's.
SRC = (_ROOT.parent if _ROOT.name == "mutants" else _ROOT) / "src" / "rewardmiles"

Rule = Callable[[str, ast.Module], Iterator[str]]

_STATEMENTS = {"select", "insert", "update", "delete", "text"}
_RUN = {"execute", "scalar", "scalars"}
_OPEN = {"unit_of_work", "run_in_unit_of_work", "reader", "snapshot_reader"}
_DIALECT_MODULES = ("psycopg", "psycopg2", "sqlite3", "sqlalchemy.dialects")
_DIALECT_NAMES = {"dialect", "is_sqlite", "is_postgresql"}
_WEB_MODULES = ("fastapi", "starlette")
_LEDGER_SQL = re.compile(
    r"\b(?:INSERT\s+INTO\s+ledger_entries|UPDATE\s+ledger_entries|SET\s+balance_miles)\b", re.I
)


def _imports(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in the module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names], node.lineno


def _imported_names(tree: ast.Module) -> set[str]:
    """The names the module binds by importing (`csv`, `issuance` of `from rewardmiles.issuance
    import service as issuance`): a call on one of them is a library's or another package's
    function (`csv.reader`, `issuance.execute`), not a session's or a database's."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _on_imported(call: ast.Call, imported: set[str]) -> bool:
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    return isinstance(receiver, ast.Name) and receiver.id in imported


def _calls(tree: ast.Module) -> Iterator[tuple[str, ast.Call]]:
    """(the called name or attribute, the call) for every call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute):
                yield node.func.attr, node
            elif isinstance(node.func, ast.Name):
                yield node.func.id, node


# The issuance package's use cases and rules are split over several modules (docs/architecture.md);
# all but its shape, queries, routes and reference cache are services.
_ISSUANCE_NOT_SERVICES = ("repository.py", "routes.py", "schemas.py", "reference.py")


def _is_service(path: str) -> bool:
    return (
        path.endswith("/service.py")
        or path.startswith("ledger/")
        or (path.startswith("issuance/") and not path.endswith(_ISSUANCE_NOT_SERVICES))
    )


def sql_outside_repositories(path: str, tree: ast.Module) -> Iterator[str]:
    if path.endswith("repository.py") or path.startswith(("ledger/", "db/")):
        return
    for module, names, line in _imports(tree):
        if module == "sqlalchemy" and _STATEMENTS & set(names):
            yield f"{path}:{line} imports {', '.join(sorted(_STATEMENTS & set(names)))}"
    imported = _imported_names(tree)
    for name, call in _calls(tree):
        is_method = isinstance(call.func, ast.Attribute)
        if name in _RUN and is_method and not _on_imported(call, imported):
            yield f"{path}:{call.lineno} calls .{name}()"


def service_opens_unit_of_work(path: str, tree: ast.Module) -> Iterator[str]:
    if not _is_service(path):
        return
    imported = _imported_names(tree)
    for name, call in _calls(tree):
        if name in _OPEN and isinstance(call.func, ast.Attribute) and _on_imported(call, imported):
            continue  # `csv.reader(…)`
        if (name in _OPEN and isinstance(call.func, ast.Attribute)) or name == "Session":
            yield f"{path}:{call.lineno} opens {name}()"


def dialect_outside_db(path: str, tree: ast.Module) -> Iterator[str]:
    if path.startswith("db/"):
        return
    for module, _, line in _imports(tree):
        if module.startswith(_DIALECT_MODULES):
            yield f"{path}:{line} imports {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _DIALECT_NAMES:
            yield f"{path}:{node.lineno} reads .{node.attr}"


def web_in_domain(path: str, tree: ast.Module) -> Iterator[str]:
    if not (_is_service(path) or path.endswith("repository.py")):
        return
    for module, _, line in _imports(tree):
        if module.startswith(_WEB_MODULES):
            yield f"{path}:{line} imports {module}"


def _ledger_calls(path: str, tree: ast.Module) -> Iterator[str]:
    for name, call in _calls(tree):
        first = call.args[0] if call.args else None
        if name == "insert" and isinstance(first, ast.Name) and first.id == "LedgerEntry":
            yield f"{path}:{call.lineno} inserts LedgerEntry"
        elif name == "LedgerEntry":
            yield f"{path}:{call.lineno} builds a LedgerEntry"
        for keyword in call.keywords:
            opening = isinstance(keyword.value, ast.Constant) and keyword.value.value == 0
            if keyword.arg == "balance_miles" and not opening:  # an account opens at 0
                yield f"{path}:{call.lineno} sets balance_miles"


def _ledger_assignments_and_sql(path: str, tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "balance_miles":
                yield f"{path}:{target.lineno} assigns balance_miles"
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _LEDGER_SQL.search(node.value)
        ):
            yield f"{path}:{node.lineno} writes the ledger in SQL"


def ledger_write_outside_ledger(path: str, tree: ast.Module) -> Iterator[str]:
    if path.startswith("ledger/") or path == "db/models.py":
        return
    yield from _ledger_calls(path, tree)
    yield from _ledger_assignments_and_sql(path, tree)


RULES: dict[str, Rule] = {
    "sql-outside-repositories": sql_outside_repositories,
    "service-opens-unit-of-work": service_opens_unit_of_work,
    "dialect-outside-db": dialect_outside_db,
    "web-in-domain": web_in_domain,
    "ledger-write-outside-ledger": ledger_write_outside_ledger,
}

# (rule, module): what moves it (its queries into a repository, its unit of work to the
# boundary that calls it). Counted per module, not per line, so that editing a module does not
# churn the list; a module that no longer breaks the rule must leave the list. Empty today:
# every module keeps every rule.
DRIFT: dict[tuple[str, str], str] = {}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for file in sorted(SRC.rglob("*.py")):
        path = file.relative_to(SRC).as_posix()
        if not path.startswith("db/migrations/"):  # history: never edited again
            yield path, ast.parse(file.read_text(), filename=str(file))


def _violations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path, tree in _modules():
        for rule, check in RULES.items():
            places = list(check(path, tree))
            if places:
                found[(rule, path)] = places
    return found


def test_the_source_keeps_its_shape() -> None:
    found = _violations()
    new = {key: places for key, places in found.items() if key not in DRIFT}
    gone = sorted(key for key in DRIFT if key not in found)
    assert not new, "breaks the shape of docs/architecture.md:\n" + "\n".join(
        f"  [{rule}] {place}" for (rule, _), places in sorted(new.items()) for place in places
    )
    assert not gone, "no longer drifts, remove from DRIFT: " + ", ".join(map(str, gone))


# Each rule against a module that breaks it and one that keeps it: a rule that cannot fail
# proves nothing.
PLANTED = [
    (
        "service-opens-unit-of-work",
        "collectors/service.py",
        "def f(db):\n    with db.reader() as session:\n        return session\n",
        "import csv\ndef f(stream):\n    return list(csv.reader(stream))\n",
    ),
    (
        "sql-outside-repositories",
        "reports/batches.py",
        "def f(session):\n    return session.execute(query)\n",
        "from rewardmiles.issuance import service as issuance\n"
        "def f(db, call):\n    return issuance.execute(db, call)\n",
    ),
    (
        "sql-outside-repositories",
        "reports/daily.py",
        "from sqlalchemy import select\n",
        "from rewardmiles.reports import repository\n",
    ),
    (
        "sql-outside-repositories",
        "webhooks/service.py",
        "def f(session):\n    return session.execute(q)\n",
        "def f(session):\n    return repository.due(session)\n",
    ),
    (
        "service-opens-unit-of-work",
        "settlement/service.py",
        "def f(db):\n    with db.unit_of_work() as session:\n        pass\n",
        "def f(session):\n    repository.mark(session)\n",
    ),
    (
        "service-opens-unit-of-work",
        "ledger/service.py",
        "def f(engine):\n    return Session(engine)\n",
        "def f(session):\n    return session\n",
    ),
    (
        "service-opens-unit-of-work",
        "issuance/keyed.py",
        "def f(db, call):\n    return db.run_in_unit_of_work(execute, call)\n",
        "def f(session, attempt, call):\n    return claim(session, call)\n",
    ),
    (
        "dialect-outside-db",
        "issuance/service.py",
        "import psycopg\n",
        "from rewardmiles.db import engine\n",
    ),
    (
        "dialect-outside-db",
        "app.py",
        "def f(db):\n    return 1 if db.is_sqlite else 8\n",
        "def f(db):\n    return db.pool_size\n",
    ),
    (
        "web-in-domain",
        "ledger/service.py",
        "from fastapi import HTTPException\n",
        "from rewardmiles.errors import ProblemError\n",
    ),
    (
        "web-in-domain",
        "issuance/repository.py",
        "from starlette.requests import Request\n",
        "from sqlalchemy.orm import Session\n",
    ),
    (
        "ledger-write-outside-ledger",
        "settlement/service.py",
        "def f(session):\n    session.execute(insert(LedgerEntry), rows)\n",
        "def f(session):\n    ledger.post(session, postings)\n",
    ),
    (
        "ledger-write-outside-ledger",
        "collectors/service.py",
        "def f(c, m):\n    c.balance_miles += m\n",
        "def f(number, now):\n    return Collector(number=number, balance_miles=0)\n",
    ),
    (
        "ledger-write-outside-ledger",
        "issuance/repository.py",
        'SQL = "UPDATE collectors SET balance_miles = balance_miles + 1"\n',
        'SQL = "UPDATE collectors SET status = :status"\n',
    ),
]


@pytest.mark.parametrize(("rule", "path", "broken", "kept"), PLANTED)
def test_each_rule_finds_a_planted_violation(rule: str, path: str, broken: str, kept: str) -> None:
    check = RULES[rule]
    assert list(check(path, ast.parse(broken))), f"{rule} misses: {broken!r}"
    assert not list(check(path, ast.parse(kept))), f"{rule} flags: {kept!r}"


def test_the_rules_exempt_the_modules_that_own_the_work() -> None:
    assert not list(
        sql_outside_repositories("ledger/verify.py", ast.parse("import x\nx.execute(1)"))
    )
    assert not list(dialect_outside_db("db/engine.py", ast.parse("import psycopg\n")))
    assert not list(
        ledger_write_outside_ledger("ledger/service.py", ast.parse("insert(LedgerEntry)\n"))
    )
