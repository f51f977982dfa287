"""Closed-loop load on a running server; prints throughput, latency and errors.

    .venv/bin/python -m bench.load --base http://127.0.0.1:8000 --client-id demo-keny \\
        --client-secret demo-keny-secret --sponsor KENY --scenario issue --concurrency 16

A thin front end to bench/loadgen.py (the generator of the full harness, bench/run/): it gets
a bearer token, then runs one scenario — issue (POST/EVENT, unique keys), mix (POST/EVENT +
REVERSE/EVENT of it), replay (same key and body again) — for --duration seconds after --warmup.
Collectors are --collector-base + 1 … + --collectors (enrol them first, e.g. with
`rewardmiles collector import`); unknown ones make PENDING lines (202) rather than 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
import urllib.request
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/…): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import loadgen


def token(base: str, client_id: str, secret: str) -> str:
    data = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's --base
        f"{base}/oauth/token",
        data=data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return str(json.load(response)["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--client-id", default="demo-keny")
    parser.add_argument("--client-secret", default="demo-keny-secret")
    parser.add_argument("--sponsor", default="KENY")
    parser.add_argument("--scenario", choices=["issue", "mix", "replay"], default="issue")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--collectors", type=int, default=10_000)
    parser.add_argument("--collector-base", type=int, default=80_000_000_000)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.base)
    if url.scheme != "http" or not url.hostname:
        raise SystemExit("--base must be http://HOST:PORT (the generator speaks plain HTTP/1.1)")
    cfg = loadgen.Config(
        host=url.hostname,
        port=url.port or 80,
        scenario=args.scenario,
        token=token(args.base, args.client_id, args.client_secret),
        sponsor=args.sponsor,
        collector_base=args.collector_base,
        collectors=args.collectors,
        concurrency=args.concurrency,
        warmup=args.warmup,
        duration=args.duration,
        moment=(datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    loadgen.install_uvloop()
    result = asyncio.run(loadgen.run(cfg))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return
    lat = result.latency_ms
    print(
        f"{result.requests} requests in {result.duration_s:.1f}s: {result.rps:,.0f} req/s; "
        f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms; "
        f"statuses {result.statuses}; transport errors {result.transport_errors}; "
        f"generator CPU {result.cpu['percent_of_one_core']}% of a core"
    )
    for sample in result.error_samples:
        print(f"  {sample}")


if __name__ == "__main__":
    main()
