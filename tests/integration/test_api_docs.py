"""What the app serves people: the error catalogue and the interactive API docs, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rewardmiles.app import create_app
from rewardmiles.config import Settings


@pytest.fixture(scope="module")
def get(database_url: str) -> Callable[..., list[httpx.Response]]:
    """GET a path of the app (lifespan run, as serving would); returns the httpx response."""
    settings = Settings(database_url=database_url, embedded_worker=False, log_level="warning")
    app = create_app(settings)

    def fetch(*paths: str) -> list[httpx.Response]:
        async def scenario() -> list[httpx.Response]:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://docs") as c:
                    return [await c.get(p) for p in paths]

        return asyncio.run(scenario())

    return fetch


def test_the_catalogue_lists_review_rejected(get: Any) -> None:
    listing, entry = get("/problems", "/problems/REVIEW_REJECTED")
    assert listing.status_code == 200
    assert "REVIEW_REJECTED" in listing.text
    assert entry.status_code == 200, entry.text
    assert entry.json()["status"] == 400
