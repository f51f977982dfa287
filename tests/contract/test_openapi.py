"""The committed openapi.json is what the app serves; every partner route declares its errors."""

from __future__ import annotations

import json
from pathlib import Path

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.errors import PROBLEM_CODES

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def _document() -> dict[str, object]:
    return create_app(Settings()).openapi()


def test_committed_openapi_matches_the_app() -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed == _document(), "openapi.json is stale: run `make openapi` and commit it"


IDEMPOTENT_WRITES = ("post", "post/event", "reverse", "reverse/event")
IDEMPOTENT_STATUSES = {
    *("200", "202", "400", "401", "403", "409", "413", "415", "422", "429", "431", "500", "503")
}
RECORD_STATUSES = {"200", "400", "401", "403", "413", "415", "429", "431", "500", "503"}


def test_every_partner_write_declares_its_responses() -> None:
    paths = _document()["paths"]
    assert isinstance(paths, dict)
    for name in IDEMPOTENT_WRITES:
        operation = paths[f"/checkout/issuance/{name}"]["post"]
        assert set(operation["responses"]) == IDEMPOTENT_STATUSES, name
        assert "requestBody" in operation
        assert [p["name"] for p in operation["parameters"]] == ["Idempotency-Key"]
    record = paths["/checkout/issuance/record"]["post"]
    assert set(record["responses"]) == RECORD_STATUSES  # never pending, no idempotency
    assert "parameters" not in record


def test_lookups_declare_their_errors() -> None:
    paths = _document()["paths"]
    assert isinstance(paths, dict)
    one = paths["/checkout/issuance/transactions/{transactionId}"]["get"]["responses"]
    assert {"200", "401", "404", "429", "503"} <= set(one)
    many = paths["/checkout/issuance/transactions"]["get"]["responses"]
    assert {"200", "400", "401", "403"} <= set(many)


def test_problem_schema_lists_every_catalogue_code() -> None:
    schemas = _document()["components"]["schemas"]  # type: ignore[index]
    assert set(schemas["Problem"]["properties"]["code"]["enum"]) == set(PROBLEM_CODES)


def test_request_schemas_carry_the_field_limits() -> None:
    schemas = _document()["components"]["schemas"]  # type: ignore[index]
    line = schemas["IssuanceLineIn"]["properties"]
    assert line["milesAmount"]["minimum"] == 1
    event = schemas["PostEventRequest"]["properties"]
    assert event["issuances"]["maxItems"] == 50
    assert event["collectorNumber"]["pattern"] == "^[0-9]{11}$"
