"""Shared fixtures: a fresh database per dialect, and a real server process on it.

Every storage test runs once per dialect in REWARDMILES_TEST_DATABASES (default: both SQLite and
PostgreSQL). PostgreSQL is reached at REWARDMILES_TEST_POSTGRES_URL (default: the local server,
trust auth); each run creates its own databases and drops them afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import rewardmiles
from rewardmiles.config import ENV_PREFIX, Settings
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database
from rewardmiles.ledger.verify import verify
from rewardmiles.secretbox import SecretBox, parse_key
from tests.support.server import Server, start_server

DIALECTS = [
    d.strip()
    for d in os.environ.get("REWARDMILES_TEST_DATABASES", "sqlite,postgresql").split(",")
    if d.strip()
]
PG_ADMIN_URL = os.environ.get(
    "REWARDMILES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_HASH_COST = "10"
# The cheapest hashes the settings allow (scrypt for client secrets, argon2id for operator
# passwords): every server the tests start, unless a test says otherwise.
TEST_HASH_SETTINGS = {
    "REWARDMILES_SECRET_HASH_COST": TEST_HASH_COST,
    "REWARDMILES_PASSWORD_HASH_TIME_COST": "1",
    "REWARDMILES_PASSWORD_HASH_MEMORY_KIB": "1024",
}
# The suite's key-encryption key: every server, CLI run and in-process service of the tests reads
# and writes the stored secrets with it (PostgreSQL is production mode and needs one).
TEST_SECRET_KEY = "c3VpdGUta2V5LWZvci10aGUtdGVzdC1maXh0dXJlcy0="
for _name in ("ENV", "SECRET_KEY_FILE", "SECRET_KEY_PREVIOUS"):
    os.environ.pop("REWARDMILES_" + _name, None)
os.environ["REWARDMILES_SECRET_KEY"] = TEST_SECRET_KEY
TEST_BOX = SecretBox(parse_key(TEST_SECRET_KEY, "TEST_SECRET_KEY"))  # for tests that read/write
TEST_REDIS_URL = os.environ.get("REWARDMILES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Server processes and CLI runs started by the tests import the rewardmiles the tests import: under
# mutation testing (docs/testing.md) that is the mutated copy in mutants/src, not the installed one.
_SOURCE_ROOT = str(Path(rewardmiles.__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH", "")) if p
)


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}). Start it, point "
            "REWARDMILES_TEST_POSTGRES_URL at one, or run SQLite only with "
            "REWARDMILES_TEST_DATABASES=sqlite.",
            returncode=3,
        )


class DatabaseFactory:
    """Creates empty, migrated databases and drops them at the end of the session."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._pg_names: list[str] = []

    def create(self, dialect: str) -> str:
        name = f"rm_test_{secrets.token_hex(4)}"
        if dialect == "sqlite":
            url = f"sqlite:///{self._tmp / (name + '.db')}"
        elif dialect == "postgresql":
            with _pg_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self._pg_names.append(name)
            base = PG_ADMIN_URL.rsplit("/", 1)[0]
            url = f"{base}/{name}"
        else:
            raise ValueError(f"unknown test dialect {dialect!r}")
        db = Database.from_url(url)
        migrate.upgrade(db.engine)
        db.dispose()
        return url

    def drop_all(self) -> None:
        if not self._pg_names:
            return
        with _pg_admin() as conn:
            for name in self._pg_names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    while _CHECKERS:
        _CHECKERS.popitem()[1].dispose()
    factory.drop_all()


@pytest.fixture(scope="session", params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `postgres_only` is skipped where its dialect is SQLite (before any of its
    fixtures is set up: no server or database is made for it)."""
    skip = pytest.mark.skip(reason="postgres_only: the scenario needs PostgreSQL")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (
            item.get_closest_marker("postgres_only") is not None
            and callspec is not None
            and callspec.params.get("dialect") == "sqlite"
        ):
            item.add_marker(skip)


_REPORTED_PROBLEMS: dict[str, set[str]] = {}
_CHECKERS: dict[str, Database] = {}


def assert_ledger_balanced(
    url: str, settings: Settings | None = None, *, keep_pool: bool = False
) -> None:
    """`ledger verify` on the database at `url`, under `settings`' policies (default: the
    defaults), in one snapshot: a server still writing to it cannot make it look broken. With
    `keep_pool` (the session's shared databases, checked after every test) its one connection is
    kept for the next check; a server's own database is checked with a connection closed after."""
    db = _CHECKERS.get(url) or Database.from_url(url, pool_size=1)
    try:
        with db.snapshot_reader() as session:
            report = verify(session, settings)
    finally:
        if keep_pool:
            _CHECKERS[url] = db
        elif url not in _CHECKERS:
            db.dispose()
    # A problem is reported once, on the first check that sees it: the tests after the one that
    # broke the books pass unless they break them further.
    reported = _REPORTED_PROBLEMS.setdefault(url, set())
    new = [problem for problem in report.problems if problem not in reported]
    reported.update(report.problems)
    assert not new, "ledger broken:\n" + "\n".join(new)


def server_settings(server: Server) -> Settings:
    """The policies `server` runs with (what its environment sets; the rest as defaults)."""
    return Settings.from_env(
        {k: v for k, v in server.env.items() if k.startswith(ENV_PREFIX)},
        database_url=server.database_url,
    )


@pytest.fixture(autouse=True)
def _ledger_checked_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that can write to the shared database (or starts servers of its own),
    verify those books, so a test that breaks them errors at its own teardown instead of the
    session's end naming no one."""
    shared = (
        str(request.getfixturevalue("database_url"))
        if "database_url" in request.fixturenames
        else None
    )
    factory = (
        request.getfixturevalue("server_factory")
        if "server_factory" in request.fixturenames
        else None
    )
    started_before = len(factory.started) if factory is not None else 0
    yield
    if shared is not None:
        assert_ledger_balanced(shared, keep_pool=True)
    if factory is not None:
        # Servers the test started itself end with it (module fixtures' servers were started
        # before this check was set up, and live on): each holds database connections, and
        # PostgreSQL has a hundred for the whole suite.
        for server in factory.started[started_before:]:
            server.stop()
            if server.database_url != shared:
                assert_ledger_balanced(server.database_url, server_settings(server))


@pytest.fixture(scope="session")
def database_url(dialect: str, database_factory: DatabaseFactory) -> Iterator[str]:
    """The session's shared database for this dialect; the ledger must balance when it ends."""
    url = database_factory.create(dialect)
    yield url
    assert_ledger_balanced(url)


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database.from_url(database_url)
    yield database
    database.dispose()


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, database_factory: DatabaseFactory
) -> Iterator[ServerFactory]:
    """Start extra servers (own database, own settings); all stopped and verified at the end."""
    started: list[Server] = []

    def start(
        dialect: str,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        database_url: str | None = None,
    ) -> Server:
        url = database_url or database_factory.create(dialect)
        server = start_server(
            url,
            dialect,
            tmp_path_factory.mktemp("server"),
            env={**TEST_HASH_SETTINGS, **(env or {})},
            workers=workers,
        )
        started.append(server)
        return server

    start.started = started  # type: ignore[attr-defined]  # read by the per-test check
    yield start
    for server in started:
        server.stop()
    for server in started:
        assert_ledger_balanced(server.database_url, server_settings(server))


@pytest.fixture(scope="session")
def server(dialect: str, database_url: str, server_factory: ServerFactory) -> Server:
    """The shared server of this dialect (PostgreSQL: two API processes) on `database_url`."""
    return server_factory(
        dialect, database_url=database_url, workers=2 if dialect == "postgresql" else 1
    )
