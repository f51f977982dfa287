"""The console's pending review page over HTTP against the shared server: the list and its
filters (sponsor, reason, age, lines per page and the next page), the bulk review of an agent
(with htmx: the list fragment and its message; without: 303 back with the message), all or
nothing, what a viewer sees and may not do, sign-in, CSRF, bad input and escaping."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from rewardmiles.db.engine import Database
from rewardmiles.db.models import Transaction
from rewardmiles.support import service as support
from rewardmiles.vocabulary import OperatorRole
from tests.support.console import Console, signed_in
from tests.support.review_desk import HeldLines, bulk, held_lines
from tests.support.server import Server

PAGE = "/console/pending"
BULK = PAGE + "/bulk"


@pytest.fixture
def agent(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.AGENT)


@pytest.fixture
def viewer(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.VIEWER)


@pytest.fixture
def held(server: Server, db: Database) -> Iterator[HeldLines]:
    made = held_lines(db, server.base_url, 4)
    yield made
    made.partner.close()


def _pending(db: Database, sponsor: str) -> dict[str, str]:
    """The sponsor's pending lines and their reasons, as stored."""
    with db.reader() as session:
        page = support.pending(session, sponsor, None, None, 500, datetime.now(UTC), "UTC")
    return {item["lineId"]: item["reason"] for item in page.items}


def _listed(page: str) -> list[str]:
    """The line ids of the list's rows, in order."""
    return re.findall(r'<th scope="row"[^>]*>(?:<label[^>]*>)?([^<]+)<', page)


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_list_shows_the_sponsors_lines_and_filters_them(
    agent: Console, held: HeldLines
) -> None:
    page = agent.get(PAGE, params={"sponsor": held.sponsor})
    assert page.status_code == 200, page.text
    assert _listed(page.text) == held.ids
    assert page.headers["cache-control"] == "no-store"
    for line in held.ids:
        assert f'name="line" value="{line}"' in page.text
    assert 'data-select-all="line"' in page.text
    assert "Approve selected" in page.text
    assert "Reject selected" in page.text
    assert '<label for="bulk-note">Note</label>' in page.text

    # Lower case is the sponsor's code too; a reason, an age and a page size narrow the list.
    assert _listed(agent.get(PAGE, params={"sponsor": held.sponsor.lower()}).text) == held.ids
    assert (
        _listed(agent.get(PAGE, params={"sponsor": held.sponsor, "reason": "review"}).text)
        == held.ids
    )
    unknown = agent.get(PAGE, params={"sponsor": held.sponsor, "reason": "collector_unknown"})
    assert unknown.status_code == 200
    assert _listed(unknown.text) == []
    assert "No line is pending with these filters." in unknown.text
    older = agent.get(PAGE, params={"sponsor": held.sponsor, "age": "1h"})
    assert (older.status_code, _listed(older.text)) == (200, [])

    first = agent.get(PAGE, params={"sponsor": held.sponsor, "limit": "3"})
    assert _listed(first.text) == held.ids[:3]
    found = re.search(r'<a href="([^"]+)">Next page</a>', first.text)
    assert found is not None
    following = agent.get(html.unescape(found.group(1)))
    assert following.status_code == 200
    assert _listed(following.text) == held.ids[3:]
    assert "Next page" not in following.text
    assert "First page" in following.text


def test_the_age_filter_keeps_the_lines_older_than_it(
    viewer: Console, held: HeldLines, db: Database
) -> None:
    """Two calls processed 2 hours and 2 days ago (their times moved back in the database)."""
    now = datetime.now(UTC)
    for line, age in ((held.ids[1], timedelta(hours=2)), (held.ids[3], timedelta(days=2))):
        with db.unit_of_work() as session:
            session.execute(
                update(Transaction)
                .where(Transaction.id == line.split(":")[0])
                .values(processed_at=now - age)
            )
    assert _listed(viewer.get(PAGE, params={"sponsor": held.sponsor, "age": "1h"}).text) == [
        held.ids[3],
        held.ids[1],
    ]
    assert _listed(viewer.get(PAGE, params={"sponsor": held.sponsor, "age": "1d"}).text) == [
        held.ids[3]
    ]
    assert _listed(viewer.get(PAGE, params={"sponsor": held.sponsor, "age": "3d"}).text) == []
    page = viewer.get(PAGE, params={"sponsor": held.sponsor})
    assert _listed(page.text) == [held.ids[3], held.ids[1], held.ids[0], held.ids[2]]
    assert ">2 d 0 h<" in page.text
    assert ">2 h 0 min<" in page.text


def test_an_agent_approves_and_rejects_in_bulk_and_the_partner_sees_it(
    agent: Console, held: HeldLines, db: Database
) -> None:
    ids = held.ids
    listed = {"sponsor": held.sponsor, "reason": "review"}
    approved = bulk(
        agent, {"action": "approve", "line": ids[:2], "note": "known customer", **listed}, htmx=True
    )
    assert approved.status_code == 200, approved.text
    assert "<html" not in approved.text  # the list's fragment, not a page
    assert approved.text.lstrip().startswith('<section id="pending-list"')
    assert "Approved 2 lines." in approved.text
    assert _listed(approved.text) == ids[2:]  # no longer held for review
    assert {_pending(db, held.sponsor).get(line, "posted") for line in ids[:2]} <= {
        "approved",
        "posted",
    }

    # Without htmx: the form posts and the browser is sent back to the list, with the message.
    rejected = bulk(agent, {"action": "reject", "line": [ids[2]], "note": "fraud", **listed})
    assert rejected.status_code == 303
    back = rejected.headers["location"]
    assert back == f"{PAGE}?sponsor={held.sponsor}&reason=review&done=reject&count=1"
    shown = agent.get(back)
    assert "Rejected 1 line." in shown.text
    for done, count in (("approve", "501"), ("approve", "0"), ("bless", "1"), ("reject", "x")):
        page = agent.get(PAGE, params={"done": done, "count": count})
        assert page.status_code == 200
        assert 'class="done"' not in page.text
    assert _listed(shown.text) == [ids[3]]

    # The partner's replay of each call tells what became of its line.
    assert held.replayed_status(held.lines[2]) == "REJECTED"
    assert held.replayed_status(held.lines[3]) == "PENDING"
    _until(
        lambda: all(held.replayed_status(line) == "ISSUED" for line in held.lines[:2]),
        "the approved lines to post",
    )

    # One audit entry per line, with the note and the operator.
    with db.reader() as session:
        log = support.audit_log(
            session, entity="issuance_line", actor=agent.login.email, limit=10, zone="UTC"
        )
    assert sorted((e["entityId"], e["action"], e["note"]) for e in log.items) == sorted(
        [
            (ids[0], "pending.approve", "known customer"),
            (ids[1], "pending.approve", "known customer"),
            (ids[2], "pending.reject", "fraud"),
        ]
    )


def test_a_bulk_review_with_a_line_no_longer_pending_changes_nothing(
    agent: Console, held: HeldLines, db: Database
) -> None:
    ids = held.ids
    assert bulk(agent, {"action": "reject", "line": [ids[0]]}, htmx=True).status_code == 200

    refused = bulk(
        agent,
        {"action": "approve", "line": [ids[1], ids[0], ids[2]], "sponsor": held.sponsor},
        htmx=True,
    )
    assert refused.status_code == 409
    assert f"line {ids[0]} is not pending review; nothing was changed." in refused.text
    assert refused.text.lstrip().startswith('<section id="pending-list"')
    assert _listed(refused.text) == ids[1:]
    # The lines sent stay checked, to correct the selection and send it again.
    assert f'value="{ids[1]}" checked' in refused.text
    assert f'value="{ids[2]}" checked' in refused.text
    assert _pending(db, held.sponsor) == dict.fromkeys(ids[1:], "review")

    # Without htmx the whole page says the same.
    page = bulk(agent, {"action": "approve", "line": [ids[1], ids[1]]})
    assert page.status_code == 409
    assert "<html" in page.text
    assert f"line {ids[1]} is named twice; nothing was changed." in page.text
    assert _pending(db, held.sponsor) == dict.fromkeys(ids[1:], "review")


def test_a_viewer_sees_the_list_without_review_controls_and_is_refused(
    viewer: Console, held: HeldLines, db: Database
) -> None:
    page = viewer.get(PAGE, params={"sponsor": held.sponsor})
    assert page.status_code == 200
    assert _listed(page.text) == held.ids
    assert "Approve selected" not in page.text
    assert "Reject selected" not in page.text
    assert 'name="line"' not in page.text
    assert "/console/pending/bulk" not in page.text

    for htmx in (False, True):
        refused = bulk(viewer, {"action": "approve", "line": held.ids[:1]}, htmx=htmx)
        assert refused.status_code == 403
        assert "This needs the role agent; you are viewer." in refused.text
    assert _pending(db, held.sponsor) == dict.fromkeys(held.ids, "review")


def test_without_a_session_the_page_sends_to_sign_in(server: Server, held: HeldLines) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        page = anonymous.get(PAGE, params={"sponsor": held.sponsor})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/sign-in?next=/console/pending")
        posted = anonymous.post(BULK, data={"action": "approve", "line": held.ids[0]})
        assert posted.status_code == 303
        assert posted.headers["location"].startswith("/console/sign-in")


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("csrf", [None, "not-the-token"])
def test_a_bulk_review_without_the_sessions_token_is_refused(
    agent: Console, held: HeldLines, db: Database, csrf: str | None, htmx: bool
) -> None:
    refused = bulk(agent, {"action": "approve", "line": held.ids}, htmx=htmx, csrf=csrf)
    assert refused.status_code == 403
    assert "did not carry this session&#39;s token" in refused.text
    assert _pending(db, held.sponsor) == dict.fromkeys(held.ids, "review")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reason": "lost"}, "reason is one of review, approved, collector_unknown"),
        ({"age": "2y"}, "Older than is one of 1h, 1d, 3d, 7d."),
        ({"limit": "0"}, "Lines per page is a number from 1 to 500."),
        ({"limit": "501"}, "Lines per page is a number from 1 to 500."),
        ({"limit": "many"}, "Lines per page is a number from 1 to 500."),
        ({"sponsor": "ABCDEFGHIJK"}, "A sponsor code has at most 10 characters."),
        ({"cursor": "not-a-cursor"}, "The cursor is not one this list gave."),
    ],
)
def test_a_bad_filter_is_a_400_page_saying_why(
    viewer: Console, params: dict[str, str], message: str
) -> None:
    page = viewer.get(PAGE, params=params)
    assert page.status_code == 400
    assert message in page.text
    assert "Pending review" in page.text


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"action": "approve"}, 400, "Select one or more lines to approve or reject."),
        ({"action": "bless", "line": "x:0"}, 400, "Action: must be approve or reject."),
        ({"line": "x:0"}, 400, "Action: is required and must not be null."),
        (
            {"action": "approve", "line": ["x:0"] * 501},
            400,
            "Lines: must be a list of 1 to 500 line ids (TRANSACTION_ID:LINE_NO).",
        ),
        (
            {"action": "approve", "line": "x:0", "note": "n" * 501},
            400,
            "Note: must be a string of 1 to 500 characters.",
        ),
        (
            {"action": "reject", "line": "nope:0"},
            409,
            "line nope:0 is not pending review; nothing was changed.",
        ),
        ({"action": "approve", "line": "x:0", "age": "2y"}, 400, "Older than is one of"),
    ],
)
def test_a_bad_bulk_form_is_refused_with_the_message(
    agent: Console, fields: dict[str, str | list[str]], status: int, message: str
) -> None:
    for htmx in (False, True):
        answer = bulk(agent, fields, htmx=htmx)
        assert answer.status_code == status, answer.text
        assert html.escape(message, quote=True) in answer.text


def test_values_are_escaped(agent: Console, held: HeldLines) -> None:
    script = "<script>alert(1)</script>"
    answer = bulk(agent, {"action": "approve", "note": script, "sponsor": held.sponsor})
    assert answer.status_code == 400
    assert script not in answer.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in answer.text
    page = agent.get(PAGE, params={"sponsor": "<b>x</b>"})
    assert "<b>x</b>" not in page.text
    assert 'value="&lt;B&gt;X&lt;/B&gt;"' in page.text
