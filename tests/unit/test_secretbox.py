"""The key-encryption box: AES-256-GCM under a 32-byte key, with a key id and a bound context."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from rewardmiles import secretbox
from rewardmiles.config import Settings
from rewardmiles.secretbox import SecretBox, SecretKeyError, parse_key

KEY_A = parse_key(secretbox.generate_key(), "a")
KEY_B = parse_key(secretbox.generate_key(), "b")


def test_a_sealed_value_opens_only_in_its_own_context() -> None:
    box = SecretBox(KEY_A)
    sealed = box.seal("whsec_clear", "signing key rm-1")
    assert "whsec_clear" not in sealed
    assert sealed.startswith(f"rmenc1:{box.key_id}:")
    assert box.open(sealed, "signing key rm-1") == "whsec_clear"
    assert box.seal("whsec_clear", "signing key rm-1") != sealed  # a fresh nonce each time
    with pytest.raises(SecretKeyError, match="does not decrypt"):
        box.open(sealed, "signing key rm-2")  # copied to another row


def test_a_tampered_value_is_refused() -> None:
    box = SecretBox(KEY_A)
    sealed = box.seal("x" * 40, "c")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretKeyError, match="altered"):
        box.open(flipped, "c")


def test_previous_keys_read_and_the_current_one_writes() -> None:
    old = SecretBox(KEY_A)
    sealed = old.seal("secret", "c")
    rotating = SecretBox(KEY_B, [KEY_A])
    assert rotating.open(sealed, "c") == "secret"
    assert not rotating.is_current(sealed)
    assert rotating.is_current(rotating.seal("secret", "c"))
    with pytest.raises(SecretKeyError, match=f"encrypted under key id {old.key_id}"):
        SecretBox(KEY_B).open(sealed, "c")


def test_clear_values_of_older_versions_read_as_they_are() -> None:
    assert SecretBox(KEY_A).open("whsec_old", "c") == "whsec_old"


@pytest.mark.parametrize("text", ["", "hunter2", "c2hvcnQ=", "A" * 44 + "!!", "A" * 64])
def test_keys_are_32_bytes_of_base64_and_nothing_else(text: str) -> None:
    with pytest.raises(SecretKeyError, match="32 random bytes"):
        parse_key(text, "REWARDMILES_SECRET_KEY")


def test_standard_and_url_safe_base64_both_parse() -> None:
    raw = bytes(range(250, 256)) * 5 + b"\xfb\xff"
    assert parse_key(base64.b64encode(raw).decode(), "k") == raw
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("=") + "\n", "k") == raw


def test_production_mode_without_a_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="production mode"):
        secretbox.from_settings(Settings(database_url="postgresql://u@127.0.0.1:1/x"))
    with pytest.raises(SecretKeyError, match="production mode"):
        secretbox.from_settings(
            Settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", env="production")
        )
    assert not (tmp_path / "p.db.key").exists()


def test_development_mode_keeps_a_private_key_file_beside_the_database(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'dev.db'}")
    first = secretbox.from_settings(settings)
    again = secretbox.from_settings(settings)
    assert first.key_id == again.key_id
    key_file = tmp_path / "dev.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dev.db.key"]  # no temporary file left


def test_key_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_text(secretbox.generate_key() + "\n")
    box = secretbox.from_settings(Settings(database_url="sqlite://", secret_key_file=path))
    assert box.key_id == secretbox.key_id(parse_key(path.read_text(), "k"))
    with pytest.raises(SecretKeyError, match="cannot read"):
        secretbox.from_settings(Settings(secret_key_file=tmp_path / "missing"))
    with pytest.raises(SecretKeyError, match="not both"):
        secretbox.from_settings(Settings(secret_key=secretbox.generate_key(), secret_key_file=path))


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_an_empty_key_file_setting_counts_as_unset(tmp_path: Path, blank: str) -> None:
    """`REWARDMILES_SECRET_KEY_FILE=` (as an empty SECRET_KEY) is no file, not Path(".")."""
    settings = Settings.from_env({"REWARDMILES_SECRET_KEY_FILE": blank})
    assert settings.secret_key_file is None
    key = secretbox.generate_key()
    env = {"REWARDMILES_SECRET_KEY": key, "REWARDMILES_SECRET_KEY_FILE": blank}
    box = secretbox.from_settings(Settings.from_env(env, database_url="sqlite://"))
    assert box.key_id == secretbox.key_id(parse_key(key, "k"))
    dev = Settings.from_env(
        {"REWARDMILES_SECRET_KEY_FILE": blank}, database_url=f"sqlite:///{tmp_path / 'd.db'}"
    )
    secretbox.from_settings(dev)  # development mode: the key file beside the database
    assert (tmp_path / "d.db.key").exists()
