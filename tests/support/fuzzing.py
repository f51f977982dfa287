"""What the schemathesis contract test needs around a real server: seeded partner data, a token per
operation, steering some generated cases onto that data, and a tally of what was sent."""

from __future__ import annotations

import json
import uuid
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, TypeGuard

import requests

from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.support import data
from tests.support.operators import new_token
from tests.support.partner import Partner
from tests.support.server import Server

if TYPE_CHECKING:
    # schemathesis's name for a case of an OpenAPI operation; it exists for type checkers only.
    from schemathesis.core.jsonschema.types import JsonValue
    from schemathesis.specs.openapi.schemas import OpenApiCase

TOKEN = "POST /oauth/token"
PUBLIC = {
    TOKEN,
    "GET /.well-known/jwks.json",
    "GET /healthz",
    "GET /readyz",
    "GET /problems",
    "GET /problems/{code}",
    "POST /admin/session",  # sign-in: no credential (the fuzzing's sign-ins all fail)
    "DELETE /admin/session",
}
ADMIN_PREFIX = "/admin/"
# Partner operations whose fuzzing must get at least one 2xx (steering reaches the happy path).
HAPPY_PATHS = {
    TOKEN,
    "POST /checkout/issuance/post",
    "POST /checkout/issuance/post/event",
    "POST /checkout/issuance/reverse",
    "POST /checkout/issuance/reverse/event",
    "POST /checkout/issuance/record",
    "POST /checkout/issuance/calculate",
    "POST /checkout/issuance/issue",
    "POST /checkout/issuance/batches",
    "GET /checkout/issuance/transactions",
    "GET /checkout/issuance/transactions/{transactionId}",
    "GET /checkout/issuance/reports/audit",
    "GET /checkout/issuance/reports/reconciliation",
    "GET /admin/v1/me",
    "GET /admin/v1/collectors/{number}",
    # The admin lists: every filter is optional, so generated cases reach a page.
    "GET /admin/v1/sponsors",
    "GET /admin/v1/offers",
    "GET /admin/v1/webhooks",
    "GET /admin/v1/webhook-deliveries",
    "GET /admin/v1/partners",
    "GET /admin/v1/operators",
    "GET /admin/v1/admin-tokens",
    "GET /admin/v1/transactions",
    "GET /admin/v1/pending",
    "GET /admin/v1/adjustments",
    "GET /admin/v1/audit-log",
}
# One generated case in STEER_ONE_IN is moved onto the seeded data; the rest stay as generated.
STEER_ONE_IN = 3
# The token endpoint allows a burst of 20 requests per client_id: stay below it.
TOKEN_STEERS_MAX = 12
TAXES = ("basketGSTAmount", "basketHSTAmount", "basketPSTAmount", "basketQSTAmount")
BATCH_LOG = (
    "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
    "POST/EVENT,{txn},{collector},{when},3\n"
)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _amount(value: float) -> float:
    """A generated amount brought into 0..1,000 dollars, so a basket's total stays valid."""
    return round(min(abs(value), 1000.0), 2)


INTEGERS = ("quantity", "number", "milesAmount")


def _strict_integers(lines: object) -> None:
    """JSON Schema's integer admits 3.0, the service's strict integers do not: send 3."""
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, dict):
            for name in INTEGERS:
                value = line.get(name)
                if isinstance(value, float) and value.is_integer():
                    line[name] = int(value)


def _distinct_item_ids(items: object) -> None:
    """Item ids must be unique within a basket (a rule the schema cannot state)."""
    seen: set[object] = set()
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and "id" in item:
            if item["id"] in seen:
                item["id"] = f"{item['id']}~{index}"
            seen.add(item["id"])


def _balance_basket(body: dict[str, JsonValue]) -> None:
    """Make a basket add up: small amounts, items to the pre-tax amount, pre-tax plus taxes to
    the post-tax amount (each within the 1,000,000 dollars a field may hold)."""
    for name in ("basketPreTaxAmount", *TAXES):
        value = body.get(name)
        if _number(value):
            body[name] = _amount(value)
    items = body.get("items")
    if isinstance(items, list) and items:
        objects = [item for item in items if isinstance(item, dict)]
        if len(objects) == len(items):  # every item is an object
            for item in objects:
                final = item.get("finalAmount")
                if _number(final):
                    item["finalAmount"] = _amount(final)
            amounts = [item.get("finalAmount") for item in objects]
            numbers = [amount for amount in amounts if _number(amount)]
            if len(numbers) == len(amounts):
                body["basketPreTaxAmount"] = round(sum(numbers), 2)
    pre = body.get("basketPreTaxAmount")
    if _number(pre) and "basketPostTaxAmount" in body:
        taxes = [body.get(name) for name in TAXES]
        total = pre + sum(tax for tax in taxes if _number(tax))
        body["basketPostTaxAmount"] = round(total, 2)


def _steer(case: OpenApiCase) -> bool:
    """A stable choice from the generated values, so a seeded run steers the same cases."""
    seen = json.dumps(
        [case.path_parameters, case.query, case.body, dict(case.headers or {})],
        sort_keys=True,
        default=repr,
    )
    return zlib.crc32(seen.encode()) % STEER_ONE_IN == 0


@dataclass
class FuzzTarget:
    """The server of one dialect, and what to steer cases onto: a sponsor, a collector, a stored
    event and basket of theirs, and a batch. Answers are recorded in `statuses`."""

    server: Server
    db: Database
    sponsor: str
    collector: str
    event_id: str  # clientTransactionId of a stored POST/EVENT
    basket_id: str  # checkoutTransactionId of a stored basket POST
    transaction_id: str  # transactionId of the stored event
    batch_id: str
    token_client: tuple[str, str]
    admin_token: str  # an admin token of the admin role, for every /admin/v1 operation
    session: requests.Session = field(default_factory=requests.Session)
    _tokens: dict[str, str] = field(default_factory=dict)
    token_steers: int = 0
    statuses: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def dialect(self) -> str:
        return self.server.dialect

    def token_for(self, label: str) -> str:
        """A client per operation, so no operation's fuzzing spends another's rate budget."""
        if label not in self._tokens:
            client_id, secret = data.new_client(self.db, [self.sponsor])
            response = self.session.post(
                f"{self.base_url}/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret,
                },
            )
            assert response.status_code == 200, response.text
            self._tokens[label] = response.json()["access_token"]
        return self._tokens[label]

    def prepare(self, case: OpenApiCase) -> dict[str, str]:
        """Steer the case when its turn comes; the headers to send with it."""
        label = case.operation.label
        if _steer(case):
            if label == TOKEN:
                self._steer_token(case)
            else:
                self._steer_call(case)
        if label in PUBLIC:
            return {}
        if case.operation.path.startswith(ADMIN_PREFIX):
            return {"Authorization": f"Bearer {self.admin_token}"}
        return {"Authorization": f"Bearer {self.token_for(label)}"}

    def _steer_token(self, case: OpenApiCase) -> None:
        if not isinstance(case.body, dict) or self.token_steers >= TOKEN_STEERS_MAX:
            return
        self.token_steers += 1
        client_id, secret = self.token_client
        case.body.update(
            {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        )

    def _steer_call(self, case: OpenApiCase) -> None:
        moment = data.iso(data.now() - timedelta(seconds=5))
        if isinstance(case.body, dict):
            body = case.body
            for name, value in (
                ("sponsorCode", self.sponsor),
                ("collectorNumber", self.collector),
                ("transactionDateTime", moment),
                ("checkoutDateTime", moment),
                ("clientTransactionId", data.txn_id()),
                ("checkoutTransactionId", data.txn_id("b")),
                ("originalClientTransactionId", self.event_id),
                ("originalCheckoutTransactionId", self.basket_id),
            ):
                if name in body:
                    body[name] = value
            issuances = body.get("issuances")
            for line in issuances if isinstance(issuances, list) else []:
                if isinstance(line, dict) and "issuanceOfferCode" in line:
                    line["issuanceOfferCode"] = "STANDARD"
            _strict_integers(issuances)
            _strict_integers(body.get("items"))
            _distinct_item_ids(body.get("items"))
            _balance_basket(body)
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = str(uuid.uuid4())
        for name, value in (
            ("sponsorCode", self.sponsor),
            ("date", data.now().date().isoformat()),
            ("clientTransactionId", self.event_id),
            ("checkoutTransactionId", self.basket_id),
        ):
            if case.query and name in case.query:
                case.query[name] = value
        for name, value in (
            ("transactionId", self.transaction_id),
            ("batchId", self.batch_id),
            ("code", "FIELD_INVALID"),
            ("number", self.collector),
        ):
            if case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = value


def fuzz_target(server: Server, db: Database) -> FuzzTarget:
    sponsor = data.new_sponsor(db)
    collector = data.new_collector(db)
    client_id, secret = data.new_client(db, [sponsor])
    partner = Partner(server.base_url, client_id, secret)
    try:
        event = data.event_body(sponsor, collector, miles=50)
        stored = partner.post_event(event)
        assert stored.status_code == 200, stored.text
        basket = data.basket_body(sponsor, collector, miles=40)
        assert partner.call("/checkout/issuance/post", basket).status_code == 200
        log = BATCH_LOG.format(
            txn=event["clientTransactionId"],
            collector=collector,
            when=event["transactionDateTime"],
        )
        batch = partner.http.post(
            "/checkout/issuance/batches",
            content=log.encode(),
            headers={"Authorization": f"Bearer {partner.token}", "Content-Type": "text/csv"},
        )
        assert batch.status_code == 202, batch.text
    finally:
        partner.close()
    target = FuzzTarget(
        server=server,
        db=db,
        sponsor=sponsor,
        collector=collector,
        event_id=event["clientTransactionId"],
        basket_id=basket["checkoutTransactionId"],
        transaction_id=stored.json()["transactionId"],
        batch_id=batch.json()["batchId"],
        token_client=data.new_client(db, [sponsor]),
        admin_token=new_token(db, OperatorRole.ADMIN, now=data.now()).token,
    )
    target.session.hooks["response"].append(
        lambda response, *_args, **_kwargs: target.statuses.append(response.status_code)
    )
    return target


@dataclass
class FuzzTally:
    """The cases generated and sent per dialect (by operation and phase/mode), and the answers."""

    cases: dict[str, Counter[tuple[str, str]]] = field(default_factory=lambda: defaultdict(Counter))
    answers: dict[str, Counter[tuple[str, int]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def sent(self, dialect: str, case: OpenApiCase, status: int | None) -> None:
        meta = case.meta
        kind = f"{meta.phase.name.value}/{meta.generation.mode.value}" if meta else "explicit"
        self.cases[dialect][(case.operation.label, kind)] += 1
        if status is not None:
            self.answers[dialect][(case.operation.label, status)] += 1

    def operations(self, dialect: str) -> set[str]:
        return {label for label, _ in self.cases[dialect]}

    def successes(self, dialect: str) -> set[str]:
        return {label for label, status in self.answers[dialect] if status < 300}

    def summary(self, dialect: str) -> str:
        kinds: Counter[str] = Counter()
        for (_, kind), count in self.cases[dialect].items():
            kinds[kind] += count
        total = sum(kinds.values())
        detail = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        return (
            f"schemathesis [{dialect}]: {total} cases generated and sent to "
            f"{len(self.operations(dialect))} operations ({detail})"
        )

    def answers_table(self, dialect: str) -> str:
        return "\n".join(
            f"{label}: {status} x{count}"
            for (label, status), count in sorted(self.answers[dialect].items())
        )
