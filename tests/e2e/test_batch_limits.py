"""Hostile partner-log uploads: an endless line, an oversized body, more uploads than the server
runs at once. Each is answered with a problem (or a refused record) and bounded memory."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rewardmiles.db.engine import Database
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.partner import fetch_token
from tests.support.problems import assert_problem
from tests.support.server import Server

BATCHES = "/checkout/issuance/batches"
MIB = 1024 * 1024


@dataclass
class Site:
    server: Server
    db: Database
    sponsor: str
    token: str

    def headers(self, media: str = "application/x-ndjson") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": media}

    def upload(self, body: bytes, media: str = "application/x-ndjson") -> httpx.Response:
        return httpx.post(
            self.server.base_url + BATCHES, content=body, headers=self.headers(media), timeout=30
        )

    def poll(self, location: str) -> dict[str, object]:
        deadline = time.monotonic() + 60
        while True:
            view = httpx.get(
                self.server.base_url + location, headers=self.headers(), timeout=30
            ).json()
            if view["status"] != "processing" or time.monotonic() > deadline:
                return dict(view)
            time.sleep(0.1)

    def reset_peak_rss(self) -> int:
        """Reset the server's peak RSS (VmHWM) to its current RSS and return it: a peak reached
        earlier (start-up, an earlier upload) would otherwise hide what comes next. Linux: "5"
        to clear_refs (the server is this test's own child process)."""
        Path(f"/proc/{self.server.process.pid}/clear_refs").write_text("5")
        peak = self.peak_rss_bytes()
        assert peak <= self._status_bytes("VmRSS:") + MIB, "the peak RSS was not reset"
        return peak

    def peak_rss_bytes(self) -> int:
        return self._status_bytes("VmHWM:")

    def _status_bytes(self, name: str) -> int:
        status = Path(f"/proc/{self.server.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(name))
        return int(line.split()[1]) * 1024


def _site(server: Server) -> Iterator[Site]:
    db = Database.from_url(server.database_url)
    sponsor = data.new_sponsor(db)
    token = fetch_token(server.base_url, *data.new_client(db, [sponsor]))
    yield Site(server, db, sponsor, token)
    db.dispose()


@pytest.fixture(scope="module")
def site(dialect: str, server_factory: ServerFactory) -> Iterator[Site]:
    """Small limits, so that each is reached with a few MB: one upload at a time, none waiting."""
    server = server_factory(
        dialect,
        env={
            "REWARDMILES_BATCH_UPLOAD_BYTES_MAX": str(16 * MIB),
            "REWARDMILES_BATCH_WORKERS": "1",
            "REWARDMILES_BATCH_QUEUE_MAX": "0",
        },
    )
    yield from _site(server)


def _read_answer(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response from a raw socket: status line, headers (lower-case), body."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, raw
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return status, headers, body


def _record(sponsor_collector: str, when: str, tid: str) -> bytes:
    return json.dumps(
        {
            "transactionType": "POST/EVENT",
            "partnerTransactionId": tid,
            "collectorNumber": sponsor_collector,
            "transactionDateTime": when,
            "milesAmount": 5,
        }
    ).encode()


def test_a_line_over_the_limit_is_refused_with_its_number_and_memory_stays_bounded(
    site: Site,
) -> None:
    collector = data.new_collector(site.db)
    when = "2026-11-30T04:10:41Z"
    warm = site.upload(_record(collector, when, "warm-1") + b"\n")
    assert warm.status_code == 202, warm.text
    assert site.poll(warm.headers["location"])["status"] == "done"

    long_line = b'{"transactionType":"' + b"x" * (12 * MIB) + b'"}'
    body = b"\n".join(
        [_record(collector, when, "ok-1"), long_line, _record(collector, when, "ok-3"), b""]
    )
    before = site.reset_peak_rss()  # right before the attack: no earlier peak hides it
    upload = site.upload(body)
    assert upload.status_code == 202, upload.text
    view = site.poll(upload.headers["location"])
    assert view["status"] == "done", view
    records = {r["lineNo"]: r for r in view["records"]}  # type: ignore[attr-defined]
    assert records[2]["outcome"] == "invalid"
    assert records[2]["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert "65536" in records[2]["detail"]
    assert {records[1]["outcome"], records[3]["outcome"]} == {"missing_in_program"}
    grown = site.peak_rss_bytes() - before
    assert grown < 6 * MIB, f"peak RSS grew by {grown / MIB:.1f} MiB for a 12 MiB line"


def test_an_upload_over_the_size_limit_is_refused_before_its_body_is_sent(site: Site) -> None:
    host, port = site.server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            (
                f"POST {BATCHES} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {site.token}\r\n"
                "Content-Type: text/csv\r\n"
                f"Content-Length: {64 * MIB}\r\n\r\n"
            ).encode()
        )
        status, headers, body = _read_answer(sock)  # no body sent: the answer comes now
    assert status.startswith("HTTP/1.1 413"), (status, body)
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "PAYLOAD_TOO_LARGE"
    assert str(16 * MIB) in json.loads(body)["detail"]


def test_uploads_beyond_the_queue_get_503_with_retry_after(site: Site) -> None:
    host, port = site.server.base_url.removeprefix("http://").split(":")
    collector = data.new_collector(site.db)
    record = _record(collector, "2026-11-30T04:10:41Z", "held-1") + b"\n"
    # An upload whose body is still arriving holds the only place.
    with socket.create_connection((host, int(port)), timeout=10) as held:
        held.sendall(
            (
                f"POST {BATCHES} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {site.token}\r\n"
                "Content-Type: application/x-ndjson\r\n"
                f"Content-Length: {len(record) * 2}\r\n\r\n"
            ).encode()
            + record
        )
        deadline = time.monotonic() + 10
        while True:
            refused = site.upload(record)
            if refused.status_code != 202 or time.monotonic() > deadline:
                break
            site.poll(refused.headers["location"])  # the held upload was not read yet; retry
        problem = assert_problem(refused, 503, "BATCH_QUEUE_FULL")
        assert "1 running, 0 waiting" in problem["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        held.sendall(record)  # the body completes: accepted, and run
        status, headers, body = _read_answer(held)
        assert status.startswith("HTTP/1.1 202"), (status, body)
        location = headers["location"]
    assert site.poll(location)["status"] == "done"
    deadline = time.monotonic() + 10
    while (again := site.upload(record)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # the place is given back when its batch has finished
    assert again.status_code == 202, again.text
