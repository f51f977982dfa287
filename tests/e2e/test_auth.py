"""SPEC §5 over HTTP: client credentials, signed tokens, JWKS, sponsor scoping."""

from __future__ import annotations

import base64

import httpx
import jwt

from tests.e2e.conftest import World
from tests.support import data


def _token_request(world: World, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{world.server.base_url}/oauth/token", **kwargs)  # type: ignore[arg-type]


def test_token_with_form_fields_is_a_signed_jwt_verifiable_with_jwks(world: World) -> None:
    client_id, secret = data.new_client(world.db, [world.sponsor])
    response = _token_request(
        world,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert f"sponsor:{world.sponsor}" in body["scope"]
    assert response.headers["cache-control"] == "no-store"

    jwks = httpx.get(f"{world.server.base_url}/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(body["access_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        body["access_token"], public, algorithms=["EdDSA"], audience="rewardmiles-issuance"
    )
    assert claims["sub"] == client_id
    assert claims["sponsors"] == [world.sponsor]


def test_token_with_http_basic_credentials(world: World) -> None:
    client_id, secret = data.new_client(world.db, [world.sponsor])
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    response = _token_request(
        world,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200


def test_token_with_a_json_body_and_a_duplicated_member_is_400_malformed_json(
    world: World,
) -> None:
    client_id, secret = data.new_client(world.db, [world.sponsor])
    fields = f'"grant_type": "client_credentials", "client_id": "{client_id}"'
    headers = {"Content-Type": "application/json"}
    good = _token_request(
        world, content=f'{{{fields}, "client_secret": "{secret}"}}', headers=headers
    )
    assert good.status_code == 200, good.text

    twice = _token_request(
        world,
        content=f'{{{fields}, "client_secret": "wrong", "client_secret": "{secret}"}}',
        headers=headers,
    )

    assert twice.status_code == 400, twice.text
    assert twice.json()["code"] == "MALFORMED_JSON"
    assert '"client_secret"' in twice.json()["detail"]


def test_wrong_secret_is_401_invalid_client(world: World) -> None:
    client_id, _ = data.new_client(world.db, [world.sponsor])
    response = _token_request(
        world,
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "wrong"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_CLIENT"
    assert response.json()["error"] == "invalid_client"


def test_unknown_client_is_401(world: World) -> None:
    response = _token_request(
        world,
        data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
    )
    assert response.status_code == 401


def test_other_grant_type_is_400(world: World) -> None:
    response = _token_request(world, data={"grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["code"] == "UNSUPPORTED_GRANT_TYPE"


def test_missing_token_is_401_with_challenge(world: World) -> None:
    response = httpx.post(f"{world.server.base_url}/checkout/issuance/post/event", json={})
    assert response.status_code == 401
    assert response.json()["code"] == "TOKEN_MISSING"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_tampered_token_is_401_invalid(world: World) -> None:
    token = world.partner.token
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = httpx.post(
        f"{world.server.base_url}/checkout/issuance/post/event",
        json={},
        headers={"Authorization": f"Bearer {tampered}"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "TOKEN_INVALID"


def test_unsigned_token_is_401_invalid(world: World) -> None:
    forged = jwt.encode(
        {"sub": world.partner.client_id, "sponsors": [world.sponsor]}, "k" * 32, algorithm="HS256"
    )
    response = httpx.post(
        f"{world.server.base_url}/checkout/issuance/post/event",
        json={},
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert response.status_code == 401


def test_sponsor_outside_the_token_is_403_and_stores_nothing(world: World) -> None:
    other_sponsor = data.new_sponsor(world.db)
    collector = world.collector()
    body = data.event_body(other_sponsor, collector)
    response = world.partner.post_event(body)
    assert response.status_code == 403
    assert response.json()["code"] == "SPONSOR_NOT_ALLOWED"
    assert response.json()["errors"][0]["field"] == "sponsorCode"
    assert world.balance(collector) == 0


def test_client_with_two_sponsors_may_act_for_both(world: World) -> None:
    second = data.new_sponsor(world.db)
    partner = world.new_partner(world.sponsor, second)
    collector = world.collector()
    assert partner.post_event(data.event_body(world.sponsor, collector, miles=1)).status_code == 200
    assert partner.post_event(data.event_body(second, collector, miles=2)).status_code == 200
    assert world.balance(collector) == 3
    partner.close()
