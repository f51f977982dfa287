"""The vocabulary's members are the strings they stand for, wherever they go: JSON (the wire,
stored responses, the one-statement path's recordsets), f-strings (SQL text, messages) and
equality with the plain strings read back from the database."""

from __future__ import annotations

import inspect
import json
from enum import StrEnum
from typing import get_args

import orjson
import pytest

from rewardmiles import vocabulary
from rewardmiles.issuance import schemas
from rewardmiles.vocabulary import IssuanceStatus

ENUMS = [
    value
    for value in vars(vocabulary).values()
    if inspect.isclass(value) and issubclass(value, StrEnum) and value is not StrEnum
]


def test_the_vocabulary_has_its_concepts() -> None:
    names = {enum.__name__ for enum in ENUMS}
    assert {"CollectorStatus", "TransactionStatus", "LineStatus", "Direction"} <= names
    assert {"PendingReason", "AccountKind", "DeliveryStatus", "BatchStatus"} <= names


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_each_concept_says_what_it_is(enum: type[StrEnum]) -> None:
    assert (enum.__doc__ or "").strip(), enum.__name__


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_each_member_is_its_value_in_json_text_and_comparisons(enum: type[StrEnum]) -> None:
    for member in enum:
        plain = str.__str__(member)
        assert orjson.dumps({"v": member, "l": [member]}) == orjson.dumps(
            {"v": plain, "l": [plain]}
        )
        assert json.dumps({"v": member}) == json.dumps({"v": plain})
        assert f"'{member}'" == f"'{plain}'"
        assert member == plain
        assert hash(member) == hash(plain)


def test_the_wire_schema_of_a_line_status_is_issuance_status() -> None:
    assert get_args(schemas.WireLineStatus) == tuple(IssuanceStatus)
