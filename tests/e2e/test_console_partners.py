"""The console's Partners page over HTTP against a real server: partner clients per sponsor,
creating one (its secret shown once), rotating and revoking (after a confirm step naming the
client), sponsors and locations; roles, CSRF, bad input and escaping."""

from __future__ import annotations

import re
import secrets
import time

import httpx
import pytest
from sqlalchemy import select

from rewardmiles import limits
from rewardmiles.auth import service as clients
from rewardmiles.console import partners as console_partners
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Location, OperatorAuditEntry, Sponsor
from rewardmiles.sponsors import service as sponsors
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.console import Console, maxlengths, signed_in, text_of
from tests.support.partner import fetch_token
from tests.support.server import Server

PAGE = "/console/partners"
XSS = "<script>alert(1)</script>"
WITHIN_SECONDS = 5.0  # the revocation promise (docs/operations.md)


@pytest.fixture
def admin(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.ADMIN)


@pytest.fixture
def viewer(server: Server, db: Database) -> Console:
    return signed_in(db, server.base_url, OperatorRole.VIEWER)


def _secret_of(html: str) -> str:
    found = re.search(r'<code id="secret">([^<]+)</code>', html)
    assert found, html
    return found.group(1)


def _client_id_of(html: str) -> str:
    found = re.search(r'id="client-id">(rmc_[^<]+)<', html)
    assert found, html
    return found.group(1)


def _create(admin: Console, sponsor: str, name: str = "Till 4") -> httpx.Response:
    return admin.post(PAGE + "/clients", {"name": name, "sponsors": sponsor, "back": sponsor})


def _revoked_at(db: Database, client_id: str) -> object:
    with db.reader() as session:
        row = clients.client(session, client_id)
    assert row is not None
    return row.revoked_at


def _audit_actions(db: Database, entity_id: str) -> list[str]:
    with db.reader() as session:
        return list(
            session.scalars(
                select(OperatorAuditEntry.action)
                .where(OperatorAuditEntry.entity_id == entity_id)
                .order_by(OperatorAuditEntry.id)
            )
        )


def test_the_page_lists_a_sponsors_clients_for_any_role(
    server: Server, db: Database, viewer: Console
) -> None:
    sponsor = data.new_sponsor(db, locations=["0037"])
    other = data.new_sponsor(db)
    mine, _ = data.new_client(db, [sponsor])
    theirs, _ = data.new_client(db, [other])
    page = viewer.get(PAGE, params={"sponsor": sponsor})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert mine in page.text
    assert theirs not in page.text
    assert "0037" in text_of(page.text)  # the sponsor's locations
    every = viewer.get(PAGE)
    assert mine in every.text
    assert theirs in every.text
    # a viewer sees no action of an admin
    for action in ("Create client", ">Revoke<", ">Rotate<", "Add sponsor", "Add location"):
        assert action not in page.text


def test_without_a_session_the_page_sends_the_browser_to_sign_in(server: Server) -> None:
    answer = httpx.get(server.base_url + PAGE, timeout=30)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=/console/partners")


def test_an_admin_creates_a_client_and_sees_its_secret_once(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    made = _create(admin, sponsor)
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    secret, client_id = _secret_of(made.text), _client_id_of(made.text)
    assert '<button type="button" class="secondary" data-copy="#secret">' in made.text
    assert fetch_token(server.base_url, client_id, secret)  # the secret signs in
    listed = admin.get(PAGE, params={"sponsor": sponsor})
    assert client_id in listed.text
    assert secret not in listed.text
    assert _audit_actions(db, client_id) == ["partner.create"]


def test_creating_a_client_refuses_bad_input_beside_the_field(
    server: Server, db: Database, admin: Console
) -> None:
    none = admin.post(PAGE + "/clients", {"name": "No sponsors"})
    assert none.status_code == 400
    assert "must be 1 to" in text_of(none.text)
    unknown = admin.post(PAGE + "/clients", {"name": "x", "sponsors": "NOSUCH1"})
    assert unknown.status_code == 400
    assert "NOSUCH1" in text_of(unknown.text)
    long_name = admin.post(PAGE + "/clients", {"name": "n" * 500, "sponsors": data.new_sponsor(db)})
    assert long_name.status_code == 400
    assert "characters" in text_of(long_name.text)


def test_a_revoke_needs_the_confirm_step_naming_the_client(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    token = fetch_token(server.base_url, client_id, secret)
    first = admin.post(f"{PAGE}/clients/{client_id}/revoke", {"back": sponsor})
    assert first.status_code == 200
    assert client_id in first.text
    assert 'name="confirm" value="1"' in first.text
    assert _revoked_at(db, client_id) is None  # nothing yet
    done = admin.post(
        f"{PAGE}/clients/{client_id}/revoke",
        {"back": sponsor, "confirm": "1", "reason": "till stolen"},
    )
    assert done.status_code == 303
    assert _revoked_at(db, client_id) is not None
    shown = admin.get(done.headers["location"])
    assert f"{client_id}) revoked" in text_of(shown.text) or f"{client_id} revoked" in text_of(
        shown.text
    )
    # every API process refuses the client's token within seconds (test_partner_clients)
    deadline = time.monotonic() + 2 * WITHIN_SECONDS
    while True:
        refused = httpx.get(
            server.base_url + "/checkout/issuance/transactions/no-such-transaction",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if refused.status_code == 401:
            break
        assert refused.status_code == 404
        assert time.monotonic() < deadline, "the revoked client's token still works"
        time.sleep(0.1)
    assert refused.json()["code"] == "TOKEN_REVOKED"
    assert _audit_actions(db, client_id) == ["partner.revoke"]


def test_rotating_shows_the_new_secret_and_the_old_one_keeps_working(
    server: Server, db: Database, admin: Console
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, old = data.new_client(db, [sponsor])
    rotated = admin.post(f"{PAGE}/clients/{client_id}/rotate", {"back": sponsor})
    assert rotated.status_code == 200
    new = _secret_of(rotated.text)
    assert new != old
    assert "Old secret works until" in rotated.text
    assert fetch_token(server.base_url, client_id, new)
    assert fetch_token(server.base_url, client_id, old)  # within the grace


def test_a_viewer_cannot_create_rotate_or_revoke(
    server: Server, db: Database, viewer: Console
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, _ = data.new_client(db, [sponsor])
    made = viewer.post(PAGE + "/clients", {"name": "x", "sponsors": sponsor})
    assert made.status_code == 403
    assert "ADMIN_FORBIDDEN" in made.text
    for action in ("rotate", "revoke"):
        answer = viewer.post(f"{PAGE}/clients/{client_id}/{action}", {"confirm": "1"})
        assert answer.status_code == 403
    assert _revoked_at(db, client_id) is None
    assert _audit_actions(db, client_id) == []
    added = viewer.post(PAGE + "/sponsors", {"code": "SVIEW1", "name": "x"})
    assert added.status_code == 403
    with db.reader() as session:
        assert session.get(Sponsor, "SVIEW1") is None


@pytest.mark.parametrize("csrf", [None, "wrong-token"])
def test_a_post_without_the_sessions_token_is_refused(
    server: Server, db: Database, admin: Console, csrf: str | None
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, _ = data.new_client(db, [sponsor])
    answer = admin.post(f"{PAGE}/clients/{client_id}/revoke", {"confirm": "1"}, csrf=csrf)
    assert answer.status_code == 403
    assert "CSRF_REJECTED" in answer.text
    assert _revoked_at(db, client_id) is None
    created = admin.post(PAGE + "/clients", {"sponsors": sponsor}, csrf=csrf)
    assert created.status_code == 403


def test_sponsors_and_locations_are_added_by_an_admin(
    server: Server, db: Database, admin: Console
) -> None:
    code = "C" + secrets.token_hex(3).upper()
    added = admin.post(PAGE + "/sponsors", {"code": code, "name": "Corner shop"})
    assert added.status_code == 303
    assert code in added.headers["location"]
    again = admin.post(PAGE + "/sponsors", {"code": code, "name": "Corner shop"})
    assert again.status_code == 409
    assert "already exists" in text_of(again.text)
    bad = admin.post(PAGE + "/sponsors", {"code": "lower", "name": "x"})
    assert bad.status_code == 422
    assert "uppercase" in text_of(bad.text)
    empty = admin.post(PAGE + "/sponsors", {"code": "", "name": ""})
    assert empty.status_code == 400
    located = admin.post(f"{PAGE}/sponsors/{code}/locations", {"location": "0042"})
    assert located.status_code == 303
    twice = admin.post(f"{PAGE}/sponsors/{code}/locations", {"location": "0042"})
    assert twice.status_code == 409
    spaced = admin.post(f"{PAGE}/sponsors/{code}/locations", {"location": "has space"})
    assert spaced.status_code == 422
    assert "without spaces" in text_of(spaced.text)
    missing = admin.post(f"{PAGE}/sponsors/NOSUCH9/locations", {"location": "0042"})
    assert missing.status_code == 404
    with db.reader() as session:
        assert session.get(Sponsor, code) is not None
        assert session.scalars(
            select(Location.code).where(Location.sponsor_code == code)
        ).all() == ["0042"]
    assert _audit_actions(db, code) == ["sponsor.add"]
    assert admin.get(PAGE, params={"sponsor": code}).text.count("0042") >= 1


def test_bad_query_and_unknown_clients_are_4xx_pages(
    server: Server, db: Database, admin: Console
) -> None:
    assert admin.get(PAGE, params={"sponsor": "not a code"}).status_code == 400
    assert admin.get(PAGE, params={"sponsor": "NOSUCH8"}).status_code == 404
    unknown = admin.post(f"{PAGE}/clients/rmc_nosuch/revoke", {})
    assert unknown.status_code == 404
    assert admin.post(f"{PAGE}/clients/rmc_nosuch/rotate", {}).status_code == 404
    assert admin.post(f"{PAGE}/clients/{'x' * 80}/revoke", {}).status_code == 404


def test_a_sponsor_named_like_a_script_shows_as_text(
    server: Server, db: Database, admin: Console
) -> None:
    code = "X" + secrets.token_hex(3).upper()
    assert admin.post(PAGE + "/sponsors", {"code": code, "name": XSS}).status_code == 303
    client_id, _ = data.new_client(db, [code])
    page = admin.get(PAGE, params={"sponsor": code})
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    confirm = admin.post(f"{PAGE}/clients/{client_id}/revoke", {"back": code})
    assert XSS not in confirm.text
    named = admin.post(PAGE + "/clients", {"name": XSS, "sponsors": code})
    assert named.status_code == 201
    assert XSS not in named.text


def test_a_sponsor_past_the_first_listed_still_has_its_page(
    server: Server, db: Database, admin: Console
) -> None:
    """The page lists the first 500 sponsors; a later one is found by its code, not refused."""
    with db.unit_of_work() as session:
        for i in range(console_partners.LIST_MAX):
            sponsors.add_sponsor(session, f"A{i:04d}", f"Early {i}", data.now())
    late = "ZZLATE1"
    with db.unit_of_work() as session:
        sponsors.add_sponsor(session, late, "Late sponsor", data.now())
    page = admin.get(PAGE, params={"sponsor": late})
    assert page.status_code == 200, page.text
    offers_page = admin.get("/console/offers", params={"sponsor": late})
    assert offers_page.status_code == 200, offers_page.text


def test_the_forms_take_as_much_as_the_server_does(
    server: Server, db: Database, admin: Console
) -> None:
    page = admin.get(PAGE, params={"sponsor": data.new_sponsor(db)})
    assert page.status_code == 200
    assert maxlengths(page.text) == {
        "client-name": limits.partner_client_name_chars_max,
        "sponsor-code": limits.sponsor_code_chars_max,
        "sponsor-name": 200,  # the admin API's (`admin.catalogue`)
        "location": limits.location_code_chars_max,
    }
