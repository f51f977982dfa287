"""The direct lane: the partner calls, registered one by one, dispatched straight to their
endpoint functions (docs/adr/0003-direct-lane.md).

A call on the lane (`DirectRoute`: method, exact path, endpoint) goes through
`RequestContextMiddleware` to its endpoint, past the framework's error, routing and dependency
layers: at checkout rates those cost more than the endpoint's own work. Its errors are answered
by the application's own exception handlers. The same function stays registered as a framework
route of the same method and path (the OpenAPI document, tests of the routing) and takes the
request as its only parameter, so that nothing the framework would have solved for it is skipped
(`check_registered` refuses a lane where either is not so): the answers are the same either way.
Every other request takes the full stack.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from rewardmiles.http.middleware import RequestContextMiddleware

# A route function of the lane (not `issuance.calls.Endpoint`, the partner endpoints).
RouteHandler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """One call served on the direct lane: `method` to exactly `path` runs `endpoint`."""

    method: str
    path: str
    endpoint: RouteHandler


class DirectLane:
    """ASGI, in front of the framework's middleware stack `app`: a request for one of `routes`
    goes to its endpoint (inside `RequestContextMiddleware`, errors to `handlers`, the
    application's exception handlers by class); any other to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[DirectRoute],
        handlers: Mapping[Any, Callable[[Request, Any], Any]],
    ) -> None:
        self.app = app
        self.routes = {(route.method, route.path): route.endpoint for route in routes}
        self.handlers = {k: v for k, v in handlers.items() if isinstance(k, type)}
        self.direct = RequestContextMiddleware(self._run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.routes:
            await self.direct(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.routes[(scope["method"], scope["path"])](request)
        except Exception as exc:
            handler = next(
                (self.handlers[t] for t in type(exc).__mro__ if t in self.handlers), None
            )
            if handler is None:
                raise
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


def check_registered(
    framework_routes: Sequence[BaseRoute | RouteContext], lane: Iterable[DirectRoute]
) -> None:
    """ValueError unless each call of `lane` is also a framework route (same method, path and
    endpoint) whose endpoint takes the request alone: no path, query, body or dependency
    parameter that the lane, which skips the framework, would leave unsolved."""
    registered = {
        (method, route.path, route.endpoint)
        for route in iter_route_contexts(framework_routes)  # routers' routes, prefixed
        if isinstance(route.original_route, APIRoute)
        for method in route.methods or ()
    }
    for call in lane:
        where = f"{call.method} {call.path} ({call.endpoint.__qualname__})"
        if (call.method, call.path, call.endpoint) not in registered:
            raise ValueError(f"{where}: on the direct lane, but not a route of the application")
        if list(inspect.signature(call.endpoint).parameters) != ["request"]:
            raise ValueError(f"{where}: an endpoint of the direct lane takes the request alone")
