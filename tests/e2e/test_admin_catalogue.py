"""The admin API's catalogue over HTTP against a real server: sponsors, locations, offers,
webhooks and their deliveries — the CLI's rules and words as problems with a field, pages
through every list, roles, and an audit-log entry for every change (none for a refusal)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from rewardmiles.db.engine import Database
from rewardmiles.db.models import OperatorAuditEntry, WebhookDelivery
from rewardmiles.vocabulary import DeliveryStatus, EventType, OperatorRole
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.operators import new_token
from tests.support.problems import assert_problem
from tests.support.server import Server

NOW = datetime.now(UTC)


@dataclass
class Desk:
    server: Server
    db: Database
    tokens: dict[OperatorRole, str]

    def call(
        self, method: str, path: str, role: OperatorRole = OperatorRole.ADMIN, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            return client.request(method, "/admin/v1" + path, headers=headers, **kwargs)

    def audit(self, entity_id: str) -> list[Any]:
        """The audit log's entries about `entity_id`, oldest first (rows of every column)."""
        with self.db.reader() as session:
            return list(
                session.execute(
                    select(*OperatorAuditEntry.__table__.columns)
                    .where(OperatorAuditEntry.entity_id == entity_id)
                    .order_by(OperatorAuditEntry.id)
                )
            )


@pytest.fixture(scope="module")
def desk(dialect: str, server_factory: ServerFactory) -> Iterator[Desk]:
    server = server_factory(dialect, env={"REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"})
    db = Database.from_url(server.database_url)
    tokens = {role: new_token(db, role, now=NOW).token for role in OperatorRole}
    yield Desk(server, db, tokens)
    db.dispose()


def _code() -> str:
    return "S" + secrets.token_hex(3).upper()


def _all_pages(desk: Desk, path: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    sep = "&" if "?" in path else "?"
    for _ in range(1000):
        query = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = desk.call("GET", query, OperatorRole.VIEWER)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


# --------------------------------------------------------------------------- sponsors


def test_an_admin_adds_a_sponsor_and_the_change_is_audited(desk: Desk) -> None:
    code = _code()
    created = desk.call("POST", "/sponsors", json={"code": code, "name": " Keny Stores "})
    assert created.status_code == 201, created.text
    assert created.json() == {
        "code": code,
        "name": "Keny Stores",
        "active": True,
        "reviewThresholdMiles": None,
    }
    [entry] = desk.audit(code)
    assert (entry.action, entry.entity, entry.actor) == ("sponsor.add", "sponsor", entry.actor)
    assert entry.actor.startswith("token:")
    assert entry.request_id == created.headers["x-request-id"]
    assert '"name":"Keny Stores"' in (entry.after_json or "")
    # Its STANDARD offer came with it, as with the CLI.
    offers = desk.call("GET", f"/offers?sponsor={code}", OperatorRole.VIEWER).json()["items"]
    assert [(o["code"], o["active"]) for o in offers] == [("STANDARD", True)]

    again = desk.call("POST", "/sponsors", json={"code": code, "name": "Other"})
    assert_problem(again, 409, "ALREADY_EXISTS", "code")
    assert len(desk.audit(code)) == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"code": "lower", "name": "x"}, 422, "OPERATOR_ACTION_REFUSED", "code"),
        ({"code": "ABCDEFGHIJK", "name": "x"}, 422, "OPERATOR_ACTION_REFUSED", "code"),
        ({"code": "OKAY", "name": "   "}, 422, "OPERATOR_ACTION_REFUSED", "name"),
        ({"code": "OKAY"}, 400, "FIELD_REQUIRED", "name"),
        ({"code": 12, "name": "x"}, 400, "FIELD_INVALID", "code"),
        ({"code": "OKAY", "name": "x", "extra": 1}, 400, "FIELD_UNKNOWN", "extra"),
    ],
)
def test_a_bad_sponsor_is_refused_with_the_field_at_fault(
    desk: Desk, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    assert_problem(desk.call("POST", "/sponsors", json=body), status, code, field)


def test_a_sponsor_change_records_before_and_after_and_null_clears_the_threshold(
    desk: Desk,
) -> None:
    code = data.new_sponsor(desk.db)
    changed = desk.call(
        "PATCH", f"/sponsors/{code}", json={"reviewThresholdMiles": 500, "active": False}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["reviewThresholdMiles"], changed.json()["active"]) == (500, False)
    cleared = desk.call("PATCH", f"/sponsors/{code}", json={"reviewThresholdMiles": None})
    assert cleared.json()["reviewThresholdMiles"] is None
    assert cleared.json()["active"] is False  # left alone: not in the body
    first, second = desk.audit(code)
    assert '"active":true' in (first.before_json or "")
    assert '"reviewThresholdMiles":500' in (first.after_json or "")
    assert '"reviewThresholdMiles":500' in (second.before_json or "")
    assert_problem(
        desk.call("PATCH", f"/sponsors/{code}", json={"reviewThresholdMiles": 0}),
        422,
        "OPERATOR_ACTION_REFUSED",
        "reviewThresholdMiles",
    )
    assert_problem(desk.call("PATCH", "/sponsors/NOSUCH9", json={"active": True}), 404, "NOT_FOUND")


def test_sponsors_page_by_code_without_gaps_or_repeats(desk: Desk) -> None:
    for _ in range(5):
        data.new_sponsor(desk.db)
    whole = _all_pages(desk, "/sponsors", 500)
    paged = _all_pages(desk, "/sponsors", 2)
    assert [s["code"] for s in paged] == [s["code"] for s in whole]
    assert [s["code"] for s in whole] == sorted(s["code"] for s in whole)
    assert len(whole) >= 5


@pytest.mark.parametrize("cursor", ["x", "bm90LWpzb24", "WzFd", "WyJhIiwiYiJd"])
def test_a_cursor_the_list_did_not_give_is_a_field_problem(desk: Desk, cursor: str) -> None:
    response = desk.call("GET", f"/sponsors?cursor={cursor}", OperatorRole.VIEWER)
    assert_problem(response, 400, "CURSOR_INVALID", "cursor")


@pytest.mark.parametrize("limit", ["0", "501", "x"])
def test_a_limit_out_of_range_is_a_field_problem(desk: Desk, limit: str) -> None:
    response = desk.call("GET", f"/sponsors?limit={limit}", OperatorRole.VIEWER)
    assert_problem(response, 400, "FIELD_INVALID", "limit")


# --------------------------------------------------------------------------- locations


def test_locations_are_added_listed_and_refused_like_the_cli(desk: Desk) -> None:
    code = data.new_sponsor(desk.db)
    for location in ("0037", "0001", "B12"):
        added = desk.call("POST", f"/sponsors/{code}/locations", json={"code": location})
        assert added.status_code == 201, added.text
    listed = _all_pages(desk, f"/sponsors/{code}/locations", 2)
    assert [x["code"] for x in listed] == ["0001", "0037", "B12"]
    assert_problem(
        desk.call("POST", f"/sponsors/{code}/locations", json={"code": "0037"}),
        409,
        "ALREADY_EXISTS",
        "code",
    )
    assert_problem(
        desk.call("POST", f"/sponsors/{code}/locations", json={"code": "has space"}),
        422,
        "OPERATOR_ACTION_REFUSED",
        "code",
    )
    assert_problem(
        desk.call("POST", "/sponsors/NOSUCH9/locations", json={"code": "1"}), 404, "NOT_FOUND"
    )
    assert_problem(
        desk.call("GET", "/sponsors/NOSUCH9/locations", OperatorRole.VIEWER), 404, "NOT_FOUND"
    )
    assert [e.action for e in desk.audit(f"{code}/0037")] == ["location.add"]


# --------------------------------------------------------------------------- offers


RULE = {"type": "base", "miles": 2, "perDollars": 1}


def test_an_offer_is_put_replaced_and_disabled(desk: Desk) -> None:
    code = data.new_sponsor(desk.db)
    body = {
        "description": "Double miles",
        "rule": RULE,
        "validFrom": "2026-01-01",
        "validTo": "2026-12-31",
        "locations": ["0037"],
        "offerId": "OFF-1",
    }
    created = desk.call("PUT", f"/sponsors/{code}/offers/DBL", json=body)
    assert created.status_code == 201, created.text
    offer = created.json()
    assert offer["validFrom"] == "2026-01-01"
    assert offer["locations"] == ["0037"]
    assert offer["rule"]["type"] == "base"
    replaced = desk.call("PUT", f"/sponsors/{code}/offers/DBL", json={"description": "Plain"})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["rule"], replaced.json()["validFrom"]) == (None, None)
    disabled = desk.call("POST", f"/sponsors/{code}/offers/DBL/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["active"] is False
    assert_problem(desk.call("POST", f"/sponsors/{code}/offers/DBL/disable"), 404, "NOT_FOUND")
    actions = [e.action for e in desk.audit(f"{code}/DBL")]
    assert actions == ["offer.put", "offer.put", "offer.disable"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"rule": {"type": "NOPE"}}, 422, "OPERATOR_ACTION_REFUSED", "rule"),
        (
            {"validFrom": "2026-12-31", "validTo": "2026-01-01"},
            422,
            "OPERATOR_ACTION_REFUSED",
            "validTo",
        ),
        ({"validFrom": "31/12/2026"}, 400, "FIELD_INVALID", "validFrom"),
        ({"validFrom": 1767225600}, 400, "FIELD_INVALID", "validFrom"),
        ({"validTo": "2026-02-30"}, 400, "FIELD_INVALID", "validTo"),
        ({"locations": ["has space"]}, 422, "OPERATOR_ACTION_REFUSED", "locations"),
        ({"locations": [37]}, 400, "FIELD_INVALID", "locations[0]"),
        ({"description": "x" * 1000}, 400, "FIELD_INVALID", "description"),
    ],
)
def test_a_bad_offer_is_refused_with_the_field_at_fault(
    desk: Desk, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    sponsor = data.new_sponsor(desk.db)
    response = desk.call("PUT", f"/sponsors/{sponsor}/offers/BAD", json=body)
    assert_problem(response, status, code, field)
    assert desk.audit(f"{sponsor}/BAD") == []


def test_an_offer_of_an_unknown_sponsor_or_a_bad_code_is_refused(desk: Desk) -> None:
    assert_problem(desk.call("PUT", "/sponsors/NOSUCH9/offers/X", json={}), 404, "NOT_FOUND")
    sponsor = data.new_sponsor(desk.db)
    for bad in ("lower", "TOOLONGCODE", "A%00"):
        assert_problem(
            desk.call("PUT", f"/sponsors/{sponsor}/offers/{bad}", json={}),
            400,
            "FIELD_INVALID",
            "offer",
        )
    assert_problem(
        desk.call("GET", "/offers?sponsor=A%00", OperatorRole.VIEWER),
        400,
        "FIELD_INVALID",
        "sponsor",
    )
    assert_problem(
        desk.call("GET", "/sponsors/A%00/locations", OperatorRole.VIEWER),
        400,
        "FIELD_INVALID",
        "code",
    )


def test_offers_page_across_sponsors(desk: Desk) -> None:
    for _ in range(3):
        sponsor = data.new_sponsor(desk.db)
        desk.call("PUT", f"/sponsors/{sponsor}/offers/EXTRA", json={"description": "x"})
    whole = _all_pages(desk, "/offers", 500)
    paged = _all_pages(desk, "/offers", 3)
    keys = [(o["sponsorCode"], o["code"]) for o in whole]
    assert [(o["sponsorCode"], o["code"]) for o in paged] == keys
    assert keys == sorted(keys)


# --------------------------------------------------------------------------- webhooks


def test_a_webhook_is_added_with_its_secret_once_listed_without_it_and_removed(
    desk: Desk,
) -> None:
    sponsor = data.new_sponsor(desk.db)
    added = desk.call(
        "POST", "/webhooks", json={"sponsorCode": sponsor, "url": "http://127.0.0.1:9/hook"}
    )
    assert added.status_code == 201, added.text
    hook = added.json()
    assert hook["secret"].startswith("whsec_")
    listed = _all_pages(desk, f"/webhooks?sponsor={sponsor}", 1)
    assert [(h["id"], h["active"]) for h in listed] == [(hook["id"], True)]
    assert "secret" not in listed[0]
    [entry] = desk.audit(hook["id"])
    assert hook["secret"] not in (entry.after_json or "")
    removed = desk.call("DELETE", f"/webhooks/{hook['id']}")
    assert removed.status_code == 200, removed.text
    assert_problem(desk.call("DELETE", f"/webhooks/{hook['id']}"), 404, "NOT_FOUND")
    assert [e.action for e in desk.audit(hook["id"])] == ["webhook.add", "webhook.remove"]


@pytest.mark.parametrize(
    ("url", "field"),
    [("ftp://example.com/x", "url"), ("http://user:pw@127.0.0.1/x", "url")],
)
def test_a_webhook_target_the_cli_refuses_is_refused(desk: Desk, url: str, field: str) -> None:
    sponsor = data.new_sponsor(desk.db)
    response = desk.call("POST", "/webhooks", json={"sponsorCode": sponsor, "url": url})
    assert_problem(response, 422, "OPERATOR_ACTION_REFUSED", field)


def test_a_webhook_for_an_unknown_sponsor_is_refused(desk: Desk) -> None:
    response = desk.call(
        "POST", "/webhooks", json={"sponsorCode": "NOSUCH9", "url": "http://127.0.0.1:9/h"}
    )
    assert_problem(response, 422, "OPERATOR_ACTION_REFUSED", "sponsorCode")


def _delivery(desk: Desk, webhook_id: str, status: DeliveryStatus, at: datetime) -> str:
    delivery_id = str(secrets.token_hex(16))
    with desk.db.unit_of_work() as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                webhook_id=webhook_id,
                event_type=EventType.TRANSACTION_SETTLED,
                transaction_id="t-" + delivery_id[:8],
                payload_json="{}",
                status=status,
                attempts=8,
                next_attempt_at=at,
                last_error="connection refused",
                created_at=at,
            )
        )
    return delivery_id


def test_a_failed_delivery_is_retried_and_only_a_failed_one(desk: Desk) -> None:
    sponsor = data.new_sponsor(desk.db)
    hook = desk.call(
        "POST", "/webhooks", json={"sponsorCode": sponsor, "url": "http://127.0.0.1:9/hook"}
    ).json()
    long_ago = NOW - timedelta(days=400)  # older than any other test's: the last pages
    failed = _delivery(desk, hook["id"], DeliveryStatus.FAILED, long_ago)
    delivered = _delivery(
        desk, hook["id"], DeliveryStatus.DELIVERED, long_ago - timedelta(seconds=1)
    )
    listed = _all_pages(desk, "/webhook-deliveries?status=failed", 1)
    assert failed in [d["id"] for d in listed]
    assert delivered not in [d["id"] for d in listed]
    retried = desk.call("POST", f"/webhook-deliveries/{failed}/retry")
    assert retried.status_code == 200, retried.text
    with desk.db.reader() as session:
        row = session.get(WebhookDelivery, failed)
        assert row is not None
        assert (row.status, row.attempts) == (DeliveryStatus.PENDING, 0)
    assert_problem(
        desk.call("POST", f"/webhook-deliveries/{delivered}/retry"),
        422,
        "OPERATOR_ACTION_REFUSED",
    )
    unknown = "0" * 32
    assert_problem(desk.call("POST", f"/webhook-deliveries/{unknown}/retry"), 404, "NOT_FOUND")
    assert_problem(
        desk.call("POST", "/webhook-deliveries/no%00pe/retry"), 400, "FIELD_INVALID", "deliveryId"
    )
    [entry] = desk.audit(failed)
    assert (entry.action, entry.entity) == ("delivery.retry", "webhook_delivery")


def test_deliveries_page_newest_first(desk: Desk) -> None:
    sponsor = data.new_sponsor(desk.db)
    hook = desk.call(
        "POST", "/webhooks", json={"sponsorCode": sponsor, "url": "http://127.0.0.1:9/hook"}
    ).json()
    base = NOW - timedelta(days=30)
    made = [
        _delivery(desk, hook["id"], DeliveryStatus.FAILED, base + timedelta(seconds=i))
        for i in range(5)
    ]
    paged = [d["id"] for d in _all_pages(desk, "/webhook-deliveries", 2)]
    whole = [d["id"] for d in _all_pages(desk, "/webhook-deliveries", 500)]
    assert paged == whole
    assert [d for d in whole if d in made] == list(reversed(made))


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("role", [OperatorRole.VIEWER, OperatorRole.AGENT])
def test_only_an_admin_changes_the_catalogue(desk: Desk, role: OperatorRole) -> None:
    sponsor = data.new_sponsor(desk.db)
    with desk.db.reader() as session:
        before = session.scalar(select(func.count()).select_from(OperatorAuditEntry))
    for method, path, body in (
        ("POST", "/sponsors", {"code": _code(), "name": "x"}),
        ("PATCH", f"/sponsors/{sponsor}", {"active": False}),
        ("POST", f"/sponsors/{sponsor}/locations", {"code": "1"}),
        ("PUT", f"/sponsors/{sponsor}/offers/X", {}),
        ("POST", f"/sponsors/{sponsor}/offers/STANDARD/disable", None),
        ("POST", "/webhooks", {"sponsorCode": sponsor, "url": "http://127.0.0.1:9/h"}),
        ("DELETE", "/webhooks/x", None),
        ("POST", "/webhook-deliveries/x/retry", None),
    ):
        response = desk.call(method, path, role, json=body)
        assert_problem(response, 403, "ADMIN_FORBIDDEN")
    with desk.db.reader() as session:
        after = session.scalar(select(func.count()).select_from(OperatorAuditEntry))
    assert after == before
