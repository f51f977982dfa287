"""Where a partner body is parsed and validated, in-process: a normal one inline on the event loop
(no thread hop on the hot path), a large one in a CPU worker thread (never the database's), so a
costly body cannot stall the loop that serves every other request."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from rewardmiles import limits
from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.http import bodies
from tests.conftest import TEST_SECRET_KEY
from tests.support import data
from tests.support.partner import POST_EVENT, bearer_header


def test_large_bodies_are_validated_in_a_cpu_thread_and_small_ones_inline(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    collector = data.new_collector(db)
    app = create_app(
        Settings(
            database_url=database_url,
            secret_hash_cost=10,
            embedded_worker=False,
            log_level="warning",
            secret_key=TEST_SECRET_KEY,
        )
    )
    where: list[str] = []
    validate = bodies._parse_and_validate

    def recorded(*args: Any) -> Any:
        loop_thread = threading.current_thread() is threading.main_thread()
        where.append("loop" if loop_thread else "thread")
        return validate(*args)

    monkeypatch.setattr(bodies, "_parse_and_validate", recorded)
    small = data.event_body(sponsor, collector)
    large = data.event_body(sponsor, collector)
    large.update({f"k{n:05d}": 1 for n in range(2_000)})

    async def scenario() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://in") as client:
                auth = await bearer_header(client, client_id, secret)
                statuses = []
                for body in (small, large):
                    response = await client.post(POST_EVENT, json=body, headers=auth)
                    statuses.append(response.status_code)
                return statuses

    assert len(httpx.Request("POST", "/", json=large).content) > limits.inline_body_bytes_max
    assert asyncio.run(scenario()) == [200, 400]
    assert where == ["loop", "thread"]
