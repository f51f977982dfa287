"""Assertions shared by the HTTP tests: problem documents, and what a request left in storage."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, or_, select

from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.db.models import IdempotencyKey, LedgerEntry, Transaction

PROBLEM_JSON = "application/problem+json"


def endpoint_of(path: str) -> str:
    """`/checkout/issuance/post/event` → `post_event`, as stored in `transactions.endpoint`."""
    return path.removeprefix("/checkout/issuance/").replace("/", "_")


def assert_problem(
    response: httpx.Response, status: int, code: str, field: str | frozenset[str] | None = None
) -> dict[str, Any]:
    """A problem+json of `status`/`code` carrying the response's request id; with `field`,
    exactly one error entry, of that code, at that path (or at one of the paths given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert problem["requestId"] == response.headers["x-request-id"]
    if field is not None:
        assert [e["code"] for e in problem["errors"]] == [code], problem
        actual = problem["errors"][0].get("field")
        if isinstance(field, str):
            assert actual == field, problem
        else:
            assert actual in field, problem
    return problem


def ledger_entry_count(db: Database, collector: str) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.account_code == collector)
            ).scalar_one()
        )


def idempotency_key_count(db: Database, client_id: str) -> int:
    with db.reader() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(IdempotencyKey)
                .where(IdempotencyKey.client_id == client_id)
            ).scalar_one()
        )


def stored(db: Database, sponsor: str, path: str, partner_id: str) -> list[tuple[Any, ...]]:
    """(status, http_status, error_code) of every transaction row with this id at `path`."""
    with db.reader() as session:
        rows = session.execute(
            select(Transaction.status, Transaction.http_status, Transaction.error_code).where(
                Transaction.sponsor_code == sponsor,
                Transaction.endpoint == endpoint_of(path),
                Transaction.partner_transaction_id == partner_id,
            )
        ).all()
    return [tuple(r) for r in rows]


def assert_nothing_stored(
    db: Database, client_id: str, collector: str, partner_id: str, key: str | None = None
) -> None:
    """Rule 3.1 / §4: a malformed request leaves no transaction (for its id or collector), no
    ledger entry, no idempotency key, and the collector's balance untouched."""
    with db.reader() as session:
        transactions = session.execute(
            select(func.count())
            .select_from(Transaction)
            .where(
                or_(
                    Transaction.partner_transaction_id == partner_id,
                    Transaction.collector_number == collector,
                )
            )
        ).scalar_one()
        stored_key = session.get(IdempotencyKey, (client_id, key)) if key is not None else None
        account = collectors.get_collector(session, collector)
    assert transactions == 0
    assert stored_key is None
    assert ledger_entry_count(db, collector) == 0
    assert account is None or account.balance_miles == 0
