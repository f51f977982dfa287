"""Secrets at rest: token signing keys and webhook secrets are stored encrypted under a
key-encryption key (KEK) that never enters the database.

The KEK is 32 random bytes, base64, from `REWARDMILES_SECRET_KEY` or the file named by
`REWARDMILES_SECRET_KEY_FILE` (`rewardmiles secrets generate-key` prints a new one); nothing is
derived from a password. Each stored value is `rmenc1:<key id>:<base64url(nonce ‖ AES-256-GCM
ciphertext ‖ tag)>`, bound to what it is (the associated data names it: a signing key's by its
`kid`, so a key copied to another row does not decrypt). The key id is the first 12 hex digits of
HMAC-SHA256(KEK, "rewardmiles key id"): it names the key without revealing it.

Production mode — a PostgreSQL database, or `REWARDMILES_ENV=production` — refuses to start
without a KEK. In development mode (SQLite) without one, the KEK is kept in `DATABASE.key` beside
the database file (created 0600 at the first start; the demo uses it), or is a throwaway key for an
in-memory database.

Rotation: set the new key as `REWARDMILES_SECRET_KEY` and the old one in
`REWARDMILES_SECRET_KEY_PREVIOUS` (read only), run `rewardmiles secrets rekey`, then drop the old
one. Values stored in clear by versions before encryption at rest are read as they are, and
encrypted by the first start (and by `secrets rekey`).

This module keeps the cryptography; the stored values are read and rewritten by the repository of
the package that owns each table: `auth.repository` (signing keys), `webhooks.repository` (webhook
secrets).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.orm import Session

from rewardmiles.auth import repository as auth_repository
from rewardmiles.codec import b64url, unb64url
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database, normalize_url
from rewardmiles.errors import OperatorError
from rewardmiles.webhooks import repository as webhooks_repository

PREFIX = "rmenc1"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_HEX = 12
KEY_FILE_SUFFIX = ".key"
_KEY_ID_LABEL = b"rewardmiles key id"
_KEY_HELP = "32 random bytes in base64 (`rewardmiles secrets generate-key` prints one)"


class SecretKeyError(OperatorError):
    """The key-encryption key is missing, malformed, or not the one the stored secrets need."""


def generate_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str, name: str) -> bytes:
    value = text.strip().replace("+", "-").replace("/", "_")
    try:
        raw = unb64url(value)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise SecretKeyError(f"{name} is not a key: it must be {_KEY_HELP}")
    return raw


def key_id(key: bytes) -> str:
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_HEX]


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX + ":")


def sealed_key_id(stored: str) -> str | None:
    """The key id of an encrypted value; None for a value stored in clear."""
    return stored.split(":", 2)[1] if is_sealed(stored) else None


def signing_key_context(kid: str) -> str:
    return f"signing key {kid}"


WEBHOOK_CONTEXT = "webhook secret"


class SecretBox:
    """Encrypts under the current key; decrypts under the current or a previous one."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self.key_id = key_id(current)
        self._current_key = current
        self._current = AESGCM(current)
        self._keys = {key_id(key): AESGCM(key) for key in previous}
        self._keys[self.key_id] = self._current

    def derive(self, purpose: str) -> bytes:
        """A key of its own for `purpose` (HMAC-SHA256 of it under the current key): what every
        process of the program shares, never the key-encryption key itself."""
        return hmac.new(self._current_key, purpose.encode(), hashlib.sha256).digest()

    def seal(self, clear: str, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, clear.encode(), context.encode())
        data = b64url(nonce + sealed)
        return f"{PREFIX}:{self.key_id}:{data}"

    def open(self, stored: str, context: str, *, what: str | None = None) -> str:
        """The clear value of `stored` (returned as it is when it was stored in clear); `what`
        names it in an error (default: `context`)."""
        if not is_sealed(stored):
            return stored
        what = what or context
        _, kid, data = stored.split(":", 2)
        aead = self._keys.get(kid)
        if aead is None:
            raise SecretKeyError(
                f"{what} is encrypted under key id {kid}, which is neither the configured "
                f"REWARDMILES_SECRET_KEY (key id {self.key_id}) nor one of "
                "REWARDMILES_SECRET_KEY_PREVIOUS: set the key it was stored with"
            )
        try:
            raw = unb64url(data)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretKeyError(
                f"{what} does not decrypt under key id {kid}: the stored value was altered"
            ) from exc

    def is_current(self, stored: str) -> bool:
        return sealed_key_id(stored) == self.key_id


def is_production(settings: Settings) -> bool:
    return (
        settings.env == "production"
        or normalize_url(settings.database_url).get_backend_name() == "postgresql"
    )


def from_settings(settings: Settings) -> SecretBox:
    """The box of these settings; `SecretKeyError` (a message for the operator) when the key is
    missing in production mode, malformed or unreadable."""
    configured = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if configured.strip() and settings.secret_key_file:
        raise SecretKeyError("set REWARDMILES_SECRET_KEY or REWARDMILES_SECRET_KEY_FILE, not both")
    if configured.strip():
        current = parse_key(configured, "REWARDMILES_SECRET_KEY")
    elif settings.secret_key_file:
        current = _read_key_file(settings.secret_key_file, "REWARDMILES_SECRET_KEY_FILE")
    elif is_production(settings):
        raise SecretKeyError(
            "production mode (a PostgreSQL database or REWARDMILES_ENV=production) needs a "
            "key-encryption key for the stored secrets: set REWARDMILES_SECRET_KEY or "
            f"REWARDMILES_SECRET_KEY_FILE to {_KEY_HELP}"
        )
    else:
        current = _development_key(settings.database_url)
    previous_text = (
        settings.secret_key_previous.get_secret_value() if settings.secret_key_previous else ""
    )
    previous = [
        parse_key(part, "REWARDMILES_SECRET_KEY_PREVIOUS")
        for part in previous_text.split(",")
        if part.strip()
    ]
    return SecretBox(current, previous)


# Settings are frozen: one box per settings object, built once (a worker asks every pass).
for_settings = lru_cache(maxsize=8)(from_settings)


def development_key_file(database_url: str) -> Path | None:
    """`DATABASE.key` beside a SQLite database file; None for an in-memory database."""
    url = normalize_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database + KEY_FILE_SUFFIX)


def _development_key(database_url: str) -> bytes:
    path = development_key_file(database_url)
    if path is None:
        return secrets.token_bytes(KEY_BYTES)  # dies with the in-memory database
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path, f"the development key file {path}")


def _create_key_file(path: Path) -> None:
    """Write a new key to `path`, mode 0600; a process that loses the race uses the winner's."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use that
            os.link(temporary, path)  # atomic, and never replaces an existing key
    finally:
        temporary.unlink(missing_ok=True)


def _read_key_file(path: Path, name: str) -> bytes:
    try:
        content = path.read_text()
    except OSError as exc:
        raise SecretKeyError(f"cannot read {name} ({path}): {exc.strerror}") from exc
    return parse_key(content, name)


# --------------------------------------------------------------------------- stored secrets


@dataclass(frozen=True, slots=True)
class SealReport:
    signing_keys: int
    webhook_secrets: int


@dataclass(frozen=True, slots=True)
class _StoredSecret:
    signing_key: bool  # else a webhook's secret
    row_id: str
    value: str  # as stored

    @property
    def context(self) -> str:
        return signing_key_context(self.row_id) if self.signing_key else WEBHOOK_CONTEXT

    @property
    def what(self) -> str:
        if self.signing_key:
            return signing_key_context(self.row_id)
        return f"the secret of webhook {self.row_id}"

    def replace(self, session: Session, sealed: str) -> None:
        if self.signing_key:
            auth_repository.replace_private_key(session, self.row_id, self.value, sealed)
        else:
            webhooks_repository.replace_webhook_secret(session, self.row_id, self.value, sealed)


def _stored_secrets(session: Session) -> list[_StoredSecret]:
    keys = auth_repository.stored_private_keys(session)
    webhooks = webhooks_repository.stored_webhook_secrets(session)
    return [_StoredSecret(True, k.kid, k.private_key_pem) for k in keys] + [
        _StoredSecret(False, w.webhook_id, w.secret) for w in webhooks
    ]


def check_and_seal(db: Database, box: SecretBox, *, rekey: bool = False) -> SealReport:
    """Decrypt every stored secret (a wrong key fails here, at start, naming the row and the key
    id), then encrypt under the current key those stored in clear — and with `rekey`, those under
    a previous key too. Each row is rewritten only if it still holds what was read, so processes
    starting together do not overwrite each other."""
    with db.reader() as session:
        stored = _stored_secrets(session)
    pending = []
    for secret in stored:
        clear = box.open(secret.value, secret.context, what=secret.what)
        if not is_sealed(secret.value) or (rekey and not box.is_current(secret.value)):
            pending.append((secret, clear))
    if not pending:
        return SealReport(0, 0)
    with db.unit_of_work() as session:
        for secret, clear in pending:
            secret.replace(session, box.seal(clear, secret.context))
    keys = sum(1 for secret, _ in pending if secret.signing_key)
    return SealReport(keys, len(pending) - keys)
