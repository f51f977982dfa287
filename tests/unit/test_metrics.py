"""The metrics' decisions without a server: who may scrape (addresses, networks, the token), what a
partner call's answer counts, and that a request is counted under its route's template."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.requests import Request

from rewardmiles import metrics
from rewardmiles.cli import main as cli
from rewardmiles.config import Settings, parse_networks
from rewardmiles.errors import ProblemError
from rewardmiles.http.metrics import check_access

NETWORKS = parse_networks("10.0.0.0/8, 192.0.2.7, fd00::/8")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # loopback, as an IPv4-mapped IPv6 address
        ("10.20.30.40", True),
        ("::ffff:10.1.1.1", True),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("fd12::1", True),
        ("fe80::1%eth0", False),
        ("11.0.0.1", False),
        ("203.0.113.5", False),
        ("testclient", False),  # not an address: never allowed on a guess
        ("", False),
        (None, False),
    ],
)
def test_which_sources_may_scrape_without_a_token(host: str | None, allowed: bool) -> None:
    assert metrics.source_allowed(host, allow_loopback=True, networks=NETWORKS) is allowed


def test_loopback_can_be_refused_too() -> None:
    assert not metrics.source_allowed("127.0.0.1", allow_loopback=False, networks=())
    assert not metrics.source_allowed("::1", allow_loopback=False, networks=())
    assert metrics.source_allowed(
        "127.0.0.1", allow_loopback=False, networks=parse_networks("127.0.0.0/8")
    )


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer  s3cret ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_the_token_is_bearer_and_exact(header: str | None, matches: bool) -> None:
    assert metrics.token_matches(header, "s3cret") is matches


def test_no_configured_token_matches_nothing() -> None:
    assert not metrics.token_matches("Bearer ", None)
    assert not metrics.token_matches("Bearer ", "")


def _request(host: str, authorization: str | None = None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "headers": headers,
        "client": (host, 40000),
    }
    return Request(scope)


def test_elsewhere_without_a_configured_token_is_forbidden() -> None:
    settings = Settings(database_url="sqlite://", metrics_allow_networks="10.0.0.0/8")
    check_access(_request("10.1.2.3"), settings)  # a configured network
    check_access(_request("127.0.0.1"), settings)  # loopback, by default
    with pytest.raises(ProblemError) as refused:
        check_access(_request("203.0.113.5", "Bearer anything"), settings)
    assert refused.value.code == "METRICS_FORBIDDEN"


def test_elsewhere_with_a_configured_token_needs_it() -> None:
    settings = Settings(database_url="sqlite://", metrics_token="tok-123")
    check_access(_request("203.0.113.5", "Bearer tok-123"), settings)
    for header in (None, "Bearer tok-12", "Basic tok-123"):
        with pytest.raises(ProblemError) as refused:
            check_access(_request("203.0.113.5", header), settings)
        assert refused.value.code == "METRICS_UNAUTHORIZED"


def test_networks_and_token_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="not a network"):
        Settings(database_url="sqlite://", metrics_allow_networks="10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValidationError, match="not a network"):
        Settings.from_env({"REWARDMILES_METRICS_ALLOW_NETWORKS": "intranet"})
    assert Settings(database_url="sqlite://", metrics_token="  ").metrics_token is None
    assert Settings(database_url="sqlite://").metrics_networks == ()


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_call_counts_its_lines_by_outcome_and_its_posted_miles_by_sponsor() -> None:
    lines = "rewardmiles_issuance_lines_total"
    before = {
        outcome: _value(lines, endpoint="post", outcome=outcome)
        for outcome in ("issued", "pending", "rejected", "refused")
    }
    issued = _value("rewardmiles_miles_issued_total", sponsor="UNITS1")
    body = {
        "issuances": [
            {"milesAmount": 5, "status": "ISSUED"},
            {"milesAmount": 7, "status": "ISSUED"},
            {"milesAmount": 11, "status": "PENDING"},
            {"milesAmount": 13, "status": "REJECTED"},
        ]
    }
    metrics.count_call("post", "UNITS1", 202, body, 4)
    metrics.count_call("post", "UNITS1", 400, {"code": "OFFER_UNKNOWN"}, 3)
    metrics.count_call("calculate", "UNITS1", 200, body, 4)  # a preview: nothing counted
    after = {
        outcome: _value(lines, endpoint="post", outcome=outcome)
        for outcome in ("issued", "pending", "rejected", "refused")
    }
    assert {k: after[k] - before[k] for k in after} == {
        "issued": 2,
        "pending": 1,
        "rejected": 1,
        "refused": 3,
    }
    assert _value("rewardmiles_miles_issued_total", sponsor="UNITS1") - issued == 12
    assert _value(lines, endpoint="calculate", outcome="issued") == 0


def test_reversed_and_recorded_lines() -> None:
    reversed_before = _value("rewardmiles_miles_reversed_total", sponsor="UNITS2")
    recorded_before = _value(
        "rewardmiles_issuance_lines_total", endpoint="record", outcome="recorded"
    )
    metrics.count_call(
        "reverse_event", "UNITS2", 200, {"issuances": [{"milesAmount": 9, "status": "REVERSED"}]}, 1
    )
    metrics.count_call("record", "UNITS2", 200, {"issuances": [{"milesAmount": 9}, {}]}, 2)
    assert _value("rewardmiles_miles_reversed_total", sponsor="UNITS2") - reversed_before == 9
    assert (
        _value("rewardmiles_issuance_lines_total", endpoint="record", outcome="recorded")
        - recorded_before
        == 2
    )


class _Route:
    path_format = "/things/{thingId}"


def test_a_request_is_counted_under_its_template_and_an_unknown_path_under_one_label() -> None:
    total = "rewardmiles_http_requests_total"
    before = _value(total, route="/things/{thingId}", method="GET", status="200")
    unmatched = _value(total, route=metrics.UNMATCHED_ROUTE, method="GET", status="404")
    for thing in ("a", "b"):
        metrics.observe_request(
            {"route": _Route(), "path": f"/things/{thing}", "method": "GET"}, 200, 0.01
        )
    for path in ("/x/1", "/x/2"):
        metrics.observe_request({"path": path, "method": "GET"}, 404, 0.001)
    assert _value(total, route="/things/{thingId}", method="GET", status="200") - before == 2
    assert _value(total, route=metrics.UNMATCHED_ROUTE, method="GET", status="404") - unmatched == 2
    assert _value(total, route="/x/1", method="GET", status="404") == 0
    assert ("/x/1", "GET", 404) not in metrics._request_children
    bucket = "rewardmiles_http_request_duration_seconds_bucket"
    assert _value(bucket, route="/things/{thingId}", method="GET", le="0.01") >= 2


def test_serve_gives_several_processes_a_fresh_metrics_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(cli.METRICS_DIRECTORY_ENV, raising=False)
    with cli._metrics_directory(needed=False) as none:
        assert none is None
        assert cli.METRICS_DIRECTORY_ENV not in os.environ
    with cli._metrics_directory(needed=True) as made:
        assert made is not None
        assert made.is_dir()
        assert not list(made.iterdir())
        assert os.environ[cli.METRICS_DIRECTORY_ENV] == str(made)
    assert not made.exists()
    assert cli.METRICS_DIRECTORY_ENV not in os.environ


def test_serve_empties_a_given_metrics_directory_of_other_processes_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cli.METRICS_DIRECTORY_ENV, str(tmp_path))
    stale = tmp_path / "counter_12345678.db"
    mine = tmp_path / f"counter_{os.getpid()}.db"
    other = tmp_path / "notes.txt"
    for path in (stale, mine, other):
        path.write_text("x")
    with cli._metrics_directory(needed=True) as given:
        assert given == tmp_path
        assert not stale.exists()
        assert mine.exists()  # a single API process's own files, opened at its start
        assert other.exists()
    assert tmp_path.is_dir()  # given, so kept
