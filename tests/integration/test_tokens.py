"""Bearer tokens (SPEC §5.2): `TokenService` over a `KeyRing` whose keys live in the database.

Each dialect gets its own database, so keys added or rotated here never reach the shared server.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rewardmiles.auth.keys import (
    KeyRing,
    SigningKeyError,
    generate_key,
    list_keys,
    retire_key,
)
from rewardmiles.auth.tokens import TokenService
from rewardmiles.db.engine import Database
from rewardmiles.errors import ProblemError
from tests.conftest import TEST_BOX, DatabaseFactory

ISSUER = "rewardmiles"
AUDIENCE = "rewardmiles-issuance"
LIFETIME = 3600


@pytest.fixture(scope="module")
def key_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    db = Database.from_url(database_factory.create(dialect))
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def ring(key_db: Database) -> KeyRing:
    keys = KeyRing(key_db, TEST_BOX)
    keys.ensure_key(datetime.now(UTC))
    return keys


def _service(ring: KeyRing, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> TokenService:
    return TokenService(ring, issuer=issuer, audience=audience, lifetime_seconds=LIFETIME)


def _now() -> datetime:
    return datetime.now(UTC)


def _code(call: object) -> str:
    with pytest.raises(ProblemError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.status == 401
    assert caught.value.headers.get("WWW-Authenticate", "").startswith("Bearer")
    return caught.value.code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_ensure_key_is_idempotent(key_db: Database, ring: KeyRing) -> None:
    kid = ring.signing_key.kid
    again = KeyRing(key_db, TEST_BOX)
    again.ensure_key(_now())
    assert again.signing_key.kid == kid
    assert [k["kid"] for k in again.jwks()["keys"]] == [kid]


def test_processes_starting_together_on_a_new_database_share_one_first_key(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    url = database_factory.create(dialect)
    databases = [Database.from_url(url) for _ in range(4)]
    start = threading.Barrier(len(databases))

    def start_process(db: Database) -> None:
        start.wait()
        KeyRing(db, TEST_BOX).ensure_key(datetime.now(UTC))

    try:
        threads = [threading.Thread(target=start_process, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with databases[0].reader() as session:
            assert len(list_keys(session)) == 1
    finally:
        for db in databases:
            db.dispose()


def test_issued_token_verifies_to_its_principal(ring: KeyRing) -> None:
    tokens = _service(ring)
    now = _now()
    issued = tokens.issue("rmc_client", ["KENY", "ABC"], now)
    assert issued.expires_in == LIFETIME
    assert issued.scope == "issuance sponsor:ABC sponsor:KENY"
    assert jwt.get_unverified_header(issued.access_token)["kid"] == ring.signing_key.kid

    principal = _service(ring).verify(issued.access_token, now)
    assert principal.client_id == "rmc_client"
    assert principal.sponsor_codes == frozenset({"KENY", "ABC"})
    assert principal.expires_at == int(now.timestamp()) + LIFETIME
    assert principal.may_act_for("KENY")
    assert not principal.may_act_for("OTHER")


def test_token_verifies_until_just_before_expiry(ring: KeyRing) -> None:
    now = _now()
    token = _service(ring).issue("c", ["KENY"], now).access_token
    assert _service(ring).verify(token, now + timedelta(seconds=LIFETIME - 1)).client_id == "c"


def test_token_times_are_checked_against_the_given_clock_not_the_wall_clock(
    ring: KeyRing,
) -> None:
    """A service whose clock stands a year ahead (REWARDMILES_TEST_CLOCK) accepts its own tokens;
    a token issued after the instant it is checked at is not yet valid."""
    later = _now() + timedelta(days=365)
    token = _service(ring).issue("c", ["KENY"], later).access_token
    assert _service(ring).verify(token, later).client_id == "c"
    assert _code(lambda: _service(ring).verify(token, later - timedelta(seconds=1))) == (
        "TOKEN_INVALID"
    )


def test_expired_token_is_token_expired(ring: KeyRing) -> None:
    issued_at = _now() - timedelta(seconds=LIFETIME + 60)
    token = _service(ring).issue("c", ["KENY"], issued_at).access_token
    assert _code(lambda: _service(ring).verify(token, _now())) == "TOKEN_EXPIRED"


def test_cached_token_expires_too(ring: KeyRing) -> None:
    tokens = _service(ring)
    now = _now()
    token = tokens.issue("c", ["KENY"], now).access_token
    tokens.verify(token, now)  # now cached
    at_expiry = now + timedelta(seconds=LIFETIME)
    assert _code(lambda: tokens.verify(token, at_expiry)) == "TOKEN_EXPIRED"


@pytest.mark.parametrize(
    ("issuer", "audience"),
    [(ISSUER, "someone-else"), ("https://evil.example", AUDIENCE)],
    ids=["wrong-audience", "wrong-issuer"],
)
def test_wrong_audience_or_issuer_is_token_invalid(
    ring: KeyRing, issuer: str, audience: str
) -> None:
    token = _service(ring, issuer=issuer, audience=audience).issue("c", ["KENY"], _now())
    assert _code(lambda: _service(ring).verify(token.access_token, _now())) == "TOKEN_INVALID"


def test_tampered_claims_are_token_invalid(ring: KeyRing) -> None:
    token = _service(ring).issue("c", ["KENY"], _now()).access_token
    header, payload, signature = token.split(".")
    claims = json.loads(_unb64(payload))
    claims["sponsors"] = ["KENY", "OTHER"]
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert _code(lambda: _service(ring).verify(forged, _now())) == "TOKEN_INVALID"


def test_tampered_signature_is_token_invalid(ring: KeyRing) -> None:
    token = _service(ring).issue("c", ["KENY"], _now()).access_token
    header, payload, signature = token.split(".")
    raw = bytearray(_unb64(signature))
    raw[10] ^= 0x01
    forged = ".".join([header, payload, _b64(bytes(raw))])
    assert _code(lambda: _service(ring).verify(forged, _now())) == "TOKEN_INVALID"


def _claims(now: datetime) -> dict[str, object]:
    iat = int(now.timestamp())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "c",
        "iat": iat,
        "nbf": iat,
        "exp": iat + LIFETIME,
        "sponsors": ["KENY"],
    }


def test_unknown_kid_is_token_invalid(ring: KeyRing) -> None:
    stranger = Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(_now()), stranger, algorithm="EdDSA", headers={"kid": "rm-nobody"})
    assert _code(lambda: _service(ring).verify(token, _now())) == "TOKEN_INVALID"


def test_known_kid_signed_by_another_key_is_token_invalid(ring: KeyRing) -> None:
    stranger = Ed25519PrivateKey.generate()
    headers = {"kid": ring.signing_key.kid}
    token = jwt.encode(_claims(_now()), stranger, algorithm="EdDSA", headers=headers)
    assert _code(lambda: _service(ring).verify(token, _now())) == "TOKEN_INVALID"


def test_other_algorithms_and_garbage_are_token_invalid(ring: KeyRing) -> None:
    headers = {"kid": ring.signing_key.kid}
    hmac_token = jwt.encode(_claims(_now()), "k" * 32, algorithm="HS256", headers=headers)
    unsigned = ".".join(
        [
            _b64(json.dumps({"alg": "none", "kid": ring.signing_key.kid}).encode()),
            _b64(json.dumps(_claims(_now())).encode()),
            "",
        ]
    )
    for token in (hmac_token, unsigned, "not-a-jwt", ""):
        assert _code(lambda t=token: _service(ring).verify(t, _now())) == "TOKEN_INVALID"


def test_token_without_sponsors_claim_is_token_invalid(ring: KeyRing) -> None:
    claims = _claims(_now())
    del claims["sponsors"]
    key = ring.signing_key
    token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    assert _code(lambda: _service(ring).verify(token, _now())) == "TOKEN_INVALID"


def test_key_added_by_another_process_is_picked_up_and_retired_keys_stop_verifying(
    dialect: str, database_factory: DatabaseFactory
) -> None:
    db = Database.from_url(database_factory.create(dialect))
    try:
        verifier_ring = KeyRing(db, TEST_BOX)
        verifier_ring.ensure_key(_now())
        old_kid = verifier_ring.signing_key.kid

        # "Another process" rotates: a newer key signs from now on.
        with db.unit_of_work() as session:
            new_kid = generate_key(session, _now() + timedelta(seconds=1), TEST_BOX)
        signer_ring = KeyRing(db, TEST_BOX)
        signer_ring.reload()
        assert signer_ring.signing_key.kid == new_kid
        token = _service(signer_ring).issue("c", ["KENY"], _now()).access_token

        assert _service(verifier_ring).verify(token, _now()).client_id == "c"
        assert {k["kid"] for k in verifier_ring.jwks()["keys"]} == {old_kid, new_kid}

        old_token = jwt.encode(
            _claims(_now()),
            verifier_ring._keys[old_kid].private_key,
            algorithm="EdDSA",
            headers={"kid": old_kid},
        )
        with pytest.raises(SigningKeyError), db.unit_of_work() as session:
            retire_key(session, new_kid, _now())  # the newest key signs: never retired
        with db.unit_of_work() as session:
            retire_key(session, old_kid, _now())
        verifier_ring.reload()
        assert _code(lambda: _service(verifier_ring).verify(old_token, _now())) == "TOKEN_INVALID"
    finally:
        db.dispose()
