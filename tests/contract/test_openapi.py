"""The committed openapi.json is what the app serves; every partner route declares its errors."""

from __future__ import annotations

import json
from pathlib import Path

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.errors import CATALOGUE

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def _document() -> dict[str, object]:
    return create_app(Settings()).openapi()


def test_committed_openapi_matches_the_app() -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed == _document(), "openapi.json is stale: run `make openapi` and commit it"


def test_every_partner_route_declares_its_error_responses() -> None:
    paths = _document()["paths"]
    assert isinstance(paths, dict)
    partner = {p: ops for p, ops in paths.items() if p.startswith("/checkout/issuance/")}
    assert set(partner) >= {"/checkout/issuance/post/event", "/checkout/issuance/reverse/event"}
    for path, ops in partner.items():
        responses = ops["post"]["responses"]
        for status in ("200", "202", "400", "401", "403", "409", "413", "415", "422", "500"):
            assert status in responses, f"{path} does not declare {status}"
        assert "requestBody" in ops["post"]
        assert any(p["name"] == "Idempotency-Key" for p in ops["post"]["parameters"])


def test_problem_schema_lists_every_catalogue_code() -> None:
    schemas = _document()["components"]["schemas"]  # type: ignore[index]
    assert set(schemas["Problem"]["properties"]["code"]["enum"]) == set(CATALOGUE)


def test_request_schemas_carry_the_field_limits() -> None:
    schemas = _document()["components"]["schemas"]  # type: ignore[index]
    line = schemas["IssuanceLineIn"]["properties"]
    assert line["milesAmount"]["minimum"] == 1
    event = schemas["PostEventRequest"]["properties"]
    assert event["issuances"]["maxItems"] == 50
    assert event["collectorNumber"]["pattern"] == "^[0-9]{11}$"
