"""Offer rules as data: what an operator writes in `offer add --rule` or an import file.

Every rule is monotonic — taking items out of a basket never raises the miles it earns — which is
what lets a return be computed as "miles before minus miles after" (see `engine.withdrawal`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel

from rewardmiles import limits

Miles = Annotated[StrictInt, Field(ge=1, le=limits.offer_rule_miles_max)]
Dollars = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=2)]
Spend = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Names = list[Annotated[str, Field(min_length=1, max_length=64)]]


class RuleModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    cap_miles: int | None = Field(
        default=None, ge=1, description="At most this many miles per transaction."
    )


class BaseEarn(RuleModel):
    """`miles` per whole `perDollars` of eligible pre-tax spend, rounded down."""

    type: Literal["base"]
    miles: Miles
    per_dollars: Dollars
    exclude_items: Names = []
    exclude_categories: Names = []
    exclude_departments: Names = []


class ItemBonus(RuleModel):
    """Miles for matching items (by id, category or department): per unit, or per whole dollars
    of their spend; only when their quantity and spend reach the minimums."""

    type: Literal["item"]
    items: Names = []
    categories: Names = []
    departments: Names = []
    miles_per_unit: Miles | None = None
    miles: Miles | None = None
    per_dollars: Dollars | None = None
    min_quantity: StrictInt = Field(default=1, ge=1)
    min_spend: Spend = Decimal(0)

    @model_validator(mode="after")
    def _one_mode(self) -> ItemBonus:
        if not (self.items or self.categories or self.departments):
            raise ValueError("an item bonus names items, categories or departments")
        per_unit = self.miles_per_unit is not None
        per_spend = self.miles is not None and self.per_dollars is not None
        if per_unit == per_spend or (not per_spend and (self.miles or self.per_dollars)):
            raise ValueError("give either milesPerUnit, or miles with perDollars")
        return self


class CouponBonus(RuleModel):
    """`miles` when the basket's `coupon` list holds `coupon` and the basket still has items
    (spending at least `minSpend`)."""

    type: Literal["coupon"]
    coupon: str = Field(min_length=1, max_length=64)
    miles: Miles
    min_spend: Spend = Decimal(0)


Rule = Annotated[BaseEarn | ItemBonus | CouponBonus, Field(discriminator="type")]
RULE_ADAPTER: TypeAdapter[BaseEarn | ItemBonus | CouponBonus] = TypeAdapter(Rule)


def parse_rule(data: object) -> BaseEarn | ItemBonus | CouponBonus:
    return RULE_ADAPTER.validate_python(data)


def dump_rule(rule: BaseEarn | ItemBonus | CouponBonus) -> dict[str, object]:
    return rule.model_dump(mode="json", by_alias=True, exclude_defaults=False)
