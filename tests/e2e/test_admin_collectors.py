"""The admin API's collector routes over HTTP against a real server: a collector's ledger history
a page at a time, its status, adjustments (idempotent, by role), the list of adjustments."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rewardmiles.codec import b64url, unb64url
from rewardmiles.db.models import LedgerEntry, OperatorAuditEntry
from rewardmiles.vocabulary import OperatorRole
from tests.e2e.conftest import World
from tests.support.operators import new_token
from tests.support.problems import assert_problem


class Caller:
    def __init__(self, world: World, role: OperatorRole) -> None:
        token = new_token(world.db, role, now=datetime.now(UTC))
        self.actor = f"token:{token.view.name}"
        self.headers = {"Authorization": f"Bearer {token.token}"}
        self.http = httpx.Client(base_url=world.server.base_url, timeout=30)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params, headers=self.headers)

    def post(self, path: str, body: Any, key: str | None = None) -> httpx.Response:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.post(path, json=body, headers=headers)

    def adjust(
        self, number: str, miles: int, key: str | None = None, **body: Any
    ) -> httpx.Response:
        sent = {"miles": miles, "reason": "GOODWILL", "note": "delayed flight", **body}
        return self.post(
            f"/admin/v1/collectors/{number}/adjustments", sent, key or str(uuid.uuid4())
        )


@pytest.fixture
def agent(world: World) -> Caller:
    return Caller(world, OperatorRole.AGENT)


@pytest.fixture
def admin(world: World) -> Caller:
    return Caller(world, OperatorRole.ADMIN)


def _truth(world: World, number: str) -> list[int]:
    with world.db.reader() as session:
        amounts = session.scalars(
            select(LedgerEntry.amount_miles)
            .where(LedgerEntry.account_kind == "collector", LedgerEntry.account_code == number)
            .order_by(LedgerEntry.id)
        ).all()
    running, out = 0, []
    for amount in amounts:
        running += amount
        out.append(running)
    return out[::-1]


def test_the_history_pages_newest_first_with_the_running_balance(
    world: World, agent: Caller
) -> None:
    number = world.collector()
    for miles in (30, 12):
        assert world.partner.post_event(world.body(number, miles=miles)).status_code == 200
    assert agent.adjust(number, -5).status_code == 201
    assert world.partner.post_event(world.body(number, miles=7)).status_code == 200
    assert agent.adjust(number, 100).status_code == 201
    path = f"/admin/v1/collectors/{number}/ledger"
    items: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        response = agent.get(path, limit=2, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        items += page["items"]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [i["balanceAfter"] for i in items] == _truth(world, number) == [144, 44, 37, 42, 30]
    assert [i["miles"] for i in items] == [100, 7, -5, 12, 30]
    assert [i["endpoint"] for i in items] == [
        "adjustment",
        "post_event",
        "adjustment",
        "post_event",
        "post_event",
    ]
    partner_entry, adjustment_entry = items[1], items[0]
    assert partner_entry["sponsorCode"] == world.sponsor
    assert partner_entry["partnerTransactionId"]
    assert partner_entry["offerCode"]
    assert partner_entry["time"].endswith(("-05:00", "-04:00"))
    assert adjustment_entry["sponsorCode"] is None
    assert adjustment_entry["partnerTransactionId"] is None
    # An adjustment is no partner transaction: the partner's lookup does not know it.
    looked_up = world.partner.http.get(
        f"/checkout/issuance/transactions/{adjustment_entry['transactionId']}",
        headers={"Authorization": f"Bearer {world.partner.token}"},
    )
    assert looked_up.status_code == 404


def test_a_tampered_or_foreign_cursor_is_refused(world: World, agent: Caller) -> None:
    number, other = world.collector(), world.collector()
    for n in (number, other):
        for miles in (1, 2, 3):
            assert agent.adjust(n, miles).status_code == 201
    path = f"/admin/v1/collectors/{number}/ledger"
    cursor = agent.get(path, limit=1).json()["nextCursor"]
    raw = unb64url(cursor)
    text, mac = raw[:-16], raw[-16:]
    forged = b64url(text.rsplit(b":", 1)[0] + b":999" + mac)  # a richer balance, same MAC
    assert forged != cursor
    assert_problem(agent.get(path, limit=1, cursor=forged), 400, "CURSOR_INVALID", "cursor")
    foreign = agent.get(f"/admin/v1/collectors/{other}/ledger", limit=1).json()["nextCursor"]
    assert_problem(agent.get(path, cursor=foreign), 400, "CURSOR_INVALID", "cursor")
    assert_problem(agent.get(path, cursor="not-a-cursor"), 400, "CURSOR_INVALID", "cursor")
    assert agent.get(path, limit=1, cursor=cursor).json()["items"][0]["balanceAfter"] == 3


@pytest.mark.parametrize("limit", ["0", "501", "x", "-1", "1.5", ""])
def test_a_bad_limit_is_refused(world: World, agent: Caller, limit: str) -> None:
    number = world.collector()
    response = agent.get(f"/admin/v1/collectors/{number}/ledger", limit=limit)
    assert_problem(response, 400, "FIELD_INVALID", "limit")


def test_history_of_an_unknown_or_malformed_collector(world: World, agent: Caller) -> None:
    assert_problem(agent.get("/admin/v1/collectors/00000000000/ledger"), 404, "NOT_FOUND")
    assert_problem(
        agent.get("/admin/v1/collectors/123/ledger"), 400, "COLLECTOR_NUMBER_INVALID", "number"
    )


def _audit(world: World, request_id: str) -> list[tuple[str, str, str | None]]:
    with world.db.reader() as session:
        rows = session.execute(
            select(
                OperatorAuditEntry.actor, OperatorAuditEntry.action, OperatorAuditEntry.note
            ).where(OperatorAuditEntry.request_id == request_id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_an_adjustment_is_made_once_per_key_and_audited(world: World, agent: Caller) -> None:
    number = world.collector()
    key = "adj-" + uuid.uuid4().hex
    made = agent.adjust(number, 250, key)
    assert made.status_code == 201, made.text
    body = made.json()
    assert {k: body[k] for k in ("collectorNumber", "miles", "reason", "note", "balanceAfter")} == {
        "collectorNumber": number,
        "miles": 250,
        "reason": "GOODWILL",
        "note": "delayed flight",
        "balanceAfter": 250,
    }
    assert body["operator"] == agent.actor
    assert "idempotent-replayed" not in made.headers
    assert _audit(world, made.headers["x-request-id"]) == [
        (agent.actor, "collector.adjust", "delayed flight")
    ]
    again = agent.adjust(number, 250, key)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == body
    assert world.balance(number) == 250
    assert_problem(agent.adjust(number, 251, key), 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert world.balance(number) == 250


def test_an_adjustment_needs_a_key_and_a_well_formed_body(world: World, agent: Caller) -> None:
    number = world.collector()
    path = f"/admin/v1/collectors/{number}/adjustments"
    good = {"miles": 5, "reason": "GOODWILL", "note": "n"}
    assert_problem(agent.post(path, good), 400, "FIELD_REQUIRED", "Idempotency-Key")
    key = str(uuid.uuid4())
    assert_problem(agent.post(path, {**good, "miles": 0}, key), 400, "FIELD_INVALID", "miles")
    assert_problem(agent.post(path, {**good, "miles": "5"}, key), 400, "FIELD_INVALID", "miles")
    assert_problem(
        agent.post(path, {**good, "reason": "BONUS"}, key), 400, "FIELD_INVALID", "reason"
    )
    assert_problem(agent.post(path, {**good, "note": ""}, key), 400, "FIELD_INVALID", "note")
    assert_problem(agent.post(path, {**good, "x": 1}, key), 400, "FIELD_UNKNOWN", "x")
    assert_problem(
        agent.post(path, {"miles": 5, "reason": "GOODWILL"}, key), 400, "FIELD_REQUIRED", "note"
    )
    assert world.balance(number) == 0


def test_an_agent_is_limited_and_an_admin_is_not(
    world: World, agent: Caller, admin: Caller
) -> None:
    number = world.collector()
    assert agent.adjust(number, 1000).status_code == 201
    assert_problem(agent.adjust(number, -1001), 403, "ADMIN_FORBIDDEN")
    assert admin.adjust(number, -1001).status_code == 201
    assert world.balance(number) == -1
    viewer = Caller(world, OperatorRole.VIEWER)
    assert_problem(viewer.adjust(number, 1), 403, "ADMIN_FORBIDDEN")


def test_adjusting_unknown_and_inactive_collectors(world: World, agent: Caller) -> None:
    assert_problem(agent.adjust("00000000000", 5), 404, "NOT_FOUND")
    held = world.collector("ON_HOLD")
    assert_problem(agent.adjust(held, 5), 409, "ADJUSTMENT_COLLECTOR_INACTIVE", "reason")
    assert agent.adjust(held, -5, reason="FRAUD").status_code == 201


def test_status_change_is_audited_and_validated(world: World, agent: Caller) -> None:
    number = world.collector()
    path = f"/admin/v1/collectors/{number}/status"
    changed = agent.post(path, {"status": "ON_HOLD", "note": "fraud review"})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "collectorNumber": number,
        "previousStatus": "ACTIVE",
        "status": "ON_HOLD",
    }
    assert _audit(world, changed.headers["x-request-id"]) == [
        (agent.actor, "collector.set_status", "fraud review")
    ]
    assert agent.get(f"/admin/v1/collectors/{number}").json()["status"] == "ON_HOLD"
    assert_problem(agent.post(path, {"status": "GONE"}), 400, "FIELD_INVALID", "status")
    assert_problem(
        agent.post("/admin/v1/collectors/00000000000/status", {"status": "ACTIVE"}),
        404,
        "NOT_FOUND",
    )


def test_the_list_of_adjustments_pages_and_filters(world: World) -> None:
    caller = Caller(world, OperatorRole.AGENT)
    number = world.collector()
    ids = [caller.adjust(number, miles).json()["id"] for miles in (1, 2, 3)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"operator": caller.actor, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = caller.get("/admin/v1/adjustments", **params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert caller.get("/admin/v1/adjustments", operator="nobody").json() == {
        "items": [],
        "nextCursor": None,
    }
    assert_problem(
        caller.get("/admin/v1/adjustments", **{"from": "2026-13-01"}), 400, "FIELD_INVALID", "from"
    )
    assert_problem(
        caller.get("/admin/v1/adjustments", cursor="bad"), 400, "CURSOR_INVALID", "cursor"
    )


def test_every_member_at_fault_of_an_adjustment_is_named_in_one_answer(
    world: World, agent: Caller
) -> None:
    path = f"/admin/v1/collectors/{world.collector()}/adjustments"
    response = agent.post(path, {"miles": 0, "reason": "NICE", "note": ""}, str(uuid.uuid4()))
    problem = assert_problem(response, 400, "FIELD_INVALID")
    assert sorted(e["field"] for e in problem["errors"]) == ["miles", "note", "reason"]
    assert {e["code"] for e in problem["errors"]} == {"FIELD_INVALID"}
