"""The SDK against the app in-process (httpx.ASGITransport): no server process, same database."""

from __future__ import annotations

import asyncio

import httpx
from rewardmiles_client import AsyncIssuanceClient, EventRequest, Line

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.conftest import World
from tests.support import data


def test_async_client_against_the_app_in_process(world: World) -> None:
    client_id, secret = data.new_client(world.db, [world.sponsor])
    collector = world.collector()
    settings = Settings(
        database_url=world.server.database_url,
        secret_hash_cost=10,
        embedded_worker=False,
        log_level="warning",
        secret_key=TEST_SECRET_KEY,
    )
    app = create_app(settings)

    async def scenario() -> tuple[int, int]:
        async with app.router.lifespan_context(app):  # builds app.state.ctx as serving would
            transport = httpx.ASGITransport(app=app)
            async with AsyncIssuanceClient(
                "http://in-process", client_id, secret, transport=transport
            ) as client:
                issued = await client.post_event(
                    EventRequest(
                        client_transaction_id=data.txn_id("asgi"),
                        collector_number=collector,
                        sponsor_code=world.sponsor,
                        lines=[Line("STANDARD", 12)],
                    )
                )
                view = await client.get_transaction(str(issued.transaction_id))
                return issued.status_code, view["issuances"][0]["milesAmount"]

    status, miles = asyncio.run(scenario())
    assert (status, miles) == (200, 12)
    assert world.balance(collector) == 12
