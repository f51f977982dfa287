"""The console's Collector page over HTTP against the real server: the search form, the status,
balance and history (pages, filters), adjustments and status changes through a confirm step (by
role, with the session's CSRF token, once for a double submit), refusals as pages."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from rewardmiles.db.models import Adjustment, OperatorAuditEntry
from rewardmiles.vocabulary import OperatorRole
from tests.e2e.conftest import World
from tests.support import data
from tests.support.console import Console, signed_in


@pytest.fixture
def agent(world: World) -> Console:
    return signed_in(world.db, world.server.base_url, OperatorRole.AGENT)


@pytest.fixture
def viewer(world: World) -> Console:
    return signed_in(world.db, world.server.base_url, OperatorRole.VIEWER)


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert found is not None, f"no hidden {name}"
    return html.unescape(found.group(1))


def _adjustments(world: World, number: str) -> int:
    with world.db.reader() as session:
        return int(
            session.scalar(select(func.count()).where(Adjustment.collector_number == number)) or 0
        )


def _audits(world: World, number: str, action: str) -> list[tuple[str, str | None]]:
    """(actor, note) of the audit entries of `action` on the collector."""
    with world.db.reader() as session:
        rows = session.execute(
            select(OperatorAuditEntry.actor, OperatorAuditEntry.note).where(
                OperatorAuditEntry.entity_id == number, OperatorAuditEntry.action == action
            )
        ).all()
    return [(r.actor, r.note) for r in rows]


def test_without_a_session_each_page_sends_to_sign_in(world: World) -> None:
    number = world.collector()
    anonymous = httpx.Client(base_url=world.server.base_url, timeout=30)
    for path in ("/console/collectors", f"/console/collectors/{number}"):
        answer = anonymous.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in?next=/console/collectors")
    posted = anonymous.post(
        f"/console/collectors/{number}/adjustments", data={"miles": "5", "reason": "GOODWILL"}
    )
    assert posted.status_code == 303
    assert _adjustments(world, number) == 0


def test_the_search_finds_a_collector_or_says_why_not(world: World, viewer: Console) -> None:
    number = world.collector()
    form = viewer.get("/console/collectors")
    assert form.status_code == 200
    assert '<label for="number">Collector number</label>' in form.text

    found = viewer.get("/console/collectors", params={"number": f" {number} "})
    assert found.status_code == 303
    assert found.headers["location"] == f"/console/collectors/{number}"

    bad = viewer.get("/console/collectors", params={"number": "12ab"})
    assert bad.status_code == 400
    assert "exactly 11 digits" in bad.text
    missing = data.unknown_collector()
    unknown = viewer.get("/console/collectors", params={"number": missing})
    assert unknown.status_code == 404
    assert f"No collector {missing}." in unknown.text
    assert viewer.get("/console/collectors/123").status_code == 400
    assert viewer.get(f"/console/collectors/{missing}").status_code == 404


def test_the_page_shows_status_balance_pending_and_history(world: World, viewer: Console) -> None:
    number = world.collector()
    for miles in (30, 12):
        assert world.partner.post_event(world.body(number, miles=miles)).status_code == 200

    page = viewer.get(f"/console/collectors/{number}")

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert re.search(r'id="collector-status">ACTIVE<', page.text)
    assert re.search(r'id="collector-balance">42<', page.text)
    assert re.search(r'id="collector-pending">0<', page.text)
    assert page.text.count("<tr>") - 1 == 2  # the head's row and two entries
    assert ">+30<" in page.text
    assert ">+12<" in page.text
    assert world.sponsor in page.text
    # A viewer sees neither form, and the server refuses them.
    assert "Adjust miles" not in page.text
    assert "Change status" not in page.text
    refused = viewer.post(
        f"/console/collectors/{number}/adjustments",
        {"miles": "50", "reason": "GOODWILL", "note": "x", "key": "k1", "confirm": "1"},
    )
    assert refused.status_code == 403
    assert "needs the role agent" in refused.text
    status = viewer.post(
        f"/console/collectors/{number}/status", {"status": "CLOSED", "confirm": "1"}
    )
    assert status.status_code == 403
    assert _adjustments(world, number) == 0
    assert world.balance(number) == 42


def test_the_history_pages_with_a_load_more_row_and_filters(world: World, viewer: Console) -> None:
    number = world.collector()
    other = data.new_sponsor(world.db)
    theirs = world.new_partner(other)
    for i in range(51):
        assert world.partner.post_event(world.body(number, miles=i + 1)).status_code == 200
    assert theirs.post_event(data.event_body(other, number, miles=500)).status_code == 200

    first = viewer.get(f"/console/collectors/{number}")
    more = re.search(r'<tr class="more" hx-get="([^"]+)" hx-trigger="revealed"', first.text)
    assert more is not None
    fragment_url = html.unescape(more.group(1))
    link = re.search(r'<a href="([^"]+)">Load more</a>', first.text)
    assert link is not None
    assert first.text.count(">+500<") == 1

    fragment = viewer.get(fragment_url, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert fragment.text.count("<tr>") == 2  # 52 entries, 50 a page
    assert ">+1<" in fragment.text
    assert 'class="more"' not in fragment.text
    fallback = viewer.get(html.unescape(link.group(1)))
    assert fallback.status_code == 200
    assert "<html" in fallback.text
    assert ">+1<" in fallback.text
    assert ">+500<" not in fallback.text

    filtered = viewer.get(f"/console/collectors/{number}", params={"sponsor": other})
    assert filtered.status_code == 200
    assert ">+500<" in filtered.text
    assert ">+21<" not in filtered.text
    assert "shows no balance after each entry" in filtered.text
    today = datetime.now(UTC).date().isoformat()
    none = viewer.get(f"/console/collectors/{number}", params={"to": "2001-01-01"})
    assert "No entries match the filter" in none.text
    for bad in ({"from": "yesterday"}, {"sponsor": "<b>"}, {"from": today, "to": "2001-01-01"}):
        answer = viewer.get(f"/console/collectors/{number}", params=bad)
        assert answer.status_code == 400, bad
    forged = viewer.get(f"/console/collectors/{number}", params={"cursor": "abc"})
    assert forged.status_code == 400
    assert "This cursor was not given by this list" in forged.text

    # A filtered page's cursor continues that filter only: its balance is no balance.
    mine = viewer.get(f"/console/collectors/{number}", params={"sponsor": world.sponsor})
    found = re.search(r'<a href="([^"]+)">Load more</a>', mine.text)
    assert found is not None
    cursor = parse_qs(urlsplit(html.unescape(found.group(1))).query)["cursor"][0]
    same = viewer.get(
        f"/console/collectors/{number}", params={"sponsor": world.sponsor, "cursor": cursor}
    )
    assert same.status_code == 200
    assert ">+1<" in same.text
    for elsewhere in ({}, {"sponsor": other}):
        mixed = viewer.get(f"/console/collectors/{number}", params={**elsewhere, "cursor": cursor})
        assert mixed.status_code == 400, elsewhere
        assert "This cursor was not given by this list" in mixed.text


def test_an_agent_adjusts_through_a_confirm_step_once(world: World, agent: Console) -> None:
    number = world.collector()
    assert world.partner.post_event(world.body(number, miles=100)).status_code == 200
    note = "<script>alert(1)</script> delayed flight"
    path = f"/console/collectors/{number}/adjustments"

    page = agent.get(f"/console/collectors/{number}")
    for label in ("Miles", "Reason", "Note"):
        assert f">{label}</label>" in page.text
    confirm = agent.post(path, {"miles": "50", "reason": "GOODWILL", "note": note})

    assert confirm.status_code == 200
    assert re.search(r'id="balance-after">150<', confirm.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in confirm.text
    assert "<script>alert(1)" not in confirm.text
    assert _adjustments(world, number) == 0
    key = _hidden(confirm.text, "key")
    fields = {name: _hidden(confirm.text, name) for name in ("miles", "reason", "note", "confirm")}
    assert fields["note"] == note

    done = agent.post(path, {**fields, "key": key})
    again = agent.post(path, {**fields, "key": key})

    assert done.status_code == 303
    assert again.status_code == 303
    assert "made" in done.headers["location"]
    assert "already" in again.headers["location"]
    assert world.balance(number) == 150
    assert _adjustments(world, number) == 1
    assert _audits(world, number, "collector.adjust") == [(agent.login.email, note)]
    shown = agent.get(done.headers["location"])
    assert re.search(r'id="collector-balance">150<', shown.text)
    assert "Adjustment of +50 miles made; balance 150." in shown.text
    assert ">adjustment<" in shown.text


def test_an_adjustment_is_refused_with_the_admin_apis_rules(world: World, agent: Console) -> None:
    number = world.collector()
    path = f"/console/collectors/{number}/adjustments"
    cases = [
        ({"miles": "0", "reason": "GOODWILL", "note": "n"}, 400, "Miles must be a non-zero"),
        ({"miles": "ten", "reason": "GOODWILL", "note": "n"}, 400, "Miles must be a non-zero"),
        ({"miles": "5", "reason": "BRIBE", "note": "n"}, 400, "Reason must be one of"),
        ({"miles": "5", "reason": "GOODWILL", "note": " "}, 400, "Note must be a string"),
        ({"miles": "5000", "reason": "GOODWILL", "note": "n"}, 403, "needs the role admin"),
    ]
    for fields, status, message in cases:
        answer = agent.post(path, fields)
        assert answer.status_code == status, (fields, answer.text)
        assert message in answer.text, fields
    # Over the agent limit at the second step too (a forged confirm): refused, nothing made.
    forged = agent.post(
        path,
        {"miles": "5000", "reason": "GOODWILL", "note": "n", "key": "k-1", "confirm": "1"},
    )
    assert forged.status_code == 403
    made = agent.post(
        path, {"miles": "5", "reason": "GOODWILL", "note": "n", "key": "k-2", "confirm": "1"}
    )
    assert made.status_code == 303
    reused = agent.post(
        path, {"miles": "6", "reason": "GOODWILL", "note": "n", "key": "k-2", "confirm": "1"}
    )
    assert reused.status_code == 422
    assert "already used for another adjustment" in reused.text
    missing_key = agent.post(
        path, {"miles": "5", "reason": "GOODWILL", "note": "n", "confirm": "1"}
    )
    assert missing_key.status_code == 400
    assert _adjustments(world, number) == 1
    assert world.balance(number) == 5


def test_a_post_without_the_sessions_csrf_token_is_refused(world: World, agent: Console) -> None:
    number = world.collector()
    fields = {"miles": "5", "reason": "GOODWILL", "note": "n", "key": "k", "confirm": "1"}
    path = f"/console/collectors/{number}/adjustments"
    for csrf in (None, "wrong"):
        answer = agent.post(path, fields, csrf=csrf)
        assert answer.status_code == 403
        assert "Form refused" in answer.text
    status = agent.post(
        f"/console/collectors/{number}/status", {"status": "CLOSED", "confirm": "1"}, csrf=None
    )
    assert status.status_code == 403
    assert _adjustments(world, number) == 0
    assert "ACTIVE" in agent.get(f"/console/collectors/{number}").text


def test_an_agent_changes_the_status_through_a_confirm_step(world: World, agent: Console) -> None:
    number = world.collector()
    path = f"/console/collectors/{number}/status"

    confirm = agent.post(path, {"status": "ON_HOLD", "note": "<i>check</i>"})
    assert confirm.status_code == 200
    assert "from ACTIVE to <strong>ON_HOLD</strong>" in confirm.text
    assert "&lt;i&gt;check&lt;/i&gt;" in confirm.text
    assert not _audits(world, number, "collector.set_status")
    done = agent.post(path, {"status": "ON_HOLD", "note": "<i>check</i>", "confirm": "1"})
    assert done.status_code == 303
    shown = agent.get(done.headers["location"])
    assert re.search(r'id="collector-status">ON_HOLD<', shown.text)
    assert _audits(world, number, "collector.set_status") == [(agent.login.email, "<i>check</i>")]

    bad = agent.post(path, {"status": "GONE", "confirm": "1"})
    assert bad.status_code == 400
    assert "Status must be one of" in bad.text
    # ON_HOLD: a GOODWILL adjustment is refused, as by the admin API.
    held = agent.post(
        f"/console/collectors/{number}/adjustments",
        {"miles": "5", "reason": "GOODWILL", "note": "n", "key": "k-3", "confirm": "1"},
    )
    assert held.status_code == 409
    assert "only FRAUD or CORRECTION" in held.text
