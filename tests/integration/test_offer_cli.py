"""`rewardmiles offer add|list|disable|import`, driven in-process against a database of this
module's own (docs/offers.md, "Managing offers")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from rewardmiles.cli.main import app
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Offer
from tests.conftest import DatabaseFactory
from tests.support import data

Cli = Callable[..., Result]
BASE = {"type": "base", "miles": 1, "perDollars": 20}
PRODUCE = {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2}


@pytest.fixture(scope="module")
def cli_url(dialect: str, database_factory: DatabaseFactory) -> str:
    return database_factory.create(dialect)


@pytest.fixture(scope="module")
def cli_db(cli_url: str) -> Iterator[Database]:
    database = Database.from_url(cli_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def cli(cli_url: str) -> Cli:
    runner = CliRunner()
    env = {"REWARDMILES_DATABASE_URL": cli_url}

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def sponsor(cli_db: Database) -> str:
    """A fresh sponsor (with its STANDARD offer, no rule) for each test."""
    return data.new_sponsor(cli_db)


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


def _offers(cli: Cli, sponsor: str) -> dict[str, dict[str, Any]]:
    result = _ok(cli("offer", "list", "--sponsor", sponsor, "--json"))
    return {o["code"]: o for o in json.loads(result.stdout)}


def _row(cli_db: Database, sponsor: str, code: str) -> Offer | None:
    with cli_db.reader() as session:
        row = session.get(Offer, (sponsor, code))
        if row is not None:
            session.expunge(row)
        return row


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- offer add


def test_offer_add_with_a_rule_stores_it_normalised(cli: Cli, sponsor: str) -> None:
    result = _ok(
        cli(
            "offer",
            "add",
            "PRODUCE",
            "--sponsor",
            sponsor,
            "--rule",
            json.dumps(PRODUCE),
            "--description",
            "5 miles per produce item",
            "--valid-from",
            "2026-12-01",
            "--valid-to",
            "2026-12-31",
            "--location",
            "0099",
            "--location",
            "0037",
            "--offer-id",
            "501",
        )
    )

    assert _flat(result.stdout) == f"offer PRODUCE added for sponsor {sponsor}"
    listed = _offers(cli, sponsor)
    assert listed["PRODUCE"] == {
        "sponsorCode": sponsor,
        "code": "PRODUCE",
        "description": "5 miles per produce item",
        "active": True,
        "validFrom": "2026-12-01",
        "validTo": "2026-12-31",
        "offerId": "501",
        "locations": ["0037", "0099"],
        "rule": {
            "type": "item",
            "items": [],
            "categories": [],
            "departments": ["produce"],
            "milesPerUnit": 5,
            "miles": None,
            "perDollars": None,
            "minQuantity": 2,
            "minSpend": "0",
            "capMiles": None,
        },
    }


def test_offer_add_without_a_rule_is_partner_calculated_only(cli: Cli, sponsor: str) -> None:
    _ok(cli("offer", "add", "BONUS", "--sponsor", sponsor))

    offer = _offers(cli, sponsor)["BONUS"]
    assert (offer["rule"], offer["active"], offer["validFrom"], offer["locations"]) == (
        None,
        True,
        None,
        None,
    )
    text = _flat(_ok(cli("offer", "list", "--sponsor", sponsor)).stdout)
    assert f"{sponsor} BONUS active … to … (partner-calculated only)" in text


@pytest.mark.parametrize(
    "rule",
    ['{"type": "base", "miles": 1,', "not json", "[1, 2"],
    ids=["truncated", "text", "bracket"],
)
def test_offer_add_with_rule_that_is_not_json_is_exit_2(
    cli: Cli, cli_db: Database, sponsor: str, rule: str
) -> None:
    stderr = _failed(cli("offer", "add", "BAD", "--sponsor", sponsor, "--rule", rule), 2)
    assert "invalid --rule or date" in stderr
    assert _row(cli_db, sponsor, "BAD") is None


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"type": "item", "milesPerUnit": 5}, "names items, categories or departments"),
        (
            {"type": "item", "items": ["a"], "milesPerUnit": 5, "miles": 1, "perDollars": 5},
            "give either milesPerUnit, or miles with perDollars",
        ),
        ({"type": "item", "items": ["a"]}, "give either milesPerUnit, or miles with perDollars"),
        ({"type": "base", "miles": 0, "perDollars": 20}, "base.miles"),
        ({"type": "base", "miles": 1, "perDollars": -5}, "base.perDollars"),
        ({"type": "base", "miles": 1, "perDollars": 20, "capMiles": 0}, "base.capMiles"),
        ({"type": "coupon", "coupon": "X", "miles": -1}, "coupon.miles"),
        ({"type": "bonus", "miles": 1}, "does not match any of the expected tags"),
        ({**BASE, "perDollar": 20}, "base.perDollar: Extra inputs are not permitted"),
        ([BASE], "rule"),
    ],
)
def test_offer_add_with_an_invalid_rule_fails_with_a_clear_message(
    cli: Cli, cli_db: Database, sponsor: str, rule: Any, message: str
) -> None:
    stderr = _failed(cli("offer", "add", "BAD", "--sponsor", sponsor, "--rule", json.dumps(rule)))
    assert "invalid rule:" in stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert _row(cli_db, sponsor, "BAD") is None


def test_offer_add_of_an_existing_code_fails_and_keeps_the_first(
    cli: Cli, cli_db: Database, sponsor: str
) -> None:
    _ok(cli("offer", "add", "BASE", "--sponsor", sponsor, "--rule", json.dumps(BASE)))

    stderr = _failed(
        cli(
            "offer",
            "add",
            "BASE",
            "--sponsor",
            sponsor,
            "--rule",
            '{"type": "base", "miles": 9, "perDollars": 1}',
        )
    )
    standard = _failed(cli("offer", "add", "STANDARD", "--sponsor", sponsor))

    assert f"offer BASE already exists for sponsor {sponsor}" in stderr
    assert f"offer STANDARD already exists for sponsor {sponsor}" in standard
    assert _offers(cli, sponsor)["BASE"]["rule"]["miles"] == 1


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["bad-code"], "must be 1–8 uppercase letters or digits", 1),
        (["TOOLONGCODE"], "must be 1–8 uppercase letters or digits", 1),
        (["OK", "--valid-from", "2026-12-31", "--valid-to", "2026-12-01"], "validFrom is after", 1),
        (["OK", "--valid-from", "2026-13-01"], "invalid --rule or date", 2),
        (["OK", "--valid-to", "tomorrow"], "invalid --rule or date", 2),
        (["OK", "--location", "has space"], "must be 1–10 printable characters", 1),
        (["OK", "--location", "ELEVENCHARS"], "must be 1–10 printable characters", 1),
        (["OK", "--offer-id", "x" * 65], "offerId must be 1–64 characters", 1),
    ],
)
def test_offer_add_refuses_bad_fields(
    cli: Cli, cli_db: Database, sponsor: str, args: list[str], message: str, code: int
) -> None:
    stderr = _failed(cli("offer", "add", *args, "--sponsor", sponsor), code)
    assert message in stderr
    assert _row(cli_db, sponsor, args[0]) is None


def test_offer_add_for_an_unknown_sponsor_fails(cli: Cli) -> None:
    stderr = _failed(cli("offer", "add", "BASE", "--sponsor", "NOSUCH99", "--rule", "null"))
    assert "sponsor NOSUCH99 does not exist" in stderr


def test_offer_add_with_a_description_over_255_characters_fails_cleanly(
    cli: Cli, cli_db: Database, sponsor: str
) -> None:
    result = cli("offer", "add", "LONG", "--sponsor", sponsor, "--description", "d" * 256)

    stderr = _failed(result)
    assert "description" in stderr
    assert _row(cli_db, sponsor, "LONG") is None


# --------------------------------------------------------------------------- offer list


def test_offer_list_json_is_every_offer_by_sponsor_and_code(
    cli: Cli, cli_db: Database, sponsor: str
) -> None:
    other = data.new_sponsor(cli_db)
    _ok(cli("offer", "add", "ZED", "--sponsor", sponsor, "--rule", json.dumps(BASE)))
    _ok(cli("offer", "add", "ALPHA", "--sponsor", sponsor, "--rule", json.dumps(PRODUCE)))
    _ok(cli("offer", "add", "ALPHA", "--sponsor", other, "--rule", json.dumps(BASE)))

    mine = json.loads(_ok(cli("offer", "list", "--sponsor", sponsor, "--json")).stdout)
    everyone = json.loads(_ok(cli("offer", "list", "--json")).stdout)

    assert [o["code"] for o in mine] == ["ALPHA", "STANDARD", "ZED"]
    assert {o["sponsorCode"] for o in mine} == {sponsor}
    keys = [(o["sponsorCode"], o["code"]) for o in everyone]
    assert keys == sorted(keys)
    assert {(sponsor, "ALPHA"), (other, "ALPHA"), (sponsor, "ZED")} <= set(keys)
    assert mine[2]["rule"] == {
        "type": "base",
        "miles": 1,
        "perDollars": "20",
        "excludeItems": [],
        "excludeCategories": [],
        "excludeDepartments": [],
        "capMiles": None,
    }


def test_offer_list_of_a_sponsor_without_offers_is_empty(cli: Cli) -> None:
    result = _ok(cli("offer", "list", "--sponsor", "NOSUCH99", "--json"))
    assert json.loads(result.stdout) == []
    assert _ok(cli("offer", "list", "--sponsor", "NOSUCH99")).stdout == ""


# --------------------------------------------------------------------------- offer disable


def test_offer_disable_deactivates_it_once(cli: Cli, cli_db: Database, sponsor: str) -> None:
    _ok(cli("offer", "add", "BASE", "--sponsor", sponsor, "--rule", json.dumps(BASE)))

    result = _ok(cli("offer", "disable", "BASE", "--sponsor", sponsor))
    again = _failed(cli("offer", "disable", "BASE", "--sponsor", sponsor))
    missing = _failed(cli("offer", "disable", "NOPE", "--sponsor", sponsor))

    assert _flat(result.stdout) == f"offer BASE of sponsor {sponsor} disabled"
    assert f"no active offer BASE for sponsor {sponsor}" in again
    assert f"no active offer NOPE for sponsor {sponsor}" in missing
    offer = _offers(cli, sponsor)["BASE"]
    assert offer["active"] is False
    assert offer["rule"]["miles"] == 1  # kept, only disabled
    assert f"{sponsor} BASE disabled" in _flat(
        _ok(cli("offer", "list", "--sponsor", sponsor)).stdout
    )
    row = _row(cli_db, sponsor, "BASE")
    assert row is not None
    assert row.active is False


# --------------------------------------------------------------------------- offer import


def _yaml_offers(sponsor: str) -> str:
    return f"""
- sponsorCode: {sponsor}
  code: STANDARD
  description: 1 mile per $10
  rule: {{type: base, miles: 1, perDollars: 10}}
- sponsorCode: {sponsor}
  code: SPRING
  description: 25 miles with the SPRING25 coupon
  validFrom: 2027-03-20
  validTo: 2027-04-30
  offerId: 77
  locations: ["0042"]
  rule: {{type: coupon, coupon: SPRING25, miles: 25, minSpend: 50}}
- sponsorCode: {sponsor}
  code: PRODUCE
  rule:
    type: item
    departments: [produce]
    milesPerUnit: 5
    minQuantity: 2
"""


def test_offer_import_of_a_yaml_file_adds_and_replaces(
    cli: Cli, sponsor: str, tmp_path: Path
) -> None:
    _ok(cli("offer", "add", "PRODUCE", "--sponsor", sponsor, "--rule", json.dumps(BASE)))
    _ok(cli("offer", "disable", "PRODUCE", "--sponsor", sponsor))

    result = _ok(cli("offer", "import", _write(tmp_path, "offers.yaml", _yaml_offers(sponsor))))

    assert _flat(result.stdout) == "3 offer(s) imported"
    offers = _offers(cli, sponsor)
    assert set(offers) == {"PRODUCE", "SPRING", "STANDARD"}
    assert offers["STANDARD"]["rule"]["perDollars"] == "10"
    assert offers["STANDARD"]["description"] == "1 mile per $10"
    spring = offers["SPRING"]
    assert (spring["validFrom"], spring["validTo"]) == ("2027-03-20", "2027-04-30")
    assert (spring["offerId"], spring["locations"]) == ("77", ["0042"])
    assert spring["rule"]["type"] == "coupon"
    assert spring["rule"]["minSpend"] == "50"
    # An upsert replaces the whole offer: rule, description, and it is active again.
    produce = offers["PRODUCE"]
    assert produce["active"] is True
    assert produce["rule"]["type"] == "item"
    assert produce["description"] == ""
    # Importing the same file again changes nothing.
    _ok(cli("offer", "import", str(tmp_path / "offers.yaml")))
    assert _offers(cli, sponsor) == offers


def test_offer_import_of_a_json_file_with_an_offers_key(
    cli: Cli, sponsor: str, tmp_path: Path
) -> None:
    document = {
        "offers": [
            {
                "sponsorCode": sponsor,
                "code": "KETTLE",
                "description": "Kettle bonus",
                "rule": {"type": "item", "items": ["sku-42"], "miles": 10, "perDollars": 25},
                "validFrom": "2026-01-01",
            }
        ]
    }

    result = _ok(cli("offer", "import", _write(tmp_path, "o.json", json.dumps(document))))

    assert _flat(result.stdout) == "1 offer(s) imported"
    kettle = _offers(cli, sponsor)["KETTLE"]
    assert kettle["validFrom"] == date(2026, 1, 1).isoformat()
    assert kettle["validTo"] is None
    assert kettle["rule"]["items"] == ["sku-42"]
    assert kettle["rule"]["perDollars"] == "25"


def test_offer_import_of_a_json_list(cli: Cli, sponsor: str, tmp_path: Path) -> None:
    document = [
        {
            "sponsorCode": sponsor,
            "code": f"C{n}",
            "rule": {"type": "base", "miles": n, "perDollars": 5},
        }
        for n in range(1, 4)
    ]

    _ok(cli("offer", "import", _write(tmp_path, "list.json", json.dumps(document))))

    offers = _offers(cli, sponsor)
    assert [offers[f"C{n}"]["rule"]["miles"] for n in range(1, 4)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"code": "BAD", "rule": {"type": "item", "milesPerUnit": 1}},
            "offer #2 (BAD): invalid rule",
        ),
        ({"code": "bad", "rule": None}, "offer #2 (bad): offer code 'bad' must be 1–8"),
        ({"code": "BAD", "validFrom": "2027-02-30"}, "offer #2 (BAD):"),
        (
            {"code": "BAD", "validFrom": "2027-03-01", "validTo": "2027-02-01"},
            "offer #2 (BAD): validFrom is after validTo",
        ),
        (
            {"code": "BAD", "sponsorCode": "NOSUCH99"},
            "offer #2 (BAD): sponsor NOSUCH99 does not exist",
        ),
        ({"code": None}, "offer #2: missing code"),
        ({"sponsorCode": None}, "offer #2: missing sponsorCode"),
    ],
)
def test_offer_import_is_all_or_nothing_and_names_the_bad_entry(
    cli: Cli, cli_db: Database, sponsor: str, tmp_path: Path, bad: dict[str, Any], message: str
) -> None:
    _ok(cli("offer", "add", "KEEP", "--sponsor", sponsor, "--rule", json.dumps(BASE)))
    entry: dict[str, Any] = {"sponsorCode": sponsor, "description": "x", **bad}
    entry = {k: v for k, v in entry.items() if v is not None or k == "rule"}
    document = [
        {
            "sponsorCode": sponsor,
            "code": "KEEP",
            "rule": {"type": "base", "miles": 9, "perDollars": 1},
        },
        entry,
        {"sponsorCode": sponsor, "code": "NEW", "rule": json.loads(json.dumps(BASE))},
    ]

    stderr = _failed(cli("offer", "import", _write(tmp_path, "bad.json", json.dumps(document))))

    assert message in stderr
    assert "Traceback" not in stderr
    offers = _offers(cli, sponsor)
    assert set(offers) == {"KEEP", "STANDARD"}  # nothing of the file was applied
    assert offers["KEEP"]["rule"]["miles"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- [unclosed", "not YAML/JSON"),
        ("{offers: 3}", "expected a list of offers"),
        ("just a string", "expected a list of offers"),
        ("- 1\n- 2\n", "expected a list of offers"),
    ],
)
def test_offer_import_of_a_file_that_is_not_a_list_of_offers_is_exit_2(
    cli: Cli, tmp_path: Path, text: str, message: str
) -> None:
    stderr = _failed(cli("offer", "import", _write(tmp_path, "x.yaml", text)), 2)
    assert message in stderr


def test_offer_import_of_a_missing_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    result = cli("offer", "import", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in _flat(result.stderr)


@pytest.mark.parametrize(
    "locations", ["'0042'", "[0042]", "42"], ids=["string", "yaml-octal", "number"]
)
def test_offer_import_refuses_locations_that_are_not_a_list_of_strings(
    cli: Cli, cli_db: Database, sponsor: str, tmp_path: Path, locations: str
) -> None:
    text = f"- {{sponsorCode: {sponsor}, code: LOC, locations: {locations}, rule: null}}\n"

    stderr = _failed(cli("offer", "import", _write(tmp_path, "loc.yaml", text)))

    assert "offer #1 (LOC)" in stderr
    assert "locations" in stderr
    assert _row(cli_db, sponsor, "LOC") is None
