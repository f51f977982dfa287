"""Issue and verify partner bearer tokens (JWT, EdDSA, `kid` header)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jwt

from rewardmiles import limits
from rewardmiles.auth.keys import ALGORITHM, KeyRing
from rewardmiles.errors import ProblemError

if TYPE_CHECKING:
    from rewardmiles.auth.external import ExternalTokens

SCOPE = "issuance"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rewardmiles"'}


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    sponsor_codes: frozenset[str]
    expires_at: int

    def may_act_for(self, sponsor_code: str) -> bool:
        return sponsor_code in self.sponsor_codes


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class ExternalToken(Exception):  # noqa: N818  (not an error: a token for the other path)
    """The token says an external identity provider issued it and has not been verified yet:
    `TokenService.verify_external` verifies it, outside the event loop (it may fetch the
    provider's keys and read the client's sponsors)."""


class TokenService:
    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        external: ExternalTokens | None = None,
    ) -> None:
        self._keys = keys
        self._external = external
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds
        # Verified tokens, so a partner's steady stream of calls costs one signature check per token.
        self._verified: dict[str, Principal] = {}
        self._lock = threading.Lock()
        # Revoked clients (`auth.revocation.ClientWatch` replaces the set every few seconds):
        # their tokens are refused, cached ones too. Read without a lock: it is only replaced.
        self.revoked_clients: frozenset[str] = frozenset()

    def refuse_clients(self, client_ids: frozenset[str]) -> None:
        """From now on refuse the tokens of `client_ids` (and forget their cached ones)."""
        newly = client_ids - self.revoked_clients
        self.revoked_clients = client_ids
        if newly:
            with self._lock:
                self._verified = {
                    t: p for t, p in self._verified.items() if p.client_id not in newly
                }

    def issue(self, client_id: str, sponsor_codes: list[str], now: datetime) -> IssuedToken:
        key = self._keys.signing_key
        iat = int(now.timestamp())
        scope = " ".join([SCOPE, *(f"sponsor:{code}" for code in sorted(sponsor_codes))])
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": client_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self._lifetime,
            "jti": secrets.token_hex(8),
            "scope": scope,
            "sponsors": sorted(sponsor_codes),
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token, self._lifetime, scope)

    def verify(self, token: str, now: datetime) -> Principal:
        """The token's principal: from the cache, or by its signature (the service's own keys).
        `ExternalToken` when an external provider's token has yet to be verified."""
        now_s = int(now.timestamp())
        cached = self._verified.get(token)
        if cached is not None:
            if cached.client_id in self.revoked_clients:
                raise _revoked()
            if cached.expires_at > now_s:
                return cached
            raise ProblemError(
                "TOKEN_EXPIRED", "The bearer token has expired.", headers=BEARER_CHALLENGE
            )
        if self._external is not None and self._external.issued(token):
            raise ExternalToken
        return self._remember(token, self._verify_signature(token, now_s), now_s)

    def verify_external(self, token: str, now: datetime) -> Principal:
        """An external provider's token (after `ExternalToken`): blocking, never on the loop."""
        if self._external is None:
            raise ProblemError(
                "TOKEN_INVALID", "The bearer token is not valid.", headers=BEARER_CHALLENGE
            )
        now_s = int(now.timestamp())
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at > now_s:
            if cached.client_id in self.revoked_clients:
                raise _revoked()
            return cached
        return self._remember(token, self._external.verify(token, now_s), now_s)

    def _remember(self, token: str, principal: Principal, now_s: int) -> Principal:
        if principal.client_id in self.revoked_clients:
            raise _revoked()
        if principal.expires_at <= now_s:
            raise ProblemError(
                "TOKEN_EXPIRED", "The bearer token has expired.", headers=BEARER_CHALLENGE
            )
        with self._lock:
            if len(self._verified) >= limits.token_cache_entries_max:
                self._verified = {t: p for t, p in self._verified.items() if p.expires_at > now_s}
                if len(self._verified) >= limits.token_cache_entries_max:
                    self._verified.clear()
            self._verified[token] = principal
        return principal

    def _verify_signature(self, token: str, now_s: int) -> Principal:
        invalid = ProblemError(
            "TOKEN_INVALID", "The bearer token is not valid.", headers=BEARER_CHALLENGE
        )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise invalid from exc
        kid = header.get("kid")
        public = self._keys.public_key(kid) if isinstance(kid, str) else None
        if public is None or header.get("alg") != ALGORITHM:
            raise invalid
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked against `now` (the service's one clock), not PyJWT's own.
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise invalid from exc
        for claim in ("iat", "nbf"):  # not yet valid
            value = claims.get(claim, 0)
            if not isinstance(value, int) or value > now_s:
                raise invalid
        sponsors = claims.get("sponsors")
        if not isinstance(sponsors, list) or not all(isinstance(s, str) for s in sponsors):
            raise invalid
        return Principal(str(claims["sub"]), frozenset(sponsors), int(claims["exp"]))


def _revoked() -> ProblemError:
    return ProblemError(
        "TOKEN_REVOKED",
        "The bearer token's client has been revoked.",
        headers=BEARER_CHALLENGE,
    )
