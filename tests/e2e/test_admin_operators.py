"""Operators and admin tokens managed over the admin API against a real server: a generated
password shown once and working at sign-in, disabling and enabling, roles, password resets that
end sessions, tokens shown once that work and stop on revocation, and the refusals (duplicates,
bad bodies, unknown ids, roles below admin)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import ServerFactory
from tests.support.operators import new_email, new_token
from tests.support.problems import assert_problem
from tests.support.server import Server

NOW = datetime.now(UTC)
LOOPBACK_COOKIE = "rewardmiles-admin"


@dataclass
class Desk:
    server: Server
    db: Database
    tokens: dict[OperatorRole, str]

    def call(
        self,
        method: str,
        path: str,
        role: OperatorRole = OperatorRole.ADMIN,
        *,
        token: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.tokens[role]}"}
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            return client.request(method, "/admin/v1" + path, headers=headers, **kwargs)

    def sign_in(self, email: str, password: str) -> httpx.Response:
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            return client.post("/admin/session", json={"email": email, "password": password})

    def me(self, cookie: str) -> httpx.Response:
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            return client.get("/admin/v1/me", headers={"Cookie": f"{LOOPBACK_COOKIE}={cookie}"})


@pytest.fixture(scope="module")
def desk(dialect: str, server_factory: ServerFactory) -> Iterator[Desk]:
    server = server_factory(dialect)
    db = Database.from_url(server.database_url)
    tokens = {role: new_token(db, role, now=NOW).token for role in OperatorRole}
    yield Desk(server, db, tokens)
    db.dispose()


def _add(desk: Desk, **body: Any) -> dict[str, Any]:
    response = desk.call("POST", "/operators", json={"email": new_email(), "role": "agent", **body})
    assert response.status_code == 201, response.text
    added: dict[str, Any] = response.json()
    return added


def _cookie(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.cookies[LOOPBACK_COOKIE]


def test_an_added_operator_gets_a_one_time_password_that_signs_in(desk: Desk) -> None:
    added = _add(desk, displayName="Ana Silva")
    assert added["role"] == "agent"
    assert added["status"] == "active"
    assert added["displayName"] == "Ana Silva"
    assert len(added["oneTimePassword"]) == 24
    assert (
        desk.me(_cookie(desk.sign_in(added["email"], added["oneTimePassword"]))).json()["role"]
        == "agent"
    )
    listed = desk.call("GET", "/operators?limit=500", OperatorRole.VIEWER).json()["items"]
    mine = [o for o in listed if o["id"] == added["id"]]
    assert len(mine) == 1
    assert "oneTimePassword" not in mine[0]
    assert not any("password" in key.lower() for key in mine[0])


def test_a_chosen_password_is_not_answered(desk: Desk) -> None:
    added = _add(desk, password="correct horse battery")
    assert "oneTimePassword" not in added
    assert desk.sign_in(added["email"], "correct horse battery").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"email": "not-an-email", "role": "agent"}, 422, "OPERATOR_ACTION_REFUSED", "email"),
        ({"role": "agent"}, 400, "FIELD_REQUIRED", "email"),
        ({"email": "x@example.com", "role": "boss"}, 400, "FIELD_INVALID", "role"),
        (
            {"email": "x@example.com", "role": "agent", "password": "short"},
            400,
            "FIELD_INVALID",
            "password",
        ),
        (
            {"email": "x@example.com", "role": "agent", "password": " " * 12},
            422,
            "OPERATOR_ACTION_REFUSED",
            "password",
        ),
        ({"email": "x@example.com", "role": "agent", "extra": 1}, 400, "FIELD_UNKNOWN", "extra"),
    ],
)
def test_a_bad_operator_is_refused_with_the_field_at_fault(
    desk: Desk, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    assert_problem(desk.call("POST", "/operators", json=body), status, code, field)


def test_an_email_is_taken_whatever_its_case(desk: Desk) -> None:
    added = _add(desk)
    again = desk.call(
        "POST", "/operators", json={"email": added["email"].upper(), "role": "viewer"}
    )
    assert_problem(again, 409, "ALREADY_EXISTS", "email")


def test_disabling_ends_the_sessions_and_enabling_lets_the_operator_back(desk: Desk) -> None:
    added = _add(desk, password="correct horse battery")
    cookie = _cookie(desk.sign_in(added["email"], "correct horse battery"))
    disabled = desk.call("POST", f"/operators/{added['id']}/disable")
    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["status"], disabled.json()["sessionsEnded"]) == ("disabled", 1)
    assert_problem(desk.me(cookie), 401, "ADMIN_UNAUTHENTICATED")
    assert_problem(desk.sign_in(added["email"], "correct horse battery"), 401, "SIGN_IN_FAILED")
    again = desk.call("POST", f"/operators/{added['id']}/disable")
    assert (again.json()["status"], again.json()["sessionsEnded"]) == ("disabled", 0)
    enabled = desk.call("POST", f"/operators/{added['id']}/enable")
    assert enabled.json()["status"] == "active"
    assert desk.sign_in(added["email"], "correct horse battery").status_code == 200


def test_a_role_change_applies_to_the_open_session(desk: Desk) -> None:
    added = _add(desk, password="correct horse battery")
    cookie = _cookie(desk.sign_in(added["email"], "correct horse battery"))
    changed = desk.call("POST", f"/operators/{added['id']}/role", json={"role": "viewer"})
    assert changed.json()["role"] == "viewer"
    assert desk.me(cookie).json()["role"] == "viewer"
    assert_problem(
        desk.call("POST", f"/operators/{added['id']}/role", json={"role": "root"}),
        400,
        "FIELD_INVALID",
        "role",
    )


def test_a_password_reset_answers_a_new_password_and_ends_the_sessions(desk: Desk) -> None:
    added = _add(desk, password="correct horse battery")
    cookie = _cookie(desk.sign_in(added["email"], "correct horse battery"))
    reset = desk.call("POST", f"/operators/{added['id']}/reset-password", json={})
    assert reset.status_code == 200, reset.text
    assert reset.json()["sessionsEnded"] == 1
    assert_problem(desk.me(cookie), 401, "ADMIN_UNAUTHENTICATED")
    assert_problem(desk.sign_in(added["email"], "correct horse battery"), 401, "SIGN_IN_FAILED")
    assert desk.sign_in(added["email"], reset.json()["oneTimePassword"]).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/disable", None),
        ("POST", "/enable", None),
        ("POST", "/role", {"role": "viewer"}),
        ("POST", "/reset-password", {}),
    ],
)
def test_an_unknown_or_malformed_operator_id(
    desk: Desk, method: str, path: str, body: dict[str, Any] | None
) -> None:
    unknown = desk.call(method, f"/operators/{'0' * 32}{path}", json=body)
    assert_problem(unknown, 404, "NOT_FOUND")
    malformed = desk.call(method, f"/operators/NOT-AN-ID{path}", json=body)
    assert_problem(malformed, 400, "FIELD_INVALID", "operatorId")


def test_operators_page_by_id(desk: Desk) -> None:
    for _ in range(3):
        _add(desk)
    whole = desk.call("GET", "/operators?limit=500", OperatorRole.VIEWER).json()
    assert whole["nextCursor"] is None
    paged: list[str] = []
    cursor: str | None = None
    while True:
        query = "/operators?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = desk.call("GET", query, OperatorRole.VIEWER).json()
        paged += [o["id"] for o in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert paged == [o["id"] for o in whole["items"]]
    assert paged == sorted(paged)


def test_an_admin_token_is_shown_once_works_and_stops_when_revoked(desk: Desk) -> None:
    made = desk.call(
        "POST", "/admin-tokens", json={"name": "nightly-report", "role": "viewer", "expiresDays": 7}
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token.startswith("rma_")
    assert made.json()["state"] == "active"
    assert desk.call("GET", "/me", token=token).json()["role"] == "viewer"
    listed = desk.call("GET", "/admin-tokens?limit=500", OperatorRole.VIEWER).json()["items"]
    [mine] = [t for t in listed if t["id"] == made.json()["id"]]
    assert "token" not in mine
    assert mine["createdBy"].startswith("token:")
    assert_problem(
        desk.call("POST", "/admin-tokens", json={"name": "nightly-report", "role": "viewer"}),
        409,
        "ALREADY_EXISTS",
        "name",
    )
    revoked = desk.call("POST", f"/admin-tokens/{made.json()['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["revokedAt"] is not None
    assert_problem(desk.call("GET", "/me", token=token), 401, "ADMIN_UNAUTHENTICATED")
    assert_problem(
        desk.call("POST", f"/admin-tokens/{made.json()['id']}/revoke"),
        422,
        "OPERATOR_ACTION_REFUSED",
    )
    assert_problem(desk.call("POST", f"/admin-tokens/{'0' * 32}/revoke"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "bad name", "role": "viewer"}, "OPERATOR_ACTION_REFUSED", "name"),
        (
            {"name": "ok", "role": "viewer", "expiresDays": 0},
            "OPERATOR_ACTION_REFUSED",
            "expiresDays",
        ),
        ({"name": "ok", "role": "viewer", "expiresDays": "7"}, "FIELD_INVALID", "expiresDays"),
    ],
)
def test_a_bad_admin_token_is_refused(
    desk: Desk, body: dict[str, Any], code: str, field: str
) -> None:
    status = 400 if code == "FIELD_INVALID" else 422
    assert_problem(desk.call("POST", "/admin-tokens", json=body), status, code, field)


@pytest.mark.parametrize("role", [OperatorRole.VIEWER, OperatorRole.AGENT])
def test_only_an_admin_manages_operators_and_tokens(desk: Desk, role: OperatorRole) -> None:
    target = _add(desk)
    for method, path, body in (
        ("POST", "/operators", {"email": new_email(), "role": "admin"}),
        ("POST", f"/operators/{target['id']}/disable", None),
        ("POST", f"/operators/{target['id']}/enable", None),
        ("POST", f"/operators/{target['id']}/role", {"role": "admin"}),
        ("POST", f"/operators/{target['id']}/reset-password", {}),
        ("POST", "/admin-tokens", {"name": "x", "role": "admin"}),
        ("POST", f"/admin-tokens/{'0' * 32}/revoke", None),
    ):
        assert_problem(desk.call(method, path, role, json=body), 403, "ADMIN_FORBIDDEN")
