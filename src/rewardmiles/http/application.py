"""`IssuanceApp`: FastAPI, with the direct lane (`http.direct`) in front of its middleware stack
and its telemetry check made once rather than per request."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from rewardmiles.http.direct import DirectLane, DirectRoute, check_registered


class IssuanceApp(FastAPI):
    """FastAPI, with the calls of `direct_routes` (`add_direct_routes`) on the direct lane in
    front of the framework's middleware stack; without any, the framework's stack alone.

    FastAPI asks OpenTelemetry on every request whether a provider is configured (a few
    environment lookups each time). Here it asks once, at the first HTTP request: with none
    configured by then, requests go straight to the middleware stack, as FastAPI itself sends
    them when the answer is no."""

    direct_routes: tuple[DirectRoute, ...] = ()
    _telemetry_off: bool | None = None  # decided at the first HTTP request

    def add_direct_routes(self, routes: Iterable[DirectRoute]) -> None:
        """Serve `routes` on the direct lane; each must be a route of the application too."""
        if self.middleware_stack is not None:
            raise RuntimeError("Cannot add direct routes after an application has started")
        self.direct_routes = (*self.direct_routes, *routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._telemetry_off is None:
                self._telemetry_off = native_telemetry_off(self)
            if self._telemetry_off:
                if self.root_path:
                    scope["root_path"] = self.root_path
                await Starlette.__call__(self, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.direct_routes:
            return stack
        check_registered(self.routes, self.direct_routes)
        return DirectLane(stack, self.direct_routes, self.exception_handlers)


def native_telemetry_off(app: FastAPI) -> bool:
    """True when FastAPI's native telemetry is off for `app` (no provider given or configured).

    FastAPI has no public way to ask this. Its own `__call__` asks the private
    `_native_telemetry.enabled()` on every request, and this is the one place that reads that
    attribute. (The public `FastAPI(telemetry=...)` could only switch telemetry off for good,
    also where a deployment configures a provider.) A FastAPI without the attribute keeps its
    own path: nothing is skipped on a guess."""
    native = getattr(app, "_native_telemetry", None)
    return native is not None and not native.enabled()
