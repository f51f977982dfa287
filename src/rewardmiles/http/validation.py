"""Validation failures as problems: pydantic's errors (a partner body's model, or the framework's
own parameter checks) turned into catalogue codes with field paths, each (code, field) once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from rewardmiles import limits
from rewardmiles.errors import FieldError, FieldRuleError, ProblemError

M = TypeVar("M", bound=BaseModel)


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path


def field_error(
    err: Mapping[str, Any],
    *,
    skip_prefix: int = 0,
    rules: Mapping[str, str] | None = None,
    codes: Mapping[str, str] | None = None,
) -> FieldError:
    loc = tuple(err.get("loc", ()))[skip_prefix:]
    if "[key]" in loc:  # an invalid object key: the path is the object itself
        loc = loc[: max(loc.index("[key]") - 1, 0)]
    # Pydantic appends the union member's type name to the location; keep the field path only.
    loc = tuple(
        p for p in loc if not (isinstance(p, str) and p in ("str", "int", "function-plain"))
    )
    field = _field_path(loc) or None
    names = [p for p in reversed(loc) if isinstance(p, str)]
    name = next((p for p in names if p in (rules or {})), names[0] if names else "")
    kind = err.get("type", "")
    violation = err.get("ctx", {}).get("error")
    if isinstance(violation, FieldRuleError):
        path = ".".join(p for p in (field, violation.field) if p)
        return FieldError(violation.code, path or None, violation.message)
    if kind == "missing":
        return FieldError("FIELD_REQUIRED", field, "is required")
    if kind == "extra_forbidden":  # whatever its value, null included
        return FieldError("FIELD_UNKNOWN", field, "is not a field of this request")
    if err.get("input", object()) is None:
        if loc and isinstance(loc[-1], int):  # a null inside an array
            return FieldError("FIELD_INVALID", field, "must not be null")
        return FieldError("FIELD_REQUIRED", field, "is required and must not be null")
    code = (codes or {}).get(name, "FIELD_INVALID")
    ctx_error = err.get("ctx", {}).get("error")
    message = (rules or {}).get(name) or str(err.get("msg", "is invalid"))
    if ctx_error is not None and str(ctx_error).startswith("must be at most"):
        message = str(ctx_error)
    return FieldError(code, field, message)


def distinct_field_errors(field_errors: Iterable[FieldError]) -> list[FieldError]:
    """Each (code, field) once, in the order met: one pass, a set of what was seen."""
    seen: set[tuple[str, str | None]] = set()
    distinct: list[FieldError] = []
    for error in field_errors:
        key = (error.code, error.field)
        if key not in seen:
            seen.add(key)
            distinct.append(error)
    return distinct


def validation_problem(errors: list[FieldError]) -> ProblemError:
    """The problem of a body with `errors`: the first `limits.problem_errors_max` are listed, the
    rest counted (`errorsOmitted`, and in `detail`)."""
    codes = {e.code for e in errors}
    code = errors[0].code if len(codes) == 1 else "VALIDATION_FAILED"
    noun = "field is" if len(errors) == 1 else "fields are"
    detail = f"{len(errors)} {noun} invalid."
    listed = limits.problem_errors_max
    if len(errors) <= listed:
        return ProblemError(code, detail, errors=errors)
    omitted = len(errors) - listed
    return ProblemError(
        code,
        f"{detail[:-1]}; the first {listed} are listed, {omitted} more are omitted.",
        errors=errors[:listed],
        extra={"errorsOmitted": omitted},
    )


def validate_body(
    model: type[M],
    obj: dict[str, Any],
    *,
    context: Mapping[str, Any],
    rules: Mapping[str, str],
    codes: Mapping[str, str],
) -> M:
    try:
        return model.model_validate(obj, context=dict(context))
    except ValidationError as exc:
        errors = distinct_field_errors(
            field_error(err, rules=rules, codes=codes) for err in exc.errors(include_url=False)
        )
        raise validation_problem(errors) from None
