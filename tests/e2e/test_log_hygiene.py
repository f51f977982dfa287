"""What the server writes to its log: never a client secret or a bearer token, never an operator's
password, session cookie, CSRF token, admin token or e-mail, never a full collector number — at
debug level, across successful calls, failed logins, rejections, a 429, a batch of bad requests and
operators signing in and out."""

from __future__ import annotations

import base64
import time
import uuid

import httpx

from rewardmiles.db.engine import Database
from rewardmiles.vocabulary import OperatorRole
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.operators import new_operator, new_token
from tests.support.partner import POST_EVENT, REVERSE_EVENT, fetch_token


def test_logs_hold_no_secret_no_token_and_no_full_collector_number(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_LOG_LEVEL": "debug",
            "REWARDMILES_RATE_LIMIT_PER_SECOND": "1",
            "REWARDMILES_RATE_LIMIT_BURST": "20",
        },
    )
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        client_id, secret = data.new_client(db, [sponsor])
        active = data.new_collector(db)
        unknown = data.unknown_collector()
        login = new_operator(db, OperatorRole.ADMIN, now=data.now())
        admin_token = new_token(db, now=data.now()).token
    finally:
        db.dispose()
    base = server.base_url
    token = fetch_token(base, client_id, secret)
    auth = {"Authorization": f"Bearer {token}"}

    # A failed login with a near-miss secret, and one over HTTP Basic.
    wrong_secret = secret[:-4] + "abcd"
    httpx.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": wrong_secret,
        },
    )
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    # Accepted, pending, rejected and malformed calls naming collectors.
    body = data.event_body(sponsor, active, miles=5)
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    assert httpx.post(f"{base}{POST_EVENT}", json=body, headers=headers).status_code == 200
    pending = data.event_body(sponsor, unknown)
    assert httpx.post(f"{base}{POST_EVENT}", json=pending, headers=auth).status_code == 202
    over = data.event_body(
        sponsor, active, originalClientTransactionId=body["clientTransactionId"], miles=500
    )
    assert httpx.post(f"{base}{REVERSE_EVENT}", json=over, headers=auth).status_code == 400
    bad_collector = data.event_body(sponsor, active[:-1] + "X")
    assert httpx.post(f"{base}{POST_EVENT}", json=bad_collector, headers=auth).status_code == 400
    # A token in the wrong place, a garbage token, and enough calls to be rate limited.
    httpx.get(f"{base}/checkout/issuance/transactions/x", headers={"Authorization": token})
    httpx.get(
        f"{base}/checkout/issuance/transactions/x", headers={"Authorization": f"Bearer {token}x"}
    )
    statuses = {
        httpx.get(f"{base}/checkout/issuance/transactions/{uuid.uuid4()}", headers=auth).status_code
        for _ in range(25)
    }
    assert 429 in statuses
    # An operator: a wrong password, a sign-in, a call with the cookie, a sign-out; a script
    # with an admin token, and one with the token mangled.
    wrong_password = login.password[:-3] + "xyz"
    sign_in = f"{base}/admin/session"
    assert (
        httpx.post(sign_in, json={"email": login.email, "password": wrong_password}).status_code
        == 401
    )
    signed = httpx.post(sign_in, json={"email": login.email, "password": login.password})
    assert signed.status_code == 200, signed.text
    cookie = signed.cookies["rewardmiles-admin"]
    csrf = signed.json()["csrfToken"]
    with_cookie = {"Cookie": f"rewardmiles-admin={cookie}"}
    assert httpx.get(f"{base}/admin/v1/collectors/{active}", headers=with_cookie).status_code == 200
    out = httpx.delete(sign_in, headers={**with_cookie, "X-CSRF-Token": csrf})
    assert out.status_code == 204
    for bearer in (admin_token, admin_token + "x"):
        httpx.get(f"{base}/admin/v1/me", headers={"Authorization": f"Bearer {bearer}"})

    log = server.log()
    assert "request" in log  # debug logging really was on
    assert "admin_sign_in" in log  # and the sign-ins were logged
    for secret_text in (secret, wrong_secret, token, basic, token.split(".")[2]):
        assert secret_text not in log
    for operator_text in (login.password, wrong_password, cookie, csrf, admin_token, login.email):
        assert operator_text not in log
    for number in (active, unknown):
        assert number not in log


def test_console_log_escapes_control_characters_from_the_request(
    dialect: str, server_factory: ServerFactory
) -> None:
    """The console format (REWARDMILES_LOG_JSON=false) must not pass ESC, BEL, CR or a newline
    from an unauthenticated request to the operator's terminal: they appear as `\\x1b` text."""
    server = server_factory(
        dialect, env={"REWARDMILES_LOG_JSON": "false", "REWARDMILES_LOG_LEVEL": "info"}
    )
    # No space, quote or line break: the console renderer would quote (repr) such a value.
    hostile = "/%1b%5b2J%1b%5d0%3bowned%07fake%7f%c2%9b%08"
    response = httpx.get(f"{server.base_url}{hostile}")
    assert response.status_code == 404
    deadline = time.monotonic() + 10  # the access log line is written just after the answer
    while "fake" not in (log := server.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in log.splitlines() if "fake" in line)
    for raw in ("\x1b", "\x07", "\x7f", "\x9b", "\x08"):
        assert raw not in log
    assert "path=/\\x1b[2J\\x1b]0;owned\\x07fake\\x7f\\x9b\\x08 " in line

    # CR and LF in the path (percent-encoded on the wire, decoded before it is logged): a forged
    # line of its own would pass for one the server wrote.
    forged = "/crlf%0d%0a2026-11-30T00:00:00Z%20[info]%20forged%0d"
    assert httpx.get(f"{server.base_url}{forged}").status_code == 404
    deadline = time.monotonic() + 10
    while "forged" not in (log := server.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    # One line holds the forged text: the server's access line, from its start to its end.
    (line,) = [line for line in log.splitlines() if "forged" in line]
    assert "\r" not in log
    assert " request " in line
    assert line.endswith("status=404")
    # The escape's backslash is doubled: the renderer quotes (repr) a value with a space.
    assert r"path='/crlf\\r\\n2026-11-30T00:00:00Z [info] forged\\r' " in line
