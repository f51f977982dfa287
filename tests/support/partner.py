"""A partner talking to a real server over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

POST_EVENT = "/checkout/issuance/post/event"
REVERSE_EVENT = "/checkout/issuance/reverse/event"


def _credentials(client_id: str, client_secret: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }


def fetch_token(base_url: str, client_id: str, client_secret: str) -> str:
    response = httpx.post(f"{base_url}/oauth/token", data=_credentials(client_id, client_secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def bearer_header(
    client: httpx.AsyncClient, client_id: str, client_secret: str
) -> dict[str, str]:
    """`Authorization` with a token from `client` (an in-process app, say)."""
    response = await client.post("/oauth/token", data=_credentials(client_id, client_secret))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class Partner:
    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.token = fetch_token(base_url, client_id, client_secret)
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def call(
        self,
        path: str,
        body: Any,
        *,
        key: str | None = "auto",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {self.token}"}
        if key == "auto":
            key = str(uuid.uuid4())
        if key is not None:
            all_headers["Idempotency-Key"] = key
        all_headers.update(headers or {})
        return self.http.post(path, json=body, headers=all_headers)

    def post_event(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.call(POST_EVENT, body, **kwargs)

    def reverse_event(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.call(REVERSE_EVENT, body, **kwargs)

    def close(self) -> None:
        self.http.close()
