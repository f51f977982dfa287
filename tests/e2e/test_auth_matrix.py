"""Every partner route refuses every kind of bad token (SPEC §5), and every admin route every kind of
bad admin credential; a new route must join the matrix."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.db.models import SigningKey
from rewardmiles.operators import service as operators
from rewardmiles.operators.access import LOOPBACK_COOKIE_NAME, UNSAFE_METHODS
from rewardmiles.secretbox import signing_key_context
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import TEST_BOX
from tests.e2e.conftest import World
from tests.support import data
from tests.support.operators import TEST_ACTOR, new_operator, new_session, new_token

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.json"
PUBLIC = {
    ("POST", "/oauth/token"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/problems"),
    ("GET", "/problems/{code}"),
    ("POST", "/admin/session"),  # sign-in
    ("DELETE", "/admin/session"),  # sign-out: nothing to end without a session
}
# Operations routes: left out of the OpenAPI document, and outside both kinds of credentials (a
# partner's or an operator's token opens none of them): each has access rules of its own, pinned
# by the test named.
OPERATIONS = {
    # Loopback, REWARDMILES_METRICS_ALLOW_NETWORKS, or the metrics token.
    (
        "GET",
        "/metrics",
    ): "tests/e2e/test_metrics.py::test_a_scrape_from_elsewhere_needs_the_metrics_token",
}
# Every protected route, with a concrete path to call.
PROTECTED: dict[tuple[str, str], str] = {
    ("POST", "/checkout/issuance/post"): "/checkout/issuance/post",
    ("POST", "/checkout/issuance/post/event"): "/checkout/issuance/post/event",
    ("POST", "/checkout/issuance/reverse"): "/checkout/issuance/reverse",
    ("POST", "/checkout/issuance/reverse/event"): "/checkout/issuance/reverse/event",
    ("POST", "/checkout/issuance/record"): "/checkout/issuance/record",
    ("POST", "/checkout/issuance/calculate"): "/checkout/issuance/calculate",
    ("POST", "/checkout/issuance/issue"): "/checkout/issuance/issue",
    ("POST", "/checkout/issuance/return"): "/checkout/issuance/return",
    ("GET", "/checkout/issuance/transactions/{transactionId}"): "/checkout/issuance/transactions/x",
    (
        "GET",
        "/checkout/issuance/transactions",
    ): "/checkout/issuance/transactions?clientTransactionId=x",
    ("GET", "/checkout/issuance/reports/audit"): "/checkout/issuance/reports/audit?date=2026-11-25",
    (
        "GET",
        "/checkout/issuance/reports/reconciliation",
    ): "/checkout/issuance/reports/reconciliation?date=2026-11-25",
    ("POST", "/checkout/issuance/batches"): "/checkout/issuance/batches",
    ("GET", "/checkout/issuance/batches/{batchId}"): "/checkout/issuance/batches/x",
}


# Every admin route, with a concrete path to call and the least role it needs.
ADMIN: dict[tuple[str, str], tuple[str, OperatorRole]] = {
    ("GET", "/admin/v1/me"): ("/admin/v1/me", OperatorRole.VIEWER),
    ("GET", "/admin/v1/collectors/{number}"): (
        "/admin/v1/collectors/12345678901",
        OperatorRole.VIEWER,
    ),
    ("GET", "/admin/v1/partners"): ("/admin/v1/partners", OperatorRole.VIEWER),
    ("POST", "/admin/v1/partners"): ("/admin/v1/partners", OperatorRole.ADMIN),
    ("POST", "/admin/v1/partners/{clientId}/rotate"): (
        "/admin/v1/partners/rmc_x/rotate",
        OperatorRole.ADMIN,
    ),
    ("POST", "/admin/v1/partners/{clientId}/revoke"): (
        "/admin/v1/partners/rmc_x/revoke",
        OperatorRole.ADMIN,
    ),
    ("GET", "/admin/v1/sponsors"): ("/admin/v1/sponsors", OperatorRole.VIEWER),
    ("POST", "/admin/v1/sponsors"): ("/admin/v1/sponsors", OperatorRole.ADMIN),
    ("PATCH", "/admin/v1/sponsors/{code}"): ("/admin/v1/sponsors/X", OperatorRole.ADMIN),
    ("GET", "/admin/v1/sponsors/{code}/locations"): (
        "/admin/v1/sponsors/X/locations",
        OperatorRole.VIEWER,
    ),
    ("POST", "/admin/v1/sponsors/{code}/locations"): (
        "/admin/v1/sponsors/X/locations",
        OperatorRole.ADMIN,
    ),
    ("GET", "/admin/v1/offers"): ("/admin/v1/offers", OperatorRole.VIEWER),
    ("PUT", "/admin/v1/sponsors/{code}/offers/{offer}"): (
        "/admin/v1/sponsors/X/offers/Y",
        OperatorRole.ADMIN,
    ),
    ("POST", "/admin/v1/sponsors/{code}/offers/{offer}/disable"): (
        "/admin/v1/sponsors/X/offers/Y/disable",
        OperatorRole.ADMIN,
    ),
    ("GET", "/admin/v1/webhooks"): ("/admin/v1/webhooks", OperatorRole.VIEWER),
    ("POST", "/admin/v1/webhooks"): ("/admin/v1/webhooks", OperatorRole.ADMIN),
    ("DELETE", "/admin/v1/webhooks/{webhookId}"): ("/admin/v1/webhooks/x", OperatorRole.ADMIN),
    ("GET", "/admin/v1/webhook-deliveries"): ("/admin/v1/webhook-deliveries", OperatorRole.VIEWER),
    ("POST", "/admin/v1/webhook-deliveries/{deliveryId}/retry"): (
        "/admin/v1/webhook-deliveries/x/retry",
        OperatorRole.ADMIN,
    ),
    ("GET", "/admin/v1/requests/{requestId}"): ("/admin/v1/requests/x", OperatorRole.VIEWER),
    ("GET", "/admin/v1/transactions"): ("/admin/v1/transactions", OperatorRole.VIEWER),
    ("GET", "/admin/v1/transactions/{transactionId}"): (
        "/admin/v1/transactions/x",
        OperatorRole.VIEWER,
    ),
    ("GET", "/admin/v1/pending"): ("/admin/v1/pending", OperatorRole.VIEWER),
    ("POST", "/admin/v1/pending/{lineId}/approve"): (
        "/admin/v1/pending/x:0/approve",
        OperatorRole.AGENT,
    ),
    ("POST", "/admin/v1/pending/{lineId}/reject"): (
        "/admin/v1/pending/x:0/reject",
        OperatorRole.AGENT,
    ),
    ("POST", "/admin/v1/pending/bulk"): ("/admin/v1/pending/bulk", OperatorRole.AGENT),
    ("GET", "/admin/v1/audit-log"): ("/admin/v1/audit-log", OperatorRole.VIEWER),
    ("GET", "/admin/v1/collectors/{number}/ledger"): (
        "/admin/v1/collectors/12345678901/ledger",
        OperatorRole.VIEWER,
    ),
    ("POST", "/admin/v1/collectors/{number}/status"): (
        "/admin/v1/collectors/12345678901/status",
        OperatorRole.AGENT,
    ),
    ("POST", "/admin/v1/collectors/{number}/adjustments"): (
        "/admin/v1/collectors/12345678901/adjustments",
        OperatorRole.AGENT,
    ),
    ("GET", "/admin/v1/adjustments"): ("/admin/v1/adjustments", OperatorRole.VIEWER),
    ("GET", "/admin/v1/operators"): ("/admin/v1/operators", OperatorRole.VIEWER),
    ("POST", "/admin/v1/operators"): ("/admin/v1/operators", OperatorRole.ADMIN),
    ("POST", "/admin/v1/operators/{operatorId}/disable"): (
        "/admin/v1/operators/x/disable",
        OperatorRole.ADMIN,
    ),
    ("POST", "/admin/v1/operators/{operatorId}/enable"): (
        "/admin/v1/operators/x/enable",
        OperatorRole.ADMIN,
    ),
    ("POST", "/admin/v1/operators/{operatorId}/role"): (
        "/admin/v1/operators/x/role",
        OperatorRole.ADMIN,
    ),
    ("POST", "/admin/v1/operators/{operatorId}/reset-password"): (
        "/admin/v1/operators/x/reset-password",
        OperatorRole.ADMIN,
    ),
    ("GET", "/admin/v1/admin-tokens"): ("/admin/v1/admin-tokens", OperatorRole.VIEWER),
    ("POST", "/admin/v1/admin-tokens"): ("/admin/v1/admin-tokens", OperatorRole.ADMIN),
    ("POST", "/admin/v1/admin-tokens/{tokenId}/revoke"): (
        "/admin/v1/admin-tokens/x/revoke",
        OperatorRole.ADMIN,
    ),
}


def test_every_route_of_the_openapi_document_is_public_or_in_the_matrix() -> None:
    document = json.loads(OPENAPI.read_text())
    routes = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert routes == PUBLIC | set(PROTECTED) | set(ADMIN)


def test_operations_routes_are_served_outside_the_document_with_access_rules_of_their_own() -> None:
    document = json.loads(OPENAPI.read_text())
    routes = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert not routes & set(OPERATIONS)
    served = {
        (method, route.path)
        for route in iter_route_contexts(create_app(Settings(database_url="sqlite://")).routes)
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    }
    assert set(OPERATIONS) <= served
    root = Path(__file__).resolve().parents[2]
    for where in OPERATIONS.values():
        path, _, name = where.partition("::")
        assert f"def {name}(" in (root / path).read_text(), where


def _signing_key(world: World) -> tuple[str, Ed25519PrivateKey]:
    with world.db.reader() as session:
        row = session.execute(
            select(SigningKey.kid, SigningKey.private_key_pem).where(
                SigningKey.retired_at.is_(None)
            )
        ).first()
    assert row is not None
    pem = TEST_BOX.open(row.private_key_pem, signing_key_context(row.kid))
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return row.kid, key


def _claims(world: World, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "rewardmiles",
        "aud": "rewardmiles-issuance",
        "sub": world.partner.client_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "sponsors": [world.sponsor],
    }
    claims.update(changes)
    return claims


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _forge(world: World, kind: str) -> str | None:
    kid, key = _signing_key(world)
    now = int(time.time())

    def signed(**changes: object) -> str:
        return jwt.encode(_claims(world, **changes), key, algorithm="EdDSA", headers={"kid": kid})

    if kind == "valid":
        return signed()
    if kind == "missing":
        return None
    if kind == "expired":
        return signed(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    if kind == "not_yet_valid":
        return signed(nbf=now + 3600)
    if kind == "wrong_audience":
        return signed(aud="someone-else")
    if kind == "wrong_issuer":
        return signed(iss="https://evil.example")
    if kind == "bad_signature":
        head, body, signature = signed().split(".")
        return f"{head}.{body}.{_b64(bytes(b ^ 1 for b in base64.urlsafe_b64decode(signature + '==')))}"
    if kind == "alg_none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{header}.{_b64(json.dumps(_claims(world)).encode())}."
    if kind == "hs256_with_public_key":
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        payload = _b64(json.dumps(_claims(world)).encode())
        mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(mac)}"
    if kind == "unknown_kid":
        other = Ed25519PrivateKey.generate()
        return jwt.encode(
            _claims(world), other, algorithm="EdDSA", headers={"kid": "rm-" + secrets.token_hex(4)}
        )
    if kind == "garbage":
        return "not.a.token"
    raise AssertionError(kind)


BAD_TOKENS = [
    "missing",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "bad_signature",
    "alg_none",
    "hs256_with_public_key",
    "unknown_kid",
    "garbage",
]
EXPECTED_CODE: dict[str, str] = {"missing": "TOKEN_MISSING", "expired": "TOKEN_EXPIRED"}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_every_protected_route_refuses_a_bad_token(world: World, kind: str) -> None:
    token = _forge(world, kind)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    for (method, _), path in PROTECTED.items():
        response = world.partner.http.request(method, path, content=b"{}", headers=headers)
        assert response.status_code == 401, (kind, method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == EXPECTED_CODE.get(kind, "TOKEN_INVALID"), (kind, path)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_made_the_same_way_with_nothing_wrong_is_accepted(world: World) -> None:
    """So each refusal above is due to its one defect, not to how the test builds tokens."""
    token = _forge(world, "valid")
    collector = world.collector()
    response = world.partner.http.post(
        "/checkout/issuance/post/event",
        json=world.body(collector, miles=2),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert world.balance(collector) == 2


def test_a_token_of_client_a_never_reaches_sponsor_b(world: World) -> None:
    other_sponsor = data.new_sponsor(world.db)
    other = world.new_partner(other_sponsor)
    theirs = other.post_event(data.event_body(other_sponsor, world.collector())).json()
    headers = {"Authorization": f"Bearer {world.partner.token}"}
    write_body = data.event_body(other_sponsor, world.collector())
    for path in ("/checkout/issuance/post/event", "/checkout/issuance/reverse/event"):
        assert world.partner.http.post(path, json=write_body, headers=headers).status_code == 403
    basket = {
        "checkoutTransactionId": "x",
        "collectorNumber": world.collector(),
        "sponsorCode": other_sponsor,
        "checkoutDateTime": write_body["transactionDateTime"],
        "basketPreTaxAmount": 1,
        "basketPostTaxAmount": 1,
        "items": [{"id": "a", "quantity": 1, "finalAmount": 1}],
    }
    for path in (
        "/checkout/issuance/calculate",
        "/checkout/issuance/issue",
        "/checkout/issuance/record",
    ):
        assert world.partner.http.post(path, json=basket, headers=headers).status_code == 403, path
    lookup = world.partner.http.get(
        f"/checkout/issuance/transactions/{theirs['transactionId']}", headers=headers
    )
    assert lookup.status_code == 404
    for path in (
        "/checkout/issuance/transactions",
        "/checkout/issuance/reports/audit",
        "/checkout/issuance/reports/reconciliation",
    ):
        params = {"sponsorCode": other_sponsor, "clientTransactionId": "x", "date": "2026-11-25"}
        assert world.partner.http.get(path, params=params, headers=headers).status_code == 403, path
    other.close()


def test_responses_carry_security_headers_and_partner_data_is_never_cached(world: World) -> None:
    partner_call = world.partner.post_event(world.body(world.collector()))
    problem = world.partner.http.post("/checkout/issuance/post/event", content=b"{")
    health = world.partner.http.get("/healthz")
    for response in (partner_call, problem, health):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "server" not in response.headers  # no server software named
    assert partner_call.headers["cache-control"] == "no-store"
    assert problem.headers["cache-control"] == "no-store"
    assert "cache-control" not in health.headers


# --------------------------------------------------------------------------- the admin API

BAD_ADMIN_CREDENTIALS = {
    "missing": "ADMIN_UNAUTHENTICATED",
    "partner_token": "ADMIN_UNAUTHENTICATED",
    "garbage_bearer": "ADMIN_UNAUTHENTICATED",
    "unknown_admin_token": "ADMIN_UNAUTHENTICATED",
    "revoked_admin_token": "ADMIN_UNAUTHENTICATED",
    "expired_admin_token": "ADMIN_UNAUTHENTICATED",
    "unknown_session": "ADMIN_UNAUTHENTICATED",
    "expired_session": "ADMIN_SESSION_EXPIRED",
}


def _admin_headers(world: World, kind: str) -> dict[str, str]:
    """A fresh credential of `kind` (an expired session is deleted when it is first refused)."""
    now = datetime.now(UTC)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    if kind == "missing":
        return {}
    if kind == "partner_token":
        return bearer(world.partner.token)
    if kind == "garbage_bearer":
        return bearer("not.a.token")
    if kind == "unknown_admin_token":
        return bearer("rma_" + secrets.token_urlsafe(32))
    if kind == "revoked_admin_token":
        revoked = new_token(world.db, OperatorRole.ADMIN, now=now)
        with world.db.unit_of_work() as session:
            operators.revoke_token(session, revoked.view.id, now, TEST_ACTOR)
        return bearer(revoked.token)
    if kind == "expired_admin_token":
        return bearer(
            new_token(
                world.db, OperatorRole.ADMIN, now=now - timedelta(days=2), expires_days=1
            ).token
        )
    if kind == "unknown_session":
        return {"Cookie": f"{LOOPBACK_COOKIE_NAME}={secrets.token_urlsafe(32)}"}
    if kind == "expired_session":
        login = new_operator(world.db, OperatorRole.ADMIN, now=now)
        signed = new_session(world.db, login.email, now - timedelta(minutes=31))
        return {"Cookie": f"{LOOPBACK_COOKIE_NAME}={signed.cookie}"}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", list(BAD_ADMIN_CREDENTIALS))
def test_every_admin_route_refuses_every_bad_credential(world: World, kind: str) -> None:
    for (method, _), (path, _) in ADMIN.items():
        response = world.partner.http.request(method, path, headers=_admin_headers(world, kind))
        assert response.status_code == 401, (kind, method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == BAD_ADMIN_CREDENTIALS[kind], (kind, path)
        assert response.headers["www-authenticate"] == 'Bearer realm="rewardmiles-admin"'


def test_every_admin_route_refuses_a_role_below_its_own_and_a_cookie_without_csrf(
    world: World,
) -> None:
    """A caller of each role reaches exactly the routes of its role and below (the least role is
    let through: not a 401 or 403); with a cookie, an unsafe method needs the CSRF token."""
    now = datetime.now(UTC)
    for role in OperatorRole:
        bearer = {"Authorization": f"Bearer {new_token(world.db, role, now=now).token}"}
        for (method, _), (path, needed) in ADMIN.items():
            response = world.partner.http.request(method, path, headers=bearer)
            if role.includes(needed):
                assert response.status_code not in (401, 403), (role, path, response.text)
            else:
                assert response.status_code == 403, (role, path, response.text)
                assert response.json()["code"] == "ADMIN_FORBIDDEN"
    login = new_operator(world.db, OperatorRole.ADMIN, now=now)
    signed = new_session(world.db, login.email, now)
    cookie = {"Cookie": f"{LOOPBACK_COOKIE_NAME}={signed.cookie}"}
    for (method, _), (path, _) in ADMIN.items():
        response = world.partner.http.request(method, path, headers=cookie)
        if method in UNSAFE_METHODS:
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["code"] == "CSRF_REJECTED"
        else:
            assert response.status_code not in (401, 403), (method, path, response.text)
