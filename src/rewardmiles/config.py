"""One settings object. Nothing else in the package reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from rewardmiles import clock
from rewardmiles.vocabulary import NegativeBalancePolicy, UnknownCollectorPolicy

ENV_PREFIX = "REWARDMILES_"
# Signature algorithms an external identity provider's keys may use: asymmetric only (an HMAC
# would let anyone holding the public key sign; `none` signs nothing).
EXTERNAL_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class ExternalProviderSettings:
    issuer: str
    audience: str
    jwks_url: str
    algorithms: frozenset[str]
    client_claim: str
    sponsors_claim: str | None
    clients: Mapping[str, str]  # the provider's client id -> a registered partner client id
    refresh_seconds: float = 60.0  # between two fetches of its keys, at least


# The value of REWARDMILES_TEST_CLOCK starts with this, so that it cannot be set by accident.
TEST_CLOCK_PREFIX = "frozen-for-tests:"
DEFAULT_SQLITE_FILE = "rewardmiles.db"


def parse_networks(
    text: str,
) -> tuple[IPv4Network | IPv6Network, ...]:
    """A comma-separated list of networks (CIDR; a bare address is a /32 or /128); ValueError
    names the first that is not one."""
    networks = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from exc
    return tuple(networks)


class Settings(BaseModel):
    """Program-wide settings; each field is read from `REWARDMILES_<FIELD NAME IN CAPITALS>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: Literal["development", "production"] = Field(
        default="development",
        description="production: refuse to start without a key-encryption key (a PostgreSQL "
        "database is production mode whatever this says)",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key-encryption key of the stored secrets: 32 random bytes, base64",
    )
    secret_key_file: Path | None = Field(
        default=None, description="A file holding the key-encryption key (instead of SECRET_KEY)"
    )
    secret_key_previous: SecretStr | None = Field(
        default=None,
        description="Earlier key-encryption keys, comma-separated: read only, while rotating",
    )
    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / DEFAULT_SQLITE_FILE}"
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_statement_timeout_ms: int = Field(
        default=15_000, ge=0, description="PostgreSQL statement_timeout of API requests; 0 = none"
    )
    cpu_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Worker threads for CPU-heavy work of one request (secret hashes, large "
        "bodies), apart from the database's threads",
    )
    one_statement_issue: bool = Field(
        default=True,
        description="PostgreSQL: write an issue, or a reversal of an original, whose every "
        "line posts at once by the group commit's batched statement; off = always the general "
        "unit of work",
    )
    program_time_zone: str = "America/Toronto"
    backdate_days_max: int = Field(default=30, ge=0, le=3650)
    miles_per_line_max: int = Field(default=100_000, ge=1, le=1_000_000_000)
    negative_balance_policy: NegativeBalancePolicy = NegativeBalancePolicy.ALLOW
    unknown_collector_policy: UnknownCollectorPolicy = UnknownCollectorPolicy.PENDING
    pending_window_days: int = Field(default=30, ge=1)
    embedded_worker: bool = True
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Webhook delivery: connect timeout, and per read"
    )
    webhook_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Webhook delivery: the whole of it (resolve, connect, send, answer); past it "
        "the attempt is cut and retried later",
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=64, description="Webhook deliveries in flight at once, per worker"
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Allow webhook targets on loopback, private, link-local and other internal "
        "addresses (tests, demos); off = public addresses only",
    )
    webhook_attempts_max: int = Field(default=8, ge=1, le=50)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    idempotency_retention_days: int = Field(default=30, ge=1)
    request_failure_retention_days: int = Field(
        default=90,
        ge=1,
        description="Days a failed partner request stays findable by its request id "
        "(GET /admin/v1/requests/{requestId}); the worker purges older ones",
    )
    token_issuer: str = "rewardmiles"
    token_audience: str = "rewardmiles-issuance"
    token_lifetime_seconds: int = Field(default=3600, ge=60, le=86_400)
    external_issuer: str | None = Field(
        default=None,
        description="An external identity provider's issuer (`iss`, e.g. "
        "https://tenant.auth0.com/): its tokens are accepted on the partner API beside the "
        "service's own; needs EXTERNAL_AUDIENCE and EXTERNAL_JWKS_URL",
    )
    external_audience: str | None = Field(
        default=None, description="The `aud` the external provider's tokens must carry"
    )
    external_jwks_url: str | None = Field(
        default=None,
        description="Where the external provider publishes its keys (https, or http to loopback)",
    )
    external_algorithms: str = Field(
        default="RS256",
        description="The signature algorithms accepted from the external provider, comma-"
        "separated (asymmetric only: RS*, PS*, ES*, EdDSA)",
    )
    external_jwks_refresh_seconds: float = Field(
        default=60.0,
        ge=1,
        le=86_400,
        description="The external provider's keys are fetched again (for a token naming an "
        "unknown key) at most once in this many seconds",
    )
    external_client_claim: str = Field(
        default="azp",
        min_length=1,
        description="The claim of an external token that names its client (Auth0: azp)",
    )
    external_clients: str | None = Field(
        default=None,
        description="External client ids mapped to registered partner clients: "
        "`external-id=client-id,…`; a mapped token acts as that client, for its sponsors",
    )
    external_sponsors_claim: str | None = Field(
        default=None,
        description="The claim listing the sponsor codes of an external token whose client is "
        "not mapped (without it, only mapped clients' tokens are accepted)",
    )
    secret_hash_cost: int = Field(default=14, ge=10, le=20, description="scrypt N = 2**cost")
    partner_secret_grace_seconds: int = Field(
        default=86_400,
        ge=0,
        le=30 * 86_400,
        description="After `partner rotate`, the old secret still signs in for this long",
    )
    revocation_refresh_seconds: float = Field(
        default=2.0,
        gt=0,
        le=5.0,
        description="How often each API process re-reads the revoked partner clients (a revoked "
        "client's tokens are refused everywhere within this, plus one read)",
    )
    rate_limit_per_second: float = Field(
        default=200.0, ge=0, description="Partner API requests per client per second; 0 = off"
    )
    rate_limit_burst: int = Field(default=400, ge=1, le=1_000_000)
    token_rate_limit_per_minute: float = Field(
        default=60.0,
        ge=0,
        description="Successful token requests (right secret) per client_id per minute; 0 = off",
    )
    token_rate_limit_burst: int = Field(default=20, ge=1, le=10_000)
    token_failure_rate_limit_per_minute: float = Field(
        default=10.0,
        ge=0,
        description="Failed token requests (wrong secret, unknown client) per minute, counted "
        "per client_id and per source address; over a client_id's, a wrong secret gets 429; "
        "over an address's, every secret from it gets 429 unchecked; 0 = off",
    )
    token_failure_rate_limit_burst: int = Field(default=10, ge=1, le=10_000)
    admin_session_idle_minutes: int = Field(
        default=30,
        ge=1,
        le=1440,
        description="An operator's browser session ends after this many minutes without a request",
    )
    adjustment_agent_limit_miles: int = Field(
        default=1000,
        ge=0,
        le=100_000_000,
        description="The largest adjustment (absolute miles) an agent may make; above it, admin",
    )
    admin_session_absolute_hours: int = Field(
        default=12,
        ge=1,
        le=168,
        description="An operator's browser session ends this many hours after its sign-in, "
        "however active",
    )
    password_hash_time_cost: int = Field(
        default=3, ge=1, le=10, description="argon2id passes of operator password hashes"
    )
    password_hash_memory_kib: int = Field(
        default=65_536,
        ge=1024,
        le=1_048_576,
        description="argon2id memory of operator password hashes, in KiB (64 MiB)",
    )
    sign_in_failures_allowed: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Failed operator sign-ins for one account from one address before that "
        "pair is locked out, for a time that doubles with each further failure",
    )
    sign_in_address_failures_allowed: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Failed operator sign-ins from one address, whatever the accounts, before "
        "the address is locked out (doubling likewise)",
    )
    sign_in_account_failures_alarm: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Failed sign-ins for one account from all addresses after which an address "
        "that fails for it once is locked out (addresses that have not failed still sign in)",
    )
    sign_in_lockout_max_seconds: int = Field(
        default=900, ge=1, le=86_400, description="The longest sign-in lockout"
    )
    redis_url: str | None = Field(
        default=None, description="Share rate-limit budgets across API processes via Redis"
    )
    redis_key_prefix: str = Field(default="rewardmiles", min_length=1, max_length=64)
    batch_upload_bytes_max: int = Field(
        default=256 * 1024**2, ge=1024, description="Largest partner log upload (413 above)"
    )
    batch_line_bytes_max: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024**2,
        description="Longest line (CSV record) of a partner log; a longer one is a refused record",
    )
    batch_workers: int = Field(
        default=2, ge=1, le=32, description="Partner logs matched at once per API process"
    )
    batch_queue_max: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="Partner logs waiting (or still uploading) beyond those running; more: 503",
    )
    http_head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="A request head (request line and headers) must arrive within this many "
        "seconds of its first byte (of the connection's opening for the first one); past it the "
        "connection is closed (408 if part of a head arrived)",
    )
    http_keep_alive_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="An idle connection between two requests is closed after this many seconds",
    )
    http_connections_max: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Connections one API process holds at once; the ones beyond get 503 and are "
        "closed",
    )
    metrics_allow_loopback: bool = Field(
        default=True,
        description="GET /metrics answers scrapes from loopback addresses without a token",
    )
    metrics_allow_networks: str = Field(
        default="",
        description="GET /metrics also answers scrapes from these networks without a token: "
        "comma-separated CIDRs (e.g. 10.0.0.0/8,fd00::/8); the connection's peer address is "
        "compared, never a forwarded header",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="GET /metrics answers any address that sends `Authorization: Bearer <this>` "
        "(compared in constant time); unset = no token opens it",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    test_clock: str | None = Field(
        default=None,
        description="TEST SETTING, never in production: `frozen-for-tests:<RFC 3339 instant>` "
        "stands the service's clock still at that instant",
    )

    @field_validator("secret_key_file", mode="before")
    @classmethod
    def _blank_key_file_is_unset(cls, value: object) -> object:
        # An empty REWARDMILES_SECRET_KEY_FILE is no file (as an empty SECRET_KEY is no key),
        # never Path(".").
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("metrics_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # ValueError names the first that is not a network
        return value

    @field_validator("metrics_token")
    @classmethod
    def _blank_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("program_time_zone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("test_clock")
    @classmethod
    def _test_clock(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(TEST_CLOCK_PREFIX):
            raise ValueError(
                f"is a test setting; its value is {TEST_CLOCK_PREFIX}<RFC 3339 instant>"
            )
        clock.parse_partner_datetime(value.removeprefix(TEST_CLOCK_PREFIX))
        return value

    @model_validator(mode="after")
    def _external_provider_whole(self) -> Settings:
        self.external_provider  # noqa: B018  (raises ValueError when half-configured)
        return self

    @property
    def external_provider(self) -> ExternalProviderSettings | None:
        """The external identity provider, when one is configured (all three of issuer,
        audience and JWKS URL); a `ValueError` for a half or wrong configuration."""
        given = (self.external_issuer, self.external_audience, self.external_jwks_url)
        if not any(given):
            return None
        issuer, audience, jwks_url = given
        if not (issuer and audience and jwks_url):
            raise ValueError(
                "an external identity provider needs EXTERNAL_ISSUER, EXTERNAL_AUDIENCE and "
                "EXTERNAL_JWKS_URL, all three"
            )
        if issuer == self.token_issuer:
            raise ValueError("EXTERNAL_ISSUER must differ from TOKEN_ISSUER")
        parts = urlsplit(jwks_url)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
            raise ValueError("EXTERNAL_JWKS_URL must be https (http only to loopback)")
        algorithms = frozenset(a.strip() for a in self.external_algorithms.split(",") if a.strip())
        if not algorithms or not algorithms <= EXTERNAL_ALGORITHMS:
            raise ValueError(
                "EXTERNAL_ALGORITHMS takes asymmetric algorithms only: "
                + ", ".join(sorted(EXTERNAL_ALGORITHMS))
            )
        clients: dict[str, str] = {}
        for pair in (self.external_clients or "").split(","):
            if not pair.strip():
                continue
            external, sep, registered = pair.partition("=")
            if not sep or not external.strip() or not registered.strip():
                raise ValueError("EXTERNAL_CLIENTS is `external-id=client-id,…`")
            clients[external.strip()] = registered.strip()
        if not clients and not self.external_sponsors_claim:
            raise ValueError(
                "an external identity provider needs EXTERNAL_CLIENTS or EXTERNAL_SPONSORS_CLAIM "
                "(which sponsors its tokens act for)"
            )
        return ExternalProviderSettings(
            issuer,
            audience,
            jwks_url,
            algorithms,
            self.external_client_claim,
            self.external_sponsors_claim,
            clients,
            self.external_jwks_refresh_seconds,
        )

    @property
    def metrics_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """`metrics_allow_networks`, parsed."""
        return parse_networks(self.metrics_allow_networks)

    @property
    def frozen_clock(self) -> datetime | None:
        """The instant REWARDMILES_TEST_CLOCK pins the clock at (tests only), or None."""
        if self.test_clock is None:
            return None
        return clock.parse_partner_datetime(self.test_clock.removeprefix(TEST_CLOCK_PREFIX))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw
        values.update(overrides)
        return cls.model_validate(values)
