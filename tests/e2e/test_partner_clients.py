"""Partners' clients over HTTP, against TWO real server processes on one database (each with its
own revocation set): created, listed, rotated (the old secret works through its grace period,
then stops) and revoked (within 5 s every process refuses the client's tokens with
`TOKEN_REVOKED`, and its secret stops signing in at once), by the admin API and by the CLI; the
roles; the audit log (with the request id, never a secret)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rewardmiles.cli.main import app as cli_app
from rewardmiles.db.engine import Database
from rewardmiles.db.models import OperatorAuditEntry
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import TEST_HASH_COST, ServerFactory
from tests.support import data
from tests.support.operators import new_token
from tests.support.server import Server

GRACE_SECONDS = 3
REFRESH_SECONDS = 2.0
WITHIN_SECONDS = 5.0
LOOKUP = "/checkout/issuance/transactions/no-such-transaction"


@dataclass
class Pair:
    """Two API processes on one database, and admin tokens of each role."""

    a: Server
    b: Server
    db: Database
    sponsor: str
    tokens: dict[OperatorRole, str]

    def admin(
        self,
        method: str,
        path: str,
        *,
        server: Server | None = None,
        role: OperatorRole = OperatorRole.ADMIN,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        headers.update(kwargs.pop("headers", {}))
        with httpx.Client(base_url=(server or self.a).base_url, timeout=30) as client:
            return client.request(method, path, headers=headers, **kwargs)

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.admin(
            "POST", "/admin/v1/partners", json={"sponsors": [self.sponsor]} | body
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def pair(dialect: str, server_factory: ServerFactory) -> Iterator[Pair]:
    env = {
        "REWARDMILES_PARTNER_SECRET_GRACE_SECONDS": str(GRACE_SECONDS),
        "REWARDMILES_REVOCATION_REFRESH_SECONDS": str(REFRESH_SECONDS),
    }
    a = server_factory(dialect, env=env)
    b = server_factory(dialect, env=env, database_url=a.database_url)
    db = Database.from_url(a.database_url)
    now = datetime.now(UTC)
    tokens = {role: new_token(db, role, now=now).token for role in OperatorRole}
    yield Pair(a, b, db, data.new_sponsor(db), tokens)
    db.dispose()


def sign_in(server: Server, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=30,
    )


def token_of(server: Server, client_id: str, secret: str) -> str:
    response = sign_in(server, client_id, secret)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def lookup(server: Server, token: str) -> httpx.Response:
    """A partner read (an unknown transaction: 404 when the token is accepted)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return client.get(LOOKUP, headers={"Authorization": f"Bearer {token}"})


def seconds_until_revoked(server: Server, token: str, started: float) -> float:
    """Seconds from `started` until `server` refuses `token` with TOKEN_REVOKED (fails after
    twice the promise, saying what it answered)."""
    while True:
        response = lookup(server, token)
        if response.status_code == 401 and response.json()["code"] == "TOKEN_REVOKED":
            assert response.headers["www-authenticate"].startswith("Bearer")
            return time.monotonic() - started
        assert response.status_code == 404, response.text
        if time.monotonic() - started > 2 * WITHIN_SECONDS:
            raise AssertionError(f"{server.base_url} still accepts the revoked token")
        time.sleep(0.1)


@dataclass(frozen=True)
class Entry:
    action: str
    actor: str
    before_json: str | None
    after_json: str | None
    note: str | None
    request_id: str | None


def audit_entries(db: Database, client_id: str) -> list[Entry]:
    t = OperatorAuditEntry
    with db.reader() as session:
        rows = session.execute(
            select(t.action, t.actor, t.before_json, t.after_json, t.note, t.request_id)
            .where(t.entity == "partner_client", t.entity_id == client_id)
            .order_by(t.id)
        ).all()
    return [Entry(*row) for row in rows]


def test_revoked_by_the_admin_api_every_process_refuses_its_tokens_within_5_s(pair: Pair) -> None:
    created = pair.create(name="leaky")
    client_id, secret = created["clientId"], created["clientSecret"]
    assert created["status"] == "ACTIVE"
    assert created["sponsors"] == [pair.sponsor]
    bystander = pair.create()
    token = token_of(pair.a, client_id, secret)
    other = token_of(pair.b, bystander["clientId"], bystander["clientSecret"])
    for server in (pair.a, pair.b):  # accepted, and in each process's verified-token cache
        assert lookup(server, token).status_code == 404
        assert lookup(server, other).status_code == 404

    response = pair.admin(
        "POST",
        f"/admin/v1/partners/{client_id}/revoke",
        json={"reason": "secret leaked"},
        headers={"X-Request-Id": "revoke-request-1"},
    )
    started = time.monotonic()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "REVOKED"
    assert response.json()["revokedAt"]

    # The process that revoked refuses at once; the other within the promise.
    assert seconds_until_revoked(pair.a, token, started) < 1.0
    assert seconds_until_revoked(pair.b, token, started) < WITHIN_SECONDS
    for server in (pair.a, pair.b):
        refused = sign_in(server, client_id, secret)
        assert refused.status_code == 401
        assert refused.json()["code"] == "INVALID_CLIENT"
        assert refused.json()["error"] == "invalid_client"
        assert lookup(server, other).status_code == 404  # another client is untouched
        # The wall between the two kinds of credential holds after a revocation too.
        admin_on_partner = lookup(server, pair.tokens[OperatorRole.ADMIN])
        assert admin_on_partner.json()["code"] == "TOKEN_INVALID"
        partner_on_admin = httpx.get(
            f"{server.base_url}/admin/v1/partners",
            headers={"Authorization": f"Bearer {other}"},
        )
        assert partner_on_admin.json()["code"] == "ADMIN_UNAUTHENTICATED"

    again = pair.admin("POST", f"/admin/v1/partners/{client_id}/revoke", server=pair.b)
    assert again.status_code == 200
    assert again.json()["status"] == "REVOKED"
    entries = audit_entries(pair.db, client_id)
    assert [e.action for e in entries] == ["partner.create", "partner.revoke"]  # once
    revoke = entries[-1]
    assert revoke.request_id == "revoke-request-1"
    assert revoke.note == "secret leaked"
    assert revoke.actor.startswith("token:")
    assert json.loads(revoke.before_json or "")["status"] == "ACTIVE"
    assert json.loads(revoke.after_json or "")["status"] == "REVOKED"
    for entry in entries:
        assert secret not in f"{entry.before_json}{entry.after_json}{entry.note}"
    for server in (pair.a, pair.b):
        assert secret not in server.log()


def test_revoked_by_the_cli_every_process_refuses_within_5_s(pair: Pair) -> None:
    created = pair.create()
    client_id, secret = created["clientId"], created["clientSecret"]
    token = token_of(pair.b, client_id, secret)
    for server in (pair.a, pair.b):
        assert lookup(server, token).status_code == 404
    env = {"REWARDMILES_DATABASE_URL": pair.a.database_url}
    result = CliRunner().invoke(cli_app, ["partner", "revoke", client_id], env=env)
    started = time.monotonic()
    assert result.exit_code == 0, (result.stdout, result.stderr)
    for server in (pair.a, pair.b):
        assert seconds_until_revoked(server, token, started) < WITHIN_SECONDS
        assert sign_in(server, client_id, secret).json()["code"] == "INVALID_CLIENT"
    revoke = audit_entries(pair.db, client_id)[-1]
    assert revoke.action == "partner.revoke"
    assert revoke.actor == f"cli@{socket.gethostname()}"


def test_rotation_keeps_the_old_secret_for_its_grace_then_stops_it(pair: Pair) -> None:
    created = pair.create()
    client_id, old = created["clientId"], created["clientSecret"]
    old_token = token_of(pair.a, client_id, old)
    response = pair.admin("POST", f"/admin/v1/partners/{client_id}/rotate")
    rotated_at = time.monotonic()
    assert response.status_code == 200, response.text
    new = response.json()["clientSecret"]
    assert new != old
    assert response.json()["previousSecretValidUntil"]
    listed = _listed(pair, client_id)
    assert listed["previousSecretInGrace"] is True
    assert listed["rotatedAt"]
    for server in (pair.a, pair.b):  # both secrets sign in during the grace period
        assert lookup(server, token_of(server, client_id, old)).status_code == 404
        assert lookup(server, token_of(server, client_id, new)).status_code == 404
    assert time.monotonic() - rotated_at < GRACE_SECONDS, "too slow to test inside the grace"
    time.sleep(max(0.0, GRACE_SECONDS + 0.5 - (time.monotonic() - rotated_at)))
    for server in (pair.a, pair.b):
        refused = sign_in(server, client_id, old)
        assert refused.status_code == 401
        assert refused.json()["code"] == "INVALID_CLIENT"
        assert lookup(server, token_of(server, client_id, new)).status_code == 404
        assert lookup(server, old_token).status_code == 404  # issued tokens live on
    assert _listed(pair, client_id)["previousSecretInGrace"] is False
    entry = audit_entries(pair.db, client_id)[-1]
    assert entry.action == "partner.rotate"
    assert old not in f"{entry.before_json}{entry.after_json}{entry.note}"
    assert new not in f"{entry.before_json}{entry.after_json}{entry.note}"


def test_a_revoked_client_cannot_be_rotated_and_unknown_clients_are_404(pair: Pair) -> None:
    created = pair.create()
    client_id = created["clientId"]
    assert pair.admin("POST", f"/admin/v1/partners/{client_id}/revoke").status_code == 200
    refused = pair.admin("POST", f"/admin/v1/partners/{client_id}/rotate")
    assert refused.status_code == 409
    assert refused.json()["code"] == "PARTNER_CLIENT_REVOKED"
    live = pair.create()["clientId"]
    for kwargs, code in (
        ({"content": b"reason=x"}, "UNSUPPORTED_MEDIA_TYPE"),
        ({"json": {"why": "x"}}, "FIELD_UNKNOWN"),
        ({"json": {"reason": ""}}, "FIELD_INVALID"),
    ):
        for action in ("rotate", "revoke"):
            bad = pair.admin("POST", f"/admin/v1/partners/{live}/{action}", **kwargs)
            assert bad.status_code in (400, 415), (kwargs, bad.text)
            problem = bad.json()
            assert code in [problem["code"]] + [e["code"] for e in problem.get("errors", [])]
    assert [e.action for e in audit_entries(pair.db, live)] == ["partner.create"]  # no change
    for action in ("rotate", "revoke"):
        missing = pair.admin("POST", f"/admin/v1/partners/rmc_unknown/{action}")
        assert missing.status_code == 404
        assert missing.json()["code"] == "NOT_FOUND"


def _listed(pair: Pair, client_id: str) -> dict[str, Any]:
    cursor: str | None = None
    while True:
        params = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
        page = pair.admin("GET", "/admin/v1/partners", role=OperatorRole.VIEWER, params=params)
        assert page.status_code == 200, page.text
        for item in page.json()["items"]:
            if item["clientId"] == client_id:
                return dict(item)
        cursor = page.json()["nextCursor"]
        assert cursor is not None, f"{client_id} not listed"


def test_the_list_pages_by_cursor_and_shows_the_last_token_time(pair: Pair) -> None:
    made = [pair.create(name=f"page-{i}") for i in range(3)]
    token_of(pair.b, made[0]["clientId"], made[0]["clientSecret"])
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = pair.admin("GET", "/admin/v1/partners", role=OperatorRole.VIEWER, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen.extend(body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    ids = [item["clientId"] for item in seen]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert {m["clientId"] for m in made} <= set(ids)
    for item in seen:
        assert "clientSecret" not in item
        assert "secretHash" not in item
    # The sign-in's time is written by process B's next pass (every REFRESH_SECONDS).
    deadline = time.monotonic() + 3 * REFRESH_SECONDS
    while _listed(pair, made[0]["clientId"])["lastTokenIssuedAt"] is None:
        assert time.monotonic() < deadline, "last token time never written"
        time.sleep(0.2)
    assert _listed(pair, made[1]["clientId"])["lastTokenIssuedAt"] is None
    for params, field in (
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "!!"}, "cursor"),
        ({"cursor": "Zm9v="}, "cursor"),
    ):
        bad = pair.admin("GET", "/admin/v1/partners", params=params)
        assert bad.status_code == 400, (params, bad.text)
        assert bad.json()["code"] == ("CURSOR_INVALID" if field == "cursor" else "FIELD_INVALID")
        assert [e["field"] for e in bad.json()["errors"]] == [field]


def test_create_refuses_bad_bodies_with_a_field(pair: Pair) -> None:
    for body, field in (
        ({}, "sponsors"),
        ({"sponsors": []}, "sponsors"),
        ({"sponsors": ["NOPE99"]}, "sponsors"),
        ({"sponsors": [pair.sponsor], "name": ""}, "name"),
        ({"sponsors": [pair.sponsor], "secret": "x"}, "secret"),
    ):
        response = pair.admin("POST", "/admin/v1/partners", json=body)
        assert response.status_code == 400, (body, response.text)
        problem = response.json()
        fields = [problem.get("field")] + [e.get("field") for e in problem.get("errors", [])]
        assert field in fields, (body, problem)


def test_only_an_admin_changes_clients_and_any_role_lists_them(pair: Pair) -> None:
    created = pair.create()
    client_id = created["clientId"]
    for role in (OperatorRole.VIEWER, OperatorRole.AGENT):
        assert pair.admin("GET", "/admin/v1/partners", role=role).status_code == 200, role
        for path in (
            "/admin/v1/partners",
            f"/admin/v1/partners/{client_id}/rotate",
            f"/admin/v1/partners/{client_id}/revoke",
        ):
            response = pair.admin("POST", path, role=role, json={"sponsors": [pair.sponsor]})
            assert response.status_code == 403, (role, path, response.text)
            assert response.json()["code"] == "ADMIN_FORBIDDEN"
    # Nothing changed: the client still signs in.
    assert sign_in(pair.b, client_id, created["clientSecret"]).status_code == 200
    assert [e.action for e in audit_entries(pair.db, client_id)] == ["partner.create"]


def test_cli_partner_list_json_and_rotate(pair: Pair) -> None:
    created = pair.create(name="cli-seen")
    env = {
        "REWARDMILES_DATABASE_URL": pair.a.database_url,
        "REWARDMILES_SECRET_HASH_COST": TEST_HASH_COST,
    }
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["partner", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.stderr
    rows = {r["clientId"]: r for r in json.loads(listed.stdout)}
    assert rows[created["clientId"]]["name"] == "cli-seen"
    assert rows[created["clientId"]]["status"] == "ACTIVE"
    assert created["clientSecret"] not in listed.stdout
    rotated = runner.invoke(cli_app, ["partner", "rotate", created["clientId"], "--json"], env=env)
    assert rotated.exit_code == 0, rotated.stderr
    new = json.loads(rotated.stdout)["client_secret"]
    assert sign_in(pair.a, created["clientId"], new).status_code == 200
    assert sign_in(pair.b, created["clientId"], created["clientSecret"]).status_code == 200
    entry = audit_entries(pair.db, created["clientId"])[-1]
    assert entry.action == "partner.rotate"
    assert entry.actor == f"cli@{socket.gethostname()}"
    unknown = runner.invoke(cli_app, ["partner", "revoke", "rmc_unknown"], env=env)
    assert unknown.exit_code == 1
    assert "no partner client" in unknown.stderr
