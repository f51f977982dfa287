"""`rewardmiles` — serve, migrate and administer. Operators and scripts depend on these names."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.text import Text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from rewardmiles import clock, demo, limits, logs, secretbox
from rewardmiles.auth import keys as signing_keys
from rewardmiles.auth import service as auth
from rewardmiles.cli import readable
from rewardmiles.collectors import adjustments
from rewardmiles.collectors import service as collectors
from rewardmiles.collectors.repository import StoredAdjustment
from rewardmiles.config import ENV_PREFIX, Settings
from rewardmiles.db import migrate
from rewardmiles.db.engine import Database, DatabaseUrlError, shown_url
from rewardmiles.db.models import Sponsor
from rewardmiles.errors import PROBLEM_CODES, OperatorError
from rewardmiles.ledger import history as ledger_history
from rewardmiles.ledger.verify import verify
from rewardmiles.offers import service as offers
from rewardmiles.operators import passwords
from rewardmiles.operators import service as operators
from rewardmiles.reports import audit, batches, reconciliation
from rewardmiles.settlement import service as settlement
from rewardmiles.settlement.worker import Worker
from rewardmiles.sponsors import service as sponsors
from rewardmiles.support import service as support
from rewardmiles.vocabulary import (
    AdjustmentReason,
    CollectorStatus,
    DeliveryStatus,
    LineStatus,
    OperatorRole,
    OperatorStatus,
    PendingReason,
)
from rewardmiles.webhooks import service as webhooks

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=readable.Group)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
sponsor_app = typer.Typer(no_args_is_help=True, help="Sponsors (partner businesses).")
partner_app = typer.Typer(no_args_is_help=True, help="Partner API clients (credentials).")
location_app = typer.Typer(no_args_is_help=True, help="Sponsor locations.")
collector_app = typer.Typer(no_args_is_help=True, help="Collectors (program members).")
ledger_app = typer.Typer(no_args_is_help=True, help="The ledger.")
keys_app = typer.Typer(no_args_is_help=True, help="Token signing keys.")
pending_app = typer.Typer(no_args_is_help=True, help="Pending issuance lines (operator review).")
webhook_app = typer.Typer(no_args_is_help=True, help="Sponsor webhooks for settlement events.")
offer_app = typer.Typer(no_args_is_help=True, help="Offers (program-calculated rules).")
report_app = typer.Typer(no_args_is_help=True, help="Reports per sponsor and Transaction Day.")
batch_app = typer.Typer(no_args_is_help=True, help="Partner transaction logs (reconciliation).")
secrets_app = typer.Typer(
    no_args_is_help=True, help="The key-encryption key of stored secrets (signing keys, webhooks)."
)
operator_app = typer.Typer(
    no_args_is_help=True, help="Operators of the support desk (admin API and console accounts)."
)
token_app = typer.Typer(no_args_is_help=True, help="Admin API bearer tokens (automation).")
request_app = typer.Typer(
    no_args_is_help=True, help="Failed partner requests, by the requestId of their problem."
)
transaction_app = typer.Typer(no_args_is_help=True, help="Transactions as stored.")
SUBCOMMANDS = (
    (db_app, "db"),
    (sponsor_app, "sponsor"),
    (partner_app, "partner"),
    (location_app, "location"),
    (collector_app, "collector"),
    (ledger_app, "ledger"),
    (keys_app, "keys"),
    (pending_app, "pending"),
    (webhook_app, "webhook"),
    (offer_app, "offer"),
    (report_app, "report"),
    (batch_app, "batch"),
    (secrets_app, "secrets"),
    (operator_app, "operator"),
    (request_app, "request"),
    (transaction_app, "transaction"),
)
for sub, name in SUBCOMMANDS:
    app.add_typer(sub, name=name, cls=readable.Group)
operator_app.add_typer(token_app, name="token", cls=readable.Group)


def command_groups() -> list[tuple[tuple[str, ...], typer.Typer]]:
    """Every group of commands, by the words that name it (`()` for the top level)."""
    return [
        ((), app),
        *(((name,), sub) for sub, name in SUBCOMMANDS),
        (("operator", "token"), token_app),
    ]


# Operator-supplied values are printed as they are: no Rich markup, no highlighting.
out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


# Every date an operator gives is a day in the program time zone; --help says so.
PROGRAM_DAY = "in the program time zone (REWARDMILES_PROGRAM_TIME_ZONE, default America/Toronto)"
DAY_HELP = f"Transaction Day, YYYY-MM-DD, {PROGRAM_DAY}. Default: the current one."


def _settings() -> Settings:
    settings = Settings.from_env()
    clock.freeze_for_tests(settings.frozen_clock)  # a test setting (REWARDMILES_TEST_CLOCK)
    return settings


def _database(settings: Settings) -> Database:
    try:
        return Database.from_url(settings.database_url, pool_size=2)
    except DatabaseUrlError as exc:
        raise _fail(f"REWARDMILES_DATABASE_URL: {exc}", 2) from exc


def _ready_database() -> tuple[Settings, Database]:
    """Open the database, migrating it first when it is behind (every command needs the schema)."""
    settings = _settings()
    db = _database(settings)
    with _opening(settings, db):
        if not migrate.is_current(db.engine):
            migrate.upgrade(db.engine)
    return settings, db


@contextmanager
def _opening(settings: Settings, db: Database) -> Iterator[None]:
    """A database that cannot be opened (no server answers, a wrong name, a missing folder) is
    one line naming it, password masked, and exit status 2."""
    try:
        yield
    except OperationalError as exc:
        db.dispose()
        database = shown_url(settings.database_url)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise _fail(f"cannot open the database {database}: {reason}", 2) from exc


def _secret_box(settings: Settings, db: Database, *, check: bool = False) -> secretbox.SecretBox:
    """The key-encryption key; with `check`, every stored secret is decrypted first (and clear
    ones from older versions encrypted), so a wrong key stops here with one line, exit status 2."""
    try:
        box = secretbox.for_settings(settings)
        if check:
            secretbox.check_and_seal(db, box)
    except secretbox.SecretKeyError as exc:
        db.dispose()
        raise _fail(str(exc), 2) from exc
    return box


@contextmanager
def _operation(db: Database, *, usage: tuple[type[OperatorError], ...] = ()) -> Iterator[Session]:
    """One operator action in one unit of work; a refusal exits with its message (status 1, or 2
    for the `usage` errors: a bad option value)."""
    try:
        with db.unit_of_work() as session:
            yield session
    except OperatorError as exc:
        raise _fail(str(exc), 2 if isinstance(exc, usage) else 1) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(code)


# --------------------------------------------------------------------------- serve


# uvicorn as `serve` runs it: the service writes its own access log (one JSON line per request),
# and names no server software in its answers. Its HTTP/1.1 layer is uvicorn's httptools protocol
# with bounded heads, head and idle deadlines and a connection cap (`rewardmiles.http.connections`,
# docs/adr/0002-connection-limits.md), named by import path so that the API processes of
# `--workers N` load the same one.
UVICORN_OPTIONS: dict[str, Any] = {
    "http": "rewardmiles.http.connections:GuardedHttpToolsProtocol",
    "log_level": "warning",
    "access_log": False,
    "server_header": False,
}


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    demo_data: Annotated[
        bool, typer.Option("--demo", help="Seed demo data and print demo credentials.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="API processes (PostgreSQL only).")] = 1,
    settle: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Run a settlement worker in each API process."),
    ] = True,
) -> None:
    """Migrate if needed, then serve the partner API (with an embedded settlement worker)."""
    import uvicorn

    from rewardmiles.app import create_app

    if not settle:
        # The API processes of --workers N read their settings from the environment.
        os.environ[ENV_PREFIX + "EMBEDDED_WORKER"] = "false"
    settings, db = _ready_database()
    if workers > 1 and db.single_writer:
        db.dispose()
        raise _fail("--workers > 1 needs PostgreSQL (SQLite has a single writer)", 2)
    _secret_box(settings, db, check=True)
    err.print(_serving_line(settings, host, port, workers))
    key_file = secretbox.development_key_file(settings.database_url)
    if not (settings.secret_key or settings.secret_key_file) and key_file is not None:
        err.print(
            f"development mode: stored secrets are encrypted with the key in {key_file}; "
            "set REWARDMILES_SECRET_KEY (or _FILE) for production"
        )
    if demo_data:
        with db.unit_of_work() as session:
            data = demo.seed(
                session,
                clock.utc_now(),
                secret_hash_cost=settings.secret_hash_cost,
                password_cost=passwords.HashCost.of(settings),
            )
        _print_demo(data, host, port)
    db.dispose()
    with _metrics_directory(needed=workers > 1):
        if workers > 1:
            uvicorn.run(
                "rewardmiles.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **UVICORN_OPTIONS,
            )
        else:
            uvicorn.run(create_app(settings), host=host, port=port, **UVICORN_OPTIONS)


# prometheus-client's multiprocess mode (docs/operations.md, Metrics): the directory where the API
# processes of `--workers N` write their metrics, each scrape adding them up.
METRICS_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def _metrics_directory(*, needed: bool) -> Iterator[Path | None]:
    """`PROMETHEUS_MULTIPROC_DIR` for the API processes, set before they start: the one given,
    emptied of an earlier run's files, or (when `needed`: several processes) a fresh temporary
    directory, removed at the end. One process without one keeps its metrics in memory."""
    given = os.environ.get(METRICS_DIRECTORY_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        mine = f"_{os.getpid()}.db"  # this process's own (`--workers 1`), opened at import
        for stale in directory.glob("*.db"):
            if not stale.name.endswith(mine):
                stale.unlink()
        yield directory
        return
    if not needed:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="rewardmiles-metrics-"))
    os.environ[METRICS_DIRECTORY_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(METRICS_DIRECTORY_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="One settlement pass, then exit.")] = False,
) -> None:
    """Settle pending lines until stopped (SIGINT/SIGTERM); many may run against one PostgreSQL."""
    stop_requested: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # before anything slow, so no signal is missed
        signal.signal(sig, lambda number, _frame: stop_requested.append(number))
    settings, db = _ready_database()
    _secret_box(settings, db, check=True)
    logs.configure(settings.log_level, json=settings.log_json)
    runner = Worker(db, settings, poll_seconds=settings.worker_poll_seconds)
    if once:
        report = runner.run_once()
        out.print(
            f"posted {report.posted}; rejected {sum(report.rejected.values())}; "
            f"still pending {report.still_pending}"
        )
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: runner.stop(timeout=0))
    if stop_requested:
        return
    runner.run_forever()
    db.dispose()


def _serving_line(settings: Settings, host: str, port: int, workers: int) -> str:
    """One line for the person who started `serve`: where, on what, with or without a worker."""
    database = shown_url(settings.database_url)
    processes = f" ({workers} API processes)" if workers > 1 else ""
    if not settings.embedded_worker:
        worker = "settlement worker off (run `rewardmiles worker`)"
    else:
        worker = "settlement worker on" + (" in each API process" if workers > 1 else "")
    return (
        f"rewardmiles listening on http://{host}:{port}{processes}; database {database}; {worker}"
    )


def _print_demo(data: demo.DemoData, host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    err.print(
        f"""rewardmiles demo on {base}  (docs: {base}/docs)
  sponsor {data.sponsor_code}, offer STANDARD, location {demo.LOCATION}
  collectors: {", ".join(f"{n} {s}" for n, s in data.collectors.items())}
  partner client_id     {data.client_id}
  partner client_secret {data.client_secret}   (public demo credentials)
  console  {base}/console  sign in as {data.operator_email} / {data.operator_password}

  TOKEN=$(curl -s {base}/oauth/token -d grant_type=client_credentials \\
    -d client_id={data.client_id} -d client_secret={data.client_secret} | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s {base}/checkout/issuance/post/event -H "Authorization: Bearer $TOKEN" \\
    -H 'Content-Type: application/json' -H "Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')" \\
    -d '{{"clientTransactionId": "demo-'$(date +%s)'", "collectorNumber": "80085102028", "sponsorCode": "{data.sponsor_code}",
         "transactionDateTime": "'$(date -u +%Y-%m-%dT%H:%M:%SZ)'",
         "issuances": [{{"issuanceOfferCode": "STANDARD", "locationCode": "{demo.LOCATION}", "milesAmount": 8}}]}}'
""",
        highlight=False,
        soft_wrap=True,
    )


# --------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = _settings()
    db = _database(settings)
    with _opening(settings, db):
        before = migrate.current_revision(db.engine)
        migrate.upgrade(db.engine)
        after = migrate.current_revision(db.engine)
    out.print(f"database at revision {after}" + ("" if before != after else " (already current)"))


# --------------------------------------------------------------------------- sponsors etc.


@sponsor_app.command("add")
def sponsor_add(
    code: Annotated[str, typer.Argument(help="2–10 uppercase letters or digits.")],
    name: Annotated[str, typer.Option(help="Display name.")],
) -> None:
    """Add an active sponsor (with its STANDARD offer)."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        added = sponsors.sponsor_state(sponsors.add_sponsor(session, code, name, now))
        operators.audit(session, _actor(), "sponsor.add", "sponsor", code, now, after=added)
    out.print(f"sponsor {code} added (offer STANDARD)")


@sponsor_app.command("set")
def sponsor_set(
    code: Annotated[str, typer.Argument(help="Sponsor code.")],
    review_threshold: Annotated[
        int | None,
        typer.Option(
            "--review-threshold",
            min=1,
            help="Lines above this many miles wait for an operator's approval.",
        ),
    ] = None,
    no_review: Annotated[
        bool, typer.Option("--no-review", help="Remove the review threshold.")
    ] = False,
    active: Annotated[
        bool | None, typer.Option("--active/--inactive", help="Accept requests or not.")
    ] = None,
) -> None:
    """Change a sponsor's settings."""
    if review_threshold is not None and no_review:
        raise _fail("give --review-threshold or --no-review, not both", 2)
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        before = sponsors.sponsor_state(sponsors.sponsor_to_change(session, code))
        sponsor = sponsors.set_sponsor(
            session,
            code,
            review_threshold_miles=None if no_review else review_threshold,
            clear_review_threshold=no_review,
            active=active,
        )
        operators.audit(
            session,
            _actor(),
            "sponsor.change",
            "sponsor",
            code,
            now,
            before=before,
            after=sponsors.sponsor_state(sponsor),
        )
    threshold = sponsor.review_threshold_miles
    out.print(
        f"sponsor {code}: {'active' if sponsor.active else 'inactive'}, review threshold "
        + (f"{threshold} miles" if threshold is not None else "none")
    )


@partner_app.command("create")
def partner_create(
    sponsor: Annotated[list[str], typer.Option("--sponsor", help="Sponsor code (repeatable).")],
    name: Annotated[
        str | None, typer.Option("--name", help="A name for the operators (not shown to anyone).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the credentials as JSON.")
    ] = False,
) -> None:
    """Create a partner client; its secret is shown once, here, and stored only hashed."""
    settings, db = _ready_database()
    if name is not None and not 1 <= len(name) <= limits.partner_client_name_chars_max:
        raise _fail(f"--name: 1 to {limits.partner_client_name_chars_max} characters", 2)
    secret = auth.new_secret(secret_hash_cost=settings.secret_hash_cost)  # slow: before the write
    with _operation(db) as session:
        client = auth.create_client(
            session,
            sponsor,
            clock.utc_now(),
            secret_hash_cost=settings.secret_hash_cost,
            name=name,
            secret=secret,
            actor=_actor(),
        )
    if as_json:
        sys.stdout.write(
            json.dumps({"client_id": client.client_id, "client_secret": client.client_secret})
            + "\n"
        )
        return
    out.print(f"client_id     {client.client_id}")
    out.print(f"client_secret {client.client_secret}")
    out.print(f"sponsors      {', '.join(client.sponsor_codes)}")
    out.print("The secret is not stored in clear and cannot be shown again.", style="yellow")


def _partner_json(row: Any, now: Any) -> dict[str, Any]:
    grace = auth.previous_secret_in_grace(row, now)
    return {
        "clientId": row.client_id,
        "name": row.name,
        "sponsors": row.sponsor_codes,
        "status": auth.status_of(row).value,
        "createdAt": row.created_at.isoformat(),
        "lastTokenIssuedAt": _iso(row.last_token_at),
        "rotatedAt": _iso(row.rotated_at),
        "revokedAt": _iso(row.revoked_at),
        "previousSecretInGrace": grace,
        "previousSecretValidUntil": _iso(row.previous_secret_until) if grace else None,
    }


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


@partner_app.command("list")
def partner_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Every partner client, revoked ones too, by client id (never a secret)."""
    _, db = _ready_database()
    now = clock.utc_now()
    rows = []
    after: str | None = None
    with db.reader() as session:
        while page := auth.list_clients(session, after, limits.admin_page_items_max):
            rows.extend(page)
            after = page[-1].client_id
    if as_json:
        sys.stdout.write(json.dumps([_partner_json(r, now) for r in rows]) + "\n")
        return
    for r in rows:
        grace = (
            f"  previous secret until {_when(r.previous_secret_until)}"
            if auth.previous_secret_in_grace(r, now)
            else ""
        )
        out.print(
            f"{r.client_id}  {r.name or '-'}  {','.join(r.sponsor_codes)}  "
            f"{auth.status_of(r).value}  created {_when(r.created_at)}  "
            f"last token {_when(r.last_token_at)}{grace}"
        )
    out.print(f"{len(rows)} client(s)")


REASON_HELP = "Why, for the operator audit log."


@partner_app.command("rotate")
def partner_rotate(
    client_id: Annotated[str, typer.Argument(help="The client's id (rmc_…).")],
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP)] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the new credentials as JSON.")
    ] = False,
) -> None:
    """Give a client a new secret (shown once, here); the old one keeps signing in for
    REWARDMILES_PARTNER_SECRET_GRACE_SECONDS (24 h by default), then stops."""
    settings, db = _ready_database()
    secret = auth.new_secret(secret_hash_cost=settings.secret_hash_cost)
    grace = timedelta(seconds=settings.partner_secret_grace_seconds)
    with _operation(db) as session:
        rotated = auth.rotate_client(
            session, client_id, secret, clock.utc_now(), grace, _actor(), reason=reason
        )
    until = rotated.previous_secret_until.isoformat()
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "client_id": rotated.client_id,
                    "client_secret": rotated.client_secret,
                    "previous_secret_valid_until": until,
                }
            )
            + "\n"
        )
        return
    out.print(f"client_id     {rotated.client_id}")
    out.print(f"client_secret {rotated.client_secret}")
    out.print(f"the previous secret signs in until {until}")
    out.print("The secret is not stored in clear and cannot be shown again.", style="yellow")


@partner_app.command("revoke")
def partner_revoke(
    client_id: Annotated[str, typer.Argument(help="The client's id (rmc_…).")],
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP)] = None,
) -> None:
    """Revoke a client (final): its secrets stop signing in now, and every API process refuses
    its tokens (401 TOKEN_REVOKED) within REWARDMILES_REVOCATION_REFRESH_SECONDS (2 s) or so."""
    _, db = _ready_database()
    with _operation(db) as session:
        row = auth.revoke_client(session, client_id, clock.utc_now(), _actor(), reason=reason)
    out.print(f"partner client {row.client_id} revoked at {_when(row.revoked_at)}")


@location_app.command("add")
def location_add(
    code: Annotated[str, typer.Argument(help="1–10 characters; leading zeros are kept.")],
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
) -> None:
    """Register a location of a sponsor (from then on, its lines must name a registered one)."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        sponsors.add_location(session, sponsor, code, now)
        operators.audit(
            session,
            _actor(),
            "location.add",
            "location",
            f"{sponsor}/{code}",
            now,
            after={"sponsorCode": sponsor, "code": code},
        )
    out.print(f"location {code} added for sponsor {sponsor}")


@collector_app.command("add")
def collector_add(
    number: Annotated[str, typer.Argument(help="11 digits.")],
    status: Annotated[
        CollectorStatus, typer.Option(help="Account status.")
    ] = CollectorStatus.ACTIVE,
) -> None:
    """Enrol one collector."""
    _, db = _ready_database()
    with _operation(db) as session:
        collectors.add_collector(session, number, status.value, clock.utc_now())
    out.print(f"collector {number} added ({status.value})")


@collector_app.command("set-status")
def collector_set_status(
    number: Annotated[str, typer.Argument(help="11 digits.")],
    status: Annotated[CollectorStatus, typer.Argument(help="New status.")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the operator audit log).")] = None,
) -> None:
    """Change a collector's status (audited as cli@HOST); pending lines settle once the worker
    sees it."""
    _, db = _ready_database()
    with _operation(db) as session:
        before = collectors.change_status(
            session, number, status.value, note, _actor(), clock.utc_now()
        )
    out.print(f"collector {number}: {before} -> {status.value}")


@collector_app.command("adjust")
def collector_adjust(
    number: Annotated[str, typer.Argument(help="11 digits.")],
    miles: Annotated[
        int, typer.Option("--miles", help="Signed miles: positive credits, negative debits.")
    ],
    reason: Annotated[AdjustmentReason, typer.Option("--reason", help="Why, by kind.")],
    note: Annotated[str, typer.Option("--note", help="Why, in words (1–500 characters).")],
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Run again with the same key and values: the adjustment is made once. "
            "Default: a new key (always a new adjustment).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Credit or debit a collector's miles against the program's ADJUSTMENTS account (audited as
    cli@HOST; the CLI acts with the admin role, so the agents' limit does not apply)."""
    settings, db = _ready_database()
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    wanted = adjustments.AdjustmentRequest(number, miles, reason.value, note, key)
    with _operation(db) as session:
        outcome = adjustments.adjust(
            session,
            wanted,
            actor=_actor(),
            role=OperatorRole.ADMIN,
            settings=settings,
            now=clock.utc_now(),
        )
    made = outcome.adjustment
    if as_json:
        sys.stdout.write(json.dumps(_adjustment_json(made, settings)) + "\n")
        return
    replay = " (replayed: made earlier with this key)" if outcome.replayed else ""
    out.print(
        f"adjustment {made.id}: collector {made.collector_number} {made.miles:+d} miles "
        f"({made.reason}), balance {made.balance_after}{replay}"
    )


def _adjustment_json(made: StoredAdjustment, settings: Settings) -> dict[str, Any]:
    return {
        "id": made.id,
        "collectorNumber": made.collector_number,
        "miles": made.miles,
        "reason": made.reason,
        "note": made.note,
        "operator": made.operator,
        "createdAt": clock.program_timestamp(made.created_at, settings.program_time_zone),
        "balanceAfter": made.balance_after,
    }


@collector_app.command("history")
def collector_history(
    number: Annotated[str, typer.Argument(help="11 digits.")],
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="Newest entries shown.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """A collector's ledger entries, newest first, with the balance after each (one snapshot)."""
    settings, db = _ready_database()
    with db.snapshot_reader() as session:
        found = ledger_history.page(session, number, limit, None)
    if found is None:
        raise _fail(f"collector {number} not found")
    zone = settings.program_time_zone
    rows = [
        {
            "time": clock.program_timestamp(e.posted_at, zone),
            "transactionId": e.reference_id,
            "partnerTransactionId": e.partner_transaction_id,
            "sponsorCode": e.sponsor_code,
            "offerCode": e.offer_code,
            "endpoint": e.endpoint,
            "miles": e.miles,
            "balanceAfter": e.balance_after,
        }
        for e in found.entries
    ]
    if as_json:
        sys.stdout.write(json.dumps({"items": rows, "more": found.next_position is not None}))
        sys.stdout.write("\n")
        return
    for r in rows:
        out.print(
            f"{r['time']}  {r['endpoint']:<13} {r['miles']:>+9d}  balance {r['balanceAfter']:>9d}"
            f"  {r['transactionId']}  {r['partnerTransactionId'] or '-'}  "
            f"{r['sponsorCode'] or '-'}  {r['offerCode'] or '-'}"
        )
    if not rows:
        err.print(f"collector {number} has no ledger entries")
    elif found.next_position is not None:
        err.print(f"(newest {len(rows)} shown; --limit for more)")


@collector_app.command("show")
def collector_show(
    number: Annotated[str, typer.Argument(help="11 digits.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Show a collector's status and balance (in miles)."""
    _, db = _ready_database()
    with db.reader() as session:
        view = collectors.get_collector(session, number)
    if view is None:
        raise _fail(f"collector {number} not found")
    if as_json:
        payload = {
            "collectorNumber": view.number,
            "status": view.status,
            "balance": view.balance_miles,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    out.print(f"collector {view.number}  status {view.status}  balance {view.balance_miles} miles")


@collector_app.command("import")
def collector_import(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file.")
    ],
) -> None:
    """Bulk-enrol collectors from CSV (`collectorNumber[,status]`, optional header), streaming."""
    _, db = _ready_database()
    size = file.stat().st_size
    with (
        file.open("rb") as raw,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TimeElapsedColumn(),
            console=err,
        ) as progress,
    ):
        task = progress.add_task("import", total=size, rows=0)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        report = collectors.ImportReport()
        now = clock.utc_now()
        for batch in collectors.import_batches(text, report):
            with _operation(db) as session:  # each batch commits on its own
                collectors.enrol_batch(session, batch, now, report)
            progress.update(task, completed=raw.tell(), rows=report.rows_read)
        progress.update(task, completed=size, rows=report.rows_read)
    out.print(
        f"rows read {report.rows_read:,}; enrolled {report.inserted:,}; already enrolled "
        f"(unchanged) {report.already_enrolled:,}; invalid {report.error_count:,}"
    )
    for line in report.errors:
        err.print(f"  {line}")
    if report.error_count > len(report.errors):
        err.print(f"  … and {report.error_count - len(report.errors)} more")
    if report.error_count:
        raise typer.Exit(1)


@ledger_app.command("verify")
def ledger_verify() -> None:
    """Check the ledger's invariants over the whole database (exit 1 when broken)."""
    settings, db = _ready_database()
    with db.snapshot_reader() as session:  # one snapshot: safe while the service writes
        report = verify(session, settings)
    out.print(
        f"entries {report.entries:,}; collectors {report.collectors:,}; entries sum {report.total_miles}"
    )
    if report.ok:
        out.print("ledger OK: every pair balances and every balance equals its entries")
        return
    for problem in report.problems:
        err.print(Text.assemble(("✗ ", "red"), problem))
    raise typer.Exit(1)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a signing key; every API process signs with it within a minute."""
    settings, db = _ready_database()
    box = _secret_box(settings, db, check=True)  # a key no server has would break every refresh
    with db.unit_of_work() as session:
        kid = signing_keys.generate_key(session, clock.utc_now(), box)
    out.print(f"new signing key {kid}; retire older keys after one token lifetime")


@keys_app.command("list")
def keys_list() -> None:
    """List signing keys (newest last)."""
    _, db = _ready_database()
    with db.reader() as session:
        rows = signing_keys.list_keys(session)
    for kid, created_at, retired_at in rows:
        state = f"retired {retired_at.isoformat()}" if retired_at else "active"
        out.print(f"{kid}  created {created_at.isoformat()}  {state}")


@keys_app.command("retire")
def keys_retire(kid: Annotated[str, typer.Argument(help="Key id (kid).")]) -> None:
    """Stop publishing a key; tokens it signed stop verifying."""
    _, db = _ready_database()
    with _operation(db) as session:
        signing_keys.retire_key(session, kid, clock.utc_now())
    out.print(f"signing key {kid} retired")


@pending_app.command("list")
def pending_list(
    sponsor: Annotated[str | None, typer.Option("--sponsor", help="Only this sponsor.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Pending lines, oldest first (at most 1,000)."""
    _, db = _ready_database()
    with db.reader() as session:
        rows = settlement.list_pending(session, sponsor)
    if as_json:
        payload = [
            {
                "lineId": r.line_id,
                "transactionId": r.transaction_id,
                "lineNo": r.line_no,
                "sponsorCode": r.sponsor_code,
                "collectorNumber": r.collector_number,
                "endpoint": r.endpoint,
                "direction": r.direction,
                "issuanceOfferCode": r.offer_code,
                "milesAmount": r.miles,
                "reason": r.reason,
                "processedAt": r.processed_at.isoformat(),
            }
            for r in rows
        ]
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    for r in rows:
        out.print(
            f"{r.line_id}  {r.sponsor_code}  {r.collector_number or '-'}  {r.direction} "
            f"{r.miles} {r.offer_code}  {r.reason}  {r.processed_at.isoformat()}"
        )
    out.print(f"{len(rows)} pending line(s)")


@pending_app.command("approve")
def pending_approve(line_id: Annotated[str, typer.Argument(help="TRANSACTION_ID:LINE_NO")]) -> None:
    """Approve a line held for review; it posts as soon as its collector allows."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        settlement.approve(session, line_id)
        operators.audit(
            session,
            _actor(),
            "pending.approve",
            support.ENTITY_LINE,
            line_id,
            now,
            before={"status": LineStatus.PENDING, "pendingReason": PendingReason.REVIEW},
            after={"status": LineStatus.PENDING, "pendingReason": PendingReason.APPROVED},
        )
    out.print(f"line {line_id} approved")


@pending_app.command("reject")
def pending_reject(
    line_id: Annotated[str, typer.Argument(help="TRANSACTION_ID:LINE_NO")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            metavar="CODE",
            help="An error code of the catalogue (GET /problems lists them).",
        ),
    ] = settlement.REVIEW_REJECTED,
) -> None:
    """Reject a line held for review; the partner sees the reason as the line's errorCode."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db, usage=(settlement.UnknownReasonError,)) as session:
        settlement.reject(session, line_id, reason, now, known_codes=list(PROBLEM_CODES))
        operators.audit(
            session,
            _actor(),
            "pending.reject",
            support.ENTITY_LINE,
            line_id,
            now,
            before={"status": LineStatus.PENDING, "pendingReason": PendingReason.REVIEW},
            after={"status": LineStatus.REJECTED, "errorCode": reason},
        )
    out.print(f"line {line_id} rejected ({reason})")


@webhook_app.command("add")
def webhook_add(
    url: Annotated[
        str,
        typer.Argument(
            help="HTTPS URL on a public address, without credentials (internal addresses need "
            "REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS=true; http only for loopback ones)."
        ),
    ],
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
) -> None:
    """Register an endpoint; its signing secret is printed once."""
    settings, db = _ready_database()
    box = _secret_box(settings, db, check=True)  # the secret must be under the servers' key
    now = clock.utc_now()
    with _operation(db) as session:
        webhook_id, secret = webhooks.add_webhook(
            session,
            sponsor,
            url,
            now,
            box,
            allow_private_targets=settings.webhook_allow_private_targets,
        )
        operators.audit(
            session,
            _actor(),
            "webhook.add",
            "webhook",
            webhook_id,
            now,
            after={"sponsorCode": sponsor, "url": url, "active": True},
        )
    out.print(f"webhook {webhook_id} for sponsor {sponsor}: {url}")
    out.print(f"signing secret {secret}")
    out.print("The secret is shown only now; verify Rewardmiles-Signature with it.")


@secrets_app.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new key-encryption key (32 random bytes, base64) for REWARDMILES_SECRET_KEY."""
    out.print(secretbox.generate_key())


@secrets_app.command("rekey")
def secrets_rekey() -> None:
    """Re-encrypt every stored secret under REWARDMILES_SECRET_KEY (reading older ones with
    REWARDMILES_SECRET_KEY_PREVIOUS); afterwards the previous keys can be dropped."""
    settings, db = _ready_database()
    box = _secret_box(settings, db)
    try:
        report = secretbox.check_and_seal(db, box, rekey=True)
    except secretbox.SecretKeyError as exc:
        raise _fail(str(exc), 2) from exc
    finally:
        db.dispose()
    keys = "key" if report.signing_keys == 1 else "keys"
    hooks = "secret" if report.webhook_secrets == 1 else "secrets"
    out.print(
        f"re-encrypted {report.signing_keys} signing {keys}, {report.webhook_secrets} webhook "
        f"{hooks} under key id {box.key_id}; every stored secret is now under it"
    )


@webhook_app.command("list")
def webhook_list(
    sponsor: Annotated[str | None, typer.Option("--sponsor", help="Only this sponsor.")] = None,
) -> None:
    """Registered webhooks."""
    _, db = _ready_database()
    with db.reader() as session:
        rows = webhooks.list_webhooks(session, sponsor)
    for w in rows:
        out.print(f"{w.id}  {w.sponsor_code}  {'active' if w.active else 'removed'}  {w.url}")


@webhook_app.command("remove")
def webhook_remove(webhook_id: Annotated[str, typer.Argument(help="Webhook id.")]) -> None:
    """Stop sending events to an endpoint (its undelivered events are dropped as failed)."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        webhooks.remove_webhook(session, webhook_id)
        operators.audit(
            session,
            _actor(),
            "webhook.remove",
            "webhook",
            webhook_id,
            now,
            before={"active": True},
            after={"active": False},
        )
    out.print(f"webhook {webhook_id} removed")


@webhook_app.command("retry")
def webhook_retry(
    delivery_id: Annotated[str, typer.Argument(help="A failed delivery's id.")],
) -> None:
    """Send a failed delivery again from now, its attempts counted afresh."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        status, attempts = webhooks.retry_delivery(session, delivery_id, now)
        operators.audit(
            session,
            _actor(),
            "delivery.retry",
            "webhook_delivery",
            delivery_id,
            now,
            before={"status": status, "attempts": attempts},
            after={"status": DeliveryStatus.PENDING, "attempts": 0},
        )
    out.print(f"delivery {delivery_id} will be sent again ({status} after {attempts} attempts)")


@webhook_app.command("deliveries")
def webhook_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Recent deliveries, newest first (at most 200)."""
    _, db = _ready_database()
    with db.reader() as session:
        rows = webhooks.list_deliveries(session, status)
    if as_json:
        payload = [
            {
                "id": d.id,
                "webhookId": d.webhook_id,
                "transactionId": d.transaction_id,
                "status": d.status,
                "attempts": d.attempts,
                "nextAttemptAt": d.next_attempt_at.isoformat(),
                "lastError": d.last_error,
            }
            for d in rows
        ]
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    for d in rows:
        out.print(
            f"{d.id}  {d.status}  attempts {d.attempts}  transaction {d.transaction_id}  "
            f"{d.last_error or ''}"
        )


@offer_app.command("add")
def offer_add(
    code: Annotated[str, typer.Argument(help="1–8 uppercase letters or digits.")],
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
    rule: Annotated[
        str | None,
        typer.Option(help='Rule as JSON, e.g. \'{"type": "base", "miles": 1, "perDollars": 20}\'.'),
    ] = None,
    description: Annotated[str, typer.Option(help="Shown to partners as offerDescription.")] = "",
    valid_from: Annotated[
        str | None,
        typer.Option(metavar="YYYY-MM-DD", help=f"First valid day, {PROGRAM_DAY}."),
    ] = None,
    valid_to: Annotated[
        str | None,
        typer.Option(metavar="YYYY-MM-DD", help=f"Last valid day (inclusive), {PROGRAM_DAY}."),
    ] = None,
    location: Annotated[
        list[str] | None, typer.Option("--location", help="Applies only here (repeatable).")
    ] = None,
    offer_id: Annotated[str | None, typer.Option(help="Partner-facing offerId.")] = None,
) -> None:
    """Add an offer; with a rule it takes part in CALCULATE / ISSUE / RETURN."""
    try:
        parsed_rule = json.loads(rule) if rule is not None else None
        first = date.fromisoformat(valid_from) if valid_from else None
        last = date.fromisoformat(valid_to) if valid_to else None
    except ValueError as exc:
        raise _fail(f"invalid --rule or date: {exc}", 2) from exc
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        offers.put_offer(
            session,
            sponsor,
            code,
            description=description,
            rule=parsed_rule,
            valid_from=first,
            valid_to=last,
            locations=location or None,
            offer_id=offer_id,
            now=now,
            replace=False,
        )
        session.flush()
        added = offers.offer(session, sponsor, code)
        operators.audit(
            session,
            _actor(),
            "offer.put",
            "offer",
            f"{sponsor}/{code}",
            now,
            after=None if added is None else added.as_dict(),
        )
    out.print(f"offer {code} added for sponsor {sponsor}")


@offer_app.command("list")
def offer_list(
    sponsor: Annotated[str | None, typer.Option("--sponsor", help="Only this sponsor.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Offers with their rules."""
    _, db = _ready_database()
    with db.reader() as session:
        rows = offers.list_offers(session, sponsor)
    if as_json:
        sys.stdout.write(json.dumps([o.as_dict() for o in rows]) + "\n")
        return
    for o in rows:
        window = f"{o.valid_from or '…'} to {o.valid_to or '…'}"
        out.print(
            f"{o.sponsor_code}  {o.code}  {'active' if o.active else 'disabled'}  {window}  "
            f"{json.dumps(o.rule) if o.rule else '(partner-calculated only)'}"
        )


@offer_app.command("disable")
def offer_disable(
    code: Annotated[str, typer.Argument(help="Offer code.")],
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
) -> None:
    """Disable an offer: new credits get OFFER_INACTIVE; its miles can still be taken back.

    ISSUE stops using it; miles issued under it can still be reversed or returned, bounded by what
    each original issued."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        offers.disable_offer(session, sponsor, code)
        operators.audit(
            session,
            _actor(),
            "offer.disable",
            "offer",
            f"{sponsor}/{code}",
            now,
            before={"active": True},
            after={"active": False},
        )
    out.print(f"offer {code} of sponsor {sponsor} disabled")


@offer_app.command("import")
def offer_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON file.")],
) -> None:
    """Add or replace offers from a YAML/JSON list (see docs/offers.md); all or nothing."""
    try:
        documents = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise _fail(f"{file}: not YAML/JSON: {exc}", 2) from exc
    if isinstance(documents, dict):
        documents = documents.get("offers")
    if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
        raise _fail(f"{file}: expected a list of offers (or {{offers: [...]}})", 2)
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        count = offers.import_offers(session, documents, now)
        operators.audit(
            session,
            _actor(),
            "offer.import",
            "offer",
            file.name[:128],
            now,
            after={"offers": [f"{d.get('sponsorCode')}/{d.get('code')}" for d in documents]},
        )
    out.print(f"{count} offer(s) imported")


class ReportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


def _day(text: str | None, settings: Settings) -> date:
    """The Transaction Day named by --date, or the current one in the program time zone."""
    if text is None:
        return clock.transaction_day_of(clock.utc_now(), settings.program_time_zone)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise _fail(f"--date {text!r} must be YYYY-MM-DD", 2) from exc


def _require_sponsor(session: Session, code: str) -> None:
    if session.get(Sponsor, code) is None:
        raise _fail(f"sponsor {code} does not exist")


def _note_empty_day(what: str, day: date, settings: Settings) -> None:
    err.print(f"no {what} on Transaction Day {day.isoformat()} ({settings.program_time_zone})")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        err.print(f"wrote {output}")


@report_app.command("audit")
def report_audit(
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD", help=DAY_HELP)] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="csv or json.")] = ReportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
    unmask: Annotated[
        bool, typer.Option(help="Show full collector numbers (masked by default, both formats).")
    ] = False,
) -> None:
    """Every request of the sponsor's Transaction Day (program time zone)."""
    settings, db = _ready_database()
    transaction_day = _day(day, settings)
    with db.reader() as session:
        _require_sponsor(session, sponsor)
        report = audit.audit_report(session, sponsor, transaction_day, settings.program_time_zone)
    if not report.transactions:
        _note_empty_day("transactions", transaction_day, settings)
    if fmt is ReportFormat.JSON:
        _emit(json.dumps(report.as_json(mask_collectors=not unmask), indent=2) + "\n", output)
    else:
        _emit(report.as_csv(mask_collectors=not unmask), output)


@report_app.command("adjustments")
def report_adjustments(
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD", help=DAY_HELP)] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="csv or json.")] = ReportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
) -> None:
    """Every operator adjustment of the Transaction Day (program time zone), oldest first."""
    settings, db = _ready_database()
    transaction_day = _day(day, settings)
    start, end = clock.transaction_day_bounds(transaction_day, settings.program_time_zone)
    rows: list[dict[str, Any]] = []
    after = None
    with db.reader() as session:
        while True:
            page = adjustments.list_adjustments(
                session, start, end, None, after, limits.admin_page_items_max
            )
            rows += [_adjustment_json(made, settings) for made in page]
            if len(page) < limits.admin_page_items_max:
                break
            after = (page[-1].created_at, page[-1].id)
    if not rows:
        _note_empty_day("adjustments", transaction_day, settings)
    if fmt is ReportFormat.JSON:
        _emit(json.dumps(rows, indent=2) + "\n", output)
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ADJUSTMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _emit(text.getvalue(), output)


ADJUSTMENT_COLUMNS = (
    "id",
    "collectorNumber",
    "miles",
    "reason",
    "note",
    "operator",
    "createdAt",
    "balanceAfter",
)


@report_app.command("reconcile")
def report_reconcile(
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD", help=DAY_HELP)] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
) -> None:
    """The reconciliation file of the sponsor's Transaction Day (docs/reconciliation.md)."""
    settings, db = _ready_database()
    transaction_day = _day(day, settings)
    with db.reader() as session:
        _require_sponsor(session, sponsor)
        recon = reconciliation.build(
            session, sponsor, transaction_day, settings.program_time_zone, clock.utc_now()
        )
    if not recon.details:
        _note_empty_day("ledger postings", transaction_day, settings)
    _emit(reconciliation.render(recon), output)


@batch_app.command("import")
def batch_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON lines.")],
    sponsor: Annotated[str, typer.Option("--sponsor", help="Sponsor code.")],
    issue_missing: Annotated[
        bool, typer.Option(help="Issue records never seen in real time (idempotent).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the discrepancy report as JSON.")
    ] = False,
) -> None:
    """Match a partner's transaction log against the real-time records; report discrepancies."""
    settings, db = _ready_database()
    with db.reader() as session:
        _require_sponsor(session, sponsor)
    with _operation(db) as session:
        batch_id = batches.start_batch(session, sponsor, file.name, issue_missing, clock.utc_now())
    size = file.stat().st_size
    with (
        file.open("rb") as raw,
        Progress(
            TextColumn("matching"),
            BarColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[records]:,} records"),
            TimeElapsedColumn(),
            console=err,
        ) as progress,
    ):
        task = progress.add_task("batch", total=size, records=0)
        kind = batches.detect_kind(file.name, raw.peek(64) if hasattr(raw, "peek") else b"")

        def on_chunk(report: batches.BatchReport) -> None:
            progress.update(task, completed=raw.tell(), records=report.records)

        report = batches.run_batch(
            db,
            settings,
            batch_id,
            raw,
            kind,
            client_id="operator-batch",
            on_chunk=on_chunk,
        )
        progress.update(task, completed=size)
    with db.reader() as session:
        view = batches.batch_view(session, batch_id, limit=10_000)
    assert view is not None
    if as_json:
        sys.stdout.write(json.dumps(view) + "\n")
        return
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(report.counts.items())) or "no records"
    out.print(f"batch {batch_id}: {report.records:,} records; {counts}")
    for record in view["records"][:50]:
        out.print(
            f"  line {record['lineNo'] or '-'}: {record['outcome']} {record['transactionType'] or ''} "
            f"{record['partnerTransactionId'] or ''} log {record['logMiles']} program "
            f"{record['programMiles']} {record['errorCode'] or ''} {record['detail'] or ''}".rstrip()
        )
    if len(view["records"]) > 50:
        out.print(f"  … {len(view['records']) - 50} more (--json for all)")


@app.command("openapi")
def openapi_export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
) -> None:
    """Print the OpenAPI document (the committed `openapi.json` is this output)."""
    from rewardmiles.app import create_app

    text = json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


# --------------------------------------------------------------------------- operators

PASSWORD_STDIN_HELP = "Read the password from standard input (a trailing newline is dropped)."


def _actor() -> operators.Actor:
    """The audit log's name of the CLI: `cli@HOST`."""
    return operators.Actor(f"cli@{socket.gethostname()}")


def _password_hash(settings: Settings, from_stdin: bool) -> tuple[str, str | None]:
    """The hash of the password to set, and the password when it was generated (to be shown
    once). Hashed here, before any unit of work: argon2id is slow on purpose."""
    if from_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
        shown = None
    else:
        password = shown = passwords.generate_password()
    try:
        passwords.check_new_password(password)
    except passwords.PasswordError as exc:
        raise _fail(str(exc), 2) from exc
    return passwords.hash_password(password, passwords.HashCost.of(settings)), shown


def _show_password(password: str | None) -> None:
    if password is None:
        return
    out.print(f"one-time password  {password}")
    out.print(
        "It is not stored in clear and cannot be shown again; hand it over privately.",
        style="yellow",
    )


def _when(moment: Any) -> str:
    return moment.isoformat() if moment is not None else "-"


@operator_app.command("add")
def operator_add(
    email: Annotated[str, typer.Argument(help="The operator's e-mail (ASCII; case ignored).")],
    role: Annotated[OperatorRole, typer.Option(help="What the operator may do.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Display name (default: the e-mail's local part).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help=PASSWORD_STDIN_HELP)
    ] = False,
) -> None:
    """Add an operator. Without --password-stdin a one-time password is generated and printed."""
    settings, db = _ready_database()
    password_hash, shown = _password_hash(settings, password_stdin)
    with _operation(db) as session:
        view = operators.add_operator(
            session, email, role, password_hash, clock.utc_now(), _actor(), display_name=name
        )
    out.print(f'operator {view.email} added ({view.role.value}, "{view.display_name}")')
    _show_password(shown)


@operator_app.command("list")
def operator_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Every operator, by e-mail."""
    _, db = _ready_database()
    with db.reader() as session:
        views = operators.list_operators(session)
    if as_json:
        payload = [
            {
                "id": v.id,
                "email": v.email,
                "displayName": v.display_name,
                "role": v.role.value,
                "status": v.status.value,
                "createdAt": v.created_at.isoformat(),
                "lastSignInAt": v.last_sign_in_at.isoformat() if v.last_sign_in_at else None,
            }
            for v in views
        ]
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    for v in views:
        out.print(
            f'{v.email}  {v.role.value}  {v.status.value}  "{v.display_name}"  '
            f"created {_when(v.created_at)}  last sign-in {_when(v.last_sign_in_at)}"
        )
    out.print(f"{len(views)} operator(s)")


def _set_status(email: str, status: OperatorStatus) -> None:
    _, db = _ready_database()
    with _operation(db) as session:
        changed = operators.set_status(session, email, status, clock.utc_now(), _actor())
    if changed is None:
        out.print(f"operator {email.strip()} is {status.value} already")
        return
    view, ended = changed
    ending = f"; {ended} session(s) ended" if status is OperatorStatus.DISABLED else ""
    out.print(f"operator {view.email} {status.value}{ending}")


@operator_app.command("disable")
def operator_disable(
    email: Annotated[str, typer.Argument(help="The operator's e-mail.")],
) -> None:
    """Disable an operator: no more sign-ins, and every session of theirs ends now."""
    _set_status(email, OperatorStatus.DISABLED)


@operator_app.command("enable")
def operator_enable(
    email: Annotated[str, typer.Argument(help="The operator's e-mail.")],
) -> None:
    """Enable a disabled operator again (with the password they had)."""
    _set_status(email, OperatorStatus.ACTIVE)


@operator_app.command("set-role")
def operator_set_role(
    email: Annotated[str, typer.Argument(help="The operator's e-mail.")],
    role: Annotated[OperatorRole, typer.Argument(help="The new role.")],
) -> None:
    """Change an operator's role; it applies to their next request."""
    _, db = _ready_database()
    with _operation(db) as session:
        before, view = operators.set_role(session, email, role, clock.utc_now(), _actor())
    out.print(f"operator {view.email}: {before.value} -> {view.role.value}")


@operator_app.command("reset-password")
def operator_reset_password(
    email: Annotated[str, typer.Argument(help="The operator's e-mail.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help=PASSWORD_STDIN_HELP)
    ] = False,
) -> None:
    """Give an operator a new password (generated and printed unless --password-stdin); every
    session of theirs ends."""
    settings, db = _ready_database()
    password_hash, shown = _password_hash(settings, password_stdin)
    with _operation(db) as session:
        view, ended = operators.reset_password(
            session, email, password_hash, clock.utc_now(), _actor()
        )
    out.print(f"operator {view.email}: password replaced; {ended} session(s) ended")
    _show_password(shown)


def _token_json(view: operators.TokenView, now: Any) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "role": view.role.value,
        "state": view.state(now),
        "createdBy": view.created_by,
        "createdAt": view.created_at.isoformat(),
        "expiresAt": view.expires_at.isoformat(),
        "revokedAt": view.revoked_at.isoformat() if view.revoked_at else None,
        "lastUsedAt": view.last_used_at.isoformat() if view.last_used_at else None,
    }


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", help="1-64 letters, digits, '.', '_', '-'.")],
    role: Annotated[OperatorRole, typer.Option(help="What the token may do.")],
    expires_days: Annotated[
        int,
        typer.Option(
            "--expires-days",
            min=1,
            max=limits.admin_token_expires_days_max,
            help="Days until it expires.",
        ),
    ] = 90,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print only {"token": ..., ...} as JSON.')
    ] = False,
) -> None:
    """Create an admin API token; it is shown once, here, and stored only hashed."""
    _, db = _ready_database()
    now = clock.utc_now()
    with _operation(db) as session:
        new = operators.create_token(session, name, role, expires_days, now, _actor())
    if as_json:
        sys.stdout.write(json.dumps({"token": new.token, **_token_json(new.view, now)}) + "\n")
        return
    out.print(f"token    {new.token}")
    out.print(f"id       {new.view.id}")
    out.print(f"name     {new.view.name}  role {new.view.role.value}")
    out.print(f"expires  {new.view.expires_at.isoformat()}")
    out.print("The token is not stored in clear and cannot be shown again.", style="yellow")


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Every admin token, revoked and expired ones too, oldest first (never the token itself)."""
    _, db = _ready_database()
    now = clock.utc_now()
    with db.reader() as session:
        views = operators.list_tokens(session)
    if as_json:
        sys.stdout.write(json.dumps([_token_json(v, now) for v in views]) + "\n")
        return
    for v in views:
        out.print(
            f"{v.id}  {v.name}  {v.role.value}  {v.state(now)}  expires {_when(v.expires_at)}  "
            f"last used {_when(v.last_used_at)}  by {v.created_by}"
        )
    out.print(f"{len(views)} token(s)")


@token_app.command("revoke")
def token_revoke(
    name_or_id: Annotated[str, typer.Argument(help="The token's id, or its name.")],
) -> None:
    """Revoke an admin token: refused from the next request on."""
    _, db = _ready_database()
    with _operation(db) as session:
        view = operators.revoke_token(session, name_or_id, clock.utc_now(), _actor())
    out.print(f"admin token {view.id} ({view.name}) revoked")


# --------------------------------------------------------------------------- support look-ups


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")


@request_app.command("show")
def request_show(
    request_id: Annotated[str, typer.Argument(help="The problem document's requestId.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Show a failed partner request (kept REWARDMILES_REQUEST_FAILURE_RETENTION_DAYS days)."""
    settings, db = _ready_database()
    with db.reader() as session:
        found = support.failed_request(
            session, request_id, settings.program_time_zone, full_numbers=True
        )
    if found is None:
        raise _fail(f"no failed partner request {request_id} is kept")
    if as_json:
        _print_json(found)
        return
    out.print(
        f"{found['requestId']}  {found['at']}  {found['method']} {found['path']}  "
        f"{found['status']} {found['code'] or '-'}  client {found['clientId'] or '-'}"
    )
    if found["field"]:
        out.print(f"field   {found['field']}")
    out.print(f"detail  {found['detail'] or '-'}")


@transaction_app.command("show")
def transaction_show(
    transaction_id: Annotated[str, typer.Argument(help="The program's transactionId.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Show a transaction: request, response, lines with their history, reversals."""
    settings, db = _ready_database()
    with db.reader() as session:
        found = support.transaction(
            session, transaction_id, settings.program_time_zone, full_numbers=True
        )
    if found is None:
        raise _fail(f"transaction {transaction_id} not found")
    if as_json:
        _print_json(found)
        return
    out.print(
        f"{found['transactionId']}  {found['endpoint']}  {found['sponsorCode']}  "
        f"partner id {found['partnerTransactionId']}  collector {found['collectorNumber'] or '-'}"
    )
    out.print(
        f"status {found['status']} (HTTP {found['httpStatus']}"
        f"{', ' + found['errorCode'] if found['errorCode'] else ''})  "
        f"processed {found['processedAt']}"
    )
    for line in found["lines"]:
        history = " -> ".join(f"{h['status']} {h['at']}" for h in line["history"])
        out.print(
            f"  line {line['lineNo']}  {line['direction']} {line['miles']} {line['offerCode']}  "
            f"{history}{'  ' + line['errorCode'] if line['errorCode'] else ''}"
        )
    for reversal in found["reversals"]:
        out.print(
            f"  reversed by {reversal['transactionId']}  {reversal['endpoint']}  "
            f"{reversal['status']}  {reversal['processedAt']}"
        )
    out.print(f"request   {json.dumps(found['request'])}")
    out.print(f"response  {json.dumps(found['response'])}")


@app.command("audit-log")
def audit_log(
    entity: Annotated[
        str | None, typer.Option("--entity", help="issuance_line, operator, admin_token, …")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, max=limits.admin_page_items_max, help="At most this many entries."
        ),
    ] = limits.admin_page_items_default,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """The operator audit log, newest first."""
    settings, db = _ready_database()
    with db.reader() as session:
        page = support.audit_log(
            session, entity=entity, limit=limit, zone=settings.program_time_zone
        )
    if as_json:
        _print_json(page.items)
        return
    for e in page.items:
        out.print(
            f"{e['id']}  {e['at']}  {e['actor']}  {e['action']}  {e['entity']} {e['entityId']}"
            f"{'  note: ' + e['note'] if e['note'] else ''}"
        )
    out.print(f"{len(page.items)} entr{'y' if len(page.items) == 1 else 'ies'}")


# --------------------------------------------------------------------------- --help examples

EXAMPLES: dict[tuple[str, str], str] = {
    (
        "",
        "serve",
    ): "rewardmiles serve --demo  |  rewardmiles serve --host 0.0.0.0 --workers 4 --no-worker",
    ("", "worker"): "rewardmiles worker  |  rewardmiles worker --once",
    ("", "openapi"): "rewardmiles openapi -o openapi.json",
    ("db", "upgrade"): "REWARDMILES_DATABASE_URL=postgresql://rm@db:5432/rm rewardmiles db upgrade",
    ("sponsor", "add"): 'rewardmiles sponsor add KENY --name "Kenny\'s Market"',
    ("sponsor", "set"): "rewardmiles sponsor set KENY --review-threshold 5000",
    ("partner", "create"): "rewardmiles partner create --sponsor KENY --json > creds.json",
    ("partner", "list"): "rewardmiles partner list --json",
    ("partner", "rotate"): "rewardmiles partner rotate rmc_0123456789abcdef01234567 --json",
    ("partner", "revoke"): "rewardmiles partner revoke rmc_0123456789abcdef01234567 "
    "--reason 'secret leaked'",
    ("location", "add"): "rewardmiles location add 0037 --sponsor KENY",
    ("collector", "add"): "rewardmiles collector add 80085102028 --status ON_HOLD",
    ("collector", "set-status"): "rewardmiles collector set-status 80085102028 ON_HOLD "
    '--note "chargeback review, ticket 4412"',
    ("collector", "adjust"): "rewardmiles collector adjust 80085102028 --miles 500 "
    '--reason GOODWILL --note "flight AC123 delayed 6 h, ticket 4411"',
    ("collector", "history"): "rewardmiles collector history 80085102028 --limit 200 --json",
    ("report", "adjustments"): "rewardmiles report adjustments --date 2026-11-25 --format json",
    ("collector", "show"): "rewardmiles collector show 80085102028 --json",
    (
        "collector",
        "import",
    ): "rewardmiles collector import members.csv   # collectorNumber[,status]",
    ("ledger", "verify"): "rewardmiles ledger verify && echo balanced",
    ("keys", "rotate"): "rewardmiles keys rotate",
    ("keys", "list"): "rewardmiles keys list",
    ("keys", "retire"): "rewardmiles keys retire rm-20261125-9e0de4d3",
    ("secrets", "generate-key"): "rewardmiles secrets generate-key > /etc/rewardmiles/kek",
    ("secrets", "rekey"): "REWARDMILES_SECRET_KEY=NEW REWARDMILES_SECRET_KEY_PREVIOUS=OLD "
    "rewardmiles secrets rekey",
    ("pending", "list"): "rewardmiles pending list --sponsor KENY --json",
    ("pending", "approve"): "rewardmiles pending approve 2da4ebf6-8bf5-4516-b41b-bb18ca196740:0",
    ("pending", "reject"): "rewardmiles pending reject 2da4ebf6-8bf5-4516-b41b-bb18ca196740:0",
    ("webhook", "add"): "rewardmiles webhook add https://partner.example/hooks --sponsor KENY",
    ("webhook", "list"): "rewardmiles webhook list --sponsor KENY",
    ("webhook", "remove"): "rewardmiles webhook remove 6c0d…",
    ("webhook", "deliveries"): "rewardmiles webhook deliveries --status failed --json",
    ("webhook", "retry"): "rewardmiles webhook retry 9b1e…",
    ("offer", "add"): "rewardmiles offer add BASE --sponsor KENY --rule "
    '\'{"type": "base", "miles": 1, "perDollars": 20}\'',
    ("offer", "list"): "rewardmiles offer list --sponsor KENY --json",
    ("offer", "disable"): "rewardmiles offer disable BASE --sponsor KENY",
    ("offer", "import"): "rewardmiles offer import offers.yaml",
    ("report", "audit"): "rewardmiles report audit --sponsor KENY --date 2026-11-25 --format json",
    (
        "report",
        "reconcile",
    ): "rewardmiles report reconcile --sponsor KENY --date 2026-11-25 -o recon.txt",
    ("batch", "import"): "rewardmiles batch import partner-log.csv --sponsor KENY --issue-missing",
    ("operator", "add"): "rewardmiles operator add ana@example.com --role admin --name 'Ana Silva'"
    '  |  printf %s "$PASSWORD" | rewardmiles operator add bo@example.com --role viewer '
    "--password-stdin",
    ("operator", "list"): "rewardmiles operator list --json",
    ("operator", "disable"): "rewardmiles operator disable bo@example.com",
    ("operator", "enable"): "rewardmiles operator enable bo@example.com",
    ("operator", "set-role"): "rewardmiles operator set-role bo@example.com agent",
    ("operator", "reset-password"): "rewardmiles operator reset-password bo@example.com",
    ("operator token", "create"): "rewardmiles operator token create --name nightly-report "
    "--role viewer --expires-days 30 --json",
    ("operator token", "list"): "rewardmiles operator token list",
    ("operator token", "revoke"): "rewardmiles operator token revoke nightly-report",
    ("request", "show"): "rewardmiles request show 6f1c2a9e0b7d4e3f8a5b1c2d3e4f5a6b --json",
    ("transaction", "show"): "rewardmiles transaction show 2da4ebf6-8bf5-4516-b41b-bb18ca196740",
    ("", "audit-log"): "rewardmiles audit-log --entity issuance_line --limit 20 --json",
}


def _add_examples() -> None:
    groups = [(" ".join(words), sub) for words, sub in command_groups()]
    for group, typer_app in groups:
        for info in typer_app.registered_commands:
            info.cls = readable.Command
            name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
            for key in ((group, name), (group, name.split("-", 1)[-1])):
                if key in EXAMPLES:
                    info.epilog = f"Example: {EXAMPLES[key]}"
                    break


_add_examples()
