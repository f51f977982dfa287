"""HTTP plumbing around every route: no redirects (a path with a trailing slash is a 404 problem,
whatever the method)."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import World
from tests.support.partner import POST_EVENT
from tests.support.problems import assert_problem

SLASHED_POSTS = [
    POST_EVENT + "/",
    "/checkout/issuance/reverse/event/",
    "/checkout/issuance/post/",
    "/checkout/issuance/calculate/",
    "/oauth/token/",
]
SLASHED_GETS = [
    "/healthz/",
    "/readyz/",
    "/problems/",
    "/.well-known/jwks.json/",
    "/checkout/issuance/transactions/",
    f"/checkout/issuance/transactions/{uuid.uuid4()}/",
]


@pytest.mark.parametrize("path", SLASHED_POSTS)
def test_a_post_to_a_path_with_a_trailing_slash_is_a_404_problem_not_a_redirect(
    world: World, path: str
) -> None:
    body = world.body(world.collector())
    response = world.partner.http.post(
        path,
        json=body,
        headers={"Authorization": f"Bearer {world.partner.token}"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    assert_problem(response, 404, "NOT_FOUND")


@pytest.mark.parametrize("path", SLASHED_GETS)
def test_a_get_to_a_path_with_a_trailing_slash_is_a_404_problem_not_a_redirect(
    world: World, path: str
) -> None:
    response = world.partner.http.get(
        path,
        headers={"Authorization": f"Bearer {world.partner.token}"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    assert_problem(response, 404, "NOT_FOUND")
