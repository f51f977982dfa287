"""Per-client rate limiting over HTTP: 429 problem with Retry-After, per client, on the token
endpoint before the secret check, and one budget across API processes when Redis is configured."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

from rewardmiles.db.engine import Database
from tests.conftest import TEST_REDIS_URL, ServerFactory
from tests.support import data
from tests.support.partner import fetch_token
from tests.support.problems import assert_problem

LOOKUP = "/checkout/issuance/transactions/{}"


def _lookup(base_url: str, token: str) -> httpx.Response:
    # A fresh connection per call, so a multi-process server spreads the calls over its processes.
    return httpx.get(
        base_url + LOOKUP.format(uuid.uuid4()), headers={"Authorization": f"Bearer {token}"}
    )


def _token_call(base_url: str, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def test_a_client_over_its_budget_gets_429_with_retry_after_and_others_are_untouched(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(
        dialect,
        env={"REWARDMILES_RATE_LIMIT_PER_SECOND": "0.5", "REWARDMILES_RATE_LIMIT_BURST": "3"},
    )
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        noisy = fetch_token(server.base_url, *data.new_client(db, [sponsor]))
        quiet = fetch_token(server.base_url, *data.new_client(db, [sponsor]))
    finally:
        db.dispose()

    statuses = [_lookup(server.base_url, noisy).status_code for _ in range(3)]
    assert statuses == [404, 404, 404]
    refused = _lookup(server.base_url, noisy)
    assert_problem(refused, 429, "RATE_LIMITED")
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    assert refused.headers["cache-control"] == "no-store"

    assert _lookup(server.base_url, quiet).status_code == 404  # another client's budget

    time.sleep(retry_after)
    assert _lookup(server.base_url, noisy).status_code == 404  # obeying Retry-After is enough


def test_token_requests_are_limited_per_client_id_before_the_secret_is_checked(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_TOKEN_RATE_LIMIT_PER_MINUTE": "1",
            "REWARDMILES_TOKEN_RATE_LIMIT_BURST": "3",
        },
    )
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        client_id, secret = data.new_client(db, [sponsor])
        other_id, other_secret = data.new_client(db, [sponsor])
    finally:
        db.dispose()

    # Wrong guesses spend the budget too: that is what stops secret guessing.
    assert _token_call(server.base_url, client_id, "guess-1").status_code == 401
    assert _token_call(server.base_url, client_id, "guess-2").status_code == 401
    assert _token_call(server.base_url, client_id, secret).status_code == 200
    refused = _token_call(server.base_url, client_id, secret)
    assert_problem(refused, 429, "RATE_LIMITED")
    assert int(refused.headers["retry-after"]) >= 1
    assert _token_call(server.base_url, other_id, other_secret).status_code == 200


def test_with_redis_the_budget_is_shared_by_every_api_process(
    dialect: str, server_factory: ServerFactory
) -> None:
    if dialect != "postgresql":
        pytest.skip("several API processes need PostgreSQL")
    prefix = f"rm-test-{uuid.uuid4().hex}"
    burst = 5
    server = server_factory(
        dialect,
        workers=2,
        env={
            "REWARDMILES_RATE_LIMIT_PER_SECOND": "0.01",
            "REWARDMILES_RATE_LIMIT_BURST": str(burst),
            "REWARDMILES_REDIS_URL": TEST_REDIS_URL,
            "REWARDMILES_REDIS_KEY_PREFIX": prefix,
        },
    )
    db = Database.from_url(server.database_url)
    try:
        client_id, secret = data.new_client(db, [data.new_sponsor(db)])
    finally:
        db.dispose()
    token = fetch_token(server.base_url, client_id, secret)

    statuses = [_lookup(server.base_url, token).status_code for _ in range(4 * burst)]
    # Per-process budgets would let up to 2 x burst through; one shared budget lets exactly burst.
    assert statuses.count(404) == burst
    assert statuses.count(429) == 3 * burst
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        assert client.exists(f"{prefix}:rl:api:{client_id}") == 1
        client.delete(*client.keys(f"{prefix}:*"))
    finally:
        client.close()
