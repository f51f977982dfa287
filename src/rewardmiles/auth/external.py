"""Partner tokens from an external identity provider (SPEC §5.2): an OAuth 2.0 provider such as
Auth0 that the program already runs, configured with its issuer, audience and JWKS URL.

A token whose (unverified) `iss` is the provider's is verified here, never by the service's own
keys: its `alg` must be one of the pinned algorithms (never `none` or an HMAC), its `kid` one of the
provider's published keys, and its issuer, audience, expiry and not-before must hold. Who it is:

- the client id claim (`azp` by default, Auth0's machine-to-machine tokens) mapped to a registered
  partner client (`REWARDMILES_EXTERNAL_CLIENTS`): the token acts as that client, for that
  client's sponsors, and is refused once the client is revoked;
- otherwise, when a sponsors claim is configured, a client of the provider's own
  (`idp:<client id>`) acting for the sponsors the claim lists.

Keys are fetched from the JWKS URL when a token names a `kid` not yet known, at most once per
`refresh_interval` (60 s): a flood of tokens with made-up `kid`s costs one fetch a minute, and the
keys already fetched keep working while the provider is unreachable. The fetch and the client's
sponsors are read outside the event loop (`http.access.partner_principal`), once per token: the
verified token is cached like the service's own.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from rewardmiles import logs
from rewardmiles.auth.tokens import BEARER_CHALLENGE, Principal
from rewardmiles.config import ExternalProviderSettings
from rewardmiles.errors import ProblemError

CLIENT_PREFIX = "idp:"  # the client id of a provider's client that maps to no registered one
# A provider's client id, prefixed, fits where the service stores a client id (64 characters).
CLIENT_ID_CHARS_MAX = 64 - len(CLIENT_PREFIX)
CLIENT_ID = re.compile(rf"[!-~]{{1,{CLIENT_ID_CHARS_MAX}}}")
FETCH_TIMEOUT_SECONDS = 5.0
JWKS_BYTES_MAX = 1024 * 1024

log = logs.get_logger("rewardmiles.auth")


def fetch_jwks(url: str) -> dict[str, Any]:
    """The JWKS document at `url` (an `OSError` or `ValueError` when it cannot be had). No
    redirects, no proxies from the environment, at most 1 MiB."""
    try:
        with (
            httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, trust_env=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"the JWKS URL answered {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > JWKS_BYTES_MAX:
                    raise ValueError("the JWKS document is larger than 1 MiB")
    except httpx.HTTPError as exc:
        raise OSError(f"the JWKS URL cannot be reached: {exc}") from exc
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no keys list)")
    return document


@dataclass(frozen=True, slots=True)
class ClientStanding:
    """What an external token mapped to a registered partner client acts with."""

    sponsor_codes: frozenset[str]
    revoked: bool


def _invalid(detail: str = "The bearer token is not valid.") -> ProblemError:
    return ProblemError("TOKEN_INVALID", detail, headers=BEARER_CHALLENGE)


class ExternalTokens:
    def __init__(
        self,
        provider: ExternalProviderSettings,
        client_standing: Callable[[str], ClientStanding | None],
        *,
        fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`client_standing(client_id)`: a registered partner client's sponsors and whether it
        is revoked, or None for no such client (it reads the database: called outside the event
        loop, once per token)."""
        self.provider = provider
        self._client_standing = client_standing
        self._fetch = fetch
        self._monotonic = monotonic
        self._refresh_interval = provider.refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_fetch: float | None = None
        self._lock = threading.Lock()

    def issued(self, token: str) -> bool:
        """Whether the token says the provider issued it (unverified: which path verifies it)."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == self.provider.issuer

    # ----------------------------------------------------------------------- keys

    def _key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:  # one fetch at a time; those who waited see its keys
            key = self._keys.get(kid)
            if key is None and self._may_fetch():
                self._refresh()
                key = self._keys.get(kid)
        return key

    def _may_fetch(self) -> bool:
        return (
            self._last_fetch is None
            or self._monotonic() - self._last_fetch >= self._refresh_interval
        )

    def _refresh(self) -> None:
        self._last_fetch = self._monotonic()
        try:
            document = self._fetch(self.provider.jwks_url)
        except (OSError, ValueError) as exc:
            # The keys fetched before keep working.
            log.warning("external_jwks_unreachable", url=self.provider.jwks_url, error=str(exc))
            return
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key of a kind this service cannot use
        self._keys = keys
        log.info("external_jwks_fetched", url=self.provider.jwks_url, keys=len(keys))

    # ----------------------------------------------------------------------- tokens

    def verify(self, token: str, now_s: int) -> Principal:
        """The principal of a token of the provider; 401 `TOKEN_INVALID` for anything wrong
        with it (the caller checks the expiry against its clock, as for its own tokens)."""
        provider = self.provider
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid() from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in provider.algorithms or not isinstance(kid, str):
            raise _invalid()
        key = self._key(kid)
        if key is None:
            raise _invalid("The bearer token's signing key is not one of the provider's.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=provider.audience,
                issuer=provider.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,  # against the service's clock, by the caller
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise _invalid() from exc
        nbf = claims.get("nbf", 0)
        exp = claims.get("exp")
        if not isinstance(nbf, int | float) or nbf > now_s or not isinstance(exp, int | float):
            raise _invalid()
        return Principal(*self._who(claims), int(exp))

    def _who(self, claims: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
        provider = self.provider
        external_id = claims.get(provider.client_claim)
        if not isinstance(external_id, str) or not CLIENT_ID.fullmatch(external_id):
            raise _invalid(
                f"The bearer token's {provider.client_claim} claim is not a client id "
                f"(1 to {CLIENT_ID_CHARS_MAX} printable characters)."
            )
        registered = provider.clients.get(external_id)
        if registered is not None:
            standing = self._client_standing(registered)
            if standing is None:
                raise _invalid("The bearer token's client is not a registered partner client.")
            if standing.revoked:
                raise ProblemError(
                    "TOKEN_REVOKED",
                    "The bearer token's client has been revoked.",
                    headers=BEARER_CHALLENGE,
                )
            return registered, standing.sponsor_codes
        if provider.sponsors_claim is None:
            raise _invalid("The bearer token's client is not mapped to a partner client.")
        listed = claims.get(provider.sponsors_claim)
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise _invalid(f"The bearer token has no {provider.sponsors_claim} list.")
        return CLIENT_PREFIX + external_id, frozenset(listed)
