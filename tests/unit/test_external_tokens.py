"""Tokens of an external identity provider (`auth.external`): what is verified (pinned algorithms,
published keys, issuer, audience, expiry, not-before), who a token is (a mapped partner client or
the sponsors claim), and how the provider's keys are fetched (on an unknown `kid`, at most once a
minute, the keys fetched before kept while the provider is down). The provider is a fake."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from rewardmiles.auth.external import ClientStanding, ExternalTokens
from rewardmiles.config import ExternalProviderSettings, Settings
from rewardmiles.errors import ProblemError

ISSUER = "https://tenant.example.auth0.com/"
AUDIENCE = "https://rewardmiles.example/issuance"
NOW = 1_800_000_000


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_A, KEY_B = _rsa(), _rsa()


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


class Provider:
    """The fake provider: a JWKS document that can change or go away, and a count of fetches."""

    def __init__(self, *keys: tuple[rsa.RSAPrivateKey, str]) -> None:
        self.keys = list(keys)
        self.down = False
        self.fetches = 0

    def fetch(self, url: str) -> dict[str, Any]:
        assert url == "https://tenant.example.auth0.com/.well-known/jwks.json"
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return {"keys": [_jwk(key, kid) for key, kid in self.keys]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: Any) -> ExternalProviderSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "https://tenant.example.auth0.com/.well-known/jwks.json",
        "algorithms": frozenset({"RS256"}),
        "client_claim": "azp",
        "sponsors_claim": "https://rewardmiles.example/sponsors",
        "clients": {
            "auth0-client-1": "partner-1",
            "auth0-gone": "partner-gone",
            "auth0-revoked": "partner-revoked",
        },
    }
    values.update(overrides)
    return ExternalProviderSettings(**values)


REGISTERED = {
    "partner-1": ClientStanding(frozenset({"KENY", "SOBY"}), revoked=False),
    "partner-revoked": ClientStanding(frozenset({"KENY"}), revoked=True),
}


def _tokens(provider: Provider, clock: Clock, **overrides: Any) -> ExternalTokens:
    return ExternalTokens(
        _settings(**overrides),
        REGISTERED.get,
        fetch=provider.fetch,
        monotonic=clock,
    )


def _token(
    key: Any = KEY_A,
    kid: str = "a",
    alg: str = "RS256",
    extra: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "azp": "auth0-client-1",
        "sub": "auth0-client-1@clients",
        "iat": NOW - 10,
        "exp": NOW + 3600,
    }
    body.update(claims)
    body.update(extra or {})
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def provider() -> Provider:
    return Provider((KEY_A, "a"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _refused(tokens: ExternalTokens, token: str) -> str:
    with pytest.raises(ProblemError) as caught:
        tokens.verify(token, NOW)
    assert caught.value.code == "TOKEN_INVALID"
    assert caught.value.headers == {"WWW-Authenticate": 'Bearer realm="rewardmiles"'}
    return caught.value.detail


# --------------------------------------------------------------------------- who


def test_a_mapped_client_acts_as_its_partner_client_for_its_sponsors(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    principal = tokens.verify(
        _token(extra={"https://rewardmiles.example/sponsors": ["OTHER"]}), NOW
    )
    # The registered client's sponsors, not the claim's: the mapping wins.
    assert (principal.client_id, principal.sponsor_codes) == (
        "partner-1",
        frozenset({"KENY", "SOBY"}),
    )
    assert principal.expires_at == NOW + 3600


def test_an_unmapped_client_acts_for_the_sponsors_its_claim_lists(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    token = _token(azp="auth0-other", extra={"https://rewardmiles.example/sponsors": ["KENY"]})
    principal = tokens.verify(token, NOW)
    assert (principal.client_id, principal.sponsor_codes) == (
        "idp:auth0-other",
        frozenset({"KENY"}),
    )


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"azp": "auth0-other"}, "has no https://rewardmiles.example/sponsors list"),
        (
            {"azp": "auth0-other", "https://rewardmiles.example/sponsors": "KENY"},
            "has no https://rewardmiles.example/sponsors list",
        ),
        (
            {"azp": "auth0-other", "https://rewardmiles.example/sponsors": [1]},
            "has no https://rewardmiles.example/sponsors list",
        ),
        ({"azp": None}, "azp claim is not a client id"),
        ({"azp": ""}, "azp claim is not a client id"),
        ({"azp": "x" * 61}, "azp claim is not a client id"),
        ({"azp": "has space"}, "azp claim is not a client id"),
        ({"azp": "auth0-gone"}, "not a registered partner client"),
    ],
)
def test_a_token_that_says_no_usable_client_is_refused(
    provider: Provider, clock: Clock, claims: dict[str, Any], detail: str
) -> None:
    assert detail in _refused(_tokens(provider, clock), _token(**claims))


def test_a_revoked_mapped_client_is_refused_as_revoked(provider: Provider, clock: Clock) -> None:
    with pytest.raises(ProblemError) as caught:
        _tokens(provider, clock).verify(_token(azp="auth0-revoked"), NOW)
    assert caught.value.code == "TOKEN_REVOKED"


def test_without_a_sponsors_claim_only_mapped_clients_are_accepted(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock, sponsors_claim=None)
    assert tokens.verify(_token(), NOW).client_id == "partner-1"
    assert "not mapped to a partner client" in _refused(tokens, _token(azp="auth0-other"))


def test_the_longest_client_id_fits_the_stored_client_id(provider: Provider, clock: Clock) -> None:
    token = _token(azp="x" * 60, extra={"https://rewardmiles.example/sponsors": ["KENY"]})
    assert len(_tokens(provider, clock).verify(token, NOW).client_id) == 64


# --------------------------------------------------------------------------- what is checked


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example/"},
        {"aud": "someone-else"},
        {"aud": None},
        {"exp": None},
        {"iss": None},
        {"nbf": NOW + 60},
        {"nbf": "soon"},
        {"exp": "later"},
    ],
)
def test_issuer_audience_expiry_and_not_before_are_checked(
    provider: Provider, clock: Clock, claims: dict[str, Any]
) -> None:
    _refused(_tokens(provider, clock), _token(**claims))


def test_not_before_now_is_valid_and_expiry_is_left_to_the_caller(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    assert tokens.verify(_token(nbf=NOW), NOW).expires_at == NOW + 3600
    # An expired token's principal carries its expiry: TokenService answers TOKEN_EXPIRED.
    assert tokens.verify(_token(exp=NOW - 1), NOW).expires_at == NOW - 1


def test_the_algorithm_is_pinned(provider: Provider, clock: Clock) -> None:
    tokens = _tokens(provider, clock)
    # HS256 with the public key as its secret: the classic confusion, refused before any key.
    public_pem = _jwk(KEY_A, "a")["n"]
    confused = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "azp": "auth0-client-1", "exp": NOW + 60},
        public_pem,
        algorithm="HS256",
        headers={"kid": "a"},
    )
    _refused(tokens, confused)
    unsigned = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "azp": "auth0-client-1", "exp": NOW + 60},
        "",
        algorithm="none",
        headers={"kid": "a"},
    )
    _refused(tokens, unsigned)
    # RS512 is asymmetric but not the pinned RS256.
    _refused(tokens, _token(alg="RS512"))
    assert provider.fetches == 0  # refused on its header: no fetch for any of them


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(
    provider: Provider, clock: Clock
) -> None:
    _refused(_tokens(provider, clock), _token(key=KEY_B, kid="a"))


def test_an_ec_key_works_when_its_algorithm_is_allowed(clock: Clock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {
        **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())),
        "kid": "e",
        "use": "sig",
    }

    def fetch(url: str) -> dict[str, Any]:
        return {"keys": [jwk, {"kid": "enc", "use": "enc", **jwk}, {"no": "kid"}]}

    tokens = ExternalTokens(
        _settings(algorithms=frozenset({"ES256"})), REGISTERED.get, fetch=fetch, monotonic=clock
    )
    assert tokens.verify(_token(key=key, kid="e", alg="ES256"), NOW).client_id == "partner-1"
    # A key published for encryption is no signing key.
    assert "not one of the provider's" in _refused(tokens, _token(key=key, kid="enc", alg="ES256"))


def test_garbage_is_refused(provider: Provider, clock: Clock) -> None:
    tokens = _tokens(provider, clock)
    _refused(tokens, "not-a-jwt")
    no_kid = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "azp": "auth0-client-1", "exp": NOW + 60},
        KEY_A,
        algorithm="RS256",
    )
    _refused(tokens, no_kid)


# --------------------------------------------------------------------------- keys


def test_keys_are_fetched_once_then_on_an_unknown_kid_at_most_once_a_minute(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    for _ in range(3):
        tokens.verify(_token(), NOW)
    assert provider.fetches == 1
    # The provider rotates: a token under the new key triggers a fetch, once the minute is up.
    provider.keys.append((KEY_B, "b"))
    clock.now += 59.9
    assert "not one of the provider's" in _refused(tokens, _token(key=KEY_B, kid="b"))
    assert provider.fetches == 1
    clock.now += 0.1
    assert tokens.verify(_token(key=KEY_B, kid="b"), NOW).client_id == "partner-1"
    assert provider.fetches == 2
    # Made-up kids cost at most one fetch a minute.
    for n in range(20):
        _refused(tokens, _token(kid=f"made-up-{n}"))
    assert provider.fetches == 2
    clock.now += 60
    _refused(tokens, _token(kid="made-up-again"))
    assert provider.fetches == 3
    # Both keys still work (the old one until the provider stops publishing it).
    assert tokens.verify(_token(), NOW).client_id == "partner-1"
    assert provider.fetches == 3


def test_a_key_the_provider_stops_publishing_stops_working_at_the_next_fetch(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    tokens.verify(_token(), NOW)
    provider.keys = [(KEY_B, "b")]
    clock.now += 60
    tokens.verify(_token(key=KEY_B, kid="b"), NOW)
    _refused(tokens, _token())


def test_while_the_provider_is_down_the_keys_fetched_before_keep_working(
    provider: Provider, clock: Clock
) -> None:
    tokens = _tokens(provider, clock)
    tokens.verify(_token(), NOW)
    provider.down = True
    clock.now += 600
    _refused(tokens, _token(key=KEY_B, kid="b"))  # the fetch fails...
    assert provider.fetches == 2
    assert tokens.verify(_token(), NOW).client_id == "partner-1"  # ...the known key still works
    provider.down = False
    provider.keys.append((KEY_B, "b"))
    clock.now += 60
    assert tokens.verify(_token(key=KEY_B, kid="b"), NOW).client_id == "partner-1"


def test_a_provider_down_from_the_start_refuses_until_it_answers(clock: Clock) -> None:
    provider = Provider((KEY_A, "a"))
    provider.down = True
    tokens = _tokens(provider, clock)
    _refused(tokens, _token())
    provider.down = False
    _refused(tokens, _token())  # within the minute: no second fetch
    clock.now += 60
    assert tokens.verify(_token(), NOW).client_id == "partner-1"


def test_issued_reads_the_unverified_issuer_only(provider: Provider, clock: Clock) -> None:
    tokens = _tokens(provider, clock)
    assert tokens.issued(_token(key=KEY_B, kid="whatever"))
    assert not tokens.issued(_token(iss="rewardmiles"))
    assert not tokens.issued("garbage")
    assert provider.fetches == 0


# --------------------------------------------------------------------------- settings


BASE = {
    "external_issuer": ISSUER,
    "external_audience": AUDIENCE,
    "external_jwks_url": "https://tenant.example.auth0.com/.well-known/jwks.json",
    "external_clients": "auth0-client-1=partner-1, auth0-2 = partner-2",
}


def test_settings_make_the_provider() -> None:
    provider = Settings.from_env({}, **BASE).external_provider
    assert provider is not None
    assert provider.clients == {"auth0-client-1": "partner-1", "auth0-2": "partner-2"}
    assert provider.algorithms == {"RS256"}
    assert provider.client_claim == "azp"
    assert Settings.from_env({}).external_provider is None
    loopback = {**BASE, "external_jwks_url": "http://127.0.0.1:9999/jwks.json"}
    assert Settings.from_env({}, **loopback).external_provider is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"external_audience": None}, "all three"),
        ({"external_jwks_url": "http://idp.example/jwks.json"}, "must be https"),
        ({"external_jwks_url": "ftp://idp.example/jwks.json"}, "must be https"),
        ({"external_algorithms": "HS256"}, "asymmetric algorithms only"),
        ({"external_algorithms": "RS256,none"}, "asymmetric algorithms only"),
        ({"external_algorithms": " , "}, "asymmetric algorithms only"),
        ({"external_clients": "no-equals-sign"}, "external-id=client-id"),
        ({"external_clients": "=partner"}, "external-id=client-id"),
        ({"external_clients": None}, "EXTERNAL_CLIENTS or EXTERNAL_SPONSORS_CLAIM"),
        ({"external_issuer": "rewardmiles"}, "must differ from TOKEN_ISSUER"),
    ],
)
def test_a_half_or_wrong_provider_stops_the_start(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.from_env({}, **{**BASE, **changes})


def test_monotonic_default_is_the_process_clock() -> None:
    tokens = ExternalTokens(_settings(), REGISTERED.get, fetch=Provider((KEY_A, "a")).fetch)
    before = time.monotonic()
    tokens.verify(_token(), NOW)
    assert tokens._last_fetch is not None
    assert tokens._last_fetch >= before
