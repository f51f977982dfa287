"""The partner SDK (client/): against a real server, under injected faults, and in isolation."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from rewardmiles_client import (
    AsyncIssuanceClient,
    AuthenticationError,
    BadRequestError,
    BasketRequest,
    ConflictError,
    EventRequest,
    ForbiddenError,
    IssuanceClient,
    Item,
    Line,
    NotFoundError,
    ProblemError,
    ProgramBasketRequest,
    ServerError,
    TransportError,
    WebhookVerificationError,
    _retry,
    verify_webhook,
)
from sqlalchemy import func, select

from rewardmiles import clock
from rewardmiles.db.models import Transaction
from rewardmiles.offers import service as offers
from rewardmiles.vocabulary import TransactionStatus
from rewardmiles.webhooks.service import sign
from tests.e2e.conftest import World
from tests.support import data

PARTNER_PREFIX = "/checkout/issuance/"


def _client(world: World, sponsors: list[str] | None = None, **kwargs: Any) -> IssuanceClient:
    client_id, secret = data.new_client(world.db, sponsors or [world.sponsor])
    return IssuanceClient(world.server.base_url, client_id, secret, timeout=30, **kwargs)


def _event(world: World, collector: str, miles: int = 8, **kwargs: Any) -> EventRequest:
    return EventRequest(
        client_transaction_id=data.txn_id("sdk"),
        collector_number=collector,
        sponsor_code=kwargs.pop("sponsor_code", world.sponsor),
        lines=[Line("STANDARD", miles)],
        **kwargs,
    )


# --------------------------------------------------------------------------- against a server


def test_post_event_partial_reverse_and_lookup(world: World) -> None:
    collector = world.collector()
    with _client(world) as client:
        posted = client.post_event(_event(world, collector, miles=10))
        assert posted.status_code == 200
        assert not posted.pending
        assert not posted.replayed
        assert [(line.offer_code, line.miles, line.status) for line in posted.lines] == [
            ("STANDARD", 10, "ISSUED")
        ]
        original_id = posted.body["clientTransactionId"]
        reversed_ = client.reverse_event(
            _event(world, collector, miles=4, original_client_transaction_id=original_id)
        )
        assert reversed_.status_code == 200
        assert posted.transaction_id is not None
        view = client.get_transaction(posted.transaction_id)
        assert view["issuances"][0]["milesReversed"] == 4
        found = client.find_transaction(client_transaction_id=original_id)
        assert [t["transactionId"] for t in found] == [posted.transaction_id]
    assert world.balance(collector) == 6


def test_explicit_idempotency_key_replays(world: World) -> None:
    collector = world.collector()
    request = _event(world, collector, miles=5)
    with _client(world) as client:
        first = client.post_event(request, idempotency_key="sdk-replay-" + collector)
        again = client.post_event(request, idempotency_key="sdk-replay-" + collector)
    assert again.replayed
    assert not first.replayed
    assert again.transaction_id == first.transaction_id
    assert world.balance(collector) == 5


def test_basket_post_reverse_and_record(world: World) -> None:
    collector = world.collector()
    items = [Item("sku-1", 2, Decimal("20.00")), Item("sku-2", 1, Decimal("4.97"))]
    with _client(world) as client:
        basket = BasketRequest(
            checkout_transaction_id=data.txn_id("b"),
            collector_number=collector,
            pre_tax=Decimal("24.97"),
            post_tax=Decimal("28.22"),
            taxes={"hst": Decimal("3.25")},
            items=items,
            lines=[Line("STANDARD", 25, contributing_item_ids=["sku-1", "sku-2"])],
        )
        assert basket.to_wire()["basketHSTAmount"] == Decimal("3.25")
        posted = client.post(basket)
        assert posted.status_code == 200
        returned = client.reverse(
            BasketRequest(
                checkout_transaction_id=data.txn_id("r"),
                collector_number=collector,
                pre_tax=Decimal("4.97"),
                post_tax=Decimal("4.97"),
                lines=[Line("STANDARD", 5)],
                original_checkout_transaction_id=basket.checkout_transaction_id,
            )
        )
        assert returned.status_code == 200
        found = client.find_transaction(checkout_transaction_id=basket.checkout_transaction_id)
        assert found[0]["issuances"][0]["milesReversed"] == 5
        recorded = client.record(
            BasketRequest(
                checkout_transaction_id=data.txn_id("rec"),
                collector_number=None,
                pre_tax=Decimal("10.00"),
                post_tax=Decimal("10.00"),
                lines=None,
            )
        )
        assert recorded.status_code == 200
    assert world.balance(collector) == 20


def test_program_calculated_calculate_issue_return(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    with world.db.unit_of_work() as session:
        for code, rule in [
            ("BASE", {"type": "base", "miles": 1, "perDollars": 10}),
            (
                "PRODUCE",
                {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2},
            ),
        ]:
            offers.put_offer(
                session, sponsor, code, description=code, rule=rule, valid_from=None,
                valid_to=None, locations=None, offer_id=None, now=data.now(), replace=False,
            )  # fmt: skip
    collector = world.collector()
    items = [
        Item("apples", 3, Decimal("7.50"), department_id="produce"),
        Item("kettle", 1, Decimal("50.00"), department_id="home"),
    ]
    basket_id = data.txn_id("iss")

    def basket(**kwargs: Any) -> ProgramBasketRequest:
        return ProgramBasketRequest(
            checkout_transaction_id=basket_id,
            collector_number=collector,
            pre_tax=Decimal("57.50"),
            post_tax=Decimal("57.50"),
            items=items,
            **kwargs,
        )

    with _client(world, [sponsor]) as client:
        preview = client.calculate(basket())
        assert preview.total_miles == 20
        assert world.balance(collector) == 0
        issued = client.issue(basket())
        assert issued.status_code == 200
        assert issued.total_miles == 20
        returned = client.return_items(
            ProgramBasketRequest(
                checkout_transaction_id=data.txn_id("rtn"),
                collector_number=collector,
                pre_tax=Decimal("5.00"),
                post_tax=Decimal("5.00"),
                items=[Item("apples", 2, Decimal("5.00"))],
                original_checkout_transaction_id=basket_id,
            )
        )
        assert returned.status_code == 200
    assert world.balance(collector) == 5


def test_typed_errors(world: World) -> None:
    other_sponsor = data.new_sponsor(world.db)
    with _client(world) as client:
        with pytest.raises(BadRequestError) as bad:
            client.post_event(_event(world, "123"))
        assert bad.value.status == 400
        assert bad.value.code == "COLLECTOR_NUMBER_INVALID"
        assert [e.field for e in bad.value.errors] == ["collectorNumber"]
        assert bad.value.request_id
        assert len(bad.value.request_id) >= 8
        with pytest.raises(BadRequestError) as closed:
            client.post_event(_event(world, world.collector("CLOSED")))
        assert closed.value.code == "COLLECTOR_CLOSED"
        with pytest.raises(ForbiddenError) as forbidden:
            client.post_event(_event(world, world.collector(), sponsor_code=other_sponsor))
        assert forbidden.value.code == "SPONSOR_NOT_ALLOWED"
        with pytest.raises(NotFoundError):
            client.get_transaction("00000000-0000-0000-0000-000000000000")
        key = "sdk-reused-" + data.txn_id()
        client.post_event(_event(world, world.collector()), idempotency_key=key)
        with pytest.raises(ConflictError) as reused:
            client.post_event(_event(world, world.collector()), idempotency_key=key)
        assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
    with (
        IssuanceClient(world.server.base_url, "nobody", "wrong") as stranger,
        pytest.raises(AuthenticationError),
    ):
        stranger.get_transaction("x")


def test_pending_collector_answers_202(world: World) -> None:
    with _client(world) as client:
        result = client.post_event(_event(world, world.collector("ON_HOLD")))
    assert result.status_code == 202
    assert result.pending
    assert [line.status for line in result.lines] == ["PENDING"]


def test_a_refused_token_is_refreshed_once(world: World) -> None:
    with _client(world) as client:
        client.post_event(_event(world, world.collector()))
        token = client._token
        assert token is not None
        first_value = token.value
        token.value = first_value[:-4] + "AAAA"  # a corrupt signature, still "fresh" locally
        result = client.post_event(_event(world, world.collector()))
        assert result.status_code == 200
        assert client._token is not None
        assert client._token.value != token.value


def test_audit_report_and_log_upload(world: World) -> None:
    collector = world.collector()
    with _client(world) as client:
        posted = client.post_event(_event(world, collector, miles=9))
        today = clock.transaction_day_of(clock.utc_now(), "America/Toronto")
        report = client.audit_report(today)
        assert isinstance(report, dict)
        ids = {t["partnerTransactionId"] for t in report["transactions"]}
        assert posted.body["clientTransactionId"] in ids
        csv_text = client.audit_report(today.isoformat(), format="csv")
        assert isinstance(csv_text, str)
        assert str(posted.transaction_id) in csv_text

        when = posted.body["transactionDateTime"]
        log = (
            "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
            f"POST/EVENT,{posted.body['clientTransactionId']},{collector},{when},9\n"
            f"POST/EVENT,late-{collector},{collector},{when},4\n"
        ).encode()
        started = client.upload_log(log, issue_missing=True)
        deadline = time.monotonic() + 20
        batch = client.get_batch(started["batchId"])
        while batch["status"] == "processing" and time.monotonic() < deadline:
            time.sleep(0.1)
            batch = client.get_batch(started["batchId"])
        assert batch["status"] == "done"
        assert batch["counts"]["matched"] == 1
        assert batch["counts"]["issued"] == 1
        with pytest.raises(NotFoundError):
            client.get_batch("no-such-batch")
    assert world.balance(collector) == 13


def test_async_client_against_the_server(world: World) -> None:
    client_id, secret = data.new_client(world.db, [world.sponsor])
    collector = world.collector()

    async def scenario() -> None:
        async with AsyncIssuanceClient(world.server.base_url, client_id, secret) as client:
            results = await asyncio.gather(
                *(client.post_event(_event(world, collector, miles=3)) for _ in range(5))
            )
            assert all(r.status_code == 200 for r in results)
            with pytest.raises(BadRequestError):
                await client.post_event(_event(world, "1"))

    asyncio.run(scenario())
    assert world.balance(collector) == 15


# --------------------------------------------------------------------------- injected faults


class LosingTransport(httpx.BaseTransport):
    """Forwards every request; for a share of partner POSTs the server commits but the caller
    gets `httpx.ReadError` instead of the response (the worst case for a retrying client)."""

    def __init__(self, share: float, seed: int = 7) -> None:
        self._inner = httpx.HTTPTransport()
        self._share = share
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        with self._lock:
            lose = (
                request.method == "POST"
                and request.url.path.startswith(PARTNER_PREFIX)
                and self._random.random() < self._share
            )
            if lose:
                self.lost += 1
        if lose:
            response.read()
            response.close()
            raise httpx.ReadError(
                "injected: response lost after the server answered", request=request
            )
        return response

    def close(self) -> None:
        self._inner.close()


def test_lost_responses_never_double_issue(world: World) -> None:
    # 1,000 calls on both databases: ~1,250 requests in total, well under a minute on each.
    calls = 1000
    collectors = [world.collector() for _ in range(3)]
    transport = LosingTransport(0.2)
    rng = random.Random(11)
    expected: dict[str, int] = dict.fromkeys(collectors, 0)
    ids: list[str] = []
    with _client(
        world, transport=transport, backoff_base=0.001, backoff_cap=0.01, max_retries=6
    ) as client:
        for _ in range(calls):
            collector = rng.choice(collectors)
            miles = rng.randint(1, 50)
            request = _event(world, collector, miles=miles)
            result = client.post_event(request)
            assert result.status_code == 200
            ids.append(request.client_transaction_id)
            expected[collector] += miles
    assert transport.lost > calls // 10
    with world.db.reader() as session:
        count = session.scalar(
            select(func.count())
            .select_from(Transaction)
            .where(
                Transaction.partner_transaction_id.in_(ids),
                Transaction.status != TransactionStatus.REJECTED,
            )
        )
    assert count == calls
    for collector, miles in expected.items():
        assert world.balance(collector) == miles


# --------------------------------------------------------------------------- retry policy (mocked)


def _problem(status: int, code: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"status": status, "code": code, "detail": code.lower(), "requestId": "rid-1"},
        headers={"Content-Type": "application/problem+json", **headers},
    )


TOKEN_RESPONSE = {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 900}
OK_EVENT = {
    "transactionId": "t-1",
    "clientTransactionId": "c-1",
    "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8, "status": "ISSUED"}],
}


class Script:
    """A mock server: answers the token call, then plays `answers` to the partner calls."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.token_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.token_calls += 1
            return httpx.Response(200, json=TOKEN_RESPONSE)
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200, json=OK_EVENT)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(_retry, "sleep", recorded.append)

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(_retry, "async_sleep", fake_async_sleep)
    return recorded


def _mock_client(script: Script, **kwargs: Any) -> IssuanceClient:
    return IssuanceClient(
        "http://sdk.test", "id", "secret", transport=httpx.MockTransport(script), **kwargs
    )


def _simple_event() -> EventRequest:
    return EventRequest("c-1", "80085102028", "KENY", [Line("STANDARD", 8)])


def test_one_idempotency_key_for_every_retry_of_a_call(sleeps: list[float]) -> None:
    read_error = httpx.ReadError("lost")
    script = Script(
        _problem(503, "SERVICE_UNAVAILABLE"), read_error, httpx.Response(200, json=OK_EVENT)
    )
    with _mock_client(script) as client:
        result = client.post_event(_simple_event())
        assert result.transaction_id == "t-1"
        keys = {r.headers["Idempotency-Key"] for r in script.requests}
        assert len(script.requests) == 3
        assert len(keys) == 1
        bodies = {r.content for r in script.requests}
        assert len(bodies) == 1
        client.post_event(_simple_event())
        assert script.requests[-1].headers["Idempotency-Key"] not in keys
    assert len(sleeps) == 2
    assert script.token_calls == 1


def test_record_sends_no_idempotency_key(sleeps: list[float]) -> None:
    script = Script(httpx.Response(200, json={"transactionId": "r-1"}))
    with _mock_client(script) as client:
        client.record(BasketRequest("b-1", None, Decimal("1.00"), Decimal("1.00"), None))
    assert "Idempotency-Key" not in script.requests[0].headers


def test_server_errors_are_retried_max_retries_times_then_raised(sleeps: list[float]) -> None:
    script = Script(*[_problem(500, "INTERNAL_ERROR") for _ in range(10)])
    with _mock_client(script, max_retries=3) as client, pytest.raises(ServerError) as error:
        client.post_event(_simple_event())
    assert len(script.requests) == 4
    assert len(sleeps) == 3
    assert error.value.code == "INTERNAL_ERROR"
    assert error.value.request_id == "rid-1"


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "FIELD_INVALID", BadRequestError),
        (403, "SPONSOR_NOT_ALLOWED", ForbiddenError),
        (404, "NOT_FOUND", NotFoundError),
        (413, "PAYLOAD_TOO_LARGE", ProblemError),
        (415, "UNSUPPORTED_MEDIA_TYPE", ProblemError),
        (422, "IDEMPOTENCY_KEY_REUSED", ConflictError),
    ],
)
def test_client_errors_are_never_retried(
    sleeps: list[float], status: int, code: str, error: type[ProblemError]
) -> None:
    script = Script(_problem(status, code), httpx.Response(200, json=OK_EVENT))
    with _mock_client(script) as client, pytest.raises(error) as raised:
        client.post_event(_simple_event())
    assert raised.value.status == status
    assert raised.value.code == code
    assert len(script.requests) == 1
    assert sleeps == []


def test_401_refreshes_the_token_once_then_gives_up(sleeps: list[float]) -> None:
    script = Script(_problem(401, "TOKEN_EXPIRED"), _problem(401, "TOKEN_INVALID"))
    with _mock_client(script) as client, pytest.raises(AuthenticationError) as raised:
        client.post_event(_simple_event())
    assert raised.value.code == "TOKEN_INVALID"
    assert script.token_calls == 2
    assert len(script.requests) == 2
    assert sleeps == []


def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    script = Script(
        _problem(429, "RATE_LIMITED", **{"Retry-After": "7"}),
        _problem(409, "IDEMPOTENCY_KEY_IN_USE", **{"Retry-After": "2"}),
    )
    with _mock_client(script, backoff_base=0.01) as client:
        assert client.post_event(_simple_event()).status_code == 200
    assert sleeps == [7.0, 2.0]


def test_network_failures_become_transport_error(sleeps: list[float]) -> None:
    script = Script(*[httpx.ConnectError("refused") for _ in range(5)])
    with _mock_client(script, max_retries=2) as client, pytest.raises(TransportError):
        client.post_event(_simple_event())
    assert len(script.requests) == 3


def test_upload_is_not_retried_after_a_read_error(sleeps: list[float]) -> None:
    script = Script(httpx.ReadError("lost"), httpx.Response(202, json={"batchId": "b"}))
    with _mock_client(script) as client, pytest.raises(TransportError):
        client.upload_log(b"x")
    assert len(script.requests) == 1


def test_backoff_is_full_jitter_within_the_cap() -> None:
    policy = _retry.RetryPolicy(max_retries=5, backoff_base=0.5, backoff_cap=2.0)
    for attempt in range(6):
        for _ in range(50):
            assert 0 <= policy.delay(attempt) <= min(2.0, 0.5 * 2**attempt)
    assert policy.delay(0, retry_after=3.0) >= 3.0


def test_decimal_amounts_are_json_numbers() -> None:
    request = BasketRequest(
        "b-1", "80085102028", Decimal("24.97"), Decimal("24.97"), [Line("STANDARD", 1)],
        items=[Item("i", 1, Decimal("24.97"))],
    )  # fmt: skip
    captured: list[bytes] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/oauth/token":
            return httpx.Response(200, json=TOKEN_RESPONSE)
        captured.append(req.content)
        assert req.headers["content-type"] == "application/json"
        return httpx.Response(200, json={"transactionId": "t"})

    with IssuanceClient("http://x", "i", "s", transport=httpx.MockTransport(handler)) as client:
        client.post(request)
    text = captured[0].decode()
    assert '"basketPreTaxAmount":24.97' in text
    assert '"finalAmount":24.97' in text
    assert json.loads(text, parse_float=Decimal)["basketPostTaxAmount"] == Decimal("24.97")


def test_async_client_retries_with_one_key(sleeps: list[float]) -> None:
    script = Script(_problem(502, "BAD_GATEWAY"), httpx.ReadTimeout("slow"))

    async def scenario() -> None:
        async with AsyncIssuanceClient(
            "http://sdk.test", "id", "secret", transport=httpx.MockTransport(script)
        ) as client:
            result = await client.post_event(_simple_event())
            assert result.lines[0].status == "ISSUED"
            script.answers.append(_problem(404, "NOT_FOUND"))
            with pytest.raises(NotFoundError):
                await client.get_transaction("nope")

    asyncio.run(scenario())
    assert len({r.headers["Idempotency-Key"] for r in script.requests[:3]}) == 1
    assert len(sleeps) == 2


# --------------------------------------------------------------------------- webhooks


SECRET = "whsec-test"
EVENT_BODY = json.dumps({"type": "transaction.settled", "transactionId": "t-1"}).encode()


def _signed(
    body: bytes = EVENT_BODY, *, secret: str = SECRET, at: int = 1_700_000_000
) -> dict[str, str]:
    return {"rewardmiles-signature": sign(secret, at, body), "content-type": "application/json"}


def test_webhook_valid_signature() -> None:
    event = verify_webhook(EVENT_BODY, _signed(), SECRET, now=1_700_000_010)
    assert event["transactionId"] == "t-1"


@pytest.mark.parametrize(
    ("payload", "headers", "now"),
    [
        pytest.param(EVENT_BODY.replace(b"t-1", b"t-2"), _signed(), 1_700_000_000, id="tampered"),
        pytest.param(EVENT_BODY, _signed(secret="other"), 1_700_000_000, id="wrong-secret"),
        pytest.param(EVENT_BODY, _signed(), 1_700_000_000 + 301, id="stale"),
        pytest.param(EVENT_BODY, _signed(), 1_700_000_000 - 301, id="future"),
        pytest.param(EVENT_BODY, {}, 1_700_000_000, id="missing"),
        pytest.param(EVENT_BODY, {"Rewardmiles-Signature": "garbage"}, 1_700_000_000, id="garbled"),
    ],
)
def test_webhook_rejections(payload: bytes, headers: dict[str, str], now: int) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(payload, headers, SECRET, now=now)


def test_webhook_default_clock() -> None:
    at = int(time.time())
    assert verify_webhook(EVENT_BODY, _signed(at=at), SECRET)["type"] == "transaction.settled"
