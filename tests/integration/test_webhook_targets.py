"""`webhook add` refuses internal targets, `webhook list` never shows credentials, and a delivery
to a name that now resolves inward is refused without connecting (against DNS rebinding).

The resolver is the outside world: it is replaced in process."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from rewardmiles import clock, secretbox
from rewardmiles.cli.main import app
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import Webhook, WebhookDelivery
from rewardmiles.vocabulary import EventType
from rewardmiles.webhooks import service as webhooks
from rewardmiles.webhooks import targets
from rewardmiles.webhooks.dispatch import Dispatcher
from tests.conftest import TEST_BOX, TEST_SECRET_KEY, DatabaseFactory
from tests.support import data
from tests.support.issue import call
from tests.support.receiver import receiver

PUBLIC = "93.184.216.34"


@pytest.fixture(scope="module")
def url_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[tuple[str, Database]]:
    url = database_factory.create(dialect)
    database = Database.from_url(url)
    yield url, database
    database.dispose()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host in answers:
            return answers[host]
        try:
            return [str(socket.inet_ntoa(socket.inet_aton(host)))]
        except OSError:
            raise targets.TargetError(f"{host} cannot be resolved") from None

    monkeypatch.setattr(targets, "resolve", resolve)
    return answers


def _cli(url: str, *args: str, allow_private: bool = False) -> Result:
    env = {"REWARDMILES_DATABASE_URL": url}
    if allow_private:
        env["REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS"] = "true"
    return CliRunner().invoke(app, list(args), env=env)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.8/hook", "private"),
        ("https://192.168.0.1/hook", "private"),
        ("https://localhost/hook", "loopback"),
        ("https://127.0.0.1:8443/hook", "loopback"),
        ("https://[fd00::1]/hook", "private"),
        ("https://[::ffff:169.254.169.254]/hook", "link-local"),
        ("https://internal.partner.example/hook", "resolves to 10.9.8.7"),
        ("https://partner:hunter2@hooks.partner.example/hook", "credentials"),
    ],
)
def test_webhook_add_refuses_internal_targets_and_credentials(
    url_db: tuple[str, Database], dns: dict[str, list[str]], target: str, why: str
) -> None:
    url, db = url_db
    dns["internal.partner.example"] = ["10.9.8.7"]
    dns["hooks.partner.example"] = [PUBLIC]
    sponsor = data.new_sponsor(db)
    result = _cli(url, "webhook", "add", target, "--sponsor", sponsor)
    assert result.exit_code == 1, result.output
    assert why in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output
    listed = _cli(url, "webhook", "list", "--sponsor", sponsor)
    assert listed.exit_code == 0
    assert listed.stdout.strip() == ""


def test_webhook_add_accepts_public_targets_and_private_ones_when_allowed(
    url_db: tuple[str, Database], dns: dict[str, list[str]]
) -> None:
    url, db = url_db
    dns["hooks.partner.example"] = [PUBLIC]
    sponsor = data.new_sponsor(db)
    assert (
        _cli(
            url, "webhook", "add", "https://hooks.partner.example/h", "--sponsor", sponsor
        ).exit_code
        == 0
    )
    allowed = _cli(
        url, "webhook", "add", "https://10.0.0.8/h", "--sponsor", sponsor, allow_private=True
    )
    assert allowed.exit_code == 0, allowed.output
    still = _cli(
        url, "webhook", "add", "https://u:p@10.0.0.8/h", "--sponsor", sponsor, allow_private=True
    )
    assert still.exit_code == 1
    assert "credentials" in still.output
    listed = _cli(url, "webhook", "list", "--sponsor", sponsor).stdout
    assert "https://hooks.partner.example/h" in listed
    assert "https://10.0.0.8/h" in listed


def test_webhook_list_never_prints_credentials(url_db: tuple[str, Database]) -> None:
    url, db = url_db
    sponsor = data.new_sponsor(db)
    with db.unit_of_work() as session:  # registered before credentials were refused
        session.execute(
            insert(Webhook).values(
                id=str(uuid.uuid4()),
                sponsor_code=sponsor,
                url="https://partner:hunter2@hooks.partner.example/h",
                secret="whsec_x",
                active=True,
                created_at=clock.utc_now(),
            )
        )
    listed = _cli(url, "webhook", "list", "--sponsor", sponsor)
    assert listed.exit_code == 0
    assert "hunter2" not in listed.stdout
    assert "partner:" not in listed.stdout
    assert "https://***@hooks.partner.example/h" in listed.stdout


def _queue_delivery(session: Session, hook_id: str, transaction_id: str, now: datetime) -> str:
    """A pending settled-event delivery to `hook_id`, due `now`; its id."""
    delivery_id = str(uuid.uuid4())
    session.execute(
        insert(WebhookDelivery).values(
            id=delivery_id,
            webhook_id=hook_id,
            event_type=EventType.TRANSACTION_SETTLED,
            transaction_id=transaction_id,
            payload_json="{}",
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return delivery_id


def test_delivery_to_a_name_now_resolving_to_a_forbidden_address_is_refused(
    url_db: tuple[str, Database], dns: dict[str, list[str]]
) -> None:
    url, db = url_db
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    target = f"https://rebind.partner.example:{port}/hook"
    sponsor = data.new_sponsor(db)
    outcome = call(db, Settings(), data.event_body(sponsor, data.new_collector(db)))
    assert outcome.transaction_id is not None
    dns["rebind.partner.example"] = [PUBLIC]  # what `webhook add` saw
    now = clock.utc_now()
    with db.unit_of_work() as session:
        hook_id, _ = webhooks.add_webhook(session, sponsor, target, now, TEST_BOX)
        session.flush()
        delivery_id = _queue_delivery(session, hook_id, str(outcome.transaction_id), now)
    dns["rebind.partner.example"] = ["127.0.0.1"]  # what the name says at delivery time

    settings = Settings(database_url=url, secret_key=TEST_SECRET_KEY)
    delivered, failed = Dispatcher(db, settings).run_once()

    assert (delivered, failed) == (0, 1)
    with db.reader() as session:
        (delivery,) = [d for d in webhooks.list_deliveries(session) if d.id == delivery_id]
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert delivery.last_error is not None
    assert "rebind.partner.example resolves to 127.0.0.1" in delivery.last_error
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected
    listener.close()


def _flooding_receiver(head: bytes, flood: bytes) -> tuple[int, list[int], threading.Event]:
    """A receiver on loopback that sends `head`, then `flood` over and over until hung up on;
    returns its port, the bytes it managed to send, and a stop event."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    sent = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(head)
                    while not stop.is_set() and sent[0] < 512 * 1024 * 1024:
                        conn.sendall(flood)
                        sent[0] += len(flood)
                except OSError:
                    pass  # hung up on
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], sent, stop


@pytest.mark.parametrize(
    ("head", "flood", "outcome"),
    [
        # An endless body: never read, the attempt succeeds on the status line.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n", b"x" * 65536, None),
        # Endless headers: the client's parser gives up at 100 KiB.
        (b"HTTP/1.1 200 OK\r\n", b"X-Flood: " + b"y" * 1000 + b"\r\n", "RemoteProtocolError"),
    ],
)
def test_a_flooding_receiver_costs_little_memory_and_time(
    url_db: tuple[str, Database], head: bytes, flood: bytes, outcome: str | None
) -> None:
    url, db = url_db
    port, sent, stop = _flooding_receiver(head, flood)
    sponsor = data.new_sponsor(db)
    outcome_txn = call(db, Settings(), data.event_body(sponsor, data.new_collector(db)))
    now = clock.utc_now()
    with db.unit_of_work() as session:
        hook_id, _ = webhooks.add_webhook(
            session,
            sponsor,
            f"http://127.0.0.1:{port}/h",
            now,
            TEST_BOX,
            allow_private_targets=True,
        )
        session.flush()
        delivery_id = _queue_delivery(session, hook_id, str(outcome_txn.transaction_id), now)
    settings = Settings(
        database_url=url, secret_key=TEST_SECRET_KEY, webhook_allow_private_targets=True
    )
    started = time.monotonic()
    Dispatcher(db, settings).run_once()
    took = time.monotonic() - started
    stop.set()
    with db.reader() as session:
        (delivery,) = [d for d in webhooks.list_deliveries(session) if d.id == delivery_id]
    if outcome is None:
        assert delivery.status == "delivered"
    else:
        assert delivery.last_error is not None
        assert outcome in delivery.last_error
    assert took < 3
    assert sent[0] < 64 * 1024 * 1024  # what the receiver got out before it was hung up on


def test_an_unexpected_error_is_a_failed_attempt_not_an_endless_re_lease(
    url_db: tuple[str, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, db = url_db
    sponsor = data.new_sponsor(db)
    outcome = call(db, Settings(), data.event_body(sponsor, data.new_collector(db)))
    now = clock.utc_now()
    with db.unit_of_work() as session:
        hook_id, _ = webhooks.add_webhook(
            session, sponsor, "http://127.0.0.1:9/h", now, TEST_BOX, allow_private_targets=True
        )
        session.flush()
        delivery_id = _queue_delivery(session, hook_id, str(outcome.transaction_id), now)

    def broken(url: str, *, allow_private: bool) -> targets.Pinned:
        raise UnicodeEncodeError("ascii", "ü", 0, 1, "not ascii")

    monkeypatch.setattr(targets, "pin", broken)
    Dispatcher(
        db,
        Settings(database_url=url, secret_key=TEST_SECRET_KEY, webhook_allow_private_targets=True),
    ).run_once()
    with db.reader() as session:
        (delivery,) = [d for d in webhooks.list_deliveries(session) if d.id == delivery_id]
    assert delivery.attempts == 1
    assert delivery.last_error is not None
    assert "UnicodeEncodeError" in delivery.last_error


OTHER_KEY = "dHdlbHZlLWtleS1iLWZvci10ZXN0cy0tLS0tLS0tLS0="  # 32 bytes, not the suite's key


def test_a_secret_that_does_not_decrypt_fails_its_own_delivery_only(
    url_db: tuple[str, Database],
) -> None:
    """A webhook whose secret was sealed under another key: its delivery is a failed attempt
    saying so, and the other due deliveries of the same pass go out."""
    url, db = url_db
    other_box = secretbox.SecretBox(secretbox.parse_key(OTHER_KEY, "OTHER_KEY"))
    with receiver() as hook:
        now = clock.utc_now()
        ids: dict[str, str] = {}
        for name, box in (("bad", other_box), ("good", TEST_BOX)):
            sponsor = data.new_sponsor(db)
            outcome = call(db, Settings(), data.event_body(sponsor, data.new_collector(db)))
            with db.unit_of_work() as session:
                hook_id, _ = webhooks.add_webhook(
                    session, sponsor, hook.url, now, box, allow_private_targets=True
                )
                session.flush()
                ids[name] = str(uuid.uuid4())
                session.execute(
                    insert(WebhookDelivery).values(
                        id=ids[name],
                        webhook_id=hook_id,
                        event_type=EventType.TRANSACTION_SETTLED,
                        transaction_id=str(outcome.transaction_id),
                        payload_json="{}",
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
        settings = Settings(
            database_url=url, secret_key=TEST_SECRET_KEY, webhook_allow_private_targets=True
        )
        Dispatcher(db, settings).run_once()
        assert hook.answered_ok == 1
        assert len(hook.received) == 1
    with db.reader() as session:
        deliveries = {d.id: d for d in webhooks.list_deliveries(session) if d.id in ids.values()}
    good, bad = deliveries[ids["good"]], deliveries[ids["bad"]]
    assert good.status == "delivered"
    assert bad.status == "pending"
    assert bad.attempts == 1
    assert bad.last_error is not None
    assert "secret does not decrypt under the configured key" in bad.last_error
    assert "REWARDMILES_SECRET_KEY" in bad.last_error
