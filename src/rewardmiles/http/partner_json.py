"""JSON as partners send it: exact numbers, no NaN or Infinity, no member named twice; and the
canonical form request fingerprints hash. Used for bodies, token requests and transaction logs."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rewardmiles.errors import FieldError, ProblemError


def json_object_of(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """`parse_json_object`, with the object's canonical bytes."""
    obj = parse_json_object(raw)
    try:
        return obj, canonical_json(obj)
    except UnicodeEncodeError as exc:  # "\ud800" parses, but names no character
        raise ProblemError(
            "MALFORMED_JSON",
            "The body is not valid JSON text: it holds an unpaired surrogate escape "
            "(\\ud800–\\udfff), which is not a Unicode character.",
        ) from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class DuplicateMemberError(ValueError):
    """A JSON object names the same member twice (SPEC §6, amended 2026-11-30)."""

    def __init__(self, name: str, field: str | None = None) -> None:
        where = f" (at {field})" if field else ""
        super().__init__(
            f'member "{name}" appears more than once in one object{where}; send each member once'
        )
        self.name = name
        self.field = field


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            return name
        seen.add(name)
    raise AssertionError("no member is repeated")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateMemberError(_first_repeated(pairs))
    return obj


class _Repeats(dict[str, Any]):
    """An object that named a member twice, with the first such name (error path only)."""

    repeated = ""


def _marking_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeats(obj)
    marked.repeated = _first_repeated(pairs)
    return marked


def _first_repeat(raw: bytes | str) -> DuplicateMemberError:
    """The first duplicated member in document order, with its path (`issuances[1].milesAmount`).
    Parsed again, only once the fast parse has failed on a duplicate."""
    root = json.loads(raw, parse_float=Decimal, object_pairs_hook=_marking_repeats)
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeats):
                name = value.repeated
                return DuplicateMemberError(name, f"{path}.{name}" if path else name)
            stack.extend(
                (v, f"{path}.{k}" if path else k) for k, v in reversed(list(value.items()))
            )
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    raise AssertionError("no duplicated member found on the second parse")


def loads_partner_json(raw: bytes | str) -> Any:
    """Any JSON value a partner sends (a body, a line of a transaction log): numbers with a
    fraction or exponent become `Decimal` (never float), integers keep every digit, NaN and
    Infinity are refused, and so is an object naming a member twice, at any depth (one value
    must never be logged while another is acted on). ValueError (a `json.JSONDecodeError`, a
    `DuplicateMemberError` with the member's path, ...) or RecursionError otherwise."""
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_members,
        )
    except DuplicateMemberError:
        raise _first_repeat(raw) from None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`loads_partner_json`, which must give an object; 400 `MALFORMED_JSON` otherwise."""
    try:
        obj = loads_partner_json(raw)
    except DuplicateMemberError as exc:
        raise ProblemError(
            "MALFORMED_JSON",
            f"The body is not valid JSON for this API: {exc}.",
            errors=[FieldError("MALFORMED_JSON", exc.field, "appears more than once")],
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ProblemError("MALFORMED_JSON", f"The body is not valid JSON: {reason}.") from exc
    if not isinstance(obj, dict):
        raise ProblemError("MALFORMED_JSON", "The body must be a JSON object.")
    return obj


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, numbers exactly as sent: what request fingerprints hash."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()
