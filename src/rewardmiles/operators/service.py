"""Operators of the support desk: their accounts and roles, browser sessions, admin API tokens,
the throttling of failed sign-ins, and the audit log of what they change.

Every function takes the caller's session (the unit of work) and never commits. Password hashes
are computed by the caller, outside any transaction (`operators.passwords`): they are slow on
purpose.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session

from rewardmiles import ids, limits
from rewardmiles.config import Settings
from rewardmiles.errors import AlreadyExistsError, MissingError, OperatorError
from rewardmiles.operators import credentials, passwords, repository
from rewardmiles.operators.passwords import HashCost
from rewardmiles.operators.repository import (
    AuditEntry,
    FailureCount,
    StoredOperator,
    StoredSession,
    StoredToken,
)
from rewardmiles.vocabulary import OperatorRole, OperatorStatus, TokenState

# An addr-spec of ASCII characters (RFC 5322's dot-atom, without quoted local parts or address
# literals); both dialects' `lower()` agree on ASCII, which keeps the unique index exact.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_TOKEN_NAME = re.compile(
    rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{limits.admin_token_name_chars_max - 1}}}$"
)
# A session's last_seen_at (and a token's last_used_at) is written at most once a minute, not on
# every call: the idle timeout is exact to within that minute.
TOUCH_EVERY = timedelta(seconds=60)
LOCKOUT_BASE_SECONDS = 2


class OperatorAccountError(OperatorError):
    pass


class OperatorExistsError(OperatorAccountError, AlreadyExistsError):
    pass


class MissingOperatorError(OperatorAccountError, MissingError):
    pass


class AdminTokenError(OperatorError):
    pass


class TokenExistsError(AdminTokenError, AlreadyExistsError):
    pass


class MissingTokenError(AdminTokenError, MissingError):
    pass


# --------------------------------------------------------------------------- views


@dataclass(frozen=True, slots=True)
class OperatorView:
    id: str
    email: str
    display_name: str
    role: OperatorRole
    status: OperatorStatus
    created_at: datetime
    last_sign_in_at: datetime | None

    @classmethod
    def of(cls, row: StoredOperator) -> OperatorView:
        return cls(
            row.id,
            row.email,
            row.display_name,
            OperatorRole(row.role),
            OperatorStatus(row.status),
            row.created_at,
            row.last_sign_in_at,
        )

    def audit_state(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "displayName": self.display_name,
            "role": self.role.value,
            "status": self.status.value,
        }


@dataclass(frozen=True, slots=True)
class TokenView:
    id: str
    name: str
    role: OperatorRole
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: StoredToken) -> TokenView:
        return cls(
            row.id,
            row.name,
            OperatorRole(row.role),
            row.created_by,
            row.created_at,
            row.expires_at,
            row.revoked_at,
            row.last_used_at,
        )

    def state(self, now: datetime) -> TokenState:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        return TokenState.EXPIRED if now >= self.expires_at else TokenState.ACTIVE


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit log names them: an operator's e-mail, `token:NAME`, or
    `cli@HOST`; and the request it came with, if any."""

    name: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls the admin API: an operator by their session, or an admin token."""

    role: OperatorRole
    via: Literal["session", "token"]
    actor: str  # the audit log's name of the caller
    log_name: str  # the access log's: `operator:ID` or `admin-token:ID`, never an e-mail
    email: str | None = None  # a session's operator
    display_name: str | None = None
    token: TokenView | None = None
    session_id: str | None = None
    csrf_token: str | None = None

    def may(self, role: OperatorRole) -> bool:
        return self.role.includes(role)


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta

    @classmethod
    def of(cls, settings: Settings) -> SessionPolicy:
        return cls(
            timedelta(minutes=settings.admin_session_idle_minutes),
            timedelta(hours=settings.admin_session_absolute_hours),
        )


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    failures_allowed: int  # per account and address
    address_failures_allowed: int  # per address, whatever the account
    account_failures_alarm: int  # per account, whatever the address
    lockout_max_seconds: int
    cost: HashCost

    @classmethod
    def of(cls, settings: Settings) -> SignInPolicy:
        return cls(
            settings.sign_in_failures_allowed,
            settings.sign_in_address_failures_allowed,
            settings.sign_in_account_failures_alarm,
            settings.sign_in_lockout_max_seconds,
            HashCost.of(settings),
        )

    @property
    def memory(self) -> timedelta:
        """How long a count of failures is kept after its last failure: at least an hour, and
        at least twice the longest lockout, so that no lockout is cut short by forgetting."""
        return max(timedelta(hours=1), timedelta(seconds=2 * self.lockout_max_seconds))


# --------------------------------------------------------------------------- audit log


def audit(
    session: Session,
    actor: Actor,
    action: str,
    entity: str,
    entity_id: str,
    now: datetime,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Append one entry to the operator audit log (in the caller's unit of work, so the entry
    is stored exactly when the change is)."""
    repository.append_audit(
        session,
        AuditEntry(
            now,
            actor.name,
            action,
            entity,
            entity_id,
            _json(before),
            _json(after),
            note,
            actor.request_id,
        ),
    )


def _json(state: dict[str, Any] | None) -> str | None:
    return None if state is None else json.dumps(state, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- accounts


def normalize_email(raw: str) -> str:
    """`raw` without surrounding blanks, checked to be an ASCII e-mail address."""
    email = raw.strip()
    if len(email) > limits.operator_email_chars_max or not _EMAIL.match(email):
        raise OperatorAccountError(
            f"{raw!r} is not an e-mail address (ASCII, name@domain)", field="email"
        )
    return email


def _display_name(raw: str | None, email: str) -> str:
    name = (raw if raw is not None else email.split("@", 1)[0]).strip()
    longest = limits.operator_display_name_chars_max
    if not 1 <= len(name) <= longest or not name.isprintable():
        raise OperatorAccountError(
            f"a display name has 1 to {longest} printable characters", field="displayName"
        )
    return name


def _existing(session: Session, email: str) -> StoredOperator:
    found = repository.operator_by_email(session, normalize_email(email))
    if found is None:
        raise MissingOperatorError(f"no operator {email.strip()}")
    return found


def add_operator(
    session: Session,
    email: str,
    role: OperatorRole,
    password_hash: str,
    now: datetime,
    actor: Actor,
    *,
    display_name: str | None = None,
) -> OperatorView:
    address = normalize_email(email)
    if repository.operator_by_email(session, address) is not None:
        raise OperatorExistsError(
            f"an operator {address} exists already (e-mails ignore case)", field="email"
        )
    row = StoredOperator(
        ids.uuid4_hex(),
        address,
        _display_name(display_name, address),
        role.value,
        OperatorStatus.ACTIVE.value,
        password_hash,
        now,
        None,
    )
    repository.add_operator(session, row)
    view = OperatorView.of(row)
    audit(session, actor, "operator.add", "operator", view.id, now, after=view.audit_state())
    return view


def list_operators(session: Session) -> list[OperatorView]:
    return [OperatorView.of(row) for row in repository.operators(session)]


def operator_page(session: Session, after: str | None, limit: int) -> list[OperatorView]:
    """Up to `limit` operators by id, after the id `after`."""
    return [OperatorView.of(row) for row in repository.operators_after(session, after, limit)]


def operator_email(session: Session, operator_id: str) -> str:
    """The e-mail of the operator `operator_id` (the admin API names operators by id)."""
    row = repository.operator_by_id(session, operator_id)
    if row is None:
        raise MissingOperatorError(f"no operator {operator_id}")
    return row.email


def _keep_an_admin(session: Session, row: StoredOperator) -> None:
    """Refuse to disable or demote the last active admin: nobody could manage operators then
    (short of the CLI on the database host)."""
    if (
        row.role == OperatorRole.ADMIN
        and row.status == OperatorStatus.ACTIVE
        and repository.active_admins(session) <= 1
    ):
        raise OperatorAccountError(
            f"{row.email} is the last active admin: make another admin first"
        )


def set_status(
    session: Session, email: str, status: OperatorStatus, now: datetime, actor: Actor
) -> tuple[OperatorView, int] | None:
    """Enable or disable an operator; disabling ends every session of theirs at once. Returns
    the operator as they are now and the sessions ended, or None if nothing changed."""
    row = _existing(session, email)
    if row.status == status.value:
        return None
    if status is OperatorStatus.DISABLED:
        _keep_an_admin(session, row)
    repository.change_operator(session, row.id, status=status.value)
    ended = (
        repository.delete_sessions_of(session, row.id) if status is OperatorStatus.DISABLED else 0
    )
    before = OperatorView.of(row)
    after = OperatorView.of(dataclasses.replace(row, status=status.value))
    audit(
        session,
        actor,
        "operator.disable" if status is OperatorStatus.DISABLED else "operator.enable",
        "operator",
        row.id,
        now,
        before={"status": before.status.value},
        after={"status": after.status.value},
        note=f"{ended} session(s) ended" if ended else None,
    )
    return after, ended


def set_role(
    session: Session, email: str, role: OperatorRole, now: datetime, actor: Actor
) -> tuple[OperatorRole, OperatorView]:
    """Change an operator's role (their sessions carry it from their next request on): the role
    before, and the operator as they are now."""
    row = _existing(session, email)
    before = OperatorRole(row.role)
    if before is OperatorRole.ADMIN and role is not OperatorRole.ADMIN:
        _keep_an_admin(session, row)
    if before is not role:
        repository.change_operator(session, row.id, role=role.value)
        audit(
            session,
            actor,
            "operator.set_role",
            "operator",
            row.id,
            now,
            before={"role": before.value},
            after={"role": role.value},
        )
    return before, OperatorView.of(dataclasses.replace(row, role=role.value))


def reset_password(
    session: Session, email: str, password_hash: str, now: datetime, actor: Actor
) -> tuple[OperatorView, int]:
    """Give an operator a new password; every session of theirs ends (whoever held the old one
    is signed out). The operator and the sessions ended."""
    row = _existing(session, email)
    repository.change_operator(session, row.id, password_hash=password_hash)
    ended = repository.delete_sessions_of(session, row.id)
    audit(
        session,
        actor,
        "operator.reset_password",
        "operator",
        row.id,
        now,
        note=f"password replaced; {ended} session(s) ended",
    )
    return OperatorView.of(row), ended


# --------------------------------------------------------------------------- admin tokens


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str  # shown once, stored only hashed
    view: TokenView


def create_token(
    session: Session,
    name: str,
    role: OperatorRole,
    expires_days: int,
    now: datetime,
    actor: Actor,
) -> NewToken:
    if not _TOKEN_NAME.match(name):
        raise AdminTokenError(
            f"{name!r}: a token name has 1 to {limits.admin_token_name_chars_max} letters, digits, '.', '_' or '-', starting "
            "with a letter or digit",
            field="name",
        )
    if not 1 <= expires_days <= limits.admin_token_expires_days_max:
        raise AdminTokenError(
            f"a token expires after 1 to {limits.admin_token_expires_days_max} days",
            field="expiresDays",
        )
    if repository.unrevoked_token_by_name(session, name) is not None:
        raise TokenExistsError(f"a token named {name} exists (revoke it first)", field="name")
    value = credentials.new_admin_token()
    row = StoredToken(
        ids.uuid4_hex(),
        name,
        role.value,
        actor.name,
        now,
        now + timedelta(days=expires_days),
        None,
        None,
    )
    repository.add_token(session, row, credentials.digest(value))
    view = TokenView.of(row)
    audit(
        session,
        actor,
        "admin_token.create",
        "admin_token",
        view.id,
        now,
        after={"name": name, "role": role.value, "expiresAt": view.expires_at.isoformat()},
    )
    return NewToken(value, view)


def list_tokens(session: Session) -> list[TokenView]:
    return [TokenView.of(row) for row in repository.tokens(session)]


def token_page(session: Session, after: str | None, limit: int) -> list[TokenView]:
    """Up to `limit` admin tokens by id, after the id `after`."""
    return [TokenView.of(row) for row in repository.tokens_after(session, after, limit)]


def revoke_token(session: Session, name_or_id: str, now: datetime, actor: Actor) -> TokenView:
    """Revoke a token named by its id, or by the name of an unrevoked one; it is refused from
    the next request on."""
    row = repository.token_by_id(session, name_or_id) or repository.unrevoked_token_by_name(
        session, name_or_id
    )
    if row is None:
        raise MissingTokenError(f"no admin token with id or (unrevoked) name {name_or_id}")
    if row.revoked_at is not None:
        raise AdminTokenError(f"admin token {row.id} ({row.name}) is revoked already")
    repository.revoke_token(session, row.id, now)
    audit(
        session,
        actor,
        "admin_token.revoke",
        "admin_token",
        row.id,
        now,
        before={"revoked": False},
        after={"revoked": True},
        note=f"name {row.name}",
    )
    return TokenView.of(row)


# --------------------------------------------------------------------------- sign-in


@dataclass(frozen=True, slots=True)
class SignInCheck:
    """What a sign-in needs before the password is checked: the operator (None for an unknown
    e-mail), and how long the account and address are locked out (0: not)."""

    operator: StoredOperator | None
    retry_after_seconds: int


def failure_keys(email: str, address: str) -> tuple[str, str, str]:
    """The counts a failed sign-in adds to: (account and address, address, account). The
    e-mail as typed (any text, a password typed in the wrong field included) is kept only as a
    digest of its lower-case form."""
    account = credentials.digest(email.strip().lower())[:32]
    return f"pair:{account}|{address}", f"address:{address}", f"account:{account}"


def lockout_seconds(count: FailureCount | None, allowed: int, now: datetime, cap: int) -> int:
    """Seconds left of the lockout that `count` earns: none within `allowed` failures; then
    2 s after the first failure beyond, doubling with each one, at most `cap`, from the last."""
    if count is None or count.failures < allowed:
        return 0
    beyond = count.failures - allowed
    length = cap if beyond >= 30 else min(cap, LOCKOUT_BASE_SECONDS * 2**beyond)
    left = (count.last_failure_at + timedelta(seconds=length) - now).total_seconds()
    return max(0, math.ceil(left))


def sign_in_check(
    session: Session, email: str, address: str, now: datetime, policy: SignInPolicy
) -> SignInCheck:
    """An account and address pair is locked out after `failures_allowed` failures of its own;
    an address after `address_failures_allowed` whatever the accounts. An account is never
    locked out as a whole (a guesser could then lock its operator out): once it has met
    `account_failures_alarm` failures from anywhere, each address may fail for it only once
    before it is locked out, and an address that has not failed still signs in."""
    pair, address_key, account = failure_keys(email, address)
    counts = repository.failure_counts(
        session, (pair, address_key, account), since=now - policy.memory
    )
    under_attack = (
        counts.get(account, FailureCount(0, now)).failures >= policy.account_failures_alarm
    )
    pair_allowed = 1 if under_attack else policy.failures_allowed
    cap = policy.lockout_max_seconds
    retry = max(
        lockout_seconds(counts.get(pair), pair_allowed, now, cap),
        lockout_seconds(counts.get(address_key), policy.address_failures_allowed, now, cap),
    )
    try:
        operator = repository.operator_by_email(session, normalize_email(email))
    except OperatorAccountError:
        operator = None
    return SignInCheck(operator, retry)


def check_password(check: SignInCheck, password: str, cost: HashCost) -> tuple[bool, str | None]:
    """CPU only, outside any transaction: whether the password signs the operator in (a
    disabled operator never is, after the same work), and a new hash when the stored one was
    made with other parameters than `cost`."""
    stored = check.operator
    matched = passwords.verify_password(
        stored.password_hash if stored is not None else None, password, cost
    )
    if stored is None or not matched or stored.status != OperatorStatus.ACTIVE.value:
        return False, None
    rehash = (
        passwords.hash_password(password, cost)
        if passwords.needs_rehash(stored.password_hash, cost)
        else None
    )
    return True, rehash


def record_failed_sign_in(
    session: Session, email: str, address: str, now: datetime, policy: SignInPolicy
) -> None:
    forget_before = now - policy.memory
    repository.count_failure(
        session, failure_keys(email, address), now, forget_before=forget_before
    )
    repository.purge_failures(session, before=forget_before)


def purge_ended(
    session: Session, now: datetime, sessions: SessionPolicy, sign_ins: SignInPolicy
) -> int:
    """Remove the sessions the timeouts ended (whoever never signed out nor in again) and the
    failed sign-in counts already forgotten: the worker's hourly purge. The sessions removed."""
    ended = repository.delete_ended_sessions(
        session, seen_before=now - sessions.idle, created_before=now - sessions.absolute
    )
    repository.purge_failures(session, before=now - sign_ins.memory)
    return ended


@dataclass(frozen=True, slots=True)
class NewSession:
    cookie_value: str  # shown once, in the Set-Cookie header; stored only hashed
    csrf_token: str
    operator: OperatorView


def start_session(
    session: Session,
    checked: StoredOperator,
    address: str,
    now: datetime,
    policy: SessionPolicy,
    *,
    replaces: str | None = None,
    rehash: str | None = None,
) -> NewSession | None:
    """A new session for the operator whose password was just checked (always a new id: a
    cookie value planted beforehand is never adopted). The session named by `replaces` (the
    cookie the browser sent) ends, and so do the operator's sessions past their timeouts; the
    operator's failures from this address are forgotten. None when the operator was disabled
    or given another password while the password was being checked."""
    current = repository.operator_by_email(session, checked.email)
    if (
        current is None
        or current.id != checked.id
        or current.status != OperatorStatus.ACTIVE.value
        or current.password_hash != checked.password_hash
    ):
        return None
    if replaces is not None:
        repository.delete_session(session, credentials.digest(replaces))
    repository.delete_ended_sessions_of(
        session,
        current.id,
        seen_before=now - policy.idle,
        created_before=now - policy.absolute,
    )
    repository.forget_failures(session, failure_keys(current.email, address)[0])
    repository.change_operator(session, current.id, last_sign_in_at=now, password_hash=rehash)
    cookie_value = credentials.new_session_secret()
    csrf_token = credentials.new_csrf_token()
    repository.add_session(
        session, credentials.digest(cookie_value), current.id, csrf_token, now, address
    )
    return NewSession(cookie_value, csrf_token, OperatorView.of(current))


def end_session(session: Session, session_id: str) -> None:
    repository.delete_session(session, session_id)


# --------------------------------------------------------------------------- authentication


@dataclass(frozen=True, slots=True)
class Verdict:
    """A credential judged: the caller, or why not (`expired` or unknown); `touch` when its
    last use should be written."""

    caller: Caller | None
    expired: bool = False
    touch: bool = False
    record_id: str | None = None


def find_session(session: Session, cookie_value: str) -> StoredSession | None:
    return repository.session_by_id(session, credentials.digest(cookie_value))


def judge_session(stored: StoredSession | None, now: datetime, policy: SessionPolicy) -> Verdict:
    if stored is None or stored.status != OperatorStatus.ACTIVE.value:
        return Verdict(None)
    if now - stored.last_seen_at >= policy.idle or now - stored.created_at >= policy.absolute:
        return Verdict(None, expired=True, record_id=stored.id)
    caller = Caller(
        OperatorRole(stored.role),
        "session",
        stored.email,
        f"operator:{stored.operator_id}",
        email=stored.email,
        display_name=stored.display_name,
        session_id=stored.id,
        csrf_token=stored.csrf_token,
    )
    return Verdict(caller, touch=now - stored.last_seen_at >= TOUCH_EVERY, record_id=stored.id)


def touch_session(session: Session, session_id: str, now: datetime) -> None:
    repository.touch_session(session, session_id, now)


def find_token(session: Session, token_value: str) -> StoredToken | None:
    return repository.token_by_hash(session, credentials.digest(token_value))


def judge_token(stored: StoredToken | None, now: datetime) -> Verdict:
    if stored is None:
        return Verdict(None)
    view = TokenView.of(stored)
    state = view.state(now)
    if state != TokenState.ACTIVE:
        return Verdict(None, expired=state == TokenState.EXPIRED, record_id=view.id)
    caller = Caller(view.role, "token", f"token:{view.name}", f"admin-token:{view.id}", token=view)
    last = view.last_used_at
    return Verdict(caller, touch=last is None or now - last >= TOUCH_EVERY, record_id=view.id)


def touch_token(session: Session, token_id: str, now: datetime) -> None:
    repository.touch_token(session, token_id, now)
