"""The console's audit log page over HTTP against the shared server: a review done in the console
is shown (who, what, the change, the note), the filters by operator, entity (and id) and day,
the next page by the admin API's cursor, sign-in, bad input and escaping."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.operators import service as operators
from rewardmiles.operators.service import Actor
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import server_settings
from tests.support.console import Console, signed_in
from tests.support.review_desk import HeldLines, bulk, held_lines
from tests.support.server import Server

PAGE = "/console/audit-log"


@pytest.fixture
def viewer(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.VIEWER)


@pytest.fixture
def reviewed(server: Server, db: Database) -> Iterator[tuple[Console, HeldLines]]:
    """An agent who approved two lines and rejected one in the console, with a note each."""
    agent = signed_in(db, server.base_url, OperatorRole.AGENT)
    held = held_lines(db, server.base_url, 3)
    for action, lines, note in (
        ("approve", held.ids[:2], "known <script>alert(1)</script>"),
        ("reject", held.ids[2:], "fraud"),
    ):
        done = bulk(agent, {"action": action, "line": lines, "note": note}, htmx=True)
        assert done.status_code == 200, done.text
    yield agent, held
    held.partner.close()


def _rows(page: str) -> list[str]:
    """The actions of the table's rows, in order."""
    return re.findall(r'<th scope="row">([^<]+)</th>', page)


def _today(server: Server) -> datetime:
    return datetime.now(UTC).astimezone(clock.zone(server_settings(server).program_time_zone))


def test_a_review_done_in_the_console_is_logged_with_who_what_and_the_note(
    viewer: Console, reviewed: tuple[Console, HeldLines]
) -> None:
    agent, held = reviewed
    page = viewer.get(PAGE, params={"operator": agent.login.email})
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert _rows(page.text) == ["pending.reject", "pending.approve", "pending.approve"]
    for line in held.ids:
        assert f">{line}</a>" in page.text
    assert page.text.count(f">{agent.login.email}</a>") == 3
    assert "<script>alert(1)</script>" not in page.text
    assert "known &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<dt>pendingReason</dt>" in page.text
    assert "<code>&#34;review&#34;</code> → <code>&#34;approved&#34;</code>" in page.text
    assert "<code>&#34;pending&#34;</code> → <code>&#34;rejected&#34;</code>" in page.text
    # An approval leaves the status pending: shown as unchanged.
    assert '<dd class="muted"><code>&#34;pending&#34;</code> (unchanged)</dd>' in page.text
    assert "Next page" not in page.text


def test_the_filters_narrow_the_log(
    viewer: Console, reviewed: tuple[Console, HeldLines], server: Server
) -> None:
    agent, held = reviewed
    one = viewer.get(PAGE, params={"entity": "issuance_line", "entity_id": held.ids[2]})
    assert one.status_code == 200
    assert _rows(one.text) == ["pending.reject"]
    assert ">fraud<" in one.text
    assert (
        _rows(viewer.get(PAGE, params={"operator": agent.login.email, "entity": "operator"}).text)
        == []
    )

    today = _today(server).date()
    on_the_day = viewer.get(PAGE, params={"operator": agent.login.email, "day": today.isoformat()})
    assert len(_rows(on_the_day.text)) == 3
    before = viewer.get(
        PAGE, params={"operator": agent.login.email, "day": (today - timedelta(days=1)).isoformat()}
    )
    assert before.status_code == 200
    assert _rows(before.text) == []
    assert "No change is logged with these filters." in before.text

    nobody = viewer.get(PAGE, params={"operator": "nobody@example.com"})
    assert _rows(nobody.text) == []


def test_the_next_page_follows_the_cursor(viewer: Console, db: Database) -> None:
    actor = Actor(f"pager-{secrets.token_hex(4)}@suite")
    now = datetime.now(UTC)
    with db.unit_of_work() as session:
        for n in range(53):
            operators.audit(session, actor, "test.step", "step", str(n), now, after={"n": n})
    first = viewer.get(PAGE, params={"operator": actor.name})
    ids = re.findall(r'entity_id=(\d+)"', first.text)
    assert ids == [str(n) for n in range(52, 2, -1)]  # 50 a page, newest first
    found = re.search(r'<a href="([^"]+)">Next page</a>', first.text)
    assert found is not None
    following = viewer.get(html.unescape(found.group(1)))
    assert following.status_code == 200
    assert re.findall(r'entity_id=(\d+)"', following.text) == ["2", "1", "0"]
    assert "Next page" not in following.text
    assert "First page" in following.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"day": "yesterday"}, "Day must be a day, YYYY-MM-DD."),
        ({"day": "2026-02-30"}, "Day must be a day, YYYY-MM-DD."),
        ({"day": "20260101"}, "Day must be a day, YYYY-MM-DD."),  # fromisoformat reads it
        ({"day": "2026-W01-1"}, "Day must be a day, YYYY-MM-DD."),
        ({"day": "9999-12-31"}, "Day must lie between 0001-01-02 and 9999-12-30."),  # no bounds
        ({"entity": "e" * 65}, "Entity is at most 64 characters."),
        ({"entity_id": "1" * 129}, "Entity id is at most 128 characters."),
        ({"operator": "a" * 321}, "Operator is at most 320 characters."),
        ({"cursor": "not-a-cursor"}, "The cursor is not one this list gave."),
        ({"cursor": "WyJ4Il0"}, "The cursor is not one this list gave."),  # ["x"]
    ],
)
def test_bad_input_is_a_400_page_saying_why(
    viewer: Console, params: dict[str, str], message: str
) -> None:
    page = viewer.get(PAGE, params=params)
    assert page.status_code == 400
    assert message in page.text


def test_without_a_session_the_page_sends_to_sign_in(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        page = anonymous.get(PAGE, params={"entity": "operator"})
        assert page.status_code == 303
        assert (
            page.headers["location"]
            == "/console/sign-in?next=/console/audit-log%3Fentity%3Doperator"
        )


def test_filter_values_are_escaped(viewer: Console) -> None:
    script = "<script>alert(1)</script>"
    page = viewer.get(PAGE, params={"operator": script, "entity": script})
    assert page.status_code == 200
    assert script not in page.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page.text
