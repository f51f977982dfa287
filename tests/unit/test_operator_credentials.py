"""Operator passwords (argon2id), admin credentials and roles: the pure parts."""

from __future__ import annotations

import pytest

from rewardmiles.operators import credentials, passwords
from rewardmiles.operators.passwords import HashCost, PasswordError
from rewardmiles.vocabulary import OperatorRole

COST = HashCost(time_cost=1, memory_kib=1024)


def test_a_password_verifies_only_against_its_own_hash() -> None:
    stored = passwords.hash_password("correct horse battery", COST)
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=4$")
    assert passwords.verify_password(stored, "correct horse battery", COST)
    assert not passwords.verify_password(stored, "correct horse batterY", COST)
    assert not passwords.verify_password("not a hash", "correct horse battery", COST)
    assert not passwords.verify_password(None, "correct horse battery", COST)  # unknown e-mail
    assert stored != passwords.hash_password("correct horse battery", COST)  # salted


def test_a_hash_of_other_parameters_needs_rehashing() -> None:
    stored = passwords.hash_password("correct horse battery", COST)
    assert not passwords.needs_rehash(stored, COST)
    assert passwords.needs_rehash(stored, HashCost(time_cost=2, memory_kib=1024))
    assert passwords.needs_rehash("scrypt$14$x$y", COST)


@pytest.mark.parametrize("password", ["", "short", "x" * 11, " " * 12, "\t" * 20, "x" * 1025])
def test_a_chosen_password_has_12_to_1024_characters_not_all_blank(password: str) -> None:
    with pytest.raises(PasswordError):
        passwords.check_new_password(password)


def test_generated_passwords_pass_the_rules_and_differ() -> None:
    made = {passwords.generate_password() for _ in range(50)}
    assert len(made) == 50
    for password in made:
        passwords.check_new_password(password)
        assert len(password) == 24


def test_admin_tokens_carry_their_prefix_and_secrets_compare_by_value() -> None:
    token = credentials.new_admin_token()
    assert token.startswith("rma_")
    assert credentials.is_admin_token(token)
    assert not credentials.is_admin_token("rma_")
    assert not credentials.is_admin_token("eyJhbGciOiJFZERTQSJ9.e30.sig")
    assert credentials.digest(token) == credentials.digest(token)
    assert len(credentials.digest(token)) == 64
    assert credentials.same_secret("abc", "abc")
    assert not credentials.same_secret("abc", "abd")


def test_each_role_includes_those_below_it_and_no_other() -> None:
    viewer, agent, admin = OperatorRole.VIEWER, OperatorRole.AGENT, OperatorRole.ADMIN
    allowed = {(a, b) for a in OperatorRole for b in OperatorRole if a.includes(b)}
    assert allowed == {
        (viewer, viewer),
        (agent, viewer),
        (agent, agent),
        (admin, viewer),
        (admin, agent),
        (admin, admin),
    }
