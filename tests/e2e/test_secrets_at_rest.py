"""Secrets at rest: token signing keys and webhook secrets are stored encrypted under the
key-encryption key (REWARDMILES_SECRET_KEY), a wrong or missing key stops the start with one line,
the key can be rotated (`rewardmiles secrets rekey`), clear rows written by older versions are
encrypted at the first start, and a new SQLite database file is readable by its owner only."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from rewardmiles import clock
from rewardmiles.collectors import service as collectors
from rewardmiles.db.engine import Database
from rewardmiles.webhooks import service as webhooks
from tests.conftest import ServerFactory
from tests.support import data
from tests.support.partner import Partner, fetch_token
from tests.support.receiver import receiver
from tests.support.server import free_port

KEY_A = "ZWxldmVuLWtleS1hLWZvci10ZXN0cy0tLS0tLS0tLS0="  # 32 bytes, base64
KEY_B = "dHdlbHZlLWtleS1iLWZvci10ZXN0cy0tLS0tLS0tLS0="
START_SECONDS = 60

# The test receivers listen on the loopback, which webhook targets may not be by default.
LOOPBACK_HOOKS = {"REWARDMILES_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}


def _cli(database_url: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rewardmiles", *args],
        env={**os.environ, "REWARDMILES_DATABASE_URL": database_url, **LOOPBACK_HOOKS, **env},
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
    )


def _serve_fails(database_url: str, env: dict[str, str]) -> tuple[int, str]:
    """`serve` that must refuse to start: its exit status and what it printed."""
    result = _cli(database_url, "serve", "--port", str(free_port()), env=env)
    return result.returncode, result.stdout + result.stderr


def _stored(db: Database) -> tuple[list[str], list[str]]:
    with db.reader() as session:
        pems = session.execute(text("SELECT private_key_pem FROM signing_keys")).scalars().all()
        hooks = session.execute(text("SELECT secret FROM webhooks")).scalars().all()
    return list(pems), list(hooks)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_signing_keys_and_webhook_secrets_are_encrypted_and_still_work(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(
        dialect, env={"REWARDMILES_WORKER_POLL_SECONDS": "0.2", **LOOPBACK_HOOKS}
    )
    db = Database.from_url(server.database_url)
    try:
        sponsor = data.new_sponsor(db)
        client_id, client_secret = data.new_client(db, [sponsor])
        with receiver() as hook:
            added = _cli(
                server.database_url, "webhook", "add", hook.url, "--sponsor", sponsor, env={}
            )
            assert added.returncode == 0, added.stderr
            secret = re.search(r"signing secret (\S+)", added.stdout).group(1)  # type: ignore[union-attr]

            pems, hooks = _stored(db)
            assert pems
            assert hooks
            for pem in pems:
                assert "PRIVATE KEY" not in pem
                assert pem.startswith("rmenc1:")
            assert secret not in hooks
            assert all(h.startswith("rmenc1:") for h in hooks)

            # Tokens still verify (signed with the decrypted key, checked against the JWKS).
            token = fetch_token(server.base_url, client_id, client_secret)
            jwks = httpx.get(f"{server.base_url}/.well-known/jwks.json").json()
            kid = jwt.get_unverified_header(token)["kid"]
            assert kid in {k["kid"] for k in jwks["keys"]}
            partner = Partner(server.base_url, client_id, client_secret)
            number = data.unknown_collector()
            assert partner.post_event(data.event_body(sponsor, number, miles=3)).status_code == 202
            with db.unit_of_work() as session:
                collectors.add_collector(session, number, "ACTIVE", clock.utc_now())
            _until(lambda: hook.answered_ok == 1, "the webhook")
            partner.close()
            event = hook.received[0]
            # The receiver checks the signature with the clear secret it was given once.
            assert webhooks.verify_signature(
                secret, event.headers["rewardmiles-signature"], event.body, now=time.time()
            )
    finally:
        db.dispose()


def test_a_wrong_key_stops_the_start_with_one_line(
    dialect: str, server_factory: ServerFactory
) -> None:
    server = server_factory(dialect)  # stores its signing key under the suite's key
    server.stop()
    code, output = _serve_fails(server.database_url, {"REWARDMILES_SECRET_KEY": KEY_B})
    assert code == 2, output
    assert "Traceback" not in output
    assert "REWARDMILES_SECRET_KEY" in output
    assert re.search(r"encrypted under key id [0-9a-f]{12}", output), output
    # A key that is not 32 bytes of base64 is refused as such, before anything else.
    code, output = _serve_fails(server.database_url, {"REWARDMILES_SECRET_KEY": "hunter2"})
    assert code == 2, output
    assert "Traceback" not in output
    assert "32 random bytes" in output


def test_production_mode_needs_a_key(
    dialect: str, database_factory: object, tmp_path: Path
) -> None:
    url = database_factory.create(dialect)  # type: ignore[attr-defined]
    no_key = {"REWARDMILES_SECRET_KEY": ""}
    if dialect == "postgresql":  # PostgreSQL is production mode by itself
        code, output = _serve_fails(url, no_key)
    else:
        code, output = _serve_fails(url, {**no_key, "REWARDMILES_ENV": "production"})
    assert code == 2, output
    assert "Traceback" not in output
    assert "REWARDMILES_SECRET_KEY" in output
    assert "production" in output


def test_rekey_then_the_old_key_can_be_dropped(
    dialect: str, server_factory: ServerFactory, database_factory: object
) -> None:
    url = database_factory.create(dialect)  # type: ignore[attr-defined]
    old = {"REWARDMILES_SECRET_KEY": KEY_A}
    db = Database.from_url(url)
    try:
        sponsor = data.new_sponsor(db)
        client_id, client_secret = data.new_client(db, [sponsor])
        with receiver() as hook:
            added = _cli(url, "webhook", "add", hook.url, "--sponsor", sponsor, env=old)
            assert added.returncode == 0, added.stderr
            secret = re.search(r"signing secret (\S+)", added.stdout).group(1)  # type: ignore[union-attr]
            assert _cli(url, "keys", "rotate", env=old).returncode == 0
            before = _stored(db)

            # Rotate: the new key current, the old one still readable; everything re-encrypted.
            rekeyed = _cli(
                url,
                "secrets",
                "rekey",
                env={"REWARDMILES_SECRET_KEY": KEY_B, "REWARDMILES_SECRET_KEY_PREVIOUS": KEY_A},
            )
            assert rekeyed.returncode == 0, rekeyed.stderr
            assert "re-encrypted 1 signing key, 1 webhook secret" in rekeyed.stdout
            after = _stored(db)
            assert set(after[0]).isdisjoint(before[0])
            assert set(after[1]).isdisjoint(before[1])
            again = _cli(url, "secrets", "rekey", env={"REWARDMILES_SECRET_KEY": KEY_B})
            assert again.returncode == 0, again.stderr
            assert "re-encrypted 0 signing keys, 0 webhook secrets" in again.stdout

            # The old key dropped: the server starts, signs, and the webhook secret still works.
            server = server_factory(
                dialect,
                database_url=url,
                env={
                    "REWARDMILES_SECRET_KEY": KEY_B,
                    "REWARDMILES_WORKER_POLL_SECONDS": "0.2",
                    **LOOPBACK_HOOKS,
                },
            )
            partner = Partner(server.base_url, client_id, client_secret)
            number = data.unknown_collector()
            assert partner.post_event(data.event_body(sponsor, number, miles=2)).status_code == 202
            with db.unit_of_work() as session:
                collectors.add_collector(session, number, "ACTIVE", clock.utc_now())
            _until(lambda: hook.answered_ok == 1, "the webhook")
            partner.close()
            event = hook.received[0]
            assert webhooks.verify_signature(
                secret, event.headers["rewardmiles-signature"], event.body, now=time.time()
            )
            server.stop()
        # ... and the old key alone no longer opens them.
        code, output = _serve_fails(url, old)
        assert code == 2, output
    finally:
        db.dispose()


def test_clear_rows_of_an_older_version_are_encrypted_at_the_first_start(
    dialect: str, server_factory: ServerFactory, database_factory: object
) -> None:
    url = database_factory.create(dialect)  # type: ignore[attr-defined]
    db = Database.from_url(url)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    clear_secret = "whsec_" + "c" * 43
    try:
        sponsor = data.new_sponsor(db)
        client_id, client_secret = data.new_client(db, [sponsor])
        with db.unit_of_work() as session:
            session.execute(
                text(
                    "INSERT INTO signing_keys (kid, private_key_pem, created_at) "
                    "VALUES ('rm-legacy', :pem, :now)"
                ),
                {"pem": pem, "now": data.now()},
            )
            session.execute(
                text(
                    "INSERT INTO webhooks (id, sponsor_code, url, secret, active, created_at) "
                    "VALUES ('00000000-0000-4000-8000-000000000001', :sponsor, "
                    "'https://example.invalid/hook', :secret, false, :now)"
                ),
                {"sponsor": sponsor, "secret": clear_secret, "now": data.now()},
            )
        server = server_factory(dialect, database_url=url)
        pems, hooks = _stored(db)
        assert len(pems) == 1
        assert pems[0].startswith("rmenc1:")
        assert hooks[0].startswith("rmenc1:")
        # The legacy key is the signing key and still signs verifiable tokens.
        token = fetch_token(server.base_url, client_id, client_secret)
        assert jwt.get_unverified_header(token)["kid"] == "rm-legacy"
        claims = jwt.decode(
            token, key.public_key(), algorithms=["EdDSA"], audience="rewardmiles-issuance"
        )
        assert claims["sub"] == client_id
    finally:
        db.dispose()


def test_a_new_sqlite_database_is_readable_by_its_owner_only(
    dialect: str, server_factory: ServerFactory, tmp_path: Path
) -> None:
    if dialect != "sqlite":
        pytest.skip("file modes are SQLite's")
    path = tmp_path / "fresh.db"
    old_umask = os.umask(0o022)
    try:
        server = server_factory(dialect, database_url=f"sqlite:///{path}")
    finally:
        os.umask(old_umask)
    fetch = httpx.get(f"{server.base_url}/.well-known/jwks.json")
    assert fetch.status_code == 200
    for name in ("fresh.db", "fresh.db-wal", "fresh.db-shm"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"


def test_the_demo_keeps_its_key_next_to_the_database(tmp_path: Path) -> None:
    """Development mode (SQLite, no REWARDMILES_ENV=production) without a key: `serve --demo`
    makes one, 32 random bytes, in DATABASE.key, mode 0600, and uses it at the next start."""
    path = tmp_path / "demo.db"
    env = {"REWARDMILES_SECRET_KEY": "", "REWARDMILES_SECRET_HASH_COST": "10"}
    url = f"sqlite:///{path}"
    for _ in range(2):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "rewardmiles", "serve", "--demo", "--port", str(port)],
            env={**os.environ, "REWARDMILES_DATABASE_URL": url, **LOOPBACK_HOOKS, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while time.monotonic() < deadline:
                assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = fetch_token(f"http://127.0.0.1:{port}", "demo-keny", "demo-keny-secret")
            assert token
        finally:
            process.terminate()
            process.wait(timeout=30)
    key_file = tmp_path / "demo.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_commands_that_store_a_secret_refuse_a_key_the_stored_secrets_are_not_under(
    dialect: str, database_factory: object
) -> None:
    """`keys rotate` and `webhook add` run with another key (or, on SQLite, none: development
    mode makes one beside the database) would store a secret no server can read, and every
    server's next key refresh would fail: they stop first, with one line, exit status 2."""
    url = database_factory.create(dialect)  # type: ignore[attr-defined]
    db = Database.from_url(url)
    try:
        sponsor = data.new_sponsor(db)
        first = _cli(url, "keys", "rotate", env={"REWARDMILES_SECRET_KEY": KEY_A})
        assert first.returncode == 0, first.stderr
        before = _stored(db)
        wrong_keys = [{"REWARDMILES_SECRET_KEY": KEY_B}]
        if dialect == "sqlite":
            wrong_keys.append({"REWARDMILES_SECRET_KEY": ""})
        for env in wrong_keys:
            for args in (
                ("keys", "rotate"),
                ("webhook", "add", "http://127.0.0.1:9/hook", "--sponsor", sponsor),
            ):
                result = _cli(url, *args, env=env)
                output = result.stdout + result.stderr
                assert result.returncode == 2, (args, env, output)
                assert "Traceback" not in output
                assert re.search(r"encrypted under key id [0-9a-f]{12}", output), output
                assert "REWARDMILES_SECRET_KEY" in output
                assert len(output.strip().splitlines()) == 1, output
                assert _stored(db) == before, args
        # With the key the stored secrets are under, both work.
        for args in (
            ("keys", "rotate"),
            ("webhook", "add", "http://127.0.0.1:9/hook", "--sponsor", sponsor),
        ):
            result = _cli(url, *args, env={"REWARDMILES_SECRET_KEY": KEY_A})
            assert result.returncode == 0, result.stderr
    finally:
        db.dispose()
