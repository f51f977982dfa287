"""Driving the console in a real browser: Debian's Chromium through Playwright's sync API.

Playwright's pip package brings its driver but no browser; the tests use the system's Chromium
(Debian's `chromium` package, `.ci/run` installs it), or the executable REWARDMILES_CHROMIUM names.
Each test's page records what a person would not see but a broken page shows: console errors,
uncaught exceptions, failed requests and assets answered with an error (PageProblems); the `page`
fixture (tests/browser/conftest.py) fails the test when any were recorded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    ViewportSize,
    WebError,
)

ROOT = Path(__file__).resolve().parents[2]
# /usr/bin/chromium is Debian's shell launcher (it adds the flags of /etc/chromium.d); Playwright
# drives it and the binary it starts, /usr/lib/chromium/chromium, alike.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
SCREENSHOTS_DEFAULT = "build/console-screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# Requests whose error answer means a broken page (a failed fetch of data is the page's business).
ASSET_TYPES = frozenset({"script", "stylesheet", "image", "font"})
STATIC_PREFIX = "/console/static/"


def find_chromium() -> str | None:
    """The Chromium executable to drive: REWARDMILES_CHROMIUM when set (None if it is not an
    executable file), else the first of CHROMIUM_CANDIDATES present."""
    named = os.environ.get("REWARDMILES_CHROMIUM")
    candidates = (named,) if named else CHROMIUM_CANDIDATES
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_required() -> bool:
    """REWARDMILES_REQUIRE_BROWSER=1 (CI): a missing Chromium fails the browser tests."""
    return os.environ.get("REWARDMILES_REQUIRE_BROWSER", "") not in ("", "0")


@dataclass(frozen=True)
class Problem:
    kind: str  # console-error, page-error, request-failed, asset-error
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


@dataclass
class PageProblems:
    """What went wrong in the pages of one browser context. A problem matching a pattern given to
    `allow` (re.search on `str(problem)`, e.g. "console-error: .* 403") is kept in `allowed`
    instead of `problems`: a test declares the errors it provokes on purpose."""

    problems: list[Problem] = field(default_factory=list)
    allowed: list[Problem] = field(default_factory=list)
    _patterns: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str | re.Pattern[str]) -> None:
        self._patterns.append(re.compile(pattern))

    def clear(self) -> None:
        """Forget what was recorded (the allowed patterns stay)."""
        self.problems.clear()
        self.allowed.clear()

    def record(self, kind: str, text: str) -> None:
        problem = Problem(kind, text)
        if any(pattern.search(str(problem)) for pattern in self._patterns):
            self.allowed.append(problem)
        else:
            self.problems.append(problem)

    def watch(self, context: BrowserContext) -> None:
        """Record the problems of every page `context` opens."""
        context.on("console", self._on_console)
        context.on("weberror", self._on_web_error)
        context.on("requestfailed", self._on_request_failed)
        context.on("response", self._on_response)

    def report(self) -> str:
        return "\n".join(f"  {problem}" for problem in self.problems)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.record("console-error", f"{message.text} ({where})" if where else message.text)

    def _on_web_error(self, error: WebError) -> None:
        thrown = error.error
        where = f" ({error.page.url})" if error.page is not None else ""
        self.record("page-error", f"{thrown.name or 'Error'}: {thrown.message}{where}")

    def _on_request_failed(self, request: Request) -> None:
        self.record(
            "request-failed", f"{request.method} {request.url}: {request.failure or 'failed'}"
        )

    def _on_response(self, response: Response) -> None:
        if response.status < 400:
            return
        request = response.request
        if request.resource_type in ASSET_TYPES or urlsplit(response.url).path.startswith(
            STATIC_PREFIX
        ):
            self.record(
                "asset-error",
                f"{request.method} {response.url} answered {response.status} "
                f"({request.resource_type})",
            )


def settle(page: Page) -> None:
    """A round trip to the page: the events it sent before are dispatched to the listeners."""
    if not page.is_closed():
        page.evaluate("0")


# The dialect of each open page's server, so that `snap` knows whether to write.
_DIALECTS: dict[int, str] = {}


def register_page(page: Page, dialect: str) -> None:
    _DIALECTS[id(page)] = dialect


def forget_page(page: Page) -> None:
    _DIALECTS.pop(id(page), None)


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("REWARDMILES_CONSOLE_SCREENSHOTS") or SCREENSHOTS_DEFAULT)
    return folder if folder.is_absolute() else ROOT / folder


def snap(page: Page, name: str) -> Path | None:
    """A full-page PNG of `page` as REWARDMILES_CONSOLE_SCREENSHOTS/`name`.png (default
    build/console-screenshots/), when the page's server runs on SQLite: the PostgreSQL run of the
    same test would write the same file. Returns the file written, or None."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ValueError(f"screenshot name {name!r}: lower-case letters, digits, - and _ only")
    dialect = _DIALECTS.get(id(page))
    if dialect is None:
        raise ValueError("snap() takes a page of the `page` fixture")
    if dialect != "sqlite":
        return None
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
    return path


def _signed_in_page(url: str) -> bool:
    path = urlsplit(url).path.rstrip("/")
    return (path == "/console" or path.startswith("/console/")) and path != "/console/sign-in"


def sign_in(page: Page, email: str, password: str) -> None:
    """Sign in through the console's form and wait for the console page it leads to."""
    page.goto("/console/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(_signed_in_page)
