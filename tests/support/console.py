"""An operator's browser without a browser: httpx against a real server with the console's
session cookie, for the console's HTTP tests (the pages, refusals and headers)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from rewardmiles import clock
from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support.operators import Login, new_operator, new_session

COOKIE = "rewardmiles-admin"  # the cookie's name over plain HTTP on loopback


@dataclass
class Console:
    """A signed-in operator: `get`/`post` send the session cookie (and, for `post`, the form's
    CSRF token unless told otherwise)."""

    base_url: str
    login: Login
    cookie: str
    csrf: str

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, cookies={COOKIE: self.cookie}, timeout=30, **kwargs)

    def post(
        self,
        path: str,
        data: dict[str, Any] | list[tuple[str, str]] | None = None,
        *,
        csrf: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A form post; `csrf=""` sends this session's token, None none, anything else that."""
        fields: list[tuple[str, str]] = (
            list(data.items()) if isinstance(data, dict) else list(data or [])
        )
        token = self.csrf if csrf == "" else csrf
        if token is not None:
            fields.append(("csrf", token))
        form: dict[str, list[str]] = {}
        for name, value in fields:
            form.setdefault(name, []).append(value)
        return httpx.post(
            self.base_url + path,
            data=form,
            cookies={COOKIE: self.cookie},
            headers={"Origin": self.base_url, **(headers or {})},
            timeout=30,
        )


def signed_in(db: Database, base_url: str, role: OperatorRole) -> Console:
    """A new operator of `role` and a session of theirs."""
    now = clock.utc_now()
    login = new_operator(db, role, now=now)
    session = new_session(db, login.email, now)
    return Console(base_url, login, session.cookie, session.csrf_token)


def text_of(html: str) -> str:
    """The page's text, tags removed and white space folded (for `in` checks)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def maxlengths(html: str) -> dict[str, int]:
    """Each input's `maxlength` in a page, by the input's id: what the browser lets an operator
    type."""
    return {
        ident: int(chars)
        for ident, chars in re.findall(r'<input id="([^"]+)"[^>]* maxlength="(\d+)"', html)
    }
