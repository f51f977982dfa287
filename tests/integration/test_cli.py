"""The `rewardmiles` operator CLI, driven in-process, against a database of this module's own."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from rewardmiles import clock, ledger
from rewardmiles.auth import service as auth
from rewardmiles.cli.main import UVICORN_OPTIONS, app
from rewardmiles.collectors import service as collectors
from rewardmiles.config import TEST_CLOCK_PREFIX, Settings
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database, shown_url
from rewardmiles.db.models import (
    Batch,
    Collector,
    IssuanceLine,
    Location,
    Offer,
    OperatorAuditEntry,
    PartnerClient,
    Sponsor,
    Transaction,
    WebhookDelivery,
)
from rewardmiles.issuance import lookups
from rewardmiles.ledger.verify import verify
from rewardmiles.vocabulary import DeliveryStatus, EventType
from rewardmiles.webhooks import service as webhooks
from tests.conftest import PG_ADMIN_URL, TEST_BOX, DatabaseFactory
from tests.support import data
from tests.support.issue import call
from tests.support.servers import FORMS, two_servers

HASH_COST = "10"
Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def cli_url(dialect: str, database_factory: DatabaseFactory) -> Iterator[str]:
    url = database_factory.create(dialect)
    yield url
    database = Database.from_url(url)
    try:
        with database.reader() as session:
            report = verify(session)
    finally:
        database.dispose()
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def cli_db(cli_url: str) -> Iterator[Database]:
    database = Database.from_url(cli_url)
    yield database
    database.dispose()


def _runner(url: str) -> Cli:
    runner = CliRunner()
    env = {"REWARDMILES_DATABASE_URL": url, "REWARDMILES_SECRET_HASH_COST": HASH_COST}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture(scope="module")
def cli(cli_url: str) -> Cli:
    return _runner(cli_url)


def _flat(text: str) -> str:
    """Rich wraps long lines at the console width: compare with whitespace collapsed."""
    return " ".join(text.split())


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def _failed(result: Result, code: int = 1) -> str:
    """A clean failure (exit code, no traceback); returns stderr flattened."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return _flat(result.stderr)


def _sponsor_code() -> str:
    return "C" + secrets.token_hex(3).upper()


def _number() -> str:
    return "5" + "".join(secrets.choice("0123456789") for _ in range(10))


def _collector(cli_db: Database, number: str) -> tuple[str, int] | None:
    with cli_db.reader() as session:
        row = session.get(Collector, number)
        return (row.status, row.balance_miles) if row else None


def _show(cli: Cli, number: str) -> dict[str, object]:
    result = _ok(cli("collector", "show", number, "--json"))
    shown = json.loads(result.stdout)
    assert isinstance(shown, dict), shown
    return shown


@pytest.fixture
def empty_url(dialect: str, tmp_path: Path) -> Iterator[str]:
    name = f"rm_test_cli_{secrets.token_hex(4)}"
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / (name + '.db')}"
        return
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- db


def test_db_upgrade_on_a_current_database(cli: Cli) -> None:
    result = _ok(cli("db", "upgrade"))
    head = migrate.head_revision()
    assert _flat(result.stdout) == f"database at revision {head} (already current)"


def _assert_upgraded(result: Result, url: str) -> None:
    """`db upgrade` said it brought the database at `url` to the head, and it did."""
    assert _flat(_ok(result).stdout) == f"database at revision {migrate.head_revision()}"
    database = Database.from_url(url)
    try:
        assert migrate.is_current(database.engine)
    finally:
        database.dispose()


def test_db_upgrade_on_an_empty_database(empty_url: str) -> None:
    _assert_upgraded(_runner(empty_url)("db", "upgrade"), empty_url)


def test_any_command_migrates_an_empty_database_first(empty_url: str) -> None:
    code = _sponsor_code()
    _ok(_runner(empty_url)("sponsor", "add", code, "--name", "First"))
    database = Database.from_url(empty_url)
    try:
        assert migrate.is_current(database.engine)
        with database.reader() as session:
            assert session.get(Sponsor, code) is not None
    finally:
        database.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/d",
        "nonsense",
        "postgresql://rm:s3cret-pw@127.0.0.1:1,127.0.0.1:x/rm",
        "postgresql://rm:s3cret-pw@127.0.0.1:5432/rm?host=127.0.0.1,127.0.0.2&port=1,2,3",
    ],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve",)])
def test_unsupported_database_url_is_exit_2(url: str, command: tuple[str, ...]) -> None:
    stderr = _failed(_runner(url)(*command), 2)
    assert stderr.startswith("error: REWARDMILES_DATABASE_URL: ")
    assert "s3cret-pw" not in stderr


@pytest.mark.postgres_only
@pytest.mark.parametrize("form", FORMS)
def test_db_upgrade_gets_past_a_server_that_is_down_to_the_next(empty_url: str, form: str) -> None:
    _assert_upgraded(_runner(two_servers(empty_url, form))("db", "upgrade"), empty_url)


# --------------------------------------------------------------------------- sponsors


def test_sponsor_add_creates_an_active_sponsor_with_its_standard_offer(
    cli: Cli, cli_db: Database
) -> None:
    code = _sponsor_code()
    result = _ok(cli("sponsor", "add", code, "--name", "  Kenny's Hardware "))
    assert _flat(result.stdout) == f"sponsor {code} added (offer STANDARD)"
    with cli_db.reader() as session:
        sponsor = session.get(Sponsor, code)
        assert sponsor is not None
        assert (sponsor.name, sponsor.active) == ("Kenny's Hardware", True)
        offer = session.get(Offer, (code, "STANDARD"))
        assert offer is not None
        assert offer.active


def test_duplicate_sponsor_fails_with_a_clear_message(cli: Cli, cli_db: Database) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "First"))
    stderr = _failed(cli("sponsor", "add", code, "--name", "Second"))
    assert f"sponsor {code} already exists" in stderr
    with cli_db.reader() as session:
        sponsor = session.get(Sponsor, code)
        assert sponsor is not None
        assert sponsor.name == "First"


@pytest.mark.parametrize("code", ["ab", "A", "ABCDEFGHIJK", "AB-1", "AB 1", "ÄB"])
def test_bad_sponsor_code_fails(cli: Cli, cli_db: Database, code: str) -> None:
    stderr = _failed(cli("sponsor", "add", code, "--name", "Bad"))
    assert "2–10 uppercase letters or digits" in stderr
    with cli_db.reader() as session:
        assert session.get(Sponsor, code) is None


def test_blank_sponsor_name_fails(cli: Cli) -> None:
    stderr = _failed(cli("sponsor", "add", _sponsor_code(), "--name", "   "))
    assert "name must not be empty" in stderr


# --------------------------------------------------------------------------- partners


def test_partner_create_json_prints_only_the_credentials(cli: Cli, cli_db: Database) -> None:
    first, second = _sponsor_code(), _sponsor_code()
    _ok(cli("sponsor", "add", first, "--name", "A"))
    _ok(cli("sponsor", "add", second, "--name", "B"))
    result = _ok(cli("partner", "create", "--sponsor", first, "--sponsor", second, "--json"))

    assert result.stdout.endswith("\n")
    assert result.stdout.count("\n") == 1
    credentials = json.loads(result.stdout)
    assert set(credentials) == {"client_id", "client_secret"}
    assert re.fullmatch(r"rmc_[0-9a-f]{24}", credentials["client_id"])

    with cli_db.reader() as session:
        stored = auth.load_client(session, credentials["client_id"])
        assert stored is not None
        assert credentials["client_secret"] not in stored.secret_hash
    sponsors = auth.check_secret(stored, credentials["client_secret"], secret_hash_cost=10)
    assert sponsors == sorted([first, second])
    assert auth.check_secret(stored, "wrong", secret_hash_cost=10) is None


def test_partner_create_shows_the_secret_once_for_people(cli: Cli) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "A"))
    out = _flat(_ok(cli("partner", "create", "--sponsor", code)).stdout)
    assert re.search(r"client_id rmc_[0-9a-f]{24}", out)
    assert re.search(r"client_secret \S{40,}", out)
    assert f"sponsors {code}" in out
    assert "cannot be shown again" in out


def _partner_count(cli_db: Database) -> int:
    with cli_db.reader() as session:
        return int(session.execute(select(func.count()).select_from(PartnerClient)).scalar_one())


def test_partner_for_an_unknown_sponsor_fails_and_creates_nothing(
    cli: Cli, cli_db: Database
) -> None:
    known, unknown = _sponsor_code(), _sponsor_code()
    _ok(cli("sponsor", "add", known, "--name", "A"))
    before = _partner_count(cli_db)
    result = cli("partner", "create", "--sponsor", known, "--sponsor", unknown, "--json")
    stderr = _failed(result)
    assert f"unknown sponsor code(s): {unknown}" in stderr
    assert result.stdout == ""
    assert _partner_count(cli_db) == before


def test_partner_without_sponsor_is_a_usage_error(cli: Cli) -> None:
    _failed(cli("partner", "create", "--json"), 2)


# --------------------------------------------------------------------------- locations


def test_location_add_keeps_leading_zeros(cli: Cli, cli_db: Database) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "A"))
    result = _ok(cli("location", "add", "0042", "--sponsor", code))
    assert _flat(result.stdout) == f"location 0042 added for sponsor {code}"
    with cli_db.reader() as session:
        assert session.get(Location, (code, "0042")) is not None
        assert session.get(Location, (code, "42")) is None


def test_location_add_failures(cli: Cli) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "A"))
    _ok(cli("location", "add", "L1", "--sponsor", code))
    assert "location L1 already exists" in _failed(cli("location", "add", "L1", "--sponsor", code))
    missing = _sponsor_code()
    assert f"sponsor {missing} does not exist" in _failed(
        cli("location", "add", "L1", "--sponsor", missing)
    )
    for bad in ("has space", "ELEVENCHARS", ""):
        assert "1–10 printable ASCII" in _failed(cli("location", "add", bad, "--sponsor", code))


@pytest.mark.parametrize("location", ["[/x]", "[b]A1"])
def test_location_codes_with_brackets_are_echoed_verbatim(cli: Cli, location: str) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "A"))
    result = _ok(cli("location", "add", location, "--sponsor", code))
    assert f"location {location} added" in result.stdout


# --------------------------------------------------------------------------- collectors


@pytest.mark.parametrize(
    ("args", "status"),
    [
        ((), "ACTIVE"),
        (("--status", "ACTIVE"), "ACTIVE"),
        (("--status", "ON_HOLD"), "ON_HOLD"),
        (("--status", "CLOSED"), "CLOSED"),
    ],
    ids=["default", "active", "on-hold", "closed"],
)
def test_collector_add_with_each_status(
    cli: Cli, cli_db: Database, args: tuple[str, ...], status: str
) -> None:
    number = _number()
    result = _ok(cli("collector", "add", number, *args))
    assert _flat(result.stdout) == f"collector {number} added ({status})"
    assert _collector(cli_db, number) == (status, 0)
    assert _show(cli, number) == {"collectorNumber": number, "status": status, "balance": 0}


def test_collector_add_failures(cli: Cli, cli_db: Database) -> None:
    number = _number()
    _ok(cli("collector", "add", number))
    assert f"collector {number} already exists" in _failed(cli("collector", "add", number))
    assert "exactly 11 digits" in _failed(cli("collector", "add", "1234567890"))
    _failed(cli("collector", "add", _number(), "--status", "FROZEN"), 2)
    assert _collector(cli_db, "1234567890") is None


def _credit(cli_db: Database, number: str, miles: int) -> None:
    """Give a collector a balance the way the issuance service does: through the ledger."""
    with cli_db.unit_of_work() as session:
        sponsor = _sponsor_code()
        session.execute(
            insert(Sponsor).values(code=sponsor, name="S", active=True, created_at=data.now())
        )
        txn = str(uuid.uuid4())
        session.execute(
            insert(Transaction).values(
                id=txn,
                client_id="rmc_cli",
                sponsor_code=sponsor,
                endpoint="post_event",
                partner_transaction_id=data.txn_id(),
                collector_number=number,
                original_transaction_id=None,
                status="posted",
                http_status=200,
                error_code=None,
                fingerprint="0" * 64,
                partner_datetime=data.now(),
                processed_at=data.now(),
                request_json="{}",
                response_json="{}",
            )
        )
        session.execute(
            insert(IssuanceLine).values(
                transaction_id=txn,
                line_no=1,
                direction="credit",
                offer_code="STANDARD",
                location_code=None,
                miles=miles,
                status="posted",
                pending_reason=None,
                error_code=None,
                settled_at=data.now(),
            )
        )
        account = ledger.lock_collector(session, number)
        assert account is not None
        ledger.post(
            session, account, [ledger.Posting(txn, 1, number, sponsor, miles)], posted_at=data.now()
        )


def test_collector_show_json_has_an_integer_balance(cli: Cli, cli_db: Database) -> None:
    number = _number()
    _ok(cli("collector", "add", number, "--status", "ON_HOLD"))
    _credit(cli_db, number, 1234)
    result = _ok(cli("collector", "show", number, "--json"))
    assert result.stdout.count("\n") == 1
    shown = json.loads(result.stdout)
    assert shown == {"collectorNumber": number, "status": "ON_HOLD", "balance": 1234}
    assert type(shown["balance"]) is int


def test_collector_show_for_people(cli: Cli, cli_db: Database) -> None:
    number = _number()
    _ok(cli("collector", "add", number))
    _credit(cli_db, number, 8)
    out = _flat(_ok(cli("collector", "show", number)).stdout)
    assert out == f"collector {number} status ACTIVE balance 8 miles"


@pytest.mark.parametrize("as_json", [True, False])
def test_collector_show_unknown_fails(cli: Cli, as_json: bool) -> None:
    number = _number()
    result = cli("collector", "show", number, *(["--json"] if as_json else []))
    assert f"collector {number} not found" in _failed(result)
    assert result.stdout == ""


# --------------------------------------------------------------------------- import

SUMMARY = re.compile(
    r"rows read ([\d,]+); enrolled ([\d,]+); already enrolled \(unchanged\) ([\d,]+); "
    r"invalid ([\d,]+)"
)


def _summary(result: Result) -> tuple[int, int, int, int]:
    match = SUMMARY.search(_flat(result.stdout))
    assert match, result.stdout
    read, enrolled, unchanged, invalid = (int(g.replace(",", "")) for g in match.groups())
    return read, enrolled, unchanged, invalid


def _csv(tmp_path: Path, text: str, *, encoding: str = "utf-8") -> str:
    path = tmp_path / f"collectors-{secrets.token_hex(3)}.csv"
    path.write_text(text, encoding=encoding)
    return str(path)


def test_import_with_header_and_status_column(cli: Cli, cli_db: Database, tmp_path: Path) -> None:
    a, b, c, d = _number(), _number(), _number(), _number()
    path = _csv(tmp_path, f"collectorNumber,status\n{a},ACTIVE\n{b},ON_HOLD\n{c},closed\n{d},\n")
    result = _ok(cli("collector", "import", path))
    assert _summary(result) == (4, 4, 0, 0)
    assert _collector(cli_db, a) == ("ACTIVE", 0)
    assert _collector(cli_db, b) == ("ON_HOLD", 0)
    assert _collector(cli_db, c) == ("CLOSED", 0)
    assert _collector(cli_db, d) == ("ACTIVE", 0)


@pytest.mark.parametrize(
    ("header", "encoding"),
    [
        ("", "utf-8"),
        ("collector_number\n", "utf-8"),
        ("number\n", "utf-8"),
        ("collectorNumber\n", "utf-8-sig"),
    ],
    ids=["no-header", "snake-header", "number-header", "bom-header"],
)
def test_import_without_status_column_enrols_active(
    cli: Cli, cli_db: Database, tmp_path: Path, header: str, encoding: str
) -> None:
    numbers = [_number() for _ in range(3)]
    path = _csv(tmp_path, header + "\n".join(numbers) + "\n", encoding=encoding)
    result = _ok(cli("collector", "import", path))
    assert _summary(result) == (3, 3, 0, 0)
    for number in numbers:
        assert _collector(cli_db, number) == ("ACTIVE", 0)


def test_import_reports_bad_rows_with_line_numbers_and_loads_the_rest(
    cli: Cli, cli_db: Database, tmp_path: Path
) -> None:
    good = [_number() for _ in range(3)]
    frozen, extra = _number(), _number()
    lines = [
        "collectorNumber,status",  # 1
        good[0],  # 2
        "12345",  # 3
        f"{good[1]},ON_HOLD",  # 4
        "",  # 5 (blank: skipped, still counted as a line)
        "abcdefghijk",  # 6
        f"{frozen},FROZEN",  # 7
        f"{extra},ACTIVE,surplus",  # 8
        good[2],  # 9
    ]
    result = cli("collector", "import", _csv(tmp_path, "\n".join(lines) + "\n"))
    stderr = _failed(result)
    assert _summary(result) == (7, 3, 0, 4)
    reported = re.findall(r"line (\d+):", stderr)
    assert reported == ["3", "6", "7", "8"]
    assert "line 3: collector number '12345' must be exactly 11 digits" in stderr
    assert "line 7: status 'FROZEN' must be one of ACTIVE, ON_HOLD, CLOSED" in stderr
    assert "line 8: expected collectorNumber[,status]" in stderr
    assert _collector(cli_db, good[0]) == ("ACTIVE", 0)
    assert _collector(cli_db, good[1]) == ("ON_HOLD", 0)
    assert _collector(cli_db, good[2]) == ("ACTIVE", 0)
    assert _collector(cli_db, frozen) is None
    assert _collector(cli_db, extra) is None


def test_import_caps_the_error_listing(cli: Cli, tmp_path: Path) -> None:
    path = _csv(tmp_path, "".join(f"bad{i}\n" for i in range(60)))
    result = cli("collector", "import", path)
    stderr = _failed(result)
    assert _summary(result) == (60, 0, 0, 60)
    assert len(re.findall(r"line \d+:", stderr)) == 50
    assert "… and 10 more" in stderr


def test_import_reports_rows_that_look_like_markup(cli: Cli, tmp_path: Path) -> None:
    path = _csv(tmp_path, f"[/b]\n{_number()}\n12\n")
    result = cli("collector", "import", path)
    stderr = _failed(result)
    assert "line 1: collector number '[/b]'" in stderr
    assert "line 3: collector number '12'" in stderr


def test_reimport_is_idempotent_and_leaves_collectors_unchanged(
    cli: Cli, cli_db: Database, tmp_path: Path
) -> None:
    a, b, c = _number(), _number(), _number()
    _ok(cli("collector", "import", _csv(tmp_path, f"{a},ACTIVE\n{b},ON_HOLD\n")))
    _credit(cli_db, a, 50)

    again = _ok(cli("collector", "import", _csv(tmp_path, f"{a},CLOSED\n{b},ACTIVE\n{c}\n")))
    assert _summary(again) == (3, 1, 2, 0)
    assert _collector(cli_db, a) == ("ACTIVE", 50)
    assert _collector(cli_db, b) == ("ON_HOLD", 0)
    assert _collector(cli_db, c) == ("ACTIVE", 0)

    same = _ok(cli("collector", "import", _csv(tmp_path, f"{a},CLOSED\n{b},ACTIVE\n{c}\n")))
    assert _summary(same) == (3, 0, 3, 0)


def test_import_counts_a_number_repeated_in_the_file_once(
    cli: Cli, cli_db: Database, tmp_path: Path
) -> None:
    number = _number()
    result = _ok(cli("collector", "import", _csv(tmp_path, f"{number},ON_HOLD\n{number},CLOSED\n")))
    assert _summary(result) == (2, 1, 1, 0)
    assert _collector(cli_db, number) == ("ON_HOLD", 0)


def test_import_commits_each_batch_on_its_own(
    cli: Cli, cli_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of `IMPORT_BATCH_ROWS`, each in a unit of work of its own: an import interrupted in
    its third batch keeps the first two, and loses only the third."""
    numbers = [_number() for _ in range(5)]
    monkeypatch.setattr(collectors, "IMPORT_BATCH_ROWS", 2)
    enrol = collectors.enrol_batch
    batches: list[list[str]] = []

    def enrol_then_stop(
        session: Session,
        batch: list[tuple[str, str]],
        now: datetime,
        report: collectors.ImportReport,
    ) -> None:
        batches.append([number for number, _ in batch])
        enrol(session, batch, now, report)
        if len(batches) == 3:
            raise RuntimeError("interrupted")

    monkeypatch.setattr(collectors, "enrol_batch", enrol_then_stop)
    result = cli("collector", "import", _csv(tmp_path, "\n".join(numbers) + "\n"))
    assert isinstance(result.exception, RuntimeError), result.exception
    assert batches == [numbers[0:2], numbers[2:4], numbers[4:5]]
    assert [_collector(cli_db, n) for n in numbers] == [("ACTIVE", 0)] * 4 + [None]


def test_import_of_a_missing_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    _failed(cli("collector", "import", str(tmp_path / "nope.csv")), 2)


# --------------------------------------------------------------------------- ledger


def test_ledger_verify_is_ok_on_a_clean_database(cli: Cli, cli_db: Database) -> None:
    number = _number()
    _ok(cli("collector", "add", number))
    _credit(cli_db, number, 5)
    out = _flat(_ok(cli("ledger", "verify")).stdout)
    assert re.search(r"entries [\d,]+; collectors [\d,]+; entries sum 0", out)
    assert "ledger OK" in out


def test_ledger_verify_fails_on_a_broken_ledger(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    url = database_factory.create(dialect)
    database = Database.from_url(url)
    try:
        number = _number()
        with database.unit_of_work() as session:
            session.add(
                Collector(
                    number=number,
                    status="ACTIVE",
                    balance_miles=77,  # no entries behind it
                    created_at=data.now(),
                    updated_at=data.now(),
                )
            )
    finally:
        database.dispose()
    result = _runner(url)("ledger", "verify")
    stderr = _failed(result)
    assert f"collector {number}: balance 77 but entries sum to 0" in stderr
    assert "ledger OK" not in result.stdout


def test_ledger_verify_reports_decisions_the_books_contradict(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    """A balance below zero under the `reject` policy, and a transaction `pending` whose every
    line has settled: both balanced in the ledger, both reported."""
    url = database_factory.create(dialect)
    database = Database.from_url(url)
    try:
        number = data.new_collector(database)
        sponsor = data.new_sponsor(database)
        body = data.event_body(sponsor, number, miles=3)
        assert call(database, Settings(), body, reverse=True).status == 200  # ALLOW: -3, then +1
        transaction = call(database, Settings(), data.event_body(sponsor, number, miles=1))
        with database.unit_of_work() as session:
            session.execute(
                update(Transaction)
                .where(Transaction.id == transaction.transaction_id)
                .values(status="pending")
            )
    finally:
        database.dispose()
    env = {
        "REWARDMILES_DATABASE_URL": url,
        "REWARDMILES_NEGATIVE_BALANCE_POLICY": "reject",
    }
    result = CliRunner().invoke(app, ["ledger", "verify"], env=env)
    stderr = _failed(result)
    assert (
        f"collector {number}: balance -2 is below zero, which the negative-balance policy "
        "'reject' forbids"
    ) in stderr
    assert (
        f"transaction {transaction.transaction_id}: status pending but no line of it is" in stderr
    )
    assert "ledger OK" not in result.stdout


# --------------------------------------------------------------------------- pending review


def _review_line(cli_db: Database) -> tuple[str, str, str]:
    """(sponsor, transaction id, line id) of a line held for an operator's review."""
    sponsor = data.new_sponsor(cli_db, review_threshold_miles=100)
    number = data.new_collector(cli_db)
    outcome = call(cli_db, Settings(), data.event_body(sponsor, number, miles=500))
    assert outcome.status == 202, outcome.body
    transaction_id = str(outcome.transaction_id)
    return sponsor, transaction_id, f"{transaction_id}:0"


def _rejected_code(cli_db: Database, sponsor: str, transaction_id: str) -> object:
    with cli_db.reader() as session:
        view = lookups.lookup(session, transaction_id, (sponsor,))
    assert view is not None
    (line,) = view["issuances"]
    assert line["status"] == "REJECTED", line
    return line.get("errorCode")


def test_pending_reject_without_a_reason_is_review_rejected(cli: Cli, cli_db: Database) -> None:
    sponsor, transaction_id, line = _review_line(cli_db)
    with cli_db.unit_of_work() as session:
        webhooks.add_webhook(
            session,
            sponsor,
            "http://127.0.0.1:9/hook",
            clock.utc_now(),
            TEST_BOX,
            allow_private_targets=True,
        )

    out = _flat(_ok(cli("pending", "reject", line)).stdout)

    assert f"line {line} rejected (REVIEW_REJECTED)" in out
    assert _rejected_code(cli_db, sponsor, transaction_id) == "REVIEW_REJECTED"
    with cli_db.reader() as session:
        payloads = session.scalars(
            select(WebhookDelivery.payload_json).where(
                WebhookDelivery.transaction_id == transaction_id
            )
        ).all()
    assert len(payloads) == 1
    event = json.loads(payloads[0])
    assert event["data"]["issuances"][0]["errorCode"] == "REVIEW_REJECTED"


def test_pending_reject_takes_another_catalogue_code(cli: Cli, cli_db: Database) -> None:
    sponsor, transaction_id, line = _review_line(cli_db)
    _ok(cli("pending", "reject", line, "--reason", "OFFER_INACTIVE"))
    assert _rejected_code(cli_db, sponsor, transaction_id) == "OFFER_INACTIVE"


def test_pending_reject_refuses_a_code_not_in_the_catalogue(cli: Cli, cli_db: Database) -> None:
    _, transaction_id, line = _review_line(cli_db)
    stderr = _failed(cli("pending", "reject", line, "--reason", "NOT_A_CODE"), 2)
    assert "NOT_A_CODE" in stderr
    assert "not an error code of the catalogue" in stderr
    assert "REVIEW_REJECTED" in stderr  # the message names the default
    with cli_db.reader() as session:
        status = session.scalar(
            select(IssuanceLine.status).where(IssuanceLine.transaction_id == transaction_id)
        )
    assert status == "pending"


def test_pending_reject_help_suggests_review_rejected() -> None:
    result = CliRunner().invoke(app, ["pending", "reject", "--help"])
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert "REVIEW_REJECTED" in text
    assert "OFFER_INACTIVE" not in text


# --------------------------------------------------------------------------- reports


TORONTO = "America/Toronto"
# The CLI's own clock pinned (REWARDMILES_TEST_CLOCK) at each side of midnight in Toronto: the
# current Transaction Day is the pinned one, whatever the hour the suite runs.
PINNED_CLOCKS = ["2026-12-15T23:59:59-05:00", "2026-12-16T00:00:01-05:00", "2026-12-16T02:00:00Z"]


@pytest.fixture(params=PINNED_CLOCKS)
def pinned_cli(request: pytest.FixtureRequest, cli_url: str) -> Iterator[tuple[Cli, datetime]]:
    runner = CliRunner()
    env = {
        "REWARDMILES_DATABASE_URL": cli_url,
        "REWARDMILES_SECRET_HASH_COST": HASH_COST,
        "REWARDMILES_TEST_CLOCK": TEST_CLOCK_PREFIX + request.param,
    }

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    try:
        yield invoke, datetime.fromisoformat(request.param).astimezone(UTC)
    finally:
        clock.freeze_for_tests(None)  # the CLI ran in this process: give it the real time back


def _posted_at(db: Database, sponsor: str, moment: datetime) -> dict[str, Any]:
    number = data.new_collector(db)
    body = data.event_body(sponsor, number, transactionDateTime=data.iso(moment))
    assert call(db, Settings(), body, now=moment).status == 200
    return body


def test_report_audit_defaults_to_the_current_transaction_day(
    pinned_cli: tuple[Cli, datetime], cli_db: Database
) -> None:
    cli, moment = pinned_cli
    sponsor = data.new_sponsor(cli_db)
    body = _posted_at(cli_db, sponsor, moment)
    _posted_at(cli_db, sponsor, moment - timedelta(days=1))  # yesterday's is not reported

    result = _ok(cli("report", "audit", "--sponsor", sponsor, "--format", "json"))

    report = json.loads(result.stdout)
    assert report["transactionDay"] == clock.transaction_day_of(moment, TORONTO).isoformat()
    assert report["timeZone"] == TORONTO
    assert [t["partnerTransactionId"] for t in report["transactions"]] == [
        body["clientTransactionId"]
    ]
    assert "no transactions" not in result.stderr


def test_report_reconcile_defaults_to_the_current_transaction_day(
    pinned_cli: tuple[Cli, datetime], cli_db: Database
) -> None:
    cli, moment = pinned_cli
    sponsor = data.new_sponsor(cli_db)
    body = _posted_at(cli_db, sponsor, moment)
    earlier = _posted_at(cli_db, sponsor, moment - timedelta(days=1))

    result = _ok(cli("report", "reconcile", "--sponsor", sponsor))

    today = clock.transaction_day_of(moment, TORONTO).isoformat()
    assert f"H2%%{sponsor}%%{today}%%{TORONTO}%%" in result.stdout
    assert body["clientTransactionId"] in result.stdout
    assert earlier["clientTransactionId"] not in result.stdout


@pytest.mark.parametrize(
    ("command", "what"), [("audit", "transactions"), ("reconcile", "ledger postings")]
)
def test_a_report_of_an_empty_day_says_so_on_stderr(
    cli: Cli, cli_db: Database, command: str, what: str
) -> None:
    sponsor = data.new_sponsor(cli_db)
    result = _ok(cli("report", command, "--sponsor", sponsor, "--date", "2026-11-30"))
    assert f"no {what} on Transaction Day 2026-11-30 ({TORONTO})" in _flat(result.stderr)


def test_a_report_of_an_unknown_sponsor_fails(cli: Cli) -> None:
    stderr = _failed(cli("report", "audit", "--sponsor", "NOSUCH", "--date", "2026-11-30"))
    assert "sponsor NOSUCH does not exist" in stderr


@pytest.mark.parametrize(
    "command", [("report", "audit"), ("report", "reconcile"), ("offer", "add")]
)
def test_every_date_option_names_the_program_time_zone(command: tuple[str, str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    text = _flat(result.stdout)
    assert "program time zone" in text
    assert "REWARDMILES_PROGRAM_TIME_ZONE" in text


# --------------------------------------------------------------------------- serve


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """`serve` up to the point where uvicorn would take over; records uvicorn.run's arguments."""
    import uvicorn

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    return calls


def test_serve_says_where_it_listens_what_database_and_whether_the_worker_runs(
    empty_url: str, served: list[dict[str, object]]
) -> None:
    url = empty_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    result = _ok(_runner(url)("serve", "--port", "8123"))

    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "http://127.0.0.1:8123" in line
    assert "s3cret-pw" not in line
    if "sqlite" in url:
        assert url in line
    else:
        assert url.replace("s3cret-pw", "***") in line
    assert "settlement worker on" in line
    assert served == [{"host": "127.0.0.1", "port": 8123, **UVICORN_OPTIONS}]


def test_serve_without_the_worker_says_so(
    empty_url: str, served: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REWARDMILES_EMBEDDED_WORKER", raising=False)
    try:
        line = _flat(_ok(_runner(empty_url)("serve", "--no-worker")).stderr)
    finally:
        os.environ.pop("REWARDMILES_EMBEDDED_WORKER", None)  # `serve --no-worker` sets it
    assert "http://127.0.0.1:8000" in line
    assert "settlement worker off" in line


def test_demo_banner_shows_the_statuses_the_database_holds(
    empty_url: str, served: list[dict[str, object]]
) -> None:
    cli = _runner(empty_url)
    first = _flat(_ok(cli("serve", "--demo")).stderr)
    assert "80085102051 ON_HOLD" in first
    _ok(cli("collector", "set-status", "80085102051", "ACTIVE"))
    _ok(cli("collector", "set-status", "80085102069", "ACTIVE"))

    again = _flat(_ok(cli("serve", "--demo")).stderr)

    assert "80085102051 ACTIVE" in again
    assert "80085102069 ACTIVE" in again
    assert "ON_HOLD" not in again
    assert "CLOSED" not in again


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://rm:s3cret-pw@127.0.0.1:1/rm",
        "postgresql://rm:s3cret-pw@127.0.0.1:1,127.0.0.1:2/rm",
        "sqlite:////no/such/dir/rewardmiles.db",
    ],
)
@pytest.mark.parametrize("command", [("serve",), ("db", "upgrade")])
def test_an_unreachable_database_is_one_clear_line(url: str, command: tuple[str, ...]) -> None:
    result = _runner(url)(*command)
    stderr = _failed(result, 2)
    assert stderr.startswith(f"error: cannot open the database {shown_url(url)}: ")
    assert "s3cret-pw" not in stderr
    assert "Traceback" not in stderr


@pytest.mark.postgres_only
@pytest.mark.parametrize("form", FORMS)
def test_serve_names_every_server_of_the_database_with_the_password_masked(
    empty_url: str, served: list[dict[str, object]], form: str
) -> None:
    url = two_servers(empty_url.replace("postgres@", "postgres:s3cret-pw@"), form)
    result = _ok(_runner(url)("serve", "--port", "8123"))

    line = _flat(result.stderr)
    assert "s3cret-pw" not in line
    assert f"database {url.replace('s3cret-pw', '***')};" in line
    assert len(served) == 1


# --------------------------------------------------------------------------- hostile content


def test_batch_import_refuses_a_line_over_the_limit_by_number_and_goes_on(
    cli: Cli, cli_db: Database, tmp_path: Path
) -> None:
    sponsor = data.new_sponsor(cli_db)
    collector = data.new_collector(cli_db)
    row = f"POST/EVENT,{{}},{collector},2026-11-30T04:10:41Z,5\n"
    log = tmp_path / "partner-log.csv"
    log.write_text(
        "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
        + row.format("first")
        + "POST/EVENT,"
        + "x" * (2 * 1024 * 1024)
        + "\n"
        + row.format("third")
    )
    result = _ok(cli("batch", "import", str(log), "--sponsor", sponsor, "--json"))
    view = json.loads(result.stdout)
    by_line = {r["lineNo"]: r for r in view["records"]}
    assert by_line[3]["outcome"] == "invalid"
    assert by_line[3]["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert (by_line[2]["partnerTransactionId"], by_line[4]["partnerTransactionId"]) == (
        "first",
        "third",
    )


def test_batch_import_for_an_unknown_sponsor_fails_and_records_nothing(
    cli: Cli, cli_db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "partner-log.csv"
    log.write_text("transactionType,partnerTransactionId,collectorNumber,transactionDateTime\n")
    with cli_db.reader() as session:
        batches_before = session.scalar(select(func.count()).select_from(Batch))
    stderr = _failed(cli("batch", "import", str(log), "--sponsor", "NOSUCH"))
    assert "sponsor NOSUCH does not exist" in stderr
    with cli_db.reader() as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == batches_before


FORMULAS = ('=HYPERLINK("http://x.test","y")', "-2+3", "@SUM(A1)", "+1", "=1+2")


def _formula_day(cli_db: Database) -> tuple[str, str, list[dict[str, object]]]:
    """A sponsor's day of requests whose partner-controlled text starts like a formula."""
    sponsor = data.new_sponsor(cli_db)
    number = data.new_collector(cli_db)
    bodies = [
        data.event_body(sponsor, number, clientTransactionId=tid, miles=5) for tid in FORMULAS[:3]
    ]
    for body in bodies:
        assert call(cli_db, Settings(), body).status == 200
    rejected = data.event_body(
        sponsor, data.new_collector(cli_db, "CLOSED"), clientTransactionId="@cmd", miles=5
    )
    rejected["issuances"][0]["locationCode"] = "=1+2"
    assert call(cli_db, Settings(), rejected).status == 400
    return sponsor, number, [*bodies, rejected]


def test_report_audit_csv_neutralises_formula_cells_and_json_stays_exact(
    cli: Cli, cli_db: Database
) -> None:
    sponsor, _, bodies = _formula_day(cli_db)
    csv_text = _ok(cli("report", "audit", "--sponsor", sponsor)).stdout
    rows = list(csv.reader(io.StringIO(csv_text.split("\n", 1)[1])))
    header, rows = rows[0], rows[1:]
    ids = {row[header.index("partnerTransactionId")] for row in rows}
    assert ids == {"'" + data.text_field(b, "clientTransactionId") for b in bodies}
    assert {row[header.index("locationCode")] for row in rows} >= {"'=1+2"}
    assert {row[header.index("milesAmount")] for row in rows} == {"5"}

    report = json.loads(
        _ok(cli("report", "audit", "--sponsor", sponsor, "--format", "json")).stdout
    )
    assert {t["partnerTransactionId"] for t in report["transactions"]} == {
        b["clientTransactionId"] for b in bodies
    }
    assert "=1+2" in {t["issuances"][0]["locationCode"] for t in report["transactions"]}


def test_report_audit_masks_collectors_in_both_formats_unless_unmasked(
    cli: Cli, cli_db: Database
) -> None:
    sponsor, number, _ = _formula_day(cli_db)
    masked = f"{number[:3]}*****{number[-3:]}"
    for fmt in ("csv", "json"):
        plain = _ok(cli("report", "audit", "--sponsor", sponsor, "--format", fmt)).stdout
        assert number not in plain, fmt
        assert masked in plain, fmt
        full = _ok(cli("report", "audit", "--sponsor", sponsor, "--format", fmt, "--unmask"))
        assert number in full.stdout, fmt


# --------------------------------------------------------------------------- catalogue audit


def _audited(cli_db: Database, entity_id: str) -> list[tuple[str, str, str | None, str | None]]:
    with cli_db.reader() as session:
        return [
            (row.action, row.actor, row.before_json, row.after_json)
            for row in session.execute(
                select(OperatorAuditEntry)
                .where(OperatorAuditEntry.entity_id == entity_id)
                .order_by(OperatorAuditEntry.id)
            ).scalars()
        ]


def test_catalogue_changes_by_the_cli_are_audited_as_cli_at_host(
    cli: Cli, cli_db: Database
) -> None:
    code = _sponsor_code()
    _ok(cli("sponsor", "add", code, "--name", "Audited"))
    _ok(cli("sponsor", "set", code, "--review-threshold", "700"))
    _ok(cli("location", "add", "0042", "--sponsor", code))
    _ok(cli("offer", "add", "AUD", "--sponsor", code, "--description", "x"))
    _ok(cli("offer", "disable", "AUD", "--sponsor", code))
    host = f"cli@{socket.gethostname()}"
    sponsor = _audited(cli_db, code)
    assert [(a, actor) for a, actor, _, _ in sponsor] == [
        ("sponsor.add", host),
        ("sponsor.change", host),
    ]
    assert '"reviewThresholdMiles":null' in (sponsor[1][2] or "")
    assert '"reviewThresholdMiles":700' in (sponsor[1][3] or "")
    assert [a for a, *_ in _audited(cli_db, f"{code}/0042")] == ["location.add"]
    assert [a for a, *_ in _audited(cli_db, f"{code}/AUD")] == ["offer.put", "offer.disable"]
    # A refused change writes no entry.
    _failed(cli("sponsor", "add", code, "--name", "Again"))
    assert len(_audited(cli_db, code)) == 2


def test_webhook_retry_sends_a_failed_delivery_again_and_refuses_others(
    cli: Cli, cli_db: Database
) -> None:
    sponsor = data.new_sponsor(cli_db)
    with cli_db.unit_of_work() as session:
        webhook_id, _ = webhooks.add_webhook(
            session,
            sponsor,
            "http://127.0.0.1:9/hook",
            clock.utc_now(),
            TEST_BOX,
            allow_private_targets=True,
        )
    ids = {}
    for status in (DeliveryStatus.FAILED, DeliveryStatus.DELIVERED):
        ids[status] = uuid.uuid4().hex
        with cli_db.unit_of_work() as session:
            session.add(
                WebhookDelivery(
                    id=ids[status],
                    webhook_id=webhook_id,
                    event_type=EventType.TRANSACTION_SETTLED,
                    transaction_id="t",
                    payload_json="{}",
                    status=status,
                    attempts=8,
                    next_attempt_at=clock.utc_now(),
                    last_error="refused",
                    created_at=clock.utc_now(),
                )
            )
    failed, delivered = ids[DeliveryStatus.FAILED], ids[DeliveryStatus.DELIVERED]
    out = _flat(_ok(cli("webhook", "retry", failed)).stdout)
    assert out == f"delivery {failed} will be sent again (failed after 8 attempts)"
    with cli_db.reader() as session:
        row = session.get(WebhookDelivery, failed)
        assert row is not None
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert "only a failed delivery is retried" in _failed(cli("webhook", "retry", delivered))
    assert "only a failed delivery is retried" in _failed(cli("webhook", "retry", failed))
    assert f"no delivery {delivered}x" in _failed(cli("webhook", "retry", delivered + "x"))
    assert [a for a, *_ in _audited(cli_db, failed)] == ["delivery.retry"]
