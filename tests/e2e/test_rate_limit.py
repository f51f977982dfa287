"""Per-client rate limiting over HTTP: 429 problem with Retry-After, per client; on the token
endpoint a budget of sign-ins per client_id and a separate one of failed sign-ins per client_id
and per address (wrong guesses are slowed, the client's correct secret always passes); and one
budget across API processes when Redis is configured."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

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


def test_a_client_over_its_budget_gets_429_with_retry_after_and_others_are_untouched(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(
        dialect,
        # One call back every 5 s: the burst of 3 and the refusal fit in that window even on a
        # loaded machine (or under coverage), where one call can take a second.
        env={"REWARDMILES_RATE_LIMIT_PER_SECOND": "0.2", "REWARDMILES_RATE_LIMIT_BURST": "3"},
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
    assert 1 <= retry_after <= 5
    assert refused.headers["cache-control"] == "no-store"

    assert _lookup(server.base_url, quiet).status_code == 404  # another client's budget

    time.sleep(retry_after)
    assert _lookup(server.base_url, noisy).status_code == 404  # obeying Retry-After is enough


def _guess(base_url: str, client_id: str, address: str) -> httpx.Response:
    """A wrong secret for `client_id`, from `address` (uvicorn takes X-Forwarded-For from a proxy
    on the loopback, as the test client is)."""
    return httpx.post(
        f"{base_url}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": "guess-" + uuid.uuid4().hex,
        },
        headers={"X-Forwarded-For": address},
    )


def _sign_in(base_url: str, client_id: str, secret: str, address: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers={"X-Forwarded-For": address},
    )


TOKEN_LIMITS = {
    "REWARDMILES_TOKEN_RATE_LIMIT_PER_MINUTE": "1",
    "REWARDMILES_TOKEN_RATE_LIMIT_BURST": "3",
    "REWARDMILES_TOKEN_FAILURE_RATE_LIMIT_PER_MINUTE": "1",
    "REWARDMILES_TOKEN_FAILURE_RATE_LIMIT_BURST": "3",
}


def _token_server(
    dialect: str, server_factory: ServerFactory, backend: str
) -> tuple[str, list[tuple[str, str]]]:
    env = dict(TOKEN_LIMITS)
    if backend == "redis":
        env["REWARDMILES_REDIS_URL"] = TEST_REDIS_URL
        env["REWARDMILES_REDIS_KEY_PREFIX"] = f"rm-test-{uuid.uuid4().hex}"
    server = server_factory(dialect, env=env)
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        clients = [data.new_client(db, [sponsor]) for _ in range(2)]
    finally:
        db.dispose()
    return server.base_url, clients


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_guessing_a_clients_secret_is_slowed_but_never_locks_the_client_out(
    dialect: str, server_factory: ServerFactory, backend: str
) -> None:
    base_url, [(client_id, secret), (other_id, other_secret)] = _token_server(
        dialect, server_factory, backend
    )
    # Guesses from six addresses: the client_id's failure budget (3) is spent whatever the source.
    guesses = [_guess(base_url, client_id, f"10.0.0.{n}") for n in range(1, 7)]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429, 429]
    assert_problem(guesses[0], 401, "INVALID_CLIENT")
    refused = assert_problem(guesses[3], 429, "RATE_LIMITED")
    assert "failed" in refused["detail"]
    assert int(guesses[3].headers["retry-after"]) >= 1

    # The client's correct secret still passes, from a guesser's address too: wrong guesses spent
    # the failure budget, not its sign-ins.
    assert _sign_in(base_url, client_id, secret, "10.0.0.1").status_code == 200
    assert _sign_in(base_url, client_id, secret, "192.0.2.7").status_code == 200
    assert _guess(base_url, client_id, "10.0.0.9").status_code == 429  # still slowed
    assert _sign_in(base_url, client_id, secret, "192.0.2.7").status_code == 200
    # Sign-ins keep their own budget (3 at once) ...
    assert_problem(_sign_in(base_url, client_id, secret, "192.0.2.7"), 429, "RATE_LIMITED")
    # ... and another client_id is untouched by either.
    assert _sign_in(base_url, other_id, other_secret, "192.0.2.8").status_code == 200
    assert _guess(base_url, other_id, "192.0.2.9").status_code == 401


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_guessing_from_one_address_is_slowed_whatever_the_client_id(
    dialect: str, server_factory: ServerFactory, backend: str
) -> None:
    base_url, [(client_id, secret), (other_id, _)] = _token_server(dialect, server_factory, backend)
    # Each guess names another client_id (known or not): the address's failure budget is spent.
    names = [f"rmc_unknown{n}" for n in range(3)] + [other_id, client_id, "rmc_unknown9"]
    statuses = [_guess(base_url, name, "10.1.0.1").status_code for name in names]
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert _guess(base_url, "rmc_unknown0", "10.1.0.2").status_code == 401  # another address
    # The guessing address tests no more secrets, not even a right one, until it recovers ...
    assert_problem(_sign_in(base_url, client_id, secret, "10.1.0.1"), 429, "RATE_LIMITED")
    # ... while the client signs in from its own address.
    assert _sign_in(base_url, client_id, secret, "10.1.0.3").status_code == 200


def test_guesses_sent_together_from_one_address_are_judged_one_after_another(
    dialect: str, server_factory: ServerFactory
) -> None:
    """Twelve wrong secrets at once from one address: no more of them are checked than its
    failure budget (3) allows, as if they had been sent in turn — not all twelve against a budget
    none of them had spent yet."""
    env = {**TOKEN_LIMITS, "REWARDMILES_SECRET_HASH_COST": "14"}  # checks long enough to overlap
    server = server_factory(dialect, env=env)
    db = Database.from_url(server.database_url)
    try:
        client_id, _ = data.new_client(db, [data.new_sponsor(db)])
    finally:
        db.dispose()

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(
            pool.map(lambda _: _guess(server.base_url, client_id, "10.2.0.1"), range(12))
        )

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [401] * 3 + [429] * 9, statuses
    for refused in (r for r in answers if r.status_code == 429):
        assert "no secret is checked" in assert_problem(refused, 429, "RATE_LIMITED")["detail"]


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
