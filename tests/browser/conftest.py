"""Browser fixtures: Debian's Chromium driven by Playwright (tests/support/browser.py).

`browser` lives for this package's tests only: while Playwright's sync API is started, the main
thread's asyncio loop counts as running, and tests elsewhere that call asyncio.run() would fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.browser import (
    VIEWPORT,
    PageProblems,
    browser_required,
    find_chromium,
    forget_page,
    register_page,
    settle,
)
from tests.support.server import Server

# Milliseconds a page action or navigation may take before the test fails (less than Playwright's
# own 30 s, which only slows a failing run; enough for a busy machine).
ACTION_TIMEOUT_MS = 20_000


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Headless Chromium; skips the browser tests where none is installed, unless
    REWARDMILES_REQUIRE_BROWSER=1 makes that a failure."""
    executable = find_chromium()
    if executable is None:
        reason = "no Chromium (apt-get install chromium, or REWARDMILES_CHROMIUM=/path/to/chromium)"
        if browser_required():
            pytest.fail(f"{reason}, and REWARDMILES_REQUIRE_BROWSER is set")
        pytest.skip(f"{reason}; set REWARDMILES_REQUIRE_BROWSER=1 to make this a failure")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page_problems() -> PageProblems:
    """The problems the test's pages recorded; `page_problems.allow(regex)` expects one."""
    return PageProblems()


@pytest.fixture
def page(
    browser: Browser, server: Server, dialect: str, page_problems: PageProblems
) -> Iterator[Page]:
    """A page in a context of its own (1280×900, relative URLs against the dialect's server).
    The test fails at teardown if its pages logged console errors, threw uncaught exceptions,
    had requests fail or assets answered with an error, other than those it allowed."""
    context = browser.new_context(base_url=server.base_url, viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page_problems.watch(context)
    opened = context.new_page()
    register_page(opened, dialect)
    try:
        yield opened
        for each in context.pages:
            settle(each)
    finally:
        forget_page(opened)
        context.close()
    if page_problems.problems:
        pytest.fail("the browser recorded problems:\n" + page_problems.report(), pytrace=False)
