"""Synchronous work (storage, secret hashes) run from a route in a bounded worker-thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def run_sync(limiter: anyio.CapacityLimiter, fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
