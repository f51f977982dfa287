"""The admin API's cursor pages: `?cursor=&limit=`, answered `{"items": [...], "nextCursor": ...}`.

A cursor is opaque to the caller: the key of the last item of a page (a list of strings),
as unpadded base64url JSON. The next page is read through an index from that key (keyset), never
by skipping rows, so the 200th page costs what the first does. A cursor that does not decode to
a key of the list's shape is a 400 `CURSOR_INVALID` at `cursor`.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Query

from rewardmiles import limits
from rewardmiles.codec import b64url, unb64url
from rewardmiles.errors import ProblemError

T = TypeVar("T")

Cursor = Annotated[
    str | None,
    Query(
        max_length=limits.admin_cursor_chars_max,
        description="The `nextCursor` of the page before; absent for the first page.",
    ),
]
Limit = Annotated[
    int,
    Query(
        ge=1,
        le=limits.admin_page_items_max,
        description=f"Items on the page, 1 to {limits.admin_page_items_max}.",
    ),
]
PAGE_PROBLEMS = ("FIELD_INVALID", "CURSOR_INVALID")


def encode(key: Sequence[str]) -> str:
    return b64url(orjson.dumps(list(key)))


def decode(cursor: str | None, arity: int) -> tuple[str, ...] | None:
    """The key a cursor carries (`arity` strings), None for the first page."""
    if cursor is None:
        return None
    try:
        key = orjson.loads(unb64url(cursor))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != arity
        or not all(isinstance(part, str) for part in key)
    ):
        raise _invalid()
    return tuple(key)


def encode_key(key: Sequence[Any]) -> str:
    """The cursor of a typed key (datetimes as ISO 8601, the rest as text)."""
    return encode([v.isoformat() if isinstance(v, datetime) else str(v) for v in key])


def decode_as(cursor: str | None, shape: tuple[type, ...]) -> list[Any] | None:
    """The key of a cursor read as `shape` (datetime: ISO 8601 with its offset; int; str), None
    for the first page; 400 `CURSOR_INVALID` for anything else."""
    parts = decode(cursor, len(shape))
    if parts is None:
        return None
    key: list[Any] = []
    try:
        for part, wanted in zip(parts, shape, strict=True):
            if wanted is datetime:
                moment = datetime.fromisoformat(part)
                if moment.tzinfo is None:
                    raise ValueError(part)
                key.append(moment)
            else:
                key.append(wanted(part))
    except ValueError:
        raise _invalid() from None
    return key


def _invalid() -> ProblemError:
    return ProblemError("CURSOR_INVALID", "The cursor is not one this list gave.", field="cursor")


def page(
    rows: Sequence[T], limit: int, key: Callable[[T], Sequence[str]], item: Callable[[T], Any]
) -> dict[str, Any]:
    """The answer of a page read with `limit + 1` rows: the extra row only says there is more."""
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [item(row) for row in shown],
        "nextCursor": encode(key(shown[-1])) if more and shown else None,
    }
