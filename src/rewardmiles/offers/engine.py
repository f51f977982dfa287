"""The offers engine: pure functions, no I/O, deterministic, self-explaining.

`calculate` turns a basket into one computed issuance per offer that earns (offer code, id,
description, miles, the items that contributed). `withdrawal` computes what a return takes back:
the miles the remaining basket no longer earns, with the rules as they applied to the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from math import floor

from rewardmiles import ledger
from rewardmiles.offers.rules import BaseEarn, CouponBonus, ItemBonus


@dataclass(frozen=True, slots=True)
class Item:
    """`final_amount` is exact: a partly returned item's amount shrinks pro rata, which decimal
    arithmetic cannot always represent ($10.00 × 1/3 three times must make $10.00 again)."""

    id: str
    quantity: int
    final_amount: Fraction
    department_id: str | None = None
    category_id: str | None = None


@dataclass(frozen=True, slots=True)
class Basket:
    items: tuple[Item, ...]
    coupons: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Offer:
    code: str
    offer_id: str | None
    description: str
    rule: BaseEarn | ItemBonus | CouponBonus


@dataclass(frozen=True, slots=True)
class Computed:
    offer_code: str
    offer_id: str | None
    description: str
    miles: int
    contributing_item_ids: tuple[str, ...]


class EngineInvariantError(RuntimeError):
    """A rule earned more after items were taken out: rules must be monotonic."""


def _whole(amount: Fraction, per: object) -> int:
    return floor(amount / Fraction(str(per)))


def _spend(items: Iterable[Item]) -> Fraction:
    return sum((item.final_amount for item in items), Fraction(0))


def _present(basket: Basket) -> list[Item]:
    return [item for item in basket.items if item.quantity > 0]


def _base(rule: BaseEarn, basket: Basket) -> tuple[int, list[Item]]:
    eligible = [
        item
        for item in _present(basket)
        if item.id not in rule.exclude_items
        and item.category_id not in rule.exclude_categories
        and item.department_id not in rule.exclude_departments
    ]
    return _whole(_spend(eligible), rule.per_dollars) * rule.miles, [
        i for i in eligible if i.final_amount > 0
    ]


def _item(rule: ItemBonus, basket: Basket) -> tuple[int, list[Item]]:
    matching = [
        item
        for item in _present(basket)
        if item.id in rule.items
        or (item.category_id is not None and item.category_id in rule.categories)
        or (item.department_id is not None and item.department_id in rule.departments)
    ]
    quantity = sum(item.quantity for item in matching)
    spend = _spend(matching)
    if not matching or quantity < rule.min_quantity or spend < Fraction(str(rule.min_spend)):
        return 0, []
    if rule.miles_per_unit is not None:
        return rule.miles_per_unit * quantity, matching
    per_dollars, miles = ledger.present(rule.per_dollars), ledger.present(rule.miles)
    return _whole(spend, per_dollars) * miles, matching


def _coupon(rule: CouponBonus, basket: Basket) -> tuple[int, list[Item]]:
    present = _present(basket)
    if (
        rule.coupon not in basket.coupons
        or not present
        or _spend(present) < Fraction(str(rule.min_spend))
    ):
        return 0, []
    return rule.miles, present


def offer_miles(offer: Offer, basket: Basket) -> tuple[int, tuple[str, ...]]:
    rule = offer.rule
    if isinstance(rule, BaseEarn):
        miles, items = _base(rule, basket)
    elif isinstance(rule, ItemBonus):
        miles, items = _item(rule, basket)
    else:
        miles, items = _coupon(rule, basket)
    if rule.cap_miles is not None:
        miles = min(miles, rule.cap_miles)
    return max(miles, 0), tuple(item.id for item in items) if miles > 0 else ()


def calculate(offers: Sequence[Offer], basket: Basket) -> list[Computed]:
    """One computed issuance per offer that earns, in the offers' order (by code)."""
    out = []
    for offer in sorted(offers, key=lambda o: o.code):
        miles, contributing = offer_miles(offer, basket)
        if miles > 0:
            out.append(Computed(offer.code, offer.offer_id, offer.description, miles, contributing))
    return out


def remaining(basket: Basket, returned: Mapping[str, int]) -> Basket:
    """The basket after `returned` units per item id; amounts shrink pro rata (exactly)."""
    items = []
    for item in basket.items:
        gone = returned.get(item.id, 0)
        left = item.quantity - gone
        if left < 0:
            raise ValueError(f"item {item.id}: {gone} returned of {item.quantity} bought")
        amount = item.final_amount * left / item.quantity if item.quantity else Fraction(0)
        items.append(replace(item, quantity=left, final_amount=amount))
    return replace(basket, items=tuple(items))


def withdrawal(
    offers: Sequence[Offer],
    original: Basket,
    returned_before: Mapping[str, int],
    returned_now: Mapping[str, int],
) -> list[Computed]:
    """Miles a return takes back, per offer: what the basket earned before it minus what it earns
    after. Thresholds the remaining basket no longer meets are clawed back here, and returning
    everything, in any number of steps, takes back exactly what the original earned."""
    after_returns = dict(returned_before)
    for item_id, quantity in returned_now.items():
        after_returns[item_id] = after_returns.get(item_id, 0) + quantity
    before = {c.offer_code: c for c in calculate(offers, remaining(original, returned_before))}
    after = {c.offer_code: c for c in calculate(offers, remaining(original, after_returns))}
    out = []
    for code, earned in before.items():
        kept = after[code].miles if code in after else 0
        taken = earned.miles - kept
        if taken < 0:
            raise EngineInvariantError(f"offer {code} earns more after a return")
        if taken:
            contributing = tuple(
                i for i in earned.contributing_item_ids if i in returned_now
            ) or tuple(returned_now)
            out.append(Computed(code, earned.offer_id, earned.description, taken, contributing))
    for code in after:
        if code not in before:
            raise EngineInvariantError(f"offer {code} earns only after a return")
    return out


def total(computed: Iterable[Computed]) -> int:
    return sum(c.miles for c in computed)
