"""Partner tokens from an external identity provider against a real server: a local JWKS server
(the fake of the outside world) publishes the provider's keys; the server accepts its tokens on
the partner API beside its own, follows a key rotation, keeps the keys it has while the provider
is down, and refuses what it must (another audience, an expired token, an unknown key)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from rewardmiles.auth import service as auth
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Transaction
from rewardmiles.operators.service import Actor
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.partner import POST_EVENT
from tests.support.problems import assert_problem
from tests.support.server import Server

ISSUER = "https://idp.example/"
AUDIENCE = "https://rewardmiles.example/issuance"
SPONSORS_CLAIM = "https://rewardmiles.example/sponsors"
REFRESH = 3  # seconds between fetches of the provider's keys, at least (60 by default)


@dataclass
class JwksServer:
    """Serves `keys` at /jwks.json (503 while `down`), counting the requests."""

    url: str = ""
    keys: list[tuple[rsa.RSAPrivateKey, str]] = field(default_factory=list)
    down: bool = False
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def document(self) -> bytes | None:
        with self.lock:
            self.requests += 1
            if self.down:
                return None
            keys = [
                {
                    **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())),
                    "kid": kid,
                    "use": "sig",
                    "alg": "RS256",
                }
                for key, kid in self.keys
            ]
        return json.dumps({"keys": keys}).encode()


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.document() if self.path == "/jwks.json" else None
            self.send_response(200 if body is not None else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Idp:
    server: Server
    db: Database
    jwks: JwksServer
    sponsor: str
    mapped_client: str  # a registered partner client the provider's "m2m-mapped" maps to
    key: rsa.RSAPrivateKey

    def token(
        self,
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str = "k1",
        extra: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "azp": "m2m-mapped",
            "sub": "m2m-mapped@clients",
            "iat": now,
            "exp": now + 600,
        }
        body.update(claims)
        body.update(extra or {})
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": kid})

    def post_event(self, token: str, collector: str, **overrides: Any) -> httpx.Response:
        body = data.event_body(self.sponsor, collector, **overrides)
        return httpx.post(
            self.server.base_url + POST_EVENT,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def idp(dialect: str, server_factory: ServerFactory, jwks: JwksServer) -> Iterator[Idp]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.keys = [(key, "k1")]
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_EXTERNAL_ISSUER": ISSUER,
            "REWARDMILES_EXTERNAL_AUDIENCE": AUDIENCE,
            "REWARDMILES_EXTERNAL_JWKS_URL": jwks.url,
            "REWARDMILES_EXTERNAL_SPONSORS_CLAIM": SPONSORS_CLAIM,
            "REWARDMILES_EXTERNAL_CLIENTS": "m2m-mapped=idp-mapped-client",
            "REWARDMILES_EXTERNAL_JWKS_REFRESH_SECONDS": str(REFRESH),
        },
    )
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    with db.unit_of_work() as session:
        auth.create_client(
            session,
            [sponsor],
            data.now(),
            secret_hash_cost=data.HASH_COST,
            client_id="idp-mapped-client",
        )
    yield Idp(server, db, jwks, sponsor, "idp-mapped-client", key)
    db.dispose()


def _client_of(idp: Idp, transaction_id: str) -> str:
    with idp.db.reader() as session:
        row = session.get(Transaction, transaction_id)
        assert row is not None
        return row.client_id


def test_a_mapped_provider_token_posts_as_its_partner_client(idp: Idp) -> None:
    collector = data.new_collector(idp.db)
    response = idp.post_event(idp.token(), collector)
    assert response.status_code == 200, response.text
    assert _client_of(idp, response.json()["transactionId"]) == idp.mapped_client


def test_an_unmapped_provider_token_acts_for_the_sponsors_its_claim_lists(idp: Idp) -> None:
    collector = data.new_collector(idp.db)
    token = idp.token(azp="m2m-other", extra={SPONSORS_CLAIM: [idp.sponsor]})
    response = idp.post_event(token, collector)
    assert response.status_code == 200, response.text
    assert _client_of(idp, response.json()["transactionId"]) == "idp:m2m-other"
    # Its claim does not list another sponsor: 403 as for any token.
    other = idp.token(azp="m2m-other", extra={SPONSORS_CLAIM: ["NOTHIS"]})
    assert_problem(idp.post_event(other, collector), 403, "SPONSOR_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"aud": "someone-else"}, "TOKEN_INVALID"),
        ({"iss": "https://idp.example/other/"}, "TOKEN_INVALID"),
        ({"nbf": int(time.time()) + 3600}, "TOKEN_INVALID"),
        ({"exp": int(time.time()) - 5}, "TOKEN_EXPIRED"),
        ({"azp": "m2m-unknown"}, "TOKEN_INVALID"),
    ],
)
def test_what_the_provider_token_must_say_is_checked(
    idp: Idp, claims: dict[str, Any], code: str
) -> None:
    collector = data.new_collector(idp.db)
    assert_problem(idp.post_event(idp.token(**claims), collector), 401, code)


def test_the_service_s_own_tokens_still_work_beside_the_provider_s(idp: Idp) -> None:
    client_id, secret = data.new_client(idp.db, [idp.sponsor])
    token = httpx.post(
        idp.server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    ).json()["access_token"]
    response = idp.post_event(token, data.new_collector(idp.db))
    assert response.status_code == 200, response.text


def test_a_rotated_key_is_fetched_and_the_known_keys_survive_the_provider_going_down(
    idp: Idp,
) -> None:
    collector = data.new_collector(idp.db)
    assert idp.post_event(idp.token(), collector).status_code == 200
    # The provider adds a key. A token under it is accepted once the server may fetch again
    # (REFRESH seconds after its last fetch); tokens naming it before then are refused, and
    # however many they are, they cost one fetch per REFRESH seconds at most.
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.jwks.keys.append((new_key, "k2"))
    before, started = idp.jwks.requests, time.monotonic()
    sent = 0
    while True:
        response = idp.post_event(idp.token(key=new_key, kid="k2"), collector)
        sent += 1
        if response.status_code == 200:
            break
        assert_problem(response, 401, "TOKEN_INVALID")
        assert time.monotonic() - started < 10 * REFRESH, "the rotated key was never fetched"
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    fetched = idp.jwks.requests - before
    assert 1 <= fetched <= elapsed / REFRESH + 1, (fetched, elapsed)
    assert sent > fetched
    # The provider goes down: both keys it published keep working.
    idp.jwks.down = True
    try:
        assert idp.post_event(idp.token(), collector).status_code == 200
        assert idp.post_event(idp.token(key=new_key, kid="k2"), collector).status_code == 200
        unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        refused = idp.post_event(idp.token(key=unknown, kid="k3"), collector)
        assert_problem(refused, 401, "TOKEN_INVALID")
    finally:
        idp.jwks.down = False


def test_a_revoked_partner_client_s_provider_tokens_are_refused_within_5_s(
    idp: Idp, server_factory: ServerFactory, dialect: str
) -> None:
    # A client of its own (the module's mapped client serves the other tests): a second server
    # on the same database maps the provider's "m2m-revoked" to it.
    with idp.db.unit_of_work() as session:
        auth.create_client(
            session,
            [idp.sponsor],
            data.now(),
            secret_hash_cost=data.HASH_COST,
            client_id="idp-revoked-client",
        )
    server = server_factory(
        dialect,
        database_url=idp.server.database_url,
        env={
            "REWARDMILES_EXTERNAL_ISSUER": ISSUER,
            "REWARDMILES_EXTERNAL_AUDIENCE": AUDIENCE,
            "REWARDMILES_EXTERNAL_JWKS_URL": idp.jwks.url,
            "REWARDMILES_EXTERNAL_CLIENTS": "m2m-revoked=idp-revoked-client",
        },
    )
    token = idp.token(azp="m2m-revoked")
    collector = data.new_collector(idp.db)
    body = data.event_body(idp.sponsor, collector)
    headers = {"Authorization": f"Bearer {token}"}
    accepted = httpx.post(server.base_url + POST_EVENT, json=body, headers=headers, timeout=30)
    assert accepted.status_code == 200, accepted.text  # verified and cached
    with idp.db.unit_of_work() as session:
        auth.revoke_client(session, "idp-revoked-client", data.now(), Actor("tests@suite"))
    deadline = time.monotonic() + 5
    while True:
        response = httpx.post(
            server.base_url + POST_EVENT,
            json=data.event_body(idp.sponsor, collector),
            headers=headers,
            timeout=30,
        )
        if response.status_code == 401:
            break
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the revoked client's provider token still works"
        time.sleep(0.2)
    assert_problem(response, 401, "TOKEN_REVOKED")
    # A fresh token of the provider for the revoked client is refused too.
    fresh = idp.token(azp="m2m-revoked", jti="another")
    refused = httpx.post(
        server.base_url + POST_EVENT,
        json=data.event_body(idp.sponsor, collector),
        headers={"Authorization": f"Bearer {fresh}"},
        timeout=30,
    )
    assert_problem(refused, 401, "TOKEN_REVOKED")
