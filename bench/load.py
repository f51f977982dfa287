"""Closed-loop load on POST/EVENT against a running server; prints throughput and latency.

    python bench/load.py --base http://127.0.0.1:8000 --client-id demo-keny \
        --client-secret demo-keny-secret --sponsor KENY --requests 5000 --concurrency 32

Collectors are generated numbers (unknown to the program, so lines are PENDING) unless
--collectors-file lists enrolled ones (one per line), e.g. from `collector import`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx


async def _token(client: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def run(args: argparse.Namespace) -> None:
    collectors = (
        Path(args.collectors_file).read_text().split()
        if args.collectors_file
        else [f"9{i:010d}" for i in range(args.collector_count)]
    )
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=args.base, limits=limits, timeout=30) as client:
        token = await _token(client, args.client_id, args.client_secret)
        headers = {"Authorization": f"Bearer {token}"}
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        remaining = args.requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                body = {
                    "clientTransactionId": uuid.uuid4().hex,
                    "collectorNumber": random.choice(collectors),
                    "sponsorCode": args.sponsor,
                    "transactionDateTime": datetime.now(UTC).isoformat(),
                    "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 5}],
                }
                started = time.perf_counter()
                response = await client.post(
                    "/checkout/issuance/post/event",
                    json=body,
                    headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
                )
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started

    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{len(latencies)} requests in {elapsed:.1f}s: {len(latencies) / elapsed:.0f} req/s; "
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms; statuses {statuses}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--client-id", default="demo-keny")
    parser.add_argument("--client-secret", default="demo-keny-secret")
    parser.add_argument("--sponsor", default="KENY")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--collector-count", type=int, default=10_000)
    parser.add_argument("--collectors-file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
