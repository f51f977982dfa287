"""The databases of a run: throwaway PostgreSQL databases, seeding them through the CLI, and the
ledger check each one ends with."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.run.config import COLLECTOR_BASE, ROOT, SPONSOR, BenchError, log
from bench.run.processes import base_env, cli, rewardmiles_cmd


class Postgres:
    """Throwaway databases on one PostgreSQL server: one seeded template, cheap copies."""

    def __init__(self, admin_url: str, run_id: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.admin_url = admin_url
        self.prefix = f"rmbench_{run_id}"
        self.created: list[str] = []

    def url(self, name: str) -> str:
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))

    def _admin(self, sql: str) -> list[tuple[Any, ...]]:
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            cur = conn.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def create(self, suffix: str, template: str | None = None) -> str:
        name = f"{self.prefix}_{suffix}"
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(10):
            try:
                self._admin(f"CREATE DATABASE {name}{clause}")
                break
            except self._psycopg.errors.ObjectInUse:  # autovacuum visiting the template
                if attempt == 9:
                    raise
                time.sleep(1)
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.created.clear()

    def info(self) -> dict[str, str]:
        names = (
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "shared_buffers",
            "max_connections",
        )
        return {n: str(self._admin(f"SHOW {n}")[0][0]) for n in names}


def write_collectors_csv(path: Path, count: int) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write("collectorNumber\n")
        for i in range(1, count + 1):
            fh.write(f"{COLLECTOR_BASE + i:011d}\n")


def seed(database_url: str, collectors_csv: Path) -> dict[str, str]:
    """Schema (the CLI migrates), sponsor BNCH with its STANDARD offer, one partner client, the
    enrolled collectors. Returns the client's credentials."""
    cli(database_url, "db", "upgrade")
    imported: list[str] = []
    failed: list[BaseException] = []

    def import_collectors() -> None:  # alongside the sponsor and client: independent rows
        try:
            imported.append(cli(database_url, "collector", "import", str(collectors_csv)))
        except BaseException as exc:
            failed.append(exc)

    importer = threading.Thread(target=import_collectors)
    importer.start()
    cli(database_url, "sponsor", "add", SPONSOR, "--name", "Benchmark sponsor")
    creds = json.loads(cli(database_url, "partner", "create", "--sponsor", SPONSOR, "--json"))
    importer.join()
    if failed:
        raise failed[0]
    if "invalid 0" not in imported[0]:
        raise BenchError(f"collector import: {imported[0]}")
    return {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "import": imported[0].strip(),
    }


def verify_ledger(database_url: str, label: str) -> str:
    proc = subprocess.run(
        [*rewardmiles_cmd(), "ledger", "verify"],
        env=base_env(database_url),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    text = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise BenchError(f"LEDGER VERIFY FAILED on {label}:\n{text}")
    log(f"ledger verify {label}: {text.splitlines()[0] if text else 'ok'}")
    return text


def reference_version(url: str) -> int:
    """The database's reference-data version (the one-statement script checks it)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM reference_version WHERE id = 1").fetchone()
    if row is None:
        raise BenchError(f"no reference_version row in {url}")
    return int(row[0])


# The originals of `seed_originals`: ids and collectors as the pgbench scripts compute them.
_ORIGINALS = """
        SELECT md5(r::text || '-' || cl::text || '-' || s::text)::uuid::text AS id,
               'pgb-' || r::text || '-' || cl::text || '-' || s::text AS partner_id,
               (%(base)s + 1 + ((cl * 100003 + s) %% %(collectors)s))::text AS number
          FROM unnest(%(runs)s::bigint[]) AS r, generate_series(0, %(clients)s - 1) AS cl,
               generate_series(1, %(per_client)s) AS s"""


def seed_originals(
    url: str, runs: list[int], *, clients: int, per_client: int, collectors: int
) -> None:
    """The POST/EVENTs bench/pgbench_reverse.sql reverses when it stands alone: for each of `runs`
    and each client, calls 1 … `per_client` of bench/pgbench_issue.sql's ids (5 miles posted to
    the collector the reverse script computes), written in bulk with their lines, ledger entry
    pairs and balances, so the books stay balanced."""
    import psycopg

    params = {
        "base": COLLECTOR_BASE,
        "collectors": collectors,
        "runs": runs,
        "clients": clients,
        "per_client": per_client,
    }
    statements = (
        "CREATE TEMPORARY TABLE originals ON COMMIT DROP AS " + _ORIGINALS,
        """INSERT INTO transactions (id, client_id, sponsor_code, endpoint,
               partner_transaction_id, collector_number, original_transaction_id, status,
               http_status, error_code, fingerprint, partner_datetime, processed_at,
               request_json, response_json, calculation_json)
           SELECT id, 'pgbench', %(sponsor)s, 'post_event', partner_id, number, NULL, 'posted',
                  200, NULL, md5(id) || md5(partner_id), now(), now(), '{}', '{}', NULL
             FROM originals""",
        """INSERT INTO issuance_lines (transaction_id, line_no, direction, offer_code,
               location_code, miles, status, pending_reason, error_code, settled_at)
           SELECT id, 0, 'credit', 'STANDARD', NULL, 5, 'posted', NULL, NULL, now()
             FROM originals""",
        """INSERT INTO ledger_entries (transaction_id, line_no, account_kind, account_code,
               amount_miles, posted_at)
           SELECT id, 0, 'collector', number, 5, now() FROM originals
           UNION ALL
           SELECT id, 0, 'sponsor', %(sponsor)s, -5, now() FROM originals""",
        """UPDATE collectors AS c SET balance_miles = c.balance_miles + o.miles
             FROM (SELECT number, 5 * count(*) AS miles FROM originals GROUP BY number) AS o
            WHERE c.number = o.number""",
    )
    started = time.monotonic()
    # Bound on the client: CREATE TABLE … AS takes no server-side parameters.
    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        for statement in statements:
            conn.execute(statement, {**params, "sponsor": SPONSOR})
        conn.commit()
        conn.execute("ANALYZE transactions, issuance_lines, ledger_entries")
    log(
        f"pgbench: {len(runs) * clients * per_client:,} originals written for REVERSE/EVENT "
        f"in {time.monotonic() - started:.1f} s"
    )
