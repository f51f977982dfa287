"""The HTTP ceiling: rewardmiles' own server stack answering a no-op POST endpoint.

`create_noop_app()` is `rewardmiles.app.create_app()` — same middleware (request id, access log,
security headers), exception handlers, lifespan (database pool, signing keys, settlement worker)
and settings from the environment — plus one route, `POST /checkout/bench/noop`, that reads the
request body and answers a fixed small JSON 200, dispatched like the partner calls (the direct
lane, `rewardmiles.http.direct`; with `--no-direct-lane`, through the framework's routing, as
every partner call would be without the lane). It is served by uvicorn with the options of
`rewardmiles serve` (uvloop + httptools chosen by uvicorn's "auto", `cli.main.UVICORN_OPTIONS`;
`--workers N` through the import string, as `serve` does).

    REWARDMILES_DATABASE_URL=... python -m bench.noop_server --port 8001 [--workers 2]

The database must exist and be migrated (the lifespan opens it as the real app does).
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request
from starlette.responses import Response

from rewardmiles.app import create_app
from rewardmiles.http.direct import DirectRoute

NOOP_PATH = "/checkout/bench/noop"
NOOP_BODY = b'{"ok":true}'


def create_noop_app(*, direct_lane: bool = True) -> FastAPI:
    app = create_app(direct_lane=direct_lane)

    @app.post(NOOP_PATH, include_in_schema=False)
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(NOOP_BODY, status_code=200, media_type="application/json")

    if direct_lane:  # the lane the partner calls take
        app.add_direct_routes([DirectRoute("POST", NOOP_PATH, noop)])
    return app


def create_noop_app_without_lane() -> FastAPI:
    return create_noop_app(direct_lane=False)


def main() -> None:
    import uvicorn

    from rewardmiles.cli.main import UVICORN_OPTIONS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--no-direct-lane",
        dest="direct_lane",
        action="store_false",
        help="dispatch through the framework's routing, not the direct lane",
    )
    args = parser.parse_args()
    if args.workers > 1:
        factory = "create_noop_app" if args.direct_lane else "create_noop_app_without_lane"
        uvicorn.run(
            f"bench.noop_server:{factory}",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            **UVICORN_OPTIONS,
        )
    else:
        uvicorn.run(
            create_noop_app(direct_lane=args.direct_lane),
            host=args.host,
            port=args.port,
            **UVICORN_OPTIONS,
        )


if __name__ == "__main__":
    main()
