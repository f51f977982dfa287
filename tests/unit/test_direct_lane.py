"""The direct lane's registration: the partner calls it serves, named one by one, and the checks
that keep each of them a route of the application that the lane can serve unchanged."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.http.direct import DirectLane, DirectRoute, check_registered
from tests.conftest import TEST_SECRET_KEY

PARTNER_CALLS = {
    ("POST", f"/checkout/issuance/{name}")
    for name in (
        "post",
        "post/event",
        "reverse",
        "reverse/event",
        "record",
        "calculate",
        "issue",
        "return",
    )
}


def _settings() -> Settings:
    return Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY, log_level="warning")


def test_the_lane_serves_the_partner_calls_and_nothing_else() -> None:
    stack = create_app(_settings()).build_middleware_stack()
    assert isinstance(stack, DirectLane)
    assert set(stack.routes) == PARTNER_CALLS


def test_without_the_lane_every_call_takes_the_framework_stack() -> None:
    app = create_app(_settings(), direct_lane=False)
    assert app.direct_routes == ()
    assert not isinstance(app.build_middleware_stack(), DirectLane)


async def _endpoint(request: Request) -> Response:
    return Response(b"")


async def _with_a_parameter(request: Request, sponsorCode: str = "") -> Response:  # noqa: N803
    return Response(b"")


def _app() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/checkout")
    router.add_api_route("/a", _endpoint, methods=["POST"])
    router.add_api_route("/b", _with_a_parameter, methods=["POST"])
    app.include_router(router)
    return app


def test_a_route_of_the_application_may_be_on_the_lane() -> None:
    check_registered(_app().routes, [DirectRoute("POST", "/checkout/a", _endpoint)])


@pytest.mark.parametrize(
    ("route", "refusal"),
    [
        (DirectRoute("POST", "/a", _endpoint), "not a route of the application"),
        (DirectRoute("PUT", "/checkout/a", _endpoint), "not a route of the application"),
        (DirectRoute("POST", "/checkout/a", _with_a_parameter), "not a route of the application"),
        (DirectRoute("POST", "/checkout/b", _with_a_parameter), "takes the request alone"),
    ],
)
def test_the_lane_refuses_a_call_it_could_not_serve_as_the_framework_would(
    route: DirectRoute, refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        check_registered(_app().routes, [route])


def test_direct_routes_are_added_before_the_application_starts() -> None:
    app = create_app(_settings(), direct_lane=False)
    app.middleware_stack = app.build_middleware_stack()
    with pytest.raises(RuntimeError, match="after an application has started"):
        app.add_direct_routes([DirectRoute("POST", "/checkout/issuance/post", _endpoint)])
