"""What the app serves people: the error catalogue and the interactive API docs, in-process."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from tests.conftest import TEST_SECRET_KEY


@pytest.fixture(scope="module")
def get(database_url: str) -> Callable[..., list[httpx.Response]]:
    """GET a path of the app (lifespan run, as serving would); returns the httpx response."""
    settings = Settings(
        database_url=database_url,
        embedded_worker=False,
        log_level="warning",
        secret_key=TEST_SECRET_KEY,
    )
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


ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def _references(html: str) -> list[str]:
    """Every URL the page loads: src/href attributes and the quoted URLs in its script."""
    found = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', html)
    found += re.findall(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""", html)
    return found


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_only_same_origin_assets_that_are_served(
    get: Callable[..., list[httpx.Response]], page: str
) -> None:
    (response,) = get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html
    assert "https://" not in html
    assert "//cdn" not in html
    urls = _references(html)
    assert "/openapi.json" in urls
    assets = [u for u in urls if u != "/openapi.json"]
    assert any(u.endswith(".js") for u in assets), urls
    if page == "/docs":
        assert any(u.endswith(".css") for u in assets), urls
    for url in assets:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
    for url, served in zip(assets, get(*assets), strict=True):
        assert served.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert served.headers["content-type"].split(";")[0] in ASSET_TYPES[suffix], url
        assert len(served.content) > 1000 or suffix == ".png", url


def test_swagger_ui_oauth2_redirect_page_is_served(
    get: Callable[..., list[httpx.Response]],
) -> None:
    (response,) = get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "https://" not in response.text
