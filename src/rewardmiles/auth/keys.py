"""Token signing keys (Ed25519), kept in the database so every API process shares them.

Rotation without downtime: `rewardmiles keys rotate` adds a key; every process signs with the newest
key after its next refresh (at most `REFRESH_SECONDS`). Older keys stay published in the JWKS and
keep verifying until `rewardmiles keys retire KID` (wait one token lifetime after rotating). A
process that meets an unknown `kid` reloads at once, so a token signed by another process with a
key it has not loaded yet still verifies.

Private keys are stored encrypted under the key-encryption key (`rewardmiles.secretbox`).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.auth import repository
from rewardmiles.auth.repository import SigningKeyRow
from rewardmiles.db.engine import Database
from rewardmiles.errors import OperatorError
from rewardmiles.secretbox import SecretBox, signing_key_context

ALGORITHM = "EdDSA"
REFRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    created_at: datetime


def generate_key(session: Session, now: datetime, box: SecretBox) -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    kid = "rm-" + now.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    sealed = box.seal(pem, signing_key_context(kid))
    repository.add_signing_key(session, kid, sealed, now)
    return kid


class SigningKeyError(OperatorError):
    pass


def list_keys(session: Session) -> list[SigningKeyRow]:
    """Every key, retired ones too, oldest first."""
    return repository.signing_keys(session)


def retire_key(session: Session, kid: str, now: datetime) -> None:
    """Stop publishing `kid`; tokens it signed stop verifying. The newest key cannot be retired."""
    active = repository.active_kids_newest_first(session)
    if kid not in active:
        raise SigningKeyError(f"no active signing key {kid}")
    if kid == active[0]:
        raise SigningKeyError(f"{kid} is the newest key and signs new tokens: rotate first")
    repository.retire_signing_key(session, kid, now)


class KeyRing:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box
        self._lock = threading.Lock()
        self._keys: dict[str, LoadedKey] = {}
        self._signing: LoadedKey | None = None
        self._loaded_at = 0.0
        self._missed_kids: set[str] = set()

    @property
    def box(self) -> SecretBox:
        """The key-encryption key's box, which also seals webhook secrets."""
        return self._box

    def ensure_key(self, now: datetime) -> None:
        """Load the key set; create the first key when the database has none."""
        self.reload()
        if self._signing is None:
            with self._db.unit_of_work() as session:
                # API processes starting together on a new database: one creates the key, the
                # others wait here and find it.
                self._db.serialize(session, "signing-keys", "first")
                if not repository.has_active_signing_key(session):
                    generate_key(session, now, self._box)
            self.reload()

    def reload(self) -> None:
        with self._db.reader() as session:
            rows = repository.active_signing_keys(session)
        keys: dict[str, LoadedKey] = {}
        for row in rows:
            pem = self._box.open(row.private_key_pem, signing_key_context(row.kid))
            private = serialization.load_pem_private_key(pem.encode(), password=None)
            if not isinstance(private, Ed25519PrivateKey):
                continue
            keys[row.kid] = LoadedKey(row.kid, private, private.public_key(), row.created_at)
        with self._lock:
            self._keys = keys
            self._signing = max(keys.values(), key=lambda k: (k.created_at, k.kid), default=None)
            self._loaded_at = time.monotonic()

    @property
    def signing_key(self) -> LoadedKey:
        """The newest key. May read the database (refresh): call it from a worker thread."""
        if time.monotonic() - self._loaded_at >= REFRESH_SECONDS:
            self.reload()
        if self._signing is None:
            raise RuntimeError("no signing key loaded")
        return self._signing

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        key = self._keys.get(kid)
        if key is None and self._may_reload_for(kid):
            self.reload()
            key = self._keys.get(kid)
        return key.public_key if key else None

    def _may_reload_for(self, kid: str) -> bool:
        """Each unknown kid triggers one reload (a key another process just added); beyond that,
        at most one reload per interval, so made-up kids cannot hammer the database."""
        with self._lock:
            if (
                kid not in self._missed_kids
                and len(self._missed_kids) < limits.signing_keys_missed_kids_max
            ):
                self._missed_kids.add(kid)
                return True
            return (
                time.monotonic() - self._loaded_at
                >= limits.signing_keys_reload_interval_seconds_min
            )

    def jwks(self) -> dict[str, Any]:
        out = []
        for key in sorted(self._keys.values(), key=lambda k: k.kid):
            jwk = orjson.loads(OKPAlgorithm.to_jwk(key.public_key))
            jwk.update({"kid": key.kid, "use": "sig", "alg": ALGORITHM})
            out.append(jwk)
        return {"keys": out}
