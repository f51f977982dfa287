"""The support desk's look-ups over HTTP against the shared server: failed partner requests found
by the requestId of their problem (the recorder's queue drains within a moment), transaction
search and detail (masking per role), pending review one by one and in bulk (all or nothing),
and the audit log of those reviews."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from rewardmiles.ledger.verify import verify
from rewardmiles.vocabulary import OperatorRole
from tests.e2e.conftest import World
from tests.support import data
from tests.support.operators import new_token
from tests.support.partner import Partner
from tests.support.problems import assert_problem


def _bearer(world: World, role: OperatorRole) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_token(world.db, role, now=datetime.now(UTC)).token}"}


def _get(world: World, path: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    return world.partner.http.get(path, headers=headers, params=params)


def _eventually(check: Callable[[], httpx.Response], status: int = 200) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        response = check()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


# --------------------------------------------------------------------------- failed requests


def test_a_partner_call_refused_by_validation_is_found_by_its_request_id(world: World) -> None:
    viewer = _bearer(world, OperatorRole.VIEWER)
    body = world.body(world.collector(), miles=0)
    refused = world.partner.post_event(body)
    problem = assert_problem(refused, 400, "MILES_AMOUNT_INVALID", "issuances[0].milesAmount")
    request_id = problem["requestId"]

    found = _eventually(lambda: _get(world, f"/admin/v1/requests/{request_id}", viewer))

    assert found.status_code == 200, found.text
    record = found.json()
    assert record["requestId"] == request_id
    assert record["clientId"] == world.partner.client_id
    assert (record["method"], record["path"]) == ("POST", "/checkout/issuance/post/event")
    assert (record["status"], record["code"]) == (400, "MILES_AMOUNT_INVALID")
    assert record["field"] == "issuances[0].milesAmount"
    assert record["detail"] == problem["detail"]
    assert record["at"]


def test_an_unauthenticated_failure_is_found_and_a_success_is_not_recorded(world: World) -> None:
    viewer = _bearer(world, OperatorRole.VIEWER)
    succeeded = world.partner.post_event(world.body(world.collector()))
    assert succeeded.status_code == 200
    anonymous = world.partner.http.post(
        "/checkout/issuance/post/event", json=world.body(world.collector())
    )
    problem = assert_problem(anonymous, 401, "TOKEN_MISSING")

    found = _eventually(lambda: _get(world, f"/admin/v1/requests/{problem['requestId']}", viewer))

    assert found.status_code == 200, found.text
    assert found.json()["clientId"] is None
    assert found.json()["code"] == "TOKEN_MISSING"
    # The success was answered before the failure: had it been queued, it would be written too.
    success_id = succeeded.headers["x-request-id"]
    assert_problem(_get(world, f"/admin/v1/requests/{success_id}", viewer), 404, "NOT_FOUND")
    assert_problem(_get(world, "/admin/v1/requests/nope", viewer), 404, "NOT_FOUND")


# --------------------------------------------------------------------------- transactions


def _own_partner(world: World, **sponsor: Any) -> tuple[str, Partner]:
    code = data.new_sponsor(world.db, **sponsor)
    return code, world.new_partner(code)


def test_transaction_search_filters_and_pages_newest_first(world: World) -> None:
    viewer = _bearer(world, OperatorRole.VIEWER)
    sponsor, partner = _own_partner(world)
    collectors = [world.collector() for _ in range(3)]
    sent = []
    for number in collectors:
        body = data.event_body(sponsor, number)
        answer = partner.post_event(body)
        assert answer.status_code == 200, answer.text
        sent.append((body, answer.json()))
        time.sleep(0.01)
    closed = world.collector("CLOSED")
    rejected = partner.post_event(data.event_body(sponsor, closed))
    assert rejected.status_code >= 400
    ids_newest_first = [a["transactionId"] for _, a in reversed(sent)]

    everything = _get(world, "/admin/v1/transactions", viewer, sponsor=sponsor).json()
    assert [i["transactionId"] for i in everything["items"]][1:] == ids_newest_first
    assert everything["nextCursor"] is None
    assert everything["items"][0]["status"] == "rejected"

    pages: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"sponsor": sponsor, "status": "posted", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = _get(world, "/admin/v1/transactions", viewer, **params).json()
        pages.extend(i["transactionId"] for i in page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == ids_newest_first

    body, answer = sent[1]
    by = {
        "partnerTransactionId": body["clientTransactionId"],
        "transactionId": answer["transactionId"],
        "collector": collectors[1],
    }
    for name, value in by.items():
        found = _get(world, "/admin/v1/transactions", viewer, **{name: value}).json()["items"]
        assert [i["transactionId"] for i in found] == [answer["transactionId"]], name
        assert found[0]["collectorNumber"] == collectors[1][:3] + "*****" + collectors[1][-3:]
    assert [
        i["transactionId"]
        for i in _get(
            world, "/admin/v1/transactions", viewer, sponsor=sponsor, endpoint="reverse_event"
        ).json()["items"]
    ] == []
    first_at = _get(
        world, "/admin/v1/transactions", viewer, transactionId=sent[0][1]["transactionId"]
    ).json()["items"][0]["processedAt"]
    older = _get(world, "/admin/v1/transactions", viewer, sponsor=sponsor, to=first_at).json()
    assert older["items"] == []
    since = _get(world, "/admin/v1/transactions", viewer, sponsor=sponsor, status="posted")
    since_first = _get(
        world,
        "/admin/v1/transactions",
        viewer,
        sponsor=sponsor,
        status="posted",
        **{"from": first_at},
    )
    assert since.json()["items"] == since_first.json()["items"]
    partner.close()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"endpoint": "nowhere"}, "endpoint"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-11-25T10:00:00"}, "to"),
    ],
)
def test_a_bad_search_parameter_is_a_400_naming_it(
    world: World, params: dict[str, str], field: str
) -> None:
    response = _get(world, "/admin/v1/transactions", _bearer(world, OperatorRole.VIEWER), **params)
    assert_problem(response, 400, "CURSOR_INVALID" if field == "cursor" else "FIELD_INVALID", field)


def test_a_transactions_detail_shows_lines_history_and_reversals_masked_for_a_viewer(
    world: World,
) -> None:
    collector = world.collector()
    original = world.body(collector, miles=20)
    posted = world.partner.post_event(original).json()
    reversal = world.partner.reverse_event(
        world.body(collector, miles=8, originalClientTransactionId=original["clientTransactionId"])
    ).json()
    path = f"/admin/v1/transactions/{posted['transactionId']}"

    agent = _get(world, path, _bearer(world, OperatorRole.AGENT)).json()
    viewer = _get(world, path, _bearer(world, OperatorRole.VIEWER)).json()

    assert agent["collectorNumber"] == collector
    assert agent["request"]["collectorNumber"] == collector
    assert agent["response"] == posted
    masked = collector[:3] + "*****" + collector[-3:]
    assert viewer["collectorNumber"] == masked
    assert viewer["request"]["collectorNumber"] == masked
    assert collector not in str(viewer)
    [line] = agent["lines"]
    assert (line["status"], line["miles"]) == ("posted", 20)
    assert [h["status"] for h in line["history"]] == ["posted"]
    assert [r["transactionId"] for r in agent["reversals"]] == [reversal["transactionId"]]
    missing = _get(world, "/admin/v1/transactions/nope", _bearer(world, OperatorRole.VIEWER))
    assert_problem(missing, 404, "NOT_FOUND")


# --------------------------------------------------------------------------- pending review


def _pending_lines(world: World, partner: Partner, sponsor: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        answer = partner.post_event(data.event_body(sponsor, world.collector(), miles=100))
        assert answer.status_code == 202, answer.text  # accepted, pending review
        ids.append(f"{answer.json()['transactionId']}:0")
    return ids


def _reasons(world: World, sponsor: str) -> dict[str, str]:
    items = _get(
        world, "/admin/v1/pending", _bearer(world, OperatorRole.VIEWER), sponsor=sponsor
    ).json()["items"]
    return {i["lineId"]: i["reason"] for i in items}


def _post(world: World, path: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    if body is None:
        return world.partner.http.post(path, headers=headers)
    return world.partner.http.post(path, headers=headers, json=body)


def test_pending_review_one_by_one_and_in_bulk_all_or_nothing(world: World) -> None:
    sponsor, partner = _own_partner(world, review_threshold_miles=50)
    agent = _bearer(world, OperatorRole.AGENT)
    lines = _pending_lines(world, partner, sponsor, 5)

    listed = _get(
        world, "/admin/v1/pending", _bearer(world, OperatorRole.VIEWER), sponsor=sponsor, limit=2
    ).json()
    assert [i["lineId"] for i in listed["items"]] == lines[:2]
    assert listed["items"][0]["reason"] == "review"
    assert listed["items"][0]["miles"] == 100
    assert listed["items"][0]["ageSeconds"] >= 0
    rest = _get(
        world,
        "/admin/v1/pending",
        _bearer(world, OperatorRole.VIEWER),
        sponsor=sponsor,
        cursor=listed["nextCursor"],
    ).json()
    assert [i["lineId"] for i in rest["items"]] == lines[2:]

    approved = _post(world, f"/admin/v1/pending/{lines[0]}/approve", agent, {"note": "known"})
    assert approved.status_code == 200, approved.text
    rejected = _post(world, f"/admin/v1/pending/{lines[1]}/reject", agent, {"note": "fraud"})
    assert rejected.status_code == 200, rejected.text
    again = _post(world, f"/admin/v1/pending/{lines[1]}/reject", agent)
    assert_problem(again, 409, "LINE_NOT_PENDING_REVIEW", "lineId")

    # One line of the bulk is no longer pending review: nothing of it is done.
    bad = _post(
        world,
        "/admin/v1/pending/bulk",
        agent,
        {"action": "approve", "lineIds": [lines[2], lines[1], lines[3]], "note": "batch"},
    )
    assert_problem(bad, 409, "LINE_NOT_PENDING_REVIEW", "lineIds[1]")
    unknown = _post(
        world,
        "/admin/v1/pending/bulk",
        agent,
        {"action": "reject", "lineIds": [lines[2], "nope:0"]},
    )
    assert_problem(unknown, 409, "LINE_NOT_PENDING_REVIEW", "lineIds[1]")
    assert _reasons(world, sponsor).get(lines[2]) == "review"
    assert _reasons(world, sponsor).get(lines[3]) == "review"
    too_many = _post(
        world, "/admin/v1/pending/bulk", agent, {"action": "approve", "lineIds": ["x:0"] * 501}
    )
    assert too_many.status_code == 400

    done = _post(
        world,
        "/admin/v1/pending/bulk",
        agent,
        {"action": "reject", "lineIds": [lines[2], lines[3]], "note": "batch"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["count"] == 2
    assert set(_reasons(world, sponsor)) <= {lines[0], lines[4]}

    # The approved line posts once the worker passes; the ledger balances.
    def posted() -> httpx.Response:
        detail = _get(world, f"/admin/v1/transactions/{lines[0][:-2]}", agent).json()
        return httpx.Response(200 if detail["lines"][0]["status"] == "posted" else 202)

    assert _eventually(posted).status_code == 200
    detail = _get(world, f"/admin/v1/transactions/{lines[2][:-2]}", agent).json()
    assert detail["lines"][0]["errorCode"] == "REVIEW_REJECTED"
    assert [h["status"] for h in detail["lines"][0]["history"]] == ["pending", "rejected"]
    with world.db.reader() as session:
        assert verify(session).ok

    # Each review is in the audit log, one entry per line, newest first.
    viewer = _bearer(world, OperatorRole.VIEWER)
    entries = []
    for line in lines[:4]:
        log = _get(
            world, "/admin/v1/audit-log", viewer, entity="issuance_line", entityId=line
        ).json()
        entries.extend(log["items"])
    assert sorted((e["entityId"], e["action"], e["note"]) for e in entries) == sorted(
        [
            (lines[0], "pending.approve", "known"),
            (lines[1], "pending.reject", "fraud"),
            (lines[2], "pending.reject", "batch"),
            (lines[3], "pending.reject", "batch"),
        ]
    )
    assert all(e["actor"].startswith("token:") and e["requestId"] for e in entries)
    page = _get(world, "/admin/v1/audit-log", viewer, entity="issuance_line", limit=1).json()
    after = _get(
        world, "/admin/v1/audit-log", viewer, entity="issuance_line", cursor=page["nextCursor"]
    ).json()
    assert page["items"][0]["id"] > after["items"][0]["id"]
    assert page["items"][0]["entityId"] == lines[3] or page["items"][0]["entityId"] == lines[2]
    partner.close()
