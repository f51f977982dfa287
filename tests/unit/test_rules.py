"""Pure rules, no database: idempotency keys, error catalogue, log masking, secrets, settings,
database URLs and the wire schema of the event endpoints."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rewardmiles import errors, limits, logs
from rewardmiles.auth import secrets
from rewardmiles.config import Settings
from rewardmiles.db.engine import DatabaseUrlError, normalize_url
from rewardmiles.errors import PROBLEM_CODES, FieldError, ProblemError, problem_from_error
from rewardmiles.idempotency.service import fingerprint, parse_key
from rewardmiles.issuance.schemas import PostEventRequest, ReverseEventRequest
from rewardmiles.logs import mask_collector_numbers
from rewardmiles.vocabulary import NegativeBalancePolicy, UnknownCollectorPolicy

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- Idempotency-Key


def _key_error(raw: str) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        parse_key(raw)
    return caught.value


def test_absent_key_is_none() -> None:
    assert parse_key(None) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc", "abc"),
        ("  9f1c-uuid-like  ", "9f1c-uuid-like"),
        ("a b", "a b"),
        ("~!#$%&'()*+,-./:;<=>?@[]^_`{|}", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
        ("k" * 255, "k" * 255),
    ],
)
def test_valid_key_is_returned(raw: str, expected: str) -> None:
    assert parse_key(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"abc"', "abc"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        ('"' + "k" * 255 + '"', "k" * 255),  # the quotes do not count towards 255
    ],
)
def test_quoted_structured_field_string_is_unwrapped(raw: str, expected: str) -> None:
    assert parse_key(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        '""',
        "k" * 256,
        '"' + "k" * 256 + '"',
        "abc\x01def",
        "tab\there",
        "new\nline",
        "del\x7f",
        "café",
    ],
    ids=[
        "empty",
        "blank",
        "empty-quoted",
        "256-chars",
        "256-chars-quoted",
        "control-char",
        "tab",
        "newline",
        "DEL",
        "non-ascii",
    ],
)
def test_invalid_key_is_400_idempotency_key_invalid(raw: str) -> None:
    error = _key_error(raw)
    assert error.code == "IDEMPOTENCY_KEY_INVALID"
    assert error.status == 400
    message = "Idempotency-Key must be 1–255 printable ASCII characters."
    assert error.detail == message
    assert [(e.code, e.field, e.message) for e in error.errors] == [
        ("IDEMPOTENCY_KEY_INVALID", "Idempotency-Key", message)
    ]


def test_fingerprint_is_stable_sha256_hex() -> None:
    first = fingerprint("POST", "/checkout/issuance/post/event", b'{"a":1}')
    assert first == fingerprint("POST", "/checkout/issuance/post/event", b'{"a":1}')
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    expected = hashlib.sha256(b'POST /checkout/issuance/post/event\n{"a":1}').hexdigest()
    assert first == expected


def test_fingerprint_method_is_case_insensitive() -> None:
    assert fingerprint("post", "/p", b"{}") == fingerprint("POST", "/p", b"{}")


@pytest.mark.parametrize(
    ("other_method", "other_path", "other_body"),
    [
        ("POST", "/checkout/issuance/reverse/event", b'{"a":1}'),
        ("POST", "/checkout/issuance/post/event", b'{"a":2}'),
        ("POST", "/checkout/issuance/post/event", b'{"a":1} '),
        ("PUT", "/checkout/issuance/post/event", b'{"a":1}'),
    ],
    ids=["path", "body", "body-whitespace", "method"],
)
def test_fingerprint_differs_by_method_path_and_body(
    other_method: str, other_path: str, other_body: bytes
) -> None:
    base = fingerprint("POST", "/checkout/issuance/post/event", b'{"a":1}')
    assert fingerprint(other_method, other_path, other_body) != base


# --------------------------------------------------------------------------- errors


def test_problem_error_with_unknown_code_raises_key_error() -> None:
    with pytest.raises(KeyError, match="NOT_A_CODE"):
        ProblemError("NOT_A_CODE", "whatever")


def test_problem_error_field_becomes_one_errors_entry() -> None:
    error = ProblemError("FIELD_INVALID", "bad field", field="issuances[0].milesAmount")
    assert error.code == "FIELD_INVALID"
    assert error.status == 400
    assert error.detail == "bad field"
    assert error.errors == (FieldError("FIELD_INVALID", "issuances[0].milesAmount", "bad field"),)
    body = problem_from_error(error, "req-1")
    assert body == {
        "type": "/problems/FIELD_INVALID",
        "title": PROBLEM_CODES["FIELD_INVALID"].title,
        "status": 400,
        "detail": "bad field",
        "code": "FIELD_INVALID",
        "errors": [
            {
                "code": "FIELD_INVALID",
                "field": "issuances[0].milesAmount",
                "message": "bad field",
            }
        ],
        "requestId": "req-1",
    }


def test_problem_error_without_field_has_no_errors_member() -> None:
    error = ProblemError("INTERNAL_ERROR", "boom")
    assert error.errors == ()
    body = problem_from_error(error, None)
    assert "errors" not in body
    assert "requestId" not in body
    assert body["status"] == 500


def test_problem_error_explicit_errors_win_over_field() -> None:
    listed = [
        FieldError("FIELD_REQUIRED", "sponsorCode", "required"),
        FieldError("MILES_AMOUNT_INVALID", "issuances[0].milesAmount", "too big"),
    ]
    error = ProblemError("VALIDATION_FAILED", "2 fields", field="ignored", errors=listed)
    assert error.errors == tuple(listed)


def test_catalogue_codes_are_unique_and_well_formed() -> None:
    codes = [spec.code for spec in errors._SPECS]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    assert duplicates == []
    assert len(PROBLEM_CODES) == len(codes)
    for spec in PROBLEM_CODES.values():
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", spec.code), spec.code
        assert 400 <= spec.status <= 599, spec.code
        assert spec.title.strip()
        assert spec.meaning.strip()


# SPEC §6: "It covers at least …". Each family: words the code must contain, and its HTTP status.
SPEC_FAMILIES: list[tuple[str, tuple[str, ...], int]] = [
    ("field required", ("FIELD_REQUIRED",), 400),
    ("field invalid", ("FIELD_INVALID",), 400),
    ("field unknown", ("FIELD_UNKNOWN",), 400),
    ("collector number invalid", ("COLLECTOR_NUMBER_INVALID",), 400),
    ("collector not found", ("COLLECTOR_NOT_FOUND",), 400),
    ("collector closed", ("COLLECTOR_CLOSED",), 400),
    ("sponsor unknown", ("SPONSOR_UNKNOWN",), 400),
    ("sponsor inactive", ("SPONSOR_INACTIVE",), 400),
    ("sponsor not allowed", ("SPONSOR_NOT_ALLOWED",), 403),
    ("offer unknown", ("OFFER_UNKNOWN",), 400),
    ("offer inactive", ("OFFER_INACTIVE",), 400),
    ("location unknown", ("LOCATION_UNKNOWN",), 400),
    ("miles amount invalid", ("MILES_AMOUNT_INVALID",), 400),
    ("date out of range", ("DATE_OUT_OF_RANGE",), 400),
    ("basket amounts inconsistent", ("BASKET",), 400),
    ("duplicate transaction", ("DUPLICATE_TRANSACTION",), 400),
    ("original not found", ("ORIGINAL_NOT_FOUND",), 400),
    ("original collector mismatch", ("ORIGINAL_COLLECTOR_MISMATCH",), 400),
    # Amended 2026-11-30: a REVERSE naming a program-calculated ISSUE (use RETURN).
    ("original of the other family", ("ORIGINAL_WRONG_FAMILY",), 400),
    ("reversal exceeds original", ("REVERSAL_EXCEEDS_ORIGINAL",), 400),
    ("return exceeds purchase", ("RETURN", "EXCEEDS"), 400),
    ("insufficient balance", ("INSUFFICIENT_BALANCE",), 400),
    ("pending expired", ("PENDING_EXPIRED",), 400),
    ("idempotency key reused", ("IDEMPOTENCY_KEY_REUSED",), 422),
    ("idempotency key in use", ("IDEMPOTENCY_KEY_IN_USE",), 409),
    ("token missing", ("TOKEN_MISSING",), 401),
    ("token invalid", ("TOKEN_INVALID",), 401),
    ("token expired", ("TOKEN_EXPIRED",), 401),
    ("payload too large", ("PAYLOAD_TOO_LARGE",), 413),
    ("unsupported media type", ("UNSUPPORTED_MEDIA_TYPE",), 415),
    ("rate limited", ("RATE_LIMITED",), 429),
    ("internal error", ("INTERNAL_ERROR",), 500),
]


@pytest.mark.parametrize(
    ("family", "words", "status"),
    [pytest.param(f, w, s, id=f) for f, w, s in SPEC_FAMILIES],
)
def test_every_spec_error_family_is_in_the_catalogue(
    family: str, words: tuple[str, ...], status: int
) -> None:
    matching = [spec for spec in PROBLEM_CODES.values() if all(word in spec.code for word in words)]
    assert matching, f"no catalogue code for SPEC §6 family {family!r}"
    assert {spec.status for spec in matching} == {status}


def test_retryable_flags_follow_the_meaning_of_each_code() -> None:
    retryable = {code for code, spec in PROBLEM_CODES.items() if spec.retryable}
    assert {
        "INTERNAL_ERROR",
        "RATE_LIMITED",
        "IDEMPOTENCY_KEY_IN_USE",
        "TOKEN_EXPIRED",
    } <= retryable
    never = {
        "FIELD_INVALID",
        "COLLECTOR_CLOSED",
        "DUPLICATE_TRANSACTION",
        "REVERSAL_EXCEEDS_ORIGINAL",
        "IDEMPOTENCY_KEY_REUSED",
    }
    assert not (never & retryable)


def test_published_catalogue_in_docs_matches_the_code() -> None:
    text = (REPO / "docs" / "errors.md").read_text()
    rows = re.findall(r"^\| `([A-Z_0-9]+)` \| (\d{3}) \| [^|]+ \| (yes|no) \|", text, re.M)
    published = {code: (int(status), flag == "yes") for code, status, flag in rows}
    assert published == {
        code: (spec.status, spec.retryable) for code, spec in PROBLEM_CODES.items()
    }


# --------------------------------------------------------------------------- log masking


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("collector 80085102028 credited", "collector 800*****028 credited"),
        ('{"collectorNumber":"80085102028"}', '{"collectorNumber":"800*****028"}'),
        ("a=80085102028,b=12345678901", "a=800*****028,b=123*****901"),
        ("id:80085102028x", "id:800*****028x"),
        ("ten 8008510202 digits", "ten 8008510202 digits"),
        ("twelve 800851020281 digits", "twelve 800851020281 digits"),
        ("no numbers here", "no numbers here"),
    ],
)
def test_mask_collector_numbers(text: str, expected: str) -> None:
    assert mask_collector_numbers(text) == expected


@given(st.from_regex(r"[0-9]{11}", fullmatch=True))
def test_masked_text_never_contains_the_full_number(number: str) -> None:
    masked = mask_collector_numbers(f"posted for {number} at 12:00")
    assert number not in masked
    assert f"{number[:3]}*****{number[-3:]}" in masked


@pytest.mark.parametrize("json_lines", [True, False])
def test_log_events_mask_collector_numbers_in_every_field(
    json_lines: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message, string and 11-digit integer fields, and a traceback are masked; other
    numbers and events without a collector number are left as they are."""
    saved = structlog.get_config()  # logs.configure binds the stream capsys replaces
    logs.configure("info", json=json_lines)
    log = logs.get_logger("test")
    try:
        try:
            raise ValueError("collector 80085102028 not found")
        except ValueError:
            log.exception(
                "posted 80085102029",
                collector="80085102030",
                number=80085102031,
                short="8008510203",
                miles=1234567,
            )
        line = capsys.readouterr().err
        for number in range(80085102028, 80085102032):
            assert str(number) not in line
            assert f"{str(number)[:3]}*****{str(number)[-3:]}" in line
        assert "8008510203" in line  # ten digits: not a collector number
        if json_lines:
            event = orjson.loads(line)
            assert event["number"] == "800*****031"
            assert event["miles"] == 1234567
        log.info("settled", collector=80085102034)  # an integer is the only field that holds one
        only_integer = capsys.readouterr().err
        assert "80085102034" not in only_integer
        assert "800*****034" in only_integer
        log.info("request", path="/checkout/issuance/post/event", status=200)
        plain = capsys.readouterr().err
        assert "/checkout/issuance/post/event" in plain
        if json_lines:
            assert orjson.loads(plain)["status"] == 200
    finally:
        structlog.configure(**saved)


# --------------------------------------------------------------------------- client secrets


def test_secret_hash_roundtrip() -> None:
    stored = secrets.hash_secret("s3cret-value", cost=10)
    assert stored.startswith("scrypt$10$")
    assert "s3cret-value" not in stored
    assert secrets.verify_secret("s3cret-value", stored) is True


def test_wrong_secret_does_not_verify() -> None:
    stored = secrets.hash_secret("s3cret-value", cost=10)
    assert secrets.verify_secret("s3cret-valuE", stored) is False
    assert secrets.verify_secret("", stored) is False


def test_same_secret_hashes_differently_each_time() -> None:
    first = secrets.hash_secret("same", cost=10)
    second = secrets.hash_secret("same", cost=10)
    assert first != second
    assert secrets.verify_secret("same", first)
    assert secrets.verify_secret("same", second)


@pytest.mark.parametrize(
    "stored",
    ["", "plain-text-secret", "bcrypt$10$abc$def", "scrypt$ten$abc$def", "scrypt$10$abc"],
)
def test_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert secrets.verify_secret("plain-text-secret", stored) is False


def test_new_client_credentials_are_random() -> None:
    assert re.fullmatch(r"rmc_[0-9a-f]{24}", secrets.new_client_id())
    assert secrets.new_client_id() != secrets.new_client_id()
    assert len(secrets.new_client_secret()) >= 40
    assert secrets.new_client_secret() != secrets.new_client_secret()


# --------------------------------------------------------------------------- settings


def test_settings_read_prefixed_values_from_the_given_mapping() -> None:
    settings = Settings.from_env(
        {
            "REWARDMILES_DATABASE_URL": "postgresql://u@h:5432/d",
            "REWARDMILES_SECRET_HASH_COST": "12",
            "REWARDMILES_NEGATIVE_BALANCE_POLICY": "reject",
            "REWARDMILES_UNKNOWN_COLLECTOR_POLICY": "enroll",
            "REWARDMILES_MILES_PER_LINE_MAX": "500",
            "REWARDMILES_LOG_JSON": "false",
            "REWARDMILES_LOG_LEVEL": "warning",
            "DATABASE_URL": "sqlite:///ignored.db",
            "SECRET_HASH_COST": "19",
        }
    )
    assert settings.database_url == "postgresql://u@h:5432/d"
    assert settings.secret_hash_cost == 12
    assert settings.negative_balance_policy is NegativeBalancePolicy.REJECT
    assert settings.unknown_collector_policy is UnknownCollectorPolicy.ENROLL
    assert settings.miles_per_line_max == 500
    assert settings.log_json is False
    assert settings.log_level == "warning"


def test_settings_defaults_when_nothing_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REWARDMILES_SECRET_HASH_COST", "19")  # must not leak: a mapping is given
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.secret_hash_cost == 14
    assert settings.database_url == f"sqlite:///{tmp_path / 'rewardmiles.db'}"
    assert settings.negative_balance_policy is NegativeBalancePolicy.ALLOW
    assert settings.unknown_collector_policy is UnknownCollectorPolicy.PENDING
    assert settings.miles_per_line_max == 100_000
    assert settings.program_time_zone == "America/Toronto"


def test_the_test_clock_is_refused_without_its_marker_and_frozen_with_it() -> None:
    assert Settings.from_env({}).frozen_clock is None
    for value in ("2026-12-15T23:59:59-05:00", "frozen:2026-12-15T23:59:59-05:00", "yes"):
        with pytest.raises(ValidationError, match="test setting"):
            Settings.from_env({"REWARDMILES_TEST_CLOCK": value})
    with pytest.raises(ValidationError, match="RFC 3339"):
        Settings.from_env({"REWARDMILES_TEST_CLOCK": "frozen-for-tests:2026-12-15 23:59:59"})
    settings = Settings.from_env(
        {"REWARDMILES_TEST_CLOCK": "frozen-for-tests:2026-12-15T23:59:59-05:00"}
    )
    assert settings.frozen_clock == datetime(2026, 12, 16, 4, 59, 59, tzinfo=UTC)


def test_settings_overrides_beat_the_environment() -> None:
    settings = Settings.from_env({"REWARDMILES_SECRET_HASH_COST": "12"}, secret_hash_cost=11)
    assert settings.secret_hash_cost == 11


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_HASH_COST", "9"),
        ("SECRET_HASH_COST", "21"),
        ("SECRET_HASH_COST", "ten"),
        ("DATABASE_POOL_SIZE", "0"),
        ("MILES_PER_LINE_MAX", "0"),
        ("MILES_PER_LINE_MAX", "1.5"),
        ("NEGATIVE_BALANCE_POLICY", "sometimes"),
        ("UNKNOWN_COLLECTOR_POLICY", "ignore"),
        ("TOKEN_LIFETIME_SECONDS", "59"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_JSON", "perhaps"),
        ("PROGRAM_TIME_ZONE", "Mars/Olympus_Mons"),
    ],
)
def test_settings_reject_bad_values(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.from_env({f"REWARDMILES_{name}": value})


# --------------------------------------------------------------------------- database URLs


@pytest.mark.parametrize("raw", ["sqlite:///x.db", "sqlite:////tmp/a.db", "sqlite+pysqlite:///x"])
def test_sqlite_urls_use_pysqlite(raw: str) -> None:
    url = normalize_url(raw)
    assert url.get_backend_name() == "sqlite"
    assert url.get_dialect().driver == "pysqlite"
    assert url.database == raw.split(":///", 1)[1]


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u@h:5432/d",
        "postgres://u@h:5432/d",
        "postgresql+psycopg2://u@h:5432/d",
        "postgresql+asyncpg://u@h:5432/d",
    ],
)
def test_postgres_urls_use_psycopg3(raw: str) -> None:
    url = normalize_url(raw)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.host, url.port, url.database) == ("u", "h", 5432, "d")


def test_postgres_url_keeps_password_and_query() -> None:
    url = normalize_url("postgres://u:p%40ss@h:5432/d?sslmode=require")
    assert url.password == "p@ss"
    assert dict(url.query) == {"sslmode": "require"}


@pytest.mark.parametrize(
    "raw", ["mysql://u@h/d", "oracle://u@h/d", "mssql+pyodbc://u@h/d", "not a url", ""]
)
def test_other_urls_raise_database_url_error(raw: str) -> None:
    with pytest.raises(DatabaseUrlError):
        normalize_url(raw)


# --------------------------------------------------------------------------- wire schema

MILES_MAX = 100_000
ELEVEN_DIGITS = re.compile(r"[0-9]{11}")


def _event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "clientTransactionId": "t-1",
        "collectorNumber": "80085102028",
        "sponsorCode": "KENY",
        "transactionDateTime": "2024-05-01T12:00:00-04:00",
        "issuances": [{"issuanceOfferCode": "STANDARD", "milesAmount": 8}],
    }
    body.update(overrides)
    return body


def _validate(body: dict[str, Any], *, miles_max: int = MILES_MAX) -> PostEventRequest:
    return PostEventRequest.model_validate(body, context={"miles_per_line_max": miles_max})


def _error_fields(body: dict[str, Any], *, miles_max: int = MILES_MAX) -> set[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as caught:
        _validate(body, miles_max=miles_max)
    return {tuple(e["loc"]) for e in caught.value.errors()}


def test_reference_body_is_valid() -> None:
    request = _validate(_event())
    assert request.collector_number == "80085102028"
    assert request.issuances[0].miles_amount == 8


@given(st.from_regex(ELEVEN_DIGITS, fullmatch=True))
def test_any_eleven_digit_string_is_a_valid_collector_number(number: str) -> None:
    assert _validate(_event(collectorNumber=number)).collector_number == number


NOT_ELEVEN_DIGITS = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"[0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[0-9]{12,20}", fullmatch=True),
    st.from_regex(r"\s[0-9]{11}|[0-9]{11}\s", fullmatch=True),
    st.builds(
        lambda d, i, c: d[:i] + c + d[i + 1 :],
        st.from_regex(ELEVEN_DIGITS, fullmatch=True),
        st.integers(0, 10),
        st.characters(exclude_characters="0123456789"),
    ),
    st.integers(),
    st.none(),
    st.floats(),
    st.lists(st.just("8"), max_size=11),
).filter(lambda v: not (isinstance(v, str) and ELEVEN_DIGITS.fullmatch(v)))


@given(NOT_ELEVEN_DIGITS)
@settings(suppress_health_check=[HealthCheck.filter_too_much])
def test_anything_else_is_not_a_collector_number(value: object) -> None:
    assert ("collectorNumber",) in _error_fields(_event(collectorNumber=value))


def _with_miles(value: object) -> dict[str, Any]:
    return _event(issuances=[{"issuanceOfferCode": "STANDARD", "milesAmount": value}])


MILES_LOC = ("issuances", 0, "milesAmount")


@given(st.integers(min_value=1, max_value=MILES_MAX))
def test_miles_amount_accepts_integers_from_1_to_the_maximum(miles: int) -> None:
    assert _validate(_with_miles(miles)).issuances[0].miles_amount == miles


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=MILES_MAX + 1)))
def test_miles_amount_rejects_integers_out_of_range(miles: int) -> None:
    assert MILES_LOC in _error_fields(_with_miles(miles))


@given(
    st.one_of(
        st.booleans(),
        st.floats(),
        st.integers(1, MILES_MAX).map(float),
        st.integers(1, MILES_MAX).map(str),
        st.none(),
        st.lists(st.integers(1, 9), max_size=2),
    )
)
def test_miles_amount_rejects_anything_but_a_json_integer(value: object) -> None:
    assert MILES_LOC in _error_fields(_with_miles(value))


@pytest.mark.parametrize(("miles", "ok"), [(500, True), (501, False), (1, True)])
def test_miles_amount_maximum_comes_from_the_settings(miles: int, ok: bool) -> None:
    body = _with_miles(miles)
    if ok:
        assert _validate(body, miles_max=500).issuances[0].miles_amount == miles
    else:
        assert MILES_LOC in _error_fields(body, miles_max=500)


def test_issuances_count_limits() -> None:
    line = {"issuanceOfferCode": "STANDARD", "milesAmount": 1}
    assert ("issuances",) in _error_fields(_event(issuances=[]))
    max_lines = limits.issuance_lines_per_request_max
    assert len(_validate(_event(issuances=[line] * max_lines)).issuances) == max_lines
    assert ("issuances",) in _error_fields(_event(issuances=[line] * (max_lines + 1)))


def test_unknown_fields_and_naive_datetimes_are_rejected() -> None:
    assert ("surprise",) in _error_fields(_event(surprise=1))
    assert ("transactionDateTime",) in _error_fields(
        _event(transactionDateTime="2024-05-01T12:00:00")
    )


def test_reverse_event_accepts_an_original_but_post_event_does_not() -> None:
    body = _event(originalClientTransactionId="t-0")
    reverse = ReverseEventRequest.model_validate(body, context={"miles_per_line_max": MILES_MAX})
    assert reverse.original_client_transaction_id == "t-0"
    assert ("originalClientTransactionId",) in _error_fields(body)
