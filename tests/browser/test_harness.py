"""The browser harness itself, on a page the service already serves: the API docs (/docs, Swagger
UI from the service's own assets). It renders in Chromium without a single recorded problem, and
the recorder does see an uncaught exception, an asset answered 404 and a failed request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.support.browser import PageProblems, settle, snap

MISSING_SCRIPT = "/console/static/missing-on-purpose.js"
# Swagger UI renders the whole openapi.json (over 300 kB) in the page: seconds on a busy machine.
DOCS_RENDER_MS = 60_000


def _open_docs(page: Page) -> None:
    page.goto("/docs")
    heading = page.get_by_role("heading", name=re.compile(r"rewardmiles Issuance API"))
    heading.wait_for(timeout=DOCS_RENDER_MS)
    # The operations of openapi.json are listed: the spec was fetched and rendered.
    page.locator(".opblock").first.wait_for(timeout=DOCS_RENDER_MS)


def test_the_api_docs_render_without_problems(page: Page, page_problems: PageProblems) -> None:
    _open_docs(page)
    assert page.title() == "rewardmiles Issuance API - Swagger UI"
    assert page.locator(".opblock").count() > 10
    settle(page)
    assert page_problems.problems == []
    assert page_problems.allowed == []


def test_an_uncaught_exception_is_recorded(page: Page, page_problems: PageProblems) -> None:
    _open_docs(page)
    with page.expect_event("pageerror"):
        page.evaluate("setTimeout(() => { throw new Error('thrown on purpose') }, 0)")
    assert [str(p) for p in page_problems.problems] == [
        f"page-error: Error: thrown on purpose ({page.url})"
    ]
    page_problems.clear()


def test_an_asset_answered_404_is_recorded(page: Page, page_problems: PageProblems) -> None:
    _open_docs(page)
    with page.expect_response(lambda response: response.url.endswith(MISSING_SCRIPT)):
        page.evaluate(
            "src => document.head.append(Object.assign(document.createElement('script'), {src}))",
            MISSING_SCRIPT,
        )
    settle(page)
    kinds = {problem.kind for problem in page_problems.problems}
    assert "asset-error" in kinds, page_problems.report()
    assert any(MISSING_SCRIPT in p.text and "404" in p.text for p in page_problems.problems)
    page_problems.clear()


def test_an_allowed_error_is_kept_apart(page: Page, page_problems: PageProblems) -> None:
    page_problems.allow(r"missing-on-purpose\.js")
    _open_docs(page)
    with page.expect_response(lambda response: response.url.endswith(MISSING_SCRIPT)):
        page.evaluate(
            "src => document.head.append(Object.assign(document.createElement('script'), {src}))",
            MISSING_SCRIPT,
        )
    settle(page)
    assert page_problems.problems == []
    assert any(p.kind == "asset-error" for p in page_problems.allowed), page_problems.allowed


def test_a_failed_request_is_recorded(page: Page, page_problems: PageProblems) -> None:
    _open_docs(page)
    # Nothing listens on port 9 (discard) of this host: the fetch fails at the network level.
    with page.expect_event("requestfailed"):
        page.evaluate("fetch('http://127.0.0.1:9/nothing').catch(() => null)")
    assert any(
        p.kind == "request-failed" and ":9/nothing" in p.text for p in page_problems.problems
    )
    page_problems.clear()


def test_snap_writes_a_png_on_sqlite_only(
    page: Page, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARDMILES_CONSOLE_SCREENSHOTS", str(tmp_path / "shots"))
    _open_docs(page)
    written = snap(page, "api-docs")
    if dialect == "sqlite":
        assert written == tmp_path / "shots" / "api-docs.png"
        data = written.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        # Full page: taller than the 900-pixel viewport (the docs list every operation).
        height = int.from_bytes(data[20:24], "big")
        assert height > 900, height
    else:
        assert written is None
        assert not (tmp_path / "shots").exists()
