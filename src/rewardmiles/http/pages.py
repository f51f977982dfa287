"""The admin API's cursor pages: `?cursor=&limit=`, answered `{"items": [...], "nextCursor": ...}`.

A cursor is opaque to the caller: the key of the last item of a page (a list of strings),
as unpadded base64url JSON. The next page is read through an index from that key (keyset), never
by skipping rows, so the 200th page costs what the first does. A cursor that does not decode to
a key of the list's shape is a 400 `FIELD_INVALID` at `cursor`.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
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
PAGE_PROBLEMS = ("FIELD_INVALID",)


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
        raise ProblemError("FIELD_INVALID", "The cursor is not one this list gave.", field="cursor")
    return tuple(key)


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
