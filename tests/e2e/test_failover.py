"""PostgreSQL failover as a partner sees it, through a real server.

- A URL may name several servers; libpq tries them in turn, and with
  `target_session_attrs=read-write` takes the first that accepts writes. Here the first is a
  closed port: the server starts (migrations, keys), issues and answers lookups through the
  second, in each of the three ways the servers may be written.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from rewardmiles.db.engine import Database
from tests.conftest import DatabaseFactory, ServerFactory
from tests.support import data
from tests.support.partner import Partner
from tests.support.servers import FORMS, two_servers

pytestmark = pytest.mark.postgres_only


def _statements_sent(base_url: str) -> float:
    """How many statements the group commit has sent (the one-statement path), from /metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(r"^rewardmiles_group_commit_batch_size_count (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("form", FORMS)
def test_a_server_that_is_down_is_passed_over_for_the_next(
    dialect: str, database_factory: DatabaseFactory, server_factory: ServerFactory, form: str
) -> None:
    url = database_factory.create("postgresql")
    db = Database.from_url(url)
    sponsor = data.new_sponsor(db)
    client_id, secret = data.new_client(db, [sponsor])
    collector = data.new_collector(db)
    server = server_factory("postgresql", database_url=two_servers(url, form))
    partner = Partner(server.base_url, client_id, secret)
    try:
        # The process's first call runs as a unit of work (the synchronous pool) and caches the
        # sponsor; the next is written by the one-statement path (the asynchronous pool).
        for miles, statements in ((7, 0), (5, 1)):
            body = data.event_body(sponsor, collector, miles=miles)
            posted = partner.post_event(body, key=str(uuid.uuid4()))
            assert posted.status_code == 200, posted.text
            assert _statements_sent(server.base_url) == statements
        found = partner.http.get(
            f"/checkout/issuance/transactions/{posted.json()['transactionId']}",
            headers={"Authorization": f"Bearer {partner.token}"},
        )
        assert found.status_code == 200, found.text
        assert found.json()["clientTransactionId"] == body["clientTransactionId"]
        assert data.balance(db, collector) == 12
        assert "database_error" not in server.log()
    finally:
        partner.close()
        db.dispose()
