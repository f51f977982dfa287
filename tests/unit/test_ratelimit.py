"""GCRA arithmetic of the rate limiter (in memory with a fake clock, and on a real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import redis

from rewardmiles.ratelimit import Budget, MemoryRateLimiter, RedisRateLimiter, budget
from tests.conftest import TEST_REDIS_URL


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_request_per_interval() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    rule = Budget(rate=2.0, burst=4)  # one request per 0.5 s, four at once
    assert [limiter.hit_now(rule, "a").allowed for _ in range(4)] == [True] * 4
    refused = limiter.hit_now(rule, "a")
    assert not refused.allowed
    assert refused.retry_after_seconds == 1  # 0.5 s rounded up to whole seconds
    clock.now += 0.5
    assert limiter.hit_now(rule, "a").allowed
    assert not limiter.hit_now(rule, "a").allowed
    assert limiter.hit_now(rule, "b").allowed  # keys are independent


def test_retry_after_reflects_a_slow_rate() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    rule = Budget(rate=0.1, burst=1)  # one request per 10 s
    assert limiter.hit_now(rule, "k").allowed
    clock.now += 3
    refused = limiter.hit_now(rule, "k")
    assert (refused.allowed, refused.retry_after_seconds) == (False, 7)
    clock.now += 7
    assert limiter.hit_now(rule, "k").allowed


def test_idle_clients_do_not_accumulate_credit_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    rule = Budget(rate=1.0, burst=2)
    clock.now += 3600
    assert [limiter.hit_now(rule, "k").allowed for _ in range(3)] == [True, True, False]


def test_a_rate_of_zero_turns_limiting_off() -> None:
    assert budget(0, 10) is None
    assert budget(5, 10) == Budget(5, 10)


def test_redis_backend_applies_the_same_rule() -> None:
    prefix = f"rm-unit-{uuid.uuid4().hex}"

    async def scenario() -> list[bool]:
        limiter = RedisRateLimiter(TEST_REDIS_URL, prefix)
        try:
            rule = Budget(rate=0.01, burst=3)
            decisions = [await limiter.hit(rule, "client") for _ in range(5)]
            assert decisions[-1].retry_after_seconds >= 99
            return [d.allowed for d in decisions]
        finally:
            await limiter.close()

    try:
        assert asyncio.run(scenario()) == [True, True, True, False, False]
    finally:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        client.delete(*client.keys(f"{prefix}:*"))
        client.close()


def test_an_unreachable_redis_lets_requests_through() -> None:
    async def scenario() -> bool:
        limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "unused")
        try:
            return (await limiter.hit(Budget(rate=0.01, burst=1), "client")).allowed
        finally:
            await limiter.close()

    assert asyncio.run(scenario())


def test_a_peek_answers_like_a_hit_but_spends_nothing() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    rule = Budget(rate=0.1, burst=2)
    assert all(limiter.hit_now(rule, "k", charge=False).allowed for _ in range(5))
    assert [limiter.hit_now(rule, "k").allowed for _ in range(3)] == [True, True, False]
    refused = limiter.hit_now(rule, "k", charge=False)
    assert (refused.allowed, refused.retry_after_seconds) == (False, 10)
    clock.now += 10
    assert limiter.hit_now(rule, "k", charge=False).allowed
    assert limiter.hit_now(rule, "k").allowed
    assert not limiter.hit_now(rule, "k").allowed


def test_redis_backend_peeks_the_same_way() -> None:
    prefix = f"rm-unit-{uuid.uuid4().hex}"

    async def scenario() -> list[bool]:
        limiter = RedisRateLimiter(TEST_REDIS_URL, prefix)
        try:
            rule = Budget(rate=0.01, burst=2)
            peeks = [await limiter.peek(rule, "client") for _ in range(5)]
            hits = [await limiter.hit(rule, "client") for _ in range(3)]
            refused = await limiter.peek(rule, "client")
            assert refused.retry_after_seconds >= 99
            return [d.allowed for d in [*peeks, *hits, refused]]
        finally:
            await limiter.close()

    try:
        assert asyncio.run(scenario()) == [True] * 5 + [True, True, False, False]
    finally:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        client.delete(*client.keys(f"{prefix}:*"))
        client.close()
