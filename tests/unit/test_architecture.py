"""The shape docs/architecture.md promises, checked over the source's syntax trees.

Six rules, each a function from one module's source to the places that break it:

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
  (`insert(LedgerEntry)`, `LedgerEntry(...)`, `balance_miles` assigned or set in SQL);
- `bare-vocabulary-word`: a value of one of `vocabulary.py`'s enums (`"posted"`, `"credit"`,
  `"ACTIVE"`...) is never written as a bare string where it stands for that word: an operand of
  a comparison, an element of a tuple, list or set compared against or given to `.in_()` /
  `.not_in()`, a keyword argument naming a vocabulary column (`status=`, `direction=`...), a
  dict value, a value assigned, returned or given as a parameter's default (either branch of a
  conditional expression counts). The enum member is written instead. Docstrings, f-strings,
  positional arguments (CLI command names, bound parameters' names) and dict keys are not such
  places, so `@pending_app.command("reject")` and `bindparam("sponsor")` stay as they are.
  `HOMONYMS` lists the modules where the same string stands for another word (an OpenAPI tag
  named like a role), each with why.

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
# of the money modules side by side: the shape checked is the real source's. (mutmut's copy sits
# in the project, next to its pyproject.toml; a checkout that merely is named "mutants" does not.)
_COPY = _ROOT.name == "mutants" and (_ROOT.parent / "pyproject.toml").exists()
SRC = (_ROOT.parent if _COPY else _ROOT) / "src" / "rewardmiles"

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
# Keyword arguments that name a column written in the vocabulary's words (not `outcome`,
# `kind`, `reason`: log fields and file kinds use those names for other words).
_VOCABULARY_KEYWORDS = {
    "status",
    "direction",
    "pending_reason",
    "account_kind",
    "event_type",
    "endpoint",
    "role",
}


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


def vocabulary_words(source: str) -> frozenset[str]:
    """The values of the `StrEnum`s `source` (vocabulary.py's) defines."""
    words: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(base, ast.Name) and base.id == "StrEnum" for base in node.bases
        ):
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                    words.add(str(item.value.value))
    return frozenset(words)


VOCABULARY = vocabulary_words((SRC / "vocabulary.py").read_text())


def _bare_strings(node: ast.expr, *, sequence: bool = True) -> Iterator[ast.Constant]:
    """`node` if it is a string constant, the string elements of a tuple, list or set (one level:
    `[(app, "sponsor")]` holds a pair, not a word), and both branches of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, ast.Tuple | ast.List | ast.Set) and sequence:
        for element in node.elts:
            yield from _bare_strings(element, sequence=False)
    elif isinstance(node, ast.IfExp):
        yield from _bare_strings(node.body, sequence=sequence)
        yield from _bare_strings(node.orelse, sequence=sequence)


def _word_places(tree: ast.Module) -> Iterator[ast.expr]:
    """The expressions whose value is data: what a bare vocabulary word must not be."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            yield node.left
            yield from node.comparators
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("in_", "not_in"):
                yield from node.args
            yield from (k.value for k in node.keywords if k.arg in _VOCABULARY_KEYWORDS)
        elif isinstance(node, ast.Dict):
            yield from (value for value in node.values if value is not None)
        elif isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if "__all__" not in names:  # the names a module exports, not words
                yield node.value
        elif isinstance(node, ast.AnnAssign | ast.Return) and node.value is not None:
            yield node.value
        elif isinstance(node, ast.arguments):
            yield from (d for d in (*node.defaults, *node.kw_defaults) if d is not None)


# (module, word): the same string standing for another word than the vocabulary's, and why. The
# test fails on an entry that no longer applies, as on DRIFT's.
HOMONYMS: dict[tuple[str, str], str] = {
    ("http/openapi.py", "admin"): 'the admin API\'s OpenAPI tag (`tags=["admin"]`), not a role',
    ("cli/main.py", "active"): "`signing-key list` prints a signing key not retired as active",
}


def _bare_words(path: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    if path == "vocabulary.py":
        return
    for place in _word_places(tree):
        for constant in _bare_strings(place):
            if constant.value in VOCABULARY:
                yield constant.lineno, constant.value


def bare_vocabulary_word(path: str, tree: ast.Module) -> Iterator[str]:
    for line, word in _bare_words(path, tree):
        if (path, word) not in HOMONYMS:
            yield f"{path}:{line} spells {word!r}"


RULES: dict[str, Rule] = {
    "sql-outside-repositories": sql_outside_repositories,
    "service-opens-unit-of-work": service_opens_unit_of_work,
    "dialect-outside-db": dialect_outside_db,
    "web-in-domain": web_in_domain,
    "ledger-write-outside-ledger": ledger_write_outside_ledger,
    "bare-vocabulary-word": bare_vocabulary_word,
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
    (
        "bare-vocabulary-word",
        "settlement/service.py",
        'def f(line):\n    return line.status == "pending"\n',
        "def f(line):\n    return line.status == LineStatus.PENDING\n",
    ),
    (
        "bare-vocabulary-word",
        "issuance/repository.py",
        'Q = update(T).where(T.status.in_(("pending", "posted")))\n',
        'Q = select(T).where(T.sponsor_code == bindparam("sponsor"))\n',
    ),
    (
        "bare-vocabulary-word",
        "collectors/service.py",
        'def f(status):\n    return status not in ("ACTIVE", "ON_HOLD", "CLOSED")\n',
        "def f(status):\n    return status not in STATUSES\n",
    ),
    (
        "bare-vocabulary-word",
        "reports/repository.py",
        'def f(session, now):\n    session.add(Batch(status="processing", created_at=now))\n',
        "def f(session, now):\n    session.add(Batch(status=BatchStatus.PROCESSING))\n",
    ),
    (
        "bare-vocabulary-word",
        "webhooks/service.py",
        'def f(give_up):\n    return {"status": "failed" if give_up else "pending"}\n',
        'def f(give_up):\n    return {"status": DeliveryStatus.FAILED, "pending": give_up}\n',
    ),
    (
        "bare-vocabulary-word",
        "issuance/rules.py",
        'def f(needs_review):\n    reason = "review" if needs_review else None\n',
        'def f(needs_review):\n    reason = f"{needs_review} review"\n',
    ),
    (
        "bare-vocabulary-word",
        "ledger/service.py",
        'COLLECTOR_ACCOUNT = "collector"\n',
        '__all__ = ["post", "verify"]\n',
    ),
    (
        "bare-vocabulary-word",
        "cli/main.py",
        'class Status(StrEnum):\n    ACTIVE = "ACTIVE"\n',
        '@pending_app.command("reject")\ndef pending_reject(reason: str = "REVIEW_REJECTED"):\n'
        '    """Reject a line held for review: it becomes rejected."""\n'
        'SUBCOMMANDS = [(sponsor_app, "sponsor"), (pending_app, "pending")]\n',
    ),
    (
        "bare-vocabulary-word",
        "issuance/schemas.py",
        'def f(direction="credit"):\n    return direction\n',
        'model_config = ConfigDict(extra="allow")\n',
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
    assert not list(
        bare_vocabulary_word("vocabulary.py", ast.parse('class S(StrEnum):\n    A = "posted"\n'))
    )


def test_each_homonym_is_still_spelled_where_it_is_listed() -> None:
    spelled = {(path, word) for path, tree in _modules() for _, word in _bare_words(path, tree)}
    assert not set(HOMONYMS) - spelled, "no longer spelled, remove from HOMONYMS"
    # An entry exempts its word in its module only.
    assert not list(bare_vocabulary_word("http/openapi.py", ast.parse('a = "admin" in tags\n')))
    assert list(bare_vocabulary_word("http/openapi.py", ast.parse('a = "posted" in tags\n')))
    assert list(bare_vocabulary_word("http/access.py", ast.parse('a = "admin" in tags\n')))


def test_the_vocabulary_words_are_read_from_every_enum_of_vocabulary_py() -> None:
    assert {"ACTIVE", "posted", "credit", "collector_on_hold", "ISSUED", "sponsor"} <= VOCABULARY
    assert {"delivered", "transaction.settled", "processing", "missing_in_log"} <= VOCABULARY
    assert vocabulary_words('class X(StrEnum):\n    """Doc."""\n    A = "a"\nB = "b"\n') == {"a"}
