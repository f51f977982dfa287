"""Hostile input at every partner write endpoint: whatever arrives, the answer is a 4xx problem
(or a success for a body that happens to be valid) — never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import World
from tests.support import data
from tests.support.problems import assert_nothing_stored, assert_problem

WRITE_PATHS = [
    "/checkout/issuance/post",
    "/checkout/issuance/post/event",
    "/checkout/issuance/reverse",
    "/checkout/issuance/reverse/event",
    "/checkout/issuance/record",
    "/checkout/issuance/calculate",
    "/checkout/issuance/issue",
    "/checkout/issuance/return",
]
FIELDS = [
    "clientTransactionId",
    "checkoutTransactionId",
    "collectorNumber",
    "sponsorCode",
    "transactionDateTime",
    "checkoutDateTime",
    "issuances",
    "items",
    "coupon",
    "context",
    "deviceId",
    "basketPreTaxAmount",
    "basketPostTaxAmount",
    "basketHSTAmount",
    "originalClientTransactionId",
    "originalCheckoutTransactionId",
    "locationCode",
    "milesAmount",
    "issuanceOfferCode",
    "offerId",
    "quantity",
    "finalAmount",
    "id",
    "contributingItemIds",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.sampled_from(
        ["80085102028", "STANDARD", "KENY", "2026-11-25T12:00:00Z", "0037", "1e308", ""]
    ),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), children, max_size=6),
    ),
    max_leaves=25,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=12)


def _assert_never_a_server_error(status: int, content_type: str, text: str) -> None:
    assert status < 500, text
    if status >= 400:
        assert content_type == "application/problem+json", text


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_random_bodies_never_cause_a_server_error(world: World, path: str) -> None:
    headers = {"Authorization": f"Bearer {world.partner.token}", "Content-Type": "application/json"}

    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(body=bodies)
    def check(body: dict[str, object]) -> None:
        response = world.partner.http.post(path, content=json.dumps(body).encode(), headers=headers)
        _assert_never_a_server_error(
            response.status_code, response.headers["content-type"], response.text
        )

    check()


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 5000 + b"]" * 5000,  # deep nesting
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"milesAmount": 1' + b"0" * 5000 + b"}",  # a 5,000-digit integer
        '{"deviceId": "\U0001f600\u202e\x00"}'.encode(),
        b"\xff\xfe\x00",  # not UTF-8
        b'{"issuances": [' + b"{}," * 20000 + b"{}]}",
        b'{"clientTransactionId": "\\ud800"}',  # a lone surrogate escape: no character
        b'{"\\udfff": 1}',
    ],
    ids=[
        "deep-array",
        "deep-object",
        "huge-integer",
        "odd-unicode",
        "not-utf8",
        "many-lines",
        "lone-surrogate-value",
        "lone-surrogate-key",
    ],
)
def test_pathological_bodies_are_4xx(world: World, raw: bytes) -> None:
    headers = {"Authorization": f"Bearer {world.partner.token}", "Content-Type": "application/json"}
    for path in WRITE_PATHS:
        response = world.partner.http.post(path, content=raw, headers=headers)
        _assert_never_a_server_error(
            response.status_code, response.headers["content-type"], response.text
        )
        assert response.status_code in (400, 413), (path, response.status_code)


def test_oversized_or_too_many_headers_get_431_before_any_work(world: World) -> None:
    url = world.server.base_url + "/checkout/issuance/post/event"
    body = world.body(world.collector())
    auth = {"Authorization": f"Bearer {world.partner.token}"}
    big = httpx.post(url, json=body, headers={**auth, "X-Padding": "a" * 20_000})
    assert_problem(big, 431, "HEADERS_TOO_LARGE")
    many = httpx.post(url, json=body, headers={**auth, **{f"X-H{i}": "v" for i in range(120)}})
    assert_problem(many, 431, "HEADERS_TOO_LARGE")
    assert_nothing_stored(
        world.db,
        world.partner.client_id,
        data.text_field(body, "collectorNumber"),
        data.text_field(body, "clientTransactionId"),
    )
    fine = httpx.post(url, json=body, headers={**auth, "X-Padding": "a" * 8_000})
    assert fine.status_code == 200, fine.text


def test_values_that_overflowed_into_500s_are_400s(world: World) -> None:
    """Found by schemathesis: each of these was a 500 (datetime or integer overflow)."""
    partner = world.partner
    auth = {"Authorization": f"Bearer {partner.token}"}
    collector = world.collector()
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        body = world.body(collector, transactionDateTime=moment)
        assert_problem(partner.post_event(body), 400, "FIELD_INVALID", "transactionDateTime")
    basket = data.basket_body(world.sponsor, collector)
    del basket["issuances"]
    basket["items"] = [{"id": "a", "quantity": 2**64, "finalAmount": 24.97}]
    calculated = partner.call("/checkout/issuance/calculate", basket, key=None)
    assert_problem(calculated, 400, "FIELD_INVALID", "items[0].quantity")
    base = world.server.base_url + "/checkout/issuance"
    for day in ("9999-12-31", "0001-01-01"):
        audit = httpx.get(f"{base}/reports/audit", params={"date": day}, headers=auth)
        assert_problem(audit, 400, "FIELD_INVALID", "date")
    for query in ({"offset": 2**63}, {"offset": -1}, {"limit": 0}, {"offset": "null"}):
        page = httpx.get(f"{base}/batches/unknown", params=query, headers=auth)
        assert page.status_code == 400, page.text
        assert page.json()["errors"][0]["field"] in {"offset", "limit"}
