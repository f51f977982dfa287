"""The CLI's adjustments and history: `collector adjust`, `collector history`, `collector
set-status --note`, `report adjustments`, in-process against a database of this module's own."""

from __future__ import annotations

import csv
import io
import json
import secrets
import socket
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from rewardmiles import clock
from rewardmiles.cli.main import app
from rewardmiles.db.engine import Database
from rewardmiles.db.models import OperatorAuditEntry
from rewardmiles.ledger.verify import verify
from tests.conftest import DatabaseFactory

Cli = Callable[..., Result]
CLI_ACTOR = f"cli@{socket.gethostname()}"


@pytest.fixture(scope="module")
def cli_url(dialect: str, database_factory: DatabaseFactory) -> Iterator[str]:
    url = database_factory.create(dialect)
    yield url
    database = Database.from_url(url)
    try:
        with database.snapshot_reader() as session:
            report = verify(session)
    finally:
        database.dispose()
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def cli_db(cli_url: str) -> Iterator[Database]:
    database = Database.from_url(cli_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def cli(cli_url: str) -> Cli:
    runner = CliRunner()
    env = {"REWARDMILES_DATABASE_URL": cli_url, "REWARDMILES_NEGATIVE_BALANCE_POLICY": "reject"}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def _failed(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return " ".join(result.stderr.split())


def _collector(cli: Cli, status: str = "ACTIVE") -> str:
    number = "6" + "".join(secrets.choice("0123456789") for _ in range(10))
    _ok(cli("collector", "add", number, "--status", status))
    return number


def _adjust(cli: Cli, number: str, miles: int, *extra: str) -> dict[str, object]:
    result = _ok(
        cli(
            "collector", "adjust", number, "--miles", str(miles), "--reason", "GOODWILL",
            "--note", "from the desk", "--json", *extra,
        )
    )  # fmt: skip
    out: dict[str, object] = json.loads(result.stdout)
    return out


def _balance(cli: Cli, number: str) -> int:
    return int(json.loads(_ok(cli("collector", "show", number, "--json")).stdout)["balance"])


def test_adjust_posts_and_is_audited_as_the_cli(cli: Cli, cli_db: Database) -> None:
    number = _collector(cli)
    made = _adjust(cli, number, 1500)  # above an agent's limit: the CLI acts as admin
    assert made["miles"] == 1500
    assert made["balanceAfter"] == 1500
    assert made["operator"] == CLI_ACTOR
    assert _balance(cli, number) == 1500
    with cli_db.reader() as session:
        actions = session.execute(
            select(OperatorAuditEntry.actor, OperatorAuditEntry.action, OperatorAuditEntry.note)
            .where(OperatorAuditEntry.entity_id == number)
            .order_by(OperatorAuditEntry.id)
        ).all()
    assert [tuple(a) for a in actions] == [(CLI_ACTOR, "collector.adjust", "from the desk")]


def test_adjust_with_a_key_is_made_once(cli: Cli) -> None:
    number = _collector(cli)
    key = "cli-" + secrets.token_hex(6)
    first = _adjust(cli, number, 40, "--idempotency-key", key)
    assert _adjust(cli, number, 40, "--idempotency-key", key) == first
    assert _balance(cli, number) == 40
    reused = cli(
        "collector", "adjust", number, "--miles", "41", "--reason", "GOODWILL",
        "--note", "from the desk", "--idempotency-key", key,
    )  # fmt: skip
    assert "Idempotency-Key was already used" in _failed(reused)
    text = _ok(
        cli(
            "collector", "adjust", number, "--miles", "40", "--reason", "GOODWILL",
            "--note", "from the desk", "--idempotency-key", key,
        )
    ).stdout  # fmt: skip
    assert "replayed" in text


def test_adjust_refusals_exit_with_their_message(cli: Cli) -> None:
    number = _collector(cli)
    debit = cli(
        "collector", "adjust", number, "--miles", "-1", "--reason", "CORRECTION", "--note", "x"
    )
    assert "below zero" in _failed(debit)  # the policy is reject here
    zero = cli("collector", "adjust", number, "--miles", "0", "--reason", "GOODWILL", "--note", "x")
    assert "non-zero" in _failed(zero)
    unknown = cli(
        "collector", "adjust", "00000000000", "--miles", "1", "--reason", "GOODWILL", "--note", "x"
    )
    assert "No collector 00000000000" in _failed(unknown)
    held = _collector(cli, "ON_HOLD")
    refused = cli(
        "collector", "adjust", held, "--miles", "1", "--reason", "GOODWILL", "--note", "x"
    )
    assert "ON_HOLD" in _failed(refused)
    bad_reason = cli("collector", "adjust", number, "--miles", "1", "--reason", "X", "--note", "x")
    _failed(bad_reason, 2)
    assert _balance(cli, number) == 0


def test_history_lists_newest_first_with_the_balance_after_each(cli: Cli) -> None:
    number = _collector(cli)
    for miles in (10, 20, -5):
        _adjust(cli, number, miles, *(["--idempotency-key", secrets.token_hex(4)]))
    shown = json.loads(_ok(cli("collector", "history", number, "--json")).stdout)
    assert [i["miles"] for i in shown["items"]] == [-5, 20, 10]
    assert [i["balanceAfter"] for i in shown["items"]] == [25, 30, 10]
    assert {i["endpoint"] for i in shown["items"]} == {"adjustment"}
    assert shown["more"] is False
    two = json.loads(_ok(cli("collector", "history", number, "--limit", "2", "--json")).stdout)
    assert [i["balanceAfter"] for i in two["items"]] == [25, 30]
    assert two["more"] is True
    text = _ok(cli("collector", "history", number, "--limit", "2"))
    assert text.stdout.count("adjustment") == 2
    assert "--limit for more" in text.stderr
    assert "not found" in _failed(cli("collector", "history", "00000000000"))


def test_set_status_is_audited_with_its_note(cli: Cli, cli_db: Database) -> None:
    number = _collector(cli)
    _ok(cli("collector", "set-status", number, "ON_HOLD", "--note", "chargeback"))
    with cli_db.reader() as session:
        row = session.execute(
            select(
                OperatorAuditEntry.actor, OperatorAuditEntry.action, OperatorAuditEntry.note
            ).where(OperatorAuditEntry.entity_id == number)
        ).one()
    assert tuple(row) == (CLI_ACTOR, "collector.set_status", "chargeback")


def test_report_adjustments_of_the_day_in_both_formats(cli: Cli) -> None:
    number = _collector(cli)
    made = _adjust(cli, number, 77)
    today = clock.transaction_day_of(clock.utc_now(), "America/Toronto").isoformat()
    rows = json.loads(_ok(cli("report", "adjustments", "--date", today, "--format", "json")).stdout)
    assert made in rows
    table = list(
        csv.DictReader(io.StringIO(_ok(cli("report", "adjustments", "--date", today)).stdout))
    )
    [row] = [r for r in table if r["id"] == made["id"]]
    assert (row["collectorNumber"], row["miles"], row["reason"]) == (number, "77", "GOODWILL")
    empty = _ok(cli("report", "adjustments", "--date", "2001-01-01", "--format", "json"))
    assert json.loads(empty.stdout) == []
    assert "no adjustments" in empty.stderr
