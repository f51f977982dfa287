"""The admin API over HTTP against a real server whose clock stands at one instant: sign-in and
sign-out, the cookie and its attributes, session fixation, CSRF, the idle and absolute timeouts,
the lockout of failed sign-ins (and the operator signing in from elsewhere all the same), disabled
operators, admin tokens, the wall between partner and admin credentials, and the first read route.

Each test that fails sign-ins sends them from loopback addresses of its own (127.0.N.M, bound as
the connection's source), so that no test's failures count against another's address.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.config import TEST_CLOCK_PREFIX
from rewardmiles.db.engine import Database
from rewardmiles.db.models import OperatorSession
from rewardmiles.operators import credentials, service
from rewardmiles.vocabulary import OperatorRole, OperatorStatus
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.operators import TEST_ACTOR, Login, new_operator, new_session, new_token
from tests.support.partner import Partner
from tests.support.problems import assert_problem
from tests.support.server import Server

# The server's clock: a whole second, the run's own time (so that partner calls dated just
# before it are within the backdate window whatever the day the suite runs).
PINNED = datetime.now(UTC).replace(microsecond=0)
LOOPBACK_COOKIE = "rewardmiles-admin"
SECURE_COOKIE = "__Host-rewardmiles-admin"


@dataclass
class Admin:
    server: Server
    db: Database
    sponsor: str
    partner: Partner

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        source: str | None = None,
        cookie: str | None = None,
        cookie_name: str = LOOPBACK_COOKIE,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request on a connection of its own (no cookie jar: every cookie is explicit),
        from the loopback address `source` when given."""
        transport = httpx.HTTPTransport(local_address=source) if source else None
        sent = dict(headers or {})
        if cookie is not None:
            sent["Cookie"] = f"{cookie_name}={cookie}"
        with httpx.Client(base_url=self.base_url, transport=transport, timeout=30) as client:
            return client.request(method, path, headers=sent, **kwargs)

    def sign_in(
        self, email: str, password: str, *, source: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        return self.request(
            "POST",
            "/admin/session",
            json={"email": email, "password": password},
            source=source,
            **kwargs,
        )

    def me(self, **kwargs: Any) -> httpx.Response:
        return self.request("GET", "/admin/v1/me", **kwargs)

    def operator(self, role: OperatorRole = OperatorRole.VIEWER) -> Login:
        return new_operator(self.db, role, now=PINNED)


@pytest.fixture(scope="module")
def admin(dialect: str, server_factory: ServerFactory) -> Iterator[Admin]:
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_TEST_CLOCK": TEST_CLOCK_PREFIX + data.iso(PINNED),
            "REWARDMILES_SIGN_IN_FAILURES_ALLOWED": "3",
            "REWARDMILES_SIGN_IN_ADDRESS_FAILURES_ALLOWED": "6",
            "REWARDMILES_SIGN_IN_ACCOUNT_FAILURES_ALARM": "8",
        },
    )
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    yield Admin(server, db, sponsor, partner)
    partner.close()
    db.dispose()


def _set_cookie(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """The one Set-Cookie of `response`: name, value and attributes (lower-case names; flags
    map to "")."""
    [header] = response.headers.get_list("set-cookie")
    parsed = SimpleCookie()
    parsed.load(header)
    [(name, morsel)] = parsed.items()
    attributes = {key: str(value) for key, value in morsel.items() if value not in ("", False)}
    for flag in ("httponly", "secure"):
        if f"; {flag}" in header.lower():
            attributes[flag] = ""
    return name, morsel.value, attributes


def _signed_in(admin: Admin, login: Login, **kwargs: Any) -> tuple[str, str]:
    response = admin.sign_in(login.email, login.password, **kwargs)
    assert response.status_code == 200, response.text
    _, value, _ = _set_cookie(response)
    return value, response.json()["csrfToken"]


def _stored_session_count(admin: Admin, cookie: str) -> int:
    with admin.db.reader() as session:
        found = session.execute(
            select(OperatorSession.id).where(OperatorSession.id == credentials.digest(cookie))
        ).all()
    return len(found)


# --------------------------------------------------------------------------- sign-in, cookie


def test_sign_in_answers_the_operator_and_a_csrf_token_and_sets_the_cookie(admin: Admin) -> None:
    login = admin.operator(OperatorRole.AGENT)
    response = admin.sign_in(login.email.upper(), login.password)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["operator"] == {
        "email": login.email,
        "displayName": login.email.split("@")[0],
        "role": "agent",
    }
    assert len(body["csrfToken"]) >= 43
    assert response.headers["cache-control"] == "no-store"
    name, value, attributes = _set_cookie(response)
    # Plain HTTP on loopback: no Secure (a browser would drop it), hence not the __Host- name.
    assert name == LOOPBACK_COOKIE
    assert attributes == {
        "httponly": "",
        "samesite": "strict",
        "path": "/",
        "max-age": str(12 * 3600),
    }
    me = admin.me(cookie=value)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "via": "session",
        "role": "agent",
        "operator": body["operator"],
        "csrfToken": body["csrfToken"],
    }
    assert me.headers["cache-control"] == "no-store"
    with admin.db.reader() as session:
        stored = service.list_operators(session)
    assert [o.last_sign_in_at for o in stored if o.id == login.id] == [PINNED]


def test_away_from_loopback_the_cookie_is_secure_and_host_bound(admin: Admin) -> None:
    login = admin.operator()
    host = {"Host": "admin.example.com"}
    response = admin.sign_in(login.email, login.password, headers=host)
    assert response.status_code == 200, response.text
    name, value, attributes = _set_cookie(response)
    assert name == SECURE_COOKIE
    assert "secure" in attributes
    assert attributes["path"] == "/"
    assert "domain" not in attributes
    assert admin.me(cookie=value, cookie_name=SECURE_COOKIE, headers=host).status_code == 200
    # Away from loopback, the name without the prefix is not read at all.
    refused = admin.me(cookie=value, cookie_name=LOOPBACK_COOKIE, headers=host)
    assert_problem(refused, 401, "ADMIN_UNAUTHENTICATED")


def test_every_sign_in_is_a_new_session_and_a_planted_cookie_is_never_adopted(
    admin: Admin,
) -> None:
    login = admin.operator()
    planted = "chosen-by-someone-else-" + secrets.token_hex(8)
    response = admin.sign_in(login.email, login.password, cookie=planted)
    assert response.status_code == 200, response.text
    _, first, _ = _set_cookie(response)
    assert first != planted
    assert_problem(admin.me(cookie=planted), 401, "ADMIN_UNAUTHENTICATED")
    other_browser, _ = _signed_in(admin, login)
    assert other_browser != first
    # Signing in again from the first browser (its cookie sent along) ends its old session.
    again = admin.sign_in(login.email, login.password, cookie=first)
    _, second, _ = _set_cookie(again)
    assert second not in (first, other_browser)
    assert_problem(admin.me(cookie=first), 401, "ADMIN_UNAUTHENTICATED")
    assert _stored_session_count(admin, first) == 0
    assert admin.me(cookie=second).status_code == 200
    assert admin.me(cookie=other_browser).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "a@example.com"}, 400, "FIELD_REQUIRED"),
        ({"email": "a@example.com", "password": 7}, 400, "FIELD_INVALID"),
        ({"email": "a@example.com", "password": "x", "remember": True}, 400, "FIELD_UNKNOWN"),
        ({"email": "x" * 255, "password": "x"}, 400, "FIELD_INVALID"),
    ],
)
def test_a_malformed_sign_in_is_a_400_and_counts_no_failure(
    admin: Admin, body: dict[str, Any], status: int, code: str
) -> None:
    response = admin.request("POST", "/admin/session", json=body, source="127.0.9.1")
    assert_problem(response, status, code)


def test_a_sign_in_not_sent_as_json_or_from_another_origin_is_refused(admin: Admin) -> None:
    login = admin.operator()
    form = admin.request(
        "POST", "/admin/session", data={"email": login.email, "password": login.password}
    )
    assert_problem(form, 415, "UNSUPPORTED_MEDIA_TYPE")
    foreign = admin.sign_in(login.email, login.password, headers={"Origin": "https://evil.example"})
    assert_problem(foreign, 403, "CSRF_REJECTED")
    assert "set-cookie" not in foreign.headers
    same = admin.sign_in(login.email, login.password, headers={"Origin": admin.base_url})
    assert same.status_code == 200, same.text


# --------------------------------------------------------------------------- sign-out, CSRF


def test_sign_out_needs_the_sessions_csrf_token_and_a_matching_origin(admin: Admin) -> None:
    login = admin.operator()
    cookie, csrf = _signed_in(admin, login)
    refusals = [
        {},
        {"X-CSRF-Token": "forged-" + secrets.token_urlsafe(32)},
        {"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        {"X-CSRF-Token": csrf, "Origin": "null"},
    ]
    for headers in refusals:
        refused = admin.request("DELETE", "/admin/session", cookie=cookie, headers=headers)
        assert_problem(refused, 403, "CSRF_REJECTED")
        assert admin.me(cookie=cookie).status_code == 200, headers  # still signed in
    # Another session's token is no better than a forged one.
    _, other_csrf = _signed_in(admin, login)
    wrong = admin.request(
        "DELETE", "/admin/session", cookie=cookie, headers={"X-CSRF-Token": other_csrf}
    )
    assert_problem(wrong, 403, "CSRF_REJECTED")
    out = admin.request(
        "DELETE",
        "/admin/session",
        cookie=cookie,
        headers={"X-CSRF-Token": csrf, "Origin": admin.base_url},
    )
    assert out.status_code == 204, out.text
    name, value, attributes = _set_cookie(out)
    assert (name, value, attributes["max-age"]) == (LOOPBACK_COOKIE, "", "0")
    assert_problem(admin.me(cookie=cookie), 401, "ADMIN_UNAUTHENTICATED")
    assert _stored_session_count(admin, cookie) == 0
    # Nothing left to end: still 204, and no CSRF token is asked for.
    assert admin.request("DELETE", "/admin/session", cookie=cookie).status_code == 204
    assert admin.request("DELETE", "/admin/session").status_code == 204


# --------------------------------------------------------------------------- timeouts


def _session_at(admin: Admin, login: Login, started: datetime, last_seen: datetime) -> str:
    signed = new_session(admin.db, login.email, started)
    with admin.db.unit_of_work() as session:
        service.touch_session(session, signed.id, last_seen)
    return signed.cookie


def test_sessions_end_after_30_idle_minutes_or_12_hours_at_the_servers_clock(
    admin: Admin,
) -> None:
    login = admin.operator()
    minute = timedelta(minutes=1)
    idle_almost = _session_at(
        admin, login, PINNED - 40 * minute, PINNED - 30 * minute + timedelta(seconds=1)
    )
    idle_out = _session_at(admin, login, PINNED - 40 * minute, PINNED - 30 * minute)
    old_almost = _session_at(
        admin, login, PINNED - timedelta(hours=12, seconds=-1), PINNED - minute
    )
    old_out = _session_at(admin, login, PINNED - timedelta(hours=12), PINNED - minute)
    for alive in (idle_almost, old_almost):
        assert admin.me(cookie=alive).status_code == 200
    for ended in (idle_out, old_out):
        assert_problem(admin.me(cookie=ended), 401, "ADMIN_SESSION_EXPIRED")
        assert _stored_session_count(admin, ended) == 0  # an ended session is deleted
        assert_problem(admin.me(cookie=ended), 401, "ADMIN_UNAUTHENTICATED")
    # The request moved the idle timeout on: last seen now at the server's clock.
    with admin.db.reader() as session:
        seen = session.execute(
            select(OperatorSession.last_seen_at).where(
                OperatorSession.id == credentials.digest(idle_almost)
            )
        ).scalar_one()
    assert seen == PINNED


# --------------------------------------------------------------------------- lockouts


def test_a_guesser_is_locked_out_and_the_operator_still_signs_in_from_elsewhere(
    admin: Admin,
) -> None:
    login = admin.operator()
    guesser = "127.0.1.1"
    for _ in range(3):
        failed = admin.sign_in(login.email, "a wrong guess", source=guesser)
        assert_problem(failed, 401, "SIGN_IN_FAILED")
    for password in ("another guess", login.password):  # right or wrong: not checked now
        locked = admin.sign_in(login.email, password, source=guesser)
        problem = assert_problem(locked, 429, "SIGN_IN_THROTTLED")
        assert locked.headers["retry-after"] == "2"  # the clock stands still
        assert "set-cookie" not in locked.headers
        assert "2 s" in problem["detail"]
    assert admin.sign_in(login.email, login.password, source="127.0.1.2").status_code == 200
    # The same address for another account: its own count (3 of 6) is not spent yet.
    other = admin.operator()
    assert admin.sign_in(other.email, other.password, source=guesser).status_code == 200
    for n in range(3):  # failures for accounts that do not exist count for the address too
        missing = admin.sign_in(f"nobody-{n}@example.com", "a wrong guess", source=guesser)
        assert_problem(missing, 401, "SIGN_IN_FAILED")
    assert_problem(
        admin.sign_in(other.email, other.password, source=guesser), 429, "SIGN_IN_THROTTLED"
    )
    assert admin.sign_in(other.email, other.password, source="127.0.1.3").status_code == 200


def test_an_account_guessed_from_many_addresses_stays_open_to_new_ones(admin: Admin) -> None:
    login = admin.operator()
    for n in range(8):  # the alarm: 8 failures, each from an address of its own
        failed = admin.sign_in(login.email, "a wrong guess", source=f"127.0.2.{n + 1}")
        assert_problem(failed, 401, "SIGN_IN_FAILED")
    guesser = "127.0.2.20"
    assert_problem(admin.sign_in(login.email, "a guess", source=guesser), 401, "SIGN_IN_FAILED")
    locked = admin.sign_in(login.email, login.password, source=guesser)
    assert_problem(locked, 429, "SIGN_IN_THROTTLED")
    assert admin.sign_in(login.email, login.password, source="127.0.2.21").status_code == 200


def test_a_disabled_operator_cannot_sign_in_and_their_sessions_end(admin: Admin) -> None:
    admin.operator(OperatorRole.ADMIN)  # another: the last active admin cannot be disabled
    login = admin.operator(OperatorRole.ADMIN)
    cookie, _ = _signed_in(admin, login)
    with admin.db.unit_of_work() as session:
        service.set_status(session, login.email, OperatorStatus.DISABLED, PINNED, TEST_ACTOR)
    assert_problem(admin.me(cookie=cookie), 401, "ADMIN_UNAUTHENTICATED")
    refused = admin.sign_in(login.email, login.password, source="127.0.3.1")
    problem = assert_problem(refused, 401, "SIGN_IN_FAILED")
    unknown = assert_problem(
        admin.sign_in("nobody@example.com", login.password, source="127.0.3.1"),
        401,
        "SIGN_IN_FAILED",
    )
    assert problem["detail"] == unknown["detail"]  # a disabled account is not told apart


# --------------------------------------------------------------------------- tokens


def test_an_admin_token_works_until_revoked_or_expired(admin: Admin) -> None:
    live = new_token(admin.db, OperatorRole.AGENT, now=PINNED)
    bearer = {"Authorization": f"Bearer {live.token}"}
    me = admin.me(headers=bearer)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "via": "token",
        "role": "agent",
        "token": {
            "id": live.view.id,
            "name": live.view.name,
            "role": "agent",
            "expiresAt": data.iso(PINNED + timedelta(days=90)).replace(".000Z", "Z"),
        },
    }
    with admin.db.unit_of_work() as session:
        service.revoke_token(session, live.view.name, PINNED, TEST_ACTOR)
    revoked = assert_problem(admin.me(headers=bearer), 401, "ADMIN_UNAUTHENTICATED")
    assert "revoked" in revoked["detail"]
    stale = new_token(admin.db, now=PINNED - timedelta(days=90), expires_days=90)
    expired = admin.me(headers={"Authorization": f"Bearer {stale.token}"})
    assert "expired" in assert_problem(expired, 401, "ADMIN_UNAUTHENTICATED")["detail"]
    unknown = admin.me(headers={"Authorization": "Bearer rma_" + secrets.token_urlsafe(32)})
    assert_problem(unknown, 401, "ADMIN_UNAUTHENTICATED")


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Basic YWRtaW46YWRtaW4=", "bearer not-an-admin-token", "Bearer rma_"],
)
def test_anything_but_an_admin_credential_is_401_with_a_challenge(
    admin: Admin, authorization: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    refused = admin.me(headers=headers)
    assert_problem(refused, 401, "ADMIN_UNAUTHENTICATED")
    assert refused.headers["www-authenticate"] == 'Bearer realm="rewardmiles-admin"'


def test_partner_tokens_never_work_on_admin_and_admin_tokens_never_on_the_partner_api(
    admin: Admin,
) -> None:
    partner_bearer = {"Authorization": f"Bearer {admin.partner.token}"}
    assert (
        admin.partner.http.get(
            "/checkout/issuance/transactions/x", headers=partner_bearer
        ).status_code
        == 404
    )  # the partner token is good where it belongs
    for path in ("/admin/v1/me", "/admin/v1/collectors/12345678901"):
        assert_problem(
            admin.request("GET", path, headers=partner_bearer), 401, "ADMIN_UNAUTHENTICATED"
        )
    strongest = new_token(admin.db, OperatorRole.ADMIN, now=PINNED)
    admin_bearer = {"Authorization": f"Bearer {strongest.token}"}
    collector = data.new_collector(admin.db)
    body = data.event_body(admin.sponsor, collector, transactionDateTime=data.iso(PINNED))
    for method, path, payload in (
        ("POST", "/checkout/issuance/post/event", body),
        ("GET", "/checkout/issuance/transactions/x", None),
        ("GET", f"/checkout/issuance/reports/audit?date={PINNED.date()}", None),
    ):
        refused = admin.request(method, path, json=payload, headers=admin_bearer)
        assert_problem(refused, 401, "TOKEN_INVALID")
    assert data.balance(admin.db, collector) == 0


# --------------------------------------------------------------------------- collectors


def test_a_collector_shows_status_balance_pending_lines_and_activity(admin: Admin) -> None:
    viewer = new_token(admin.db, OperatorRole.VIEWER, now=PINNED)
    bearer = {"Authorization": f"Bearer {viewer.token}"}
    number = data.new_collector(admin.db)
    path = f"/admin/v1/collectors/{number}"
    quiet = admin.request("GET", path, headers=bearer)
    assert quiet.status_code == 200, quiet.text
    assert quiet.json() == {
        "collectorNumber": number,
        "status": "ACTIVE",
        "balance": 0,
        "pendingCount": 0,
        "firstActivityAt": None,
        "lastActivityAt": None,
    }
    at = data.iso(PINNED - timedelta(minutes=1))
    posted = admin.partner.post_event(
        data.event_body(admin.sponsor, number, miles=40, transactionDateTime=at)
    )
    assert posted.status_code == 200, posted.text
    with admin.db.unit_of_work() as session:
        collectors.set_status(session, number, "ON_HOLD", PINNED)
    held = admin.partner.post_event(
        data.event_body(admin.sponsor, number, miles=5, transactionDateTime=at)
    )
    assert held.status_code == 202, held.text
    busy = admin.request("GET", path, headers=bearer)
    moment = clock.program_timestamp(PINNED, "America/Toronto")
    assert busy.json() == {
        "collectorNumber": number,
        "status": "ON_HOLD",
        "balance": 40,
        "pendingCount": 1,
        "firstActivityAt": moment,
        "lastActivityAt": moment,
    }
    # A session works as well as a token.
    cookie, _ = _signed_in(admin, admin.operator())
    assert admin.request("GET", path, cookie=cookie).json() == busy.json()


@pytest.mark.parametrize(
    "number", ["1234567890", "123456789012", "1234567890a", "12345678901%0A", "%20" * 11]
)
def test_a_malformed_collector_number_is_400_and_an_unknown_one_404(
    admin: Admin, number: str
) -> None:
    bearer = {"Authorization": f"Bearer {new_token(admin.db, now=PINNED).token}"}
    bad = admin.request("GET", f"/admin/v1/collectors/{number}", headers=bearer)
    assert_problem(bad, 400, "COLLECTOR_NUMBER_INVALID", field="number")
    unknown = admin.request(
        "GET", f"/admin/v1/collectors/{data.unknown_collector()}", headers=bearer
    )
    assert_problem(unknown, 404, "NOT_FOUND")
    # Without a credential the number is not even looked at.
    assert_problem(
        admin.request("GET", f"/admin/v1/collectors/{number}"), 401, "ADMIN_UNAUTHENTICATED"
    )
