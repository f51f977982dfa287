"""Partner transaction logs uploaded over HTTP and polled."""

from __future__ import annotations

import time

import httpx

from tests.e2e.conftest import World
from tests.support import data

BATCHES = "/checkout/issuance/batches"


def _auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.partner.token}"}


def _poll(world: World, location: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        response = world.partner.http.get(location, headers=_auth(world))
        if response.json()["status"] != "processing" or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_upload_a_log_and_read_its_discrepancies(world: World) -> None:
    collector = world.collector()
    body = world.body(collector, miles=9)
    assert world.partner.post_event(body).status_code == 200
    when = body["transactionDateTime"]
    log = (
        "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"
        f"POST/EVENT,{body['clientTransactionId']},{collector},{when},9\n"
        f"POST/EVENT,late-{collector},{collector},{when},4\n"
    )
    upload = world.partner.http.post(
        f"{BATCHES}?issueMissing=true",
        content=log.encode(),
        headers={**_auth(world), "Content-Type": "text/csv"},
    )
    assert upload.status_code == 202, upload.text
    assert upload.headers["location"] == f"{BATCHES}/{upload.json()['batchId']}"

    result = _poll(world, upload.headers["location"])
    assert result.status_code == 200
    view = result.json()
    assert view["status"] == "done"
    assert view["counts"]["matched"] == 1
    assert view["counts"]["issued"] == 1
    assert world.balance(collector) == 13
    matched = world.partner.http.get(
        upload.headers["location"], params={"outcome": "matched"}, headers=_auth(world)
    ).json()
    assert [r["partnerTransactionId"] for r in matched["records"]] == [body["clientTransactionId"]]


def test_batches_are_partner_scoped_and_need_a_log_media_type(world: World) -> None:
    other = world.new_partner(data.new_sponsor(world.db))
    upload = other.http.post(
        BATCHES,
        content=b"transactionType\n",
        headers={"Authorization": f"Bearer {other.token}", "Content-Type": "text/csv"},
    )
    assert upload.status_code == 202
    assert (
        world.partner.http.get(upload.headers["location"], headers=_auth(world)).status_code == 404
    )
    wrong_type = world.partner.http.post(
        BATCHES, content=b"x", headers={**_auth(world), "Content-Type": "application/pdf"}
    )
    assert wrong_type.status_code == 415
    forbidden = world.partner.http.post(
        f"{BATCHES}?sponsorCode={data.new_sponsor(world.db)}",
        content=b"x",
        headers={**_auth(world), "Content-Type": "text/csv"},
    )
    assert forbidden.status_code == 403
    other.close()
