"""Per-client rate limiting: GCRA (a token bucket kept as one timestamp per client).

Each client may send `rate` requests per second on average and a burst of `burst` at once. The
state of a client is its *theoretical arrival time* (TAT): a request at `now` is allowed when
`TAT - now <= (burst - 1) / rate`, and then moves TAT on by `1 / rate`. A refused request learns
exactly when the next one would pass, which becomes `Retry-After`. `peek` asks the same question
without spending anything (a budget charged only by some outcomes, consulted before the work).

Two backends share the arithmetic:
- `MemoryRateLimiter`: per process (with `--workers N` each process allows the full rate);
- `RedisRateLimiter` (`REWARDMILES_REDIS_URL`): one budget across every API process, computed
  atomically in a Lua script on Redis's own clock. If Redis cannot be reached the request is let
  through (a checkout must not fail because the limiter is down) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from rewardmiles import logs

log = logs.get_logger("rewardmiles.ratelimit")

# Memory bound for the in-process backend: idle clients are dropped once their bucket is full.
_SWEEP_EVERY = 10_000
_UNAVAILABLE_LOG_EVERY_SECONDS = 10.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_seconds: int = 0


ALLOWED = Decision(True)


class RateLimiter(Protocol):
    async def hit(self, budget: Budget, key: str) -> Decision: ...

    async def peek(self, budget: Budget, key: str) -> Decision: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Budget:
    rate: float  # requests per second, sustained
    burst: int  # requests at once

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval


def _retry_after(wait_seconds: float) -> int:
    # Retry-After is whole seconds (RFC 9110); round up so a client that obeys it is let through.
    return max(1, math.ceil(wait_seconds))


class MemoryRateLimiter:
    """GCRA in a dict; the event loop is single-threaded, so no lock is needed."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._hits = 0

    async def hit(self, budget: Budget, key: str) -> Decision:
        return self.hit_now(budget, key)

    async def peek(self, budget: Budget, key: str) -> Decision:
        return self.hit_now(budget, key, charge=False)

    def hit_now(self, budget: Budget, key: str, *, charge: bool = True) -> Decision:
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        if tat - now > budget.tolerance:
            return Decision(False, _retry_after(tat - budget.tolerance - now))
        if not charge:
            return ALLOWED
        self._tat[key] = tat + budget.interval
        self._hits += 1
        if self._hits % _SWEEP_EVERY == 0:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return ALLOWED

    async def close(self) -> None:
        return None


# KEYS[1] = bucket key; ARGV = interval, tolerance (seconds, as strings), charge ('1' or '0': a
# peek answers the same without spending).
# Returns {1, 0} when allowed, {0, wait_ms} when refused. Uses Redis TIME so every API process
# agrees on "now" whatever its own clock says.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, math.ceil((tat - tolerance - now) * 1000)}
end
if ARGV[3] == '0' then return {1, 0} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX',
           math.ceil((new_tat - now) * 1000) + 1000)
return {1, 0}
"""


class RedisRateLimiter:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis_asyncio

        self.prefix = prefix
        self._redis = redis_asyncio.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25
        )
        self._script = self._redis.register_script(_GCRA_LUA)
        self._last_warning = 0.0

    async def hit(self, budget: Budget, key: str) -> Decision:
        return await self._run(budget, key, "1")

    async def peek(self, budget: Budget, key: str) -> Decision:
        return await self._run(budget, key, "0")

    async def _run(self, budget: Budget, key: str, charge: str) -> Decision:
        try:
            allowed, wait_ms = await self._script(
                keys=[f"{self.prefix}:rl:{key}"],
                args=[repr(budget.interval), repr(budget.tolerance), charge],
            )
        except Exception as exc:  # any Redis failure: fail open, loudly
            now = time.monotonic()
            if now - self._last_warning > _UNAVAILABLE_LOG_EVERY_SECONDS:
                self._last_warning = now
                log.warning("rate_limit_backend_unavailable", error=type(exc).__name__)
            return ALLOWED
        if int(allowed):
            return ALLOWED
        return Decision(False, _retry_after(int(wait_ms) / 1000))

    async def close(self) -> None:
        await self._redis.aclose()


def build(redis_url: str | None, prefix: str) -> RateLimiter:
    return RedisRateLimiter(redis_url, prefix) if redis_url else MemoryRateLimiter()


def budget(rate_per_second: float, burst: int) -> Budget | None:
    """None when limiting is off (a rate of 0)."""
    return Budget(rate_per_second, burst) if rate_per_second > 0 else None


class OneAtATime:
    """One holder per key at a time, in this process (the others wait their turn, in order):
    what a budget read before slow work needs, so that calls arriving together are judged one
    after another and not all against the same unspent budget. Keys with no holder cost
    nothing."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
