"""The console's Transaction page over HTTP against the real server: one search box finding a
transaction by its id or the partner's, or a failed partner call by its request id; several
matches listed; the detail with request, response, lines, reversals and the collector (masked
for a viewer); refusals as pages."""

from __future__ import annotations

import html
import re
import time

import httpx

from rewardmiles.vocabulary import OperatorRole
from tests.e2e.conftest import World
from tests.support import data
from tests.support.console import Console, signed_in
from tests.support.problems import assert_problem


def _search(operator: Console, text: str) -> httpx.Response:
    return operator.get("/console/transactions", params={"q": text})


def test_without_a_session_the_pages_send_to_sign_in(world: World) -> None:
    anonymous = httpx.Client(base_url=world.server.base_url, timeout=30)
    for path in ("/console/transactions?q=x", "/console/transactions/abc"):
        answer = anonymous.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in?next=/console/transactions")


def test_one_match_by_transaction_or_partner_id_opens_the_transaction(world: World) -> None:
    viewer = signed_in(world.db, world.server.base_url, OperatorRole.VIEWER)
    body = world.body(world.collector(), miles=20)
    posted = world.partner.post_event(body).json()
    detail = f"/console/transactions/{posted['transactionId']}"

    form = viewer.get("/console/transactions")
    assert form.status_code == 200
    assert ">Transaction id, partner id or request id</label>" in form.text
    for text in (posted["transactionId"], f"  {body['clientTransactionId']} "):
        answer = _search(viewer, text)
        assert answer.status_code == 303, text
        assert answer.headers["location"] == detail


def test_a_partner_id_of_two_sponsors_lists_both(world: World) -> None:
    viewer = signed_in(world.db, world.server.base_url, OperatorRole.VIEWER)
    other = data.new_sponsor(world.db)
    partner = world.new_partner(other)
    shared = data.txn_id("shared")
    first = world.partner.post_event(world.body(world.collector(), clientTransactionId=shared))
    second = partner.post_event(
        data.event_body(other, world.collector(), clientTransactionId=shared)
    )

    answer = _search(viewer, shared)

    assert answer.status_code == 200
    assert "2 transactions" in answer.text
    for posted in (first.json(), second.json()):
        assert f'href="/console/transactions/{posted["transactionId"]}"' in answer.text
    assert world.sponsor in answer.text
    assert other in answer.text


def test_a_failed_requests_id_shows_its_request_and_response(world: World) -> None:
    agent = signed_in(world.db, world.server.base_url, OperatorRole.AGENT)
    refused = world.partner.post_event(world.body(world.collector(), miles=0))
    problem = assert_problem(refused, 400, "MILES_AMOUNT_INVALID", "issuances[0].milesAmount")
    request_id = problem["requestId"]

    deadline = time.monotonic() + 10
    answer = _search(agent, request_id)
    while answer.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = _search(agent, request_id)

    assert answer.status_code == 200, answer.text
    assert f"Failed partner request {request_id}" in answer.text
    assert "/checkout/issuance/post/event" in answer.text
    assert "MILES_AMOUNT_INVALID" in answer.text
    assert html.escape(problem["detail"], quote=False) in answer.text
    assert world.partner.client_id in answer.text


def test_nothing_found_or_a_bad_query_is_a_page_with_the_message(world: World) -> None:
    viewer = signed_in(world.db, world.server.base_url, OperatorRole.VIEWER)
    missing = _search(viewer, "no-such-id")
    assert missing.status_code == 404
    assert "No transaction or failed request has the id no-such-id." in missing.text
    hostile = _search(viewer, "<script>alert(1)</script>")
    assert hostile.status_code == 404
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile.text
    assert "<script>alert(1)" not in hostile.text
    long = _search(viewer, "x" * 65)
    assert long.status_code == 400
    assert "1 to 64 printable characters" in long.text
    assert _search(viewer, "a b").status_code == 400
    assert viewer.get("/console/transactions/" + "x" * 37).status_code == 400
    unknown = viewer.get("/console/transactions/nope")
    assert unknown.status_code == 404
    assert "No transaction nope." in unknown.text


def test_the_detail_shows_request_response_lines_reversals_and_the_collector(
    world: World,
) -> None:
    collector = world.collector()
    original = world.body(collector, miles=20)
    posted = world.partner.post_event(original).json()
    reversal = world.partner.reverse_event(
        world.body(collector, miles=8, originalClientTransactionId=original["clientTransactionId"])
    ).json()
    path = f"/console/transactions/{posted['transactionId']}"

    agent = signed_in(world.db, world.server.base_url, OperatorRole.AGENT).get(path)
    viewer = signed_in(world.db, world.server.base_url, OperatorRole.VIEWER).get(path)

    assert agent.status_code == 200
    assert viewer.status_code == 200
    assert f'<a href="/console/collectors/{collector}">{collector}</a>' in agent.text
    assert str(original["clientTransactionId"]) in agent.text
    request = re.search(r'<pre class="json" id="request-json">(.*?)</pre>', agent.text, re.S)
    assert request is not None
    assert f"&#34;collectorNumber&#34;: &#34;{collector}&#34;" in request.group(1)
    assert f'href="/console/transactions/{reversal["transactionId"]}"' in agent.text
    assert re.search(r"<td>posted</td>\s*<td><ol class=\"history\"><li>posted at ", agent.text)
    masked = collector[:3] + "*****" + collector[-3:]
    assert collector not in viewer.text
    assert masked in viewer.text
    assert "/console/collectors/" not in viewer.text.split("<main", 1)[1]

    back = signed_in(world.db, world.server.base_url, OperatorRole.VIEWER).get(
        f"/console/transactions/{reversal['transactionId']}"
    )
    assert f'href="/console/transactions/{posted["transactionId"]}"' in back.text
