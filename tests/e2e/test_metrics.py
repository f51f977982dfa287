"""GET /metrics on a real server (SQLite: one process; PostgreSQL: two API processes in
prometheus-client's multiprocess mode): the counters move by exactly the traffic sent, replays
and shape errors included; who may scrape; the Grafana dashboard and the alert rules name only
metrics the service exports."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rewardmiles import limits
from tests.conftest import ServerFactory, server_settings
from tests.e2e.conftest import World
from tests.support import data

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "rewardmiles.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
POST_EVENT = "/checkout/issuance/post/event"
REVERSE_EVENT = "/checkout/issuance/reverse/event"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, **headers: str) -> Samples:
    response = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the sample `name{labels}` moved between two scrapes (absent = 0)."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def requests_moved(before: Samples, after: Samples, route: str) -> Counter[str]:
    """The change of `rewardmiles_http_requests_total` of `route` (POST), by status."""
    changes: Counter[str] = Counter()
    for (name, labels), value in after.items():
        label = dict(labels)
        if name == "rewardmiles_http_requests_total" and label.get("route") == route:
            assert label["method"] == "POST"
            delta = value - before.get((name, labels), 0.0)
            if delta:
                changes[label["status"]] += int(delta)
    return changes


def test_counters_move_by_exactly_the_traffic_sent(world: World) -> None:
    sponsor = data.new_sponsor(world.db)
    partner = world.new_partner(sponsor)
    try:
        collector = data.new_collector(world.db)
        before = scrape(world.server.base_url)

        first_key = str(uuid.uuid4())
        first = data.event_body(sponsor, collector, miles=10)
        assert partner.post_event(first, key=first_key).status_code == 200
        for miles in (20, 30):
            body = data.event_body(sponsor, collector, miles=miles)
            assert partner.post_event(body).status_code == 200
        # A business rule refuses the call whole (stored as a rejected transaction).
        refused = data.event_body(sponsor, collector, miles=5)
        refused["issuances"] = [{"issuanceOfferCode": "NOSUCH", "milesAmount": 5}]
        response = partner.post_event(refused)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "OFFER_UNKNOWN"
        # A shape error: nothing stored, no line counted, the request is.
        assert partner.post_event({"sponsorCode": sponsor}).status_code == 400
        # The first call again, same key and body: a replay, counted as a request only.
        replay = partner.post_event(first, key=first_key)
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        reversal = data.event_body(
            sponsor, collector, miles=4, originalClientTransactionId=first["clientTransactionId"]
        )
        assert partner.reverse_event(reversal).status_code == 200

        after = scrape(world.server.base_url)
    finally:
        partner.close()

    assert requests_moved(before, after, POST_EVENT) == {"200": 4, "400": 2}
    assert requests_moved(before, after, REVERSE_EVENT) == {"200": 1}
    lines = "rewardmiles_issuance_lines_total"
    assert moved(before, after, lines, endpoint="post_event", outcome="issued") == 3
    assert moved(before, after, lines, endpoint="post_event", outcome="refused") == 1
    assert moved(before, after, lines, endpoint="reverse_event", outcome="reversed") == 1
    assert moved(before, after, "rewardmiles_miles_issued_total", sponsor=sponsor) == 60
    assert moved(before, after, "rewardmiles_miles_reversed_total", sponsor=sponsor) == 4
    # Every request is timed, under its route's template.
    count = "rewardmiles_http_request_duration_seconds_count"
    assert moved(before, after, count, route=POST_EVENT, method="POST") == 6
    assert moved(before, after, count, route=REVERSE_EVENT, method="POST") == 1
    assert data.balance(world.db, collector) == 56


def test_a_route_with_an_id_is_counted_under_its_template(world: World) -> None:
    before = scrape(world.server.base_url)
    for _ in range(2):
        response = world.partner.http.get(
            f"/checkout/issuance/transactions/{uuid.uuid4()}",
            headers={"Authorization": f"Bearer {world.partner.token}"},
        )
        assert response.status_code == 404
    httpx.get(f"{world.server.base_url}/no/such/{uuid.uuid4()}")
    after = scrape(world.server.base_url)
    total = "rewardmiles_http_requests_total"
    template = "/checkout/issuance/transactions/{transactionId}"
    assert moved(before, after, total, route=template, method="GET", status="404") == 2
    assert moved(before, after, total, route="unmatched", method="GET", status="404") == 1
    assert not any("/no/such" in value for _, labels in after for _, value in labels)


def test_the_database_gauges_and_the_pool_are_exported(world: World) -> None:
    samples = scrape(world.server.base_url)
    names = {name for name, _ in samples}
    for name in (
        "rewardmiles_pending_lines",
        "rewardmiles_pending_oldest_age_seconds",
        "rewardmiles_webhook_outbox_depth",
        "rewardmiles_db_pool_in_use",
        "rewardmiles_db_pool_capacity",
        "rewardmiles_settlement_lag_seconds",
    ):
        assert name in names, name
    assert samples[("rewardmiles_pending_lines", frozenset())] >= 0
    capacity = samples[("rewardmiles_db_pool_capacity", frozenset())]
    if world.server.dialect == "postgresql":
        # The shared server's two API processes, each a pool of its size plus as much overflow:
        # one scrape adds up both processes' files (multiprocess mode).
        assert capacity == 2 * 2 * server_settings(world.server).database_pool_size
    else:
        assert capacity > 0


def test_a_scrape_from_elsewhere_needs_the_metrics_token(
    dialect: str, server_factory: ServerFactory, world: World
) -> None:
    """Loopback not allowed here, so the test's own address is 'elsewhere'; neither a partner's
    token nor a near miss of the metrics token opens it."""
    token = "metrics-" + uuid.uuid4().hex
    server = server_factory(
        dialect,
        env={"REWARDMILES_METRICS_ALLOW_LOOPBACK": "false", "REWARDMILES_METRICS_TOKEN": token},
    )
    url = f"{server.base_url}/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {world.partner.token}"},
    ):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "METRICS_UNAUTHORIZED"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (
        "rewardmiles_http_requests_total"
        in httpx.get(url, headers={"Authorization": f"Bearer {token}"}).text
    )


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that start with `rewardmiles_`
    (every metric of the service; functions, labels and keywords never do)."""
    return set(re.findall(r"\brewardmiles_[a-zA-Z0-9_:]+", expr))


def _exported(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_the_dashboard_and_the_alerts_read_only_metrics_the_service_exports(world: World) -> None:
    # A call, its reversal and a refused sign-in first, so that every labelled family the
    # dashboard reads has a sample on this server.
    original = world.body(world.collector())
    assert world.partner.post_event(original).status_code == 200
    reversal = world.body(
        str(original["collectorNumber"]),
        miles=1,
        originalClientTransactionId=original["clientTransactionId"],
    )
    assert world.partner.reverse_event(reversal).status_code == 200
    refused = httpx.post(
        f"{world.server.base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
    )
    assert refused.status_code == 401
    exported = _exported(scrape(world.server.base_url))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
        if "expr" in target
    ]
    assert len(exprs) >= 10
    alerts = yaml.safe_load(ALERTS.read_text())
    exprs += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    used = set().union(*(_metric_names(expr) for expr in exprs))
    assert used <= exported, sorted(used - exported)
    for needed in (
        "rewardmiles_http_request_duration_seconds_bucket",
        "rewardmiles_issuance_lines_total",
        "rewardmiles_miles_issued_total",
        "rewardmiles_pending_oldest_age_seconds",
        "rewardmiles_webhook_outbox_depth",
        "rewardmiles_settlement_lag_seconds",
        "rewardmiles_db_pool_in_use",
        "rewardmiles_group_commit_batch_size_bucket",
    ):
        assert needed in used, f"the dashboard shows no {needed}"


@pytest.mark.parametrize("kind", ["counter", "histogram"])
def test_no_family_is_exported_twice(world: World, kind: str) -> None:
    """Several API processes add up to one family each (multiprocess mode), never one per
    process."""
    text = httpx.get(f"{world.server.base_url}/metrics").text
    types = re.findall(rf"^# TYPE (\S+) {kind}$", text, flags=re.MULTILINE)
    assert types
    assert len(types) == len(set(types))


def test_a_pending_line_shows_in_the_queue_gauges(world: World) -> None:
    """The database gauges are read at a scrape and kept a few seconds: each scrape here comes
    after that."""
    time.sleep(limits.metrics_database_cache_seconds + 0.2)
    before = scrape(world.server.base_url)
    body = world.body(data.unknown_collector(), miles=3)  # waits for the collector to enrol
    assert world.partner.post_event(body).status_code == 202
    time.sleep(limits.metrics_database_cache_seconds + 0.2)
    after = scrape(world.server.base_url)
    assert moved(before, after, "rewardmiles_pending_lines") == 1
    lines = "rewardmiles_issuance_lines_total"
    assert moved(before, after, lines, endpoint="post_event", outcome="pending") == 1
    assert after[("rewardmiles_pending_oldest_age_seconds", frozenset())] >= (
        limits.metrics_database_cache_seconds
    )
