"""The offers engine and its rules, pure (no database): worked examples of every rule type, rule
validation, and hypothesis properties — miles never negative, deterministic, monotonic, and
returns that telescope to exactly what the basket earned."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rewardmiles.offers import engine
from rewardmiles.offers.engine import Basket, Computed, Item, Offer
from rewardmiles.offers.rules import BaseEarn, CouponBonus, ItemBonus, dump_rule, parse_rule

PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# --------------------------------------------------------------------------- helpers


def offer(
    code: str, rule: dict[str, Any], offer_id: str | None = None, description: str = ""
) -> Offer:
    return Offer(code, offer_id, description or f"offer {code}", parse_rule(rule))


def item(
    item_id: str,
    amount: str,
    quantity: int = 1,
    department: str | None = None,
    category: str | None = None,
) -> Item:
    return Item(item_id, quantity, Fraction(Decimal(amount)), department, category)


def basket(*items: Item, coupons: tuple[str, ...] = ()) -> Basket:
    return Basket(tuple(items), frozenset(coupons))


def miles_of(offers: list[Offer], b: Basket) -> dict[str, int]:
    return {c.offer_code: c.miles for c in engine.calculate(offers, b)}


def earns(rule: dict[str, Any], b: Basket) -> tuple[int, tuple[str, ...]]:
    return engine.offer_miles(offer("X", rule), b)


BASE_10 = {"type": "base", "miles": 1, "perDollars": 10}
PRODUCE = {"type": "item", "departments": ["produce"], "milesPerUnit": 5, "minQuantity": 2}
APPLES = item("apples", "7.50", 3, department="produce")
KETTLE = item("kettle", "50.00", 1, department="home")


# --------------------------------------------------------------------------- base earn


@pytest.mark.parametrize(
    ("miles", "per", "amounts", "expected"),
    [
        (1, "20", ["57.50"], 2),  # docs/offers.md: floor(57.50 / 20) × 1
        (1, "20", ["59.99"], 2),
        (1, "20", ["60.00"], 3),
        (1, "20", ["19.99"], 0),
        (3, "10", ["25.00"], 6),
        (2, "0.50", ["1.49"], 4),
        (1, "10", ["4.99", "5.00"], 0),  # the sum is rounded, not each item
        (1, "10", ["5.00", "5.00"], 1),
        (1, "10", ["9.99", "9.99", "0.02"], 2),
        (1, "10", ["0.00"], 0),
    ],
)
def test_base_earn_is_miles_per_whole_dollars_of_the_sum_rounded_down(
    miles: int, per: str, amounts: list[str], expected: int
) -> None:
    b = basket(*(item(f"i{n}", a) for n, a in enumerate(amounts)))
    got, contributing = earns({"type": "base", "miles": miles, "perDollars": per}, b)
    assert got == expected
    assert contributing == (
        tuple(f"i{n}" for n, a in enumerate(amounts) if a != "0.00") if got else ()
    )


@pytest.mark.parametrize(
    "exclusion",
    [
        {"excludeItems": ["tobacco"]},
        {"excludeCategories": ["cigs"]},
        {"excludeDepartments": ["kiosk"]},
    ],
)
def test_base_earn_excludes_items_by_id_category_or_department(
    exclusion: dict[str, list[str]],
) -> None:
    b = basket(
        item("milk", "15.00", department="dairy", category="drinks"),
        item("tobacco", "40.00", department="kiosk", category="cigs"),
        item("bread", "5.00"),
    )
    assert earns({**BASE_10, **exclusion}, b) == (2, ("milk", "bread"))
    assert earns(BASE_10, b) == (6, ("milk", "tobacco", "bread"))


def test_base_earn_lists_only_items_that_spent_something() -> None:
    b = basket(item("free-bag", "0.00"), item("tv", "499.99"))
    assert earns(BASE_10, b) == (49, ("tv",))


def test_an_offer_earning_nothing_gives_no_line() -> None:
    assert engine.calculate([offer("BASE", BASE_10)], basket(item("gum", "9.99"))) == []


# --------------------------------------------------------------------------- item bonus


def test_item_bonus_per_unit_by_id() -> None:
    b = basket(item("sku-42", "12.00", 3), item("other", "50.00", 2))
    rule = {"type": "item", "items": ["sku-42"], "milesPerUnit": 4}
    assert earns(rule, b) == (12, ("sku-42",))


def test_item_bonus_per_unit_by_category_and_department_counts_each_item_once() -> None:
    b = basket(
        item("a", "1.00", 2, department="produce", category="fruit"),
        item("b", "1.00", 1, department="produce", category="veg"),
        item("c", "1.00", 5, department="bakery", category="fruit"),
        item("d", "1.00", 7, department="home", category="tools"),
    )
    by_category = {"type": "item", "categories": ["fruit"], "milesPerUnit": 1}
    by_department = {"type": "item", "departments": ["produce"], "milesPerUnit": 1}
    by_all = {
        "type": "item",
        "items": ["a"],
        "categories": ["fruit"],
        "departments": ["produce"],
        "milesPerUnit": 1,
    }
    assert earns(by_category, b) == (7, ("a", "c"))
    assert earns(by_department, b) == (3, ("a", "b"))
    assert earns(by_all, b) == (8, ("a", "b", "c"))  # "a" matches three ways, counted once


def test_item_bonus_per_dollars_rounds_the_matching_spend_down() -> None:
    b = basket(item("sku-42", "49.99", 2), item("sku-43", "25.00"), item("x", "100.00"))
    rule = {"type": "item", "items": ["sku-42", "sku-43"], "miles": 10, "perDollars": 25}
    assert earns(rule, b) == (20, ("sku-42", "sku-43"))  # floor(74.99 / 25) × 10
    b = basket(item("sku-42", "50.00", 2), item("sku-43", "25.00"), item("x", "100.00"))
    assert earns(rule, b) == (30, ("sku-42", "sku-43"))  # floor(75.00 / 25) × 10


@pytest.mark.parametrize(("quantity", "expected"), [(1, 0), (2, 10), (3, 15)])
def test_item_bonus_minimum_quantity_is_over_all_matching_items(
    quantity: int, expected: int
) -> None:
    b = basket(item("apple", "1.00", quantity, department="produce"))
    assert earns(PRODUCE, b)[0] == expected
    split = basket(
        *(item(f"apple{n}", "1.00", department="produce") for n in range(quantity)),
        item("kettle", "50.00", department="home"),
    )
    assert earns(PRODUCE, split)[0] == expected


@pytest.mark.parametrize(("amount", "expected"), [("19.99", 0), ("20.00", 6), ("35.00", 6)])
def test_item_bonus_minimum_spend(amount: str, expected: int) -> None:
    rule = {"type": "item", "categories": ["wine"], "milesPerUnit": 3, "minSpend": 20}
    b = basket(item("red", amount, 2, category="wine"), item("cheese", "30.00", category="deli"))
    assert earns(rule, b) == ((expected, ("red",)) if expected else (0, ()))


def test_item_bonus_without_matching_items_earns_nothing() -> None:
    rule = {"type": "item", "items": ["nothing"], "milesPerUnit": 3}
    assert earns(rule, basket(item("x", "10.00", 3))) == (0, ())


# --------------------------------------------------------------------------- coupon bonus


def test_coupon_bonus_needs_the_coupon() -> None:
    rule = {"type": "coupon", "coupon": "SPRING25", "miles": 25}
    b = basket(item("x", "1.00"), item("y", "0.00"), coupons=("SPRING25", "OTHER"))
    assert earns(rule, b) == (25, ("x", "y"))
    assert earns(rule, basket(item("x", "1.00"), coupons=("OTHER",))) == (0, ())
    assert earns(rule, basket(item("x", "1.00"))) == (0, ())


@pytest.mark.parametrize(("amount", "expected"), [("49.99", 0), ("50.00", 25), ("80.00", 25)])
def test_coupon_bonus_minimum_spend(amount: str, expected: int) -> None:
    rule = {"type": "coupon", "coupon": "SPRING25", "miles": 25, "minSpend": 50}
    assert earns(rule, basket(item("x", amount), coupons=("SPRING25",)))[0] == expected


def test_coupon_bonus_on_an_empty_basket_earns_nothing() -> None:
    rule = {"type": "coupon", "coupon": "FREE", "miles": 10}
    original = basket(item("x", "5.00", 2), coupons=("FREE",))
    assert earns(rule, original) == (10, ("x",))
    assert earns(rule, engine.remaining(original, {"x": 2})) == (0, ())
    assert earns(rule, basket(coupons=("FREE",))) == (0, ())


# --------------------------------------------------------------------------- caps


@pytest.mark.parametrize(
    "rule",
    [
        {**BASE_10, "capMiles": 7},
        {"type": "item", "items": ["x"], "milesPerUnit": 5, "capMiles": 7},
        {"type": "item", "items": ["x"], "miles": 1, "perDollars": 1, "capMiles": 7},
        {"type": "coupon", "coupon": "C", "miles": 50, "capMiles": 7},
    ],
)
def test_cap_limits_an_offers_miles_per_transaction(rule: dict[str, Any]) -> None:
    b = basket(item("x", "200.00", 10), coupons=("C",))
    assert earns(rule, b) == (7, ("x",))
    uncapped = {k: v for k, v in rule.items() if k != "capMiles"}
    assert earns(uncapped, b)[0] > 7
    assert earns({**rule, "capMiles": 100_000}, b) == earns(uncapped, b)


# --------------------------------------------------------------------------- calculate


def test_calculate_explains_itself_in_offer_code_order() -> None:
    offers = [
        offer("STANDARD", BASE_10, offer_id="501", description="1 mile per $10"),
        offer("PRODUCE", PRODUCE, offer_id="502", description="5 per produce item, from 2"),
        offer("SPRING", {"type": "coupon", "coupon": "SPRING25", "miles": 25, "minSpend": 100}),
    ]
    computed = engine.calculate(offers, basket(APPLES, KETTLE, coupons=("SPRING25",)))
    assert computed == [
        Computed("PRODUCE", "502", "5 per produce item, from 2", 15, ("apples",)),
        Computed("STANDARD", "501", "1 mile per $10", 5, ("apples", "kettle")),
    ]
    assert engine.total(computed) == 20


def test_remaining_shrinks_amounts_pro_rata_and_refuses_over_returns() -> None:
    b = basket(APPLES, KETTLE)
    left = engine.remaining(b, {"apples": 2})
    assert left.items == (item("apples", "2.50", 1, department="produce"), KETTLE)
    assert engine.remaining(b, {}) == b
    with pytest.raises(ValueError, match="apples"):
        engine.remaining(b, {"apples": 4})


def test_remaining_of_a_basket_with_an_item_all_returned_keeps_it_at_nothing() -> None:
    """A fully returned item stays in the basket with quantity 0 and amount 0, and the basket
    can be taken further (a later return of the other items)."""
    b = basket(APPLES, KETTLE)
    all_apples = engine.remaining(b, {"apples": 3})
    assert all_apples.items[0] == Item("apples", 0, Fraction(0), "produce", None)
    again = engine.remaining(all_apples, {"kettle": 1})
    assert [(i.id, i.quantity, i.final_amount) for i in again.items] == [
        ("apples", 0, Fraction(0)),
        ("kettle", 0, Fraction(0)),
    ]


# --------------------------------------------------------------------------- withdrawal


def test_withdrawal_worked_example_of_the_docs() -> None:
    offers = [offer("STANDARD", BASE_10), offer("PRODUCE", PRODUCE)]
    b = basket(APPLES, KETTLE)

    first = engine.withdrawal(offers, b, {}, {"apples": 2})
    second = engine.withdrawal(offers, b, {"apples": 2}, {"apples": 1, "kettle": 1})

    # PRODUCE's minimum (2) is no longer met: all 15 go; STANDARD still earns floor(52.50/10).
    assert [(c.offer_code, c.miles, c.contributing_item_ids) for c in first] == [
        ("PRODUCE", 15, ("apples",))
    ]
    assert [(c.offer_code, c.miles, c.contributing_item_ids) for c in second] == [
        ("STANDARD", 5, ("apples", "kettle"))
    ]
    assert engine.total(first) + engine.total(second) == engine.total(engine.calculate(offers, b))


def test_withdrawal_claws_back_a_threshold_only_when_it_breaks() -> None:
    offers = [offer("PRODUCE", PRODUCE)]
    b = basket(item("apple", "3.00", 3, department="produce"))
    one = engine.withdrawal(offers, b, {}, {"apple": 1})
    two = engine.withdrawal(offers, b, {"apple": 1}, {"apple": 1})
    three = engine.withdrawal(offers, b, {"apple": 2}, {"apple": 1})
    assert [c.miles for c in one] == [5]  # 3 → 2 apples: still qualifies, 15 → 10
    assert [c.miles for c in two] == [10]  # 2 → 1: below the minimum, the rest goes
    assert three == []


def test_withdrawal_of_an_item_no_offer_counted_is_empty() -> None:
    offers = [offer("PRODUCE", PRODUCE)]
    assert engine.withdrawal(offers, basket(APPLES, KETTLE), {}, {"kettle": 1}) == []


def test_withdrawal_names_only_the_returned_items_that_counted() -> None:
    """Returning a counted item together with an excluded one: the line names the counted one."""
    rule = {**BASE_10, "excludeItems": ["gift-card"]}
    offers = [offer("STANDARD", rule)]
    b = basket(KETTLE, item("gift-card", "25.00"))
    (taken,) = engine.withdrawal(offers, b, {}, {"kettle": 1, "gift-card": 1})
    assert (taken.miles, taken.contributing_item_ids) == (5, ("kettle",))


def test_withdrawal_keeps_the_offers_id_and_description() -> None:
    offers = [offer("STANDARD", BASE_10, offer_id="77", description="base")]
    (taken,) = engine.withdrawal(offers, basket(KETTLE), {}, {"kettle": 1})
    assert taken == Computed("STANDARD", "77", "base", 5, ("kettle",))


def test_withdrawal_refuses_a_rule_that_earns_more_after_a_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = engine.offer_miles

    def perverse(o: Offer, b: Basket) -> tuple[int, tuple[str, ...]]:
        _, items = real(o, b)
        left = sum(i.quantity for i in b.items)
        return (100 - left, items or ("x",))

    monkeypatch.setattr(engine, "offer_miles", perverse)
    with pytest.raises(engine.EngineInvariantError, match=r"^offer BAD earns more after a return$"):
        engine.withdrawal([offer("BAD", BASE_10)], basket(item("x", "10.00", 2)), {}, {"x": 1})


def test_withdrawal_refuses_a_rule_that_earns_only_after_a_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def perverse(o: Offer, b: Basket) -> tuple[int, tuple[str, ...]]:
        left = sum(i.quantity for i in b.items)
        return (10, ("x",)) if left < 2 else (0, ())

    monkeypatch.setattr(engine, "offer_miles", perverse)
    with pytest.raises(engine.EngineInvariantError, match=r"^offer BAD earns only after a return$"):
        engine.withdrawal([offer("BAD", BASE_10)], basket(item("x", "10.00", 2)), {}, {"x": 1})


def test_pro_rata_amounts_of_partial_returns_are_exact() -> None:
    offers = [offer("STANDARD", BASE_10)]
    b = basket(*(item(name, "10.00", 3) for name in ("x", "y", "z")))
    returned = {"x": 2, "y": 2, "z": 2}
    # What is left is one unit of each line: exactly $10.00, one mile at 1 per $10.
    assert sum(i.final_amount for i in engine.remaining(b, returned).items) == Decimal("10.00")
    assert miles_of(offers, engine.remaining(b, returned)) == {"STANDARD": 1}
    assert [c.miles for c in engine.withdrawal(offers, b, {}, returned)] == [2]


# --------------------------------------------------------------------------- rule validation


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"type": "item", "milesPerUnit": 1}, "names items, categories or departments"),
        ({"type": "item", "items": [], "categories": [], "milesPerUnit": 1}, "names items"),
        ({"type": "item", "items": ["a"]}, "either milesPerUnit, or miles with perDollars"),
        (
            {"type": "item", "items": ["a"], "milesPerUnit": 1, "miles": 2, "perDollars": 5},
            "either milesPerUnit",
        ),
        ({"type": "item", "items": ["a"], "milesPerUnit": 1, "miles": 2}, "either milesPerUnit"),
        ({"type": "item", "items": ["a"], "milesPerUnit": 1, "perDollars": 5}, "either"),
        ({"type": "item", "items": ["a"], "miles": 2}, "either milesPerUnit"),
        ({"type": "item", "items": ["a"], "perDollars": 2}, "either milesPerUnit"),
        ({"type": "item", "items": [""], "milesPerUnit": 1}, "at least 1 character"),
        ({"type": "item", "items": ["a"], "milesPerUnit": 0}, "greater than or equal to 1"),
        ({"type": "item", "items": ["a"], "milesPerUnit": -5}, "greater than or equal to 1"),
        ({"type": "item", "items": ["a"], "milesPerUnit": 1, "minQuantity": 0}, "greater than"),
        ({"type": "item", "items": ["a"], "milesPerUnit": 1, "minSpend": -1}, "greater than"),
        ({"type": "item", "items": ["a"], "miles": 1, "perDollars": 0}, "greater than 0"),
        ({"type": "base", "miles": 0, "perDollars": 10}, "greater than or equal to 1"),
        ({"type": "base", "miles": -1, "perDollars": 10}, "greater than or equal to 1"),
        ({"type": "base", "miles": 1, "perDollars": 0}, "greater than 0"),
        ({"type": "base", "miles": 1, "perDollars": -10}, "greater than 0"),
        ({"type": "base", "miles": 1, "perDollars": "10.005"}, "2 decimal places"),
        ({"type": "base", "miles": 1.5, "perDollars": 10}, "valid integer"),
        ({"type": "base", "perDollars": 10}, "Field required"),
        ({"type": "base", "miles": 1}, "Field required"),
        ({**BASE_10, "capMiles": 0}, "greater than or equal to 1"),
        ({**BASE_10, "capMiles": -3}, "greater than or equal to 1"),
        ({"type": "coupon", "coupon": "", "miles": 5}, "at least 1 character"),
        ({"type": "coupon", "coupon": "C", "miles": 0}, "greater than or equal to 1"),
        ({"type": "coupon", "coupon": "C", "miles": 5, "minSpend": -0.01}, "greater than"),
        ({"type": "coupon", "miles": 5}, "Field required"),
        ({"type": "bogus", "miles": 1}, "does not match any of the expected tags"),
        ({"miles": 1, "perDollars": 10}, "Unable to extract tag"),
        ({**BASE_10, "bonus": 1}, "Extra inputs are not permitted"),
        ({**BASE_10, "per_dollars": 10}, "Extra inputs are not permitted"),
        ({"type": "item", "items": ["a"], "milesPerUnit": 1, "sku": "a"}, "Extra inputs"),
        ({"type": "coupon", "coupon": "C", "miles": 5, "minQuantity": 2}, "Extra inputs"),
        ("base", "valid dictionary"),
    ],
)
def test_invalid_rule_is_refused(rule: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_rule(rule)


@pytest.mark.parametrize(
    ("rule", "kind"),
    [
        (BASE_10, BaseEarn),
        ({"type": "base", "miles": 2, "perDollars": "0.25", "excludeItems": ["x"]}, BaseEarn),
        (PRODUCE, ItemBonus),
        ({"type": "item", "categories": ["c"], "miles": 10, "perDollars": 25}, ItemBonus),
        ({"type": "coupon", "coupon": "SPRING25", "miles": 25, "minSpend": 50}, CouponBonus),
    ],
)
def test_valid_rule_round_trips_through_its_dump(rule: dict[str, Any], kind: type) -> None:
    parsed = parse_rule(rule)
    assert isinstance(parsed, kind)
    dumped = dump_rule(parsed)
    assert dumped["type"] == rule["type"]
    assert parse_rule(dumped) == parsed


def test_rules_are_immutable() -> None:
    parsed = parse_rule(BASE_10)
    with pytest.raises(ValidationError):
        parsed.miles = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

ITEM_IDS = [f"i{n}" for n in range(8)]
DEPARTMENTS = ["d1", "d2", "d3"]
CATEGORIES = ["c1", "c2", "c3"]
COUPONS = ["C1", "C2", "C3"]

cents = st.integers(min_value=0, max_value=30_000).map(lambda c: Decimal(c) / 100)
positive_dollars = st.integers(min_value=1, max_value=5_000).map(lambda c: str(Decimal(c) / 100))
min_spends = st.integers(min_value=0, max_value=20_000).map(lambda c: str(Decimal(c) / 100))
caps = st.one_of(st.just({}), st.builds(lambda c: {"capMiles": c}, st.integers(1, 60)))
maybe_department = st.one_of(st.none(), st.sampled_from(DEPARTMENTS))
maybe_category = st.one_of(st.none(), st.sampled_from(CATEGORIES))
quantities = st.integers(min_value=1, max_value=5)
item_ids = st.lists(st.sampled_from(ITEM_IDS), min_size=1, max_size=6, unique=True)


@st.composite
def items_st(draw: st.DrawFn) -> tuple[Item, ...]:
    return tuple(
        Item(
            item_id,
            draw(quantities),
            Fraction(draw(cents)),
            draw(maybe_department),
            draw(maybe_category),
        )
        for item_id in draw(item_ids)
    )


baskets = st.builds(
    Basket, items_st(), st.frozensets(st.sampled_from(COUPONS), max_size=len(COUPONS))
)

base_rules = st.builds(
    lambda miles, per, items, categories, departments, cap: {
        "type": "base",
        "miles": miles,
        "perDollars": per,
        "excludeItems": items,
        "excludeCategories": categories,
        "excludeDepartments": departments,
        **cap,
    },
    st.integers(1, 5),
    positive_dollars,
    st.lists(st.sampled_from(ITEM_IDS), max_size=2, unique=True),
    st.lists(st.sampled_from(CATEGORIES), max_size=1),
    st.lists(st.sampled_from(DEPARTMENTS), max_size=1),
    caps,
)
item_targets = st.fixed_dictionaries(
    {
        "items": st.lists(st.sampled_from(ITEM_IDS), max_size=3, unique=True),
        "categories": st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
        "departments": st.lists(st.sampled_from(DEPARTMENTS), max_size=2, unique=True),
    }
).filter(lambda t: any(t.values()))
item_modes = st.one_of(
    st.builds(lambda m: {"milesPerUnit": m}, st.integers(1, 10)),
    st.builds(lambda m, p: {"miles": m, "perDollars": p}, st.integers(1, 10), positive_dollars),
)
item_rules = st.builds(
    lambda targets, mode, min_quantity, min_spend, cap: {
        "type": "item",
        **targets,
        **mode,
        "minQuantity": min_quantity,
        "minSpend": min_spend,
        **cap,
    },
    item_targets,
    item_modes,
    st.integers(1, 6),
    min_spends,
    caps,
)
coupon_rules = st.builds(
    lambda coupon, miles, min_spend, cap: {
        "type": "coupon",
        "coupon": coupon,
        "miles": miles,
        "minSpend": min_spend,
        **cap,
    },
    st.sampled_from(COUPONS),
    st.integers(1, 50),
    min_spends,
    caps,
)
rules_st = st.one_of(base_rules, item_rules, coupon_rules)


@st.composite
def offers_st(draw: st.DrawFn) -> list[Offer]:
    rules = draw(st.lists(rules_st, min_size=1, max_size=5))
    return [offer(f"O{n}", r, offer_id=str(n)) for n, r in enumerate(rules)]


@st.composite
def returned_st(draw: st.DrawFn, b: Basket) -> dict[str, int]:
    """Some units of some items of `b` (possibly none)."""
    out = {}
    for i in b.items:
        n = draw(st.integers(min_value=0, max_value=i.quantity))
        if n:
            out[i.id] = n
    return out


@st.composite
def return_sequences(draw: st.DrawFn, b: Basket) -> list[dict[str, int]]:
    """Partial returns that, together, return every unit of `b` (in random order and steps)."""
    units = [i.id for i in b.items for _ in range(i.quantity)]
    order = draw(st.permutations(units))
    cuts = sorted([*draw(st.lists(st.integers(0, len(order)), max_size=4)), 0, len(order)])
    steps = [dict(Counter(order[a:b_])) for a, b_ in pairwise(cuts)]
    return [s for s in steps if s] or [dict(Counter(order))]


@PROPERTY_SETTINGS
@given(offers_st(), baskets)
def test_property_miles_are_never_negative_and_name_items_of_the_basket(
    offers: list[Offer], b: Basket
) -> None:
    ids = {i.id for i in b.items}
    for o in offers:
        miles, contributing = engine.offer_miles(o, b)
        # (Never negative by construction: the engine clamps with max(miles, 0).)
        assert set(contributing) <= ids
        assert bool(contributing) == (miles > 0)
        if o.rule.cap_miles is not None:
            assert miles <= o.rule.cap_miles
    for c in engine.calculate(offers, b):
        assert c.miles > 0
        assert c.contributing_item_ids


@PROPERTY_SETTINGS
@given(offers_st(), baskets, st.randoms(use_true_random=False))
def test_property_calculate_is_deterministic_and_independent_of_order(
    offers: list[Offer], b: Basket, rnd: Any
) -> None:
    first = engine.calculate(offers, b)
    assert engine.calculate(offers, b) == first
    shuffled_items = list(b.items)
    rnd.shuffle(shuffled_items)
    shuffled_offers = list(offers)
    rnd.shuffle(shuffled_offers)
    again = engine.calculate(shuffled_offers, Basket(tuple(shuffled_items), b.coupons))
    assert [c.offer_code for c in first] == sorted(c.offer_code for c in first)
    assert [(c.offer_code, c.offer_id, c.description, c.miles) for c in again] == [
        (c.offer_code, c.offer_id, c.description, c.miles) for c in first
    ]
    assert [sorted(c.contributing_item_ids) for c in again] == [
        sorted(c.contributing_item_ids) for c in first
    ]


@PROPERTY_SETTINGS
@given(st.data(), offers_st(), baskets)
def test_property_removing_units_never_raises_an_offers_miles(
    data: st.DataObject, offers: list[Offer], b: Basket
) -> None:
    returned = data.draw(returned_st(b))
    more = data.draw(returned_st(engine.remaining(b, returned)))
    after = engine.remaining(b, returned)
    after_more = engine.remaining(b, {k: returned.get(k, 0) + more.get(k, 0) for k in ITEM_IDS})
    for o in offers:
        full = engine.offer_miles(o, b)[0]
        fewer = engine.offer_miles(o, after)[0]
        fewest = engine.offer_miles(o, after_more)[0]
        assert full >= fewer >= fewest, o


@PROPERTY_SETTINGS
@given(st.data(), offers_st(), baskets)
def test_property_returns_in_any_steps_withdraw_exactly_what_was_earned(
    data: st.DataObject, offers: list[Offer], b: Basket
) -> None:
    steps = data.draw(return_sequences(b))
    earned = miles_of(offers, b)
    taken: Counter[str] = Counter()
    before: dict[str, int] = {}
    for step in steps:
        withdrawn = engine.withdrawal(offers, b, before, step)
        for c in withdrawn:
            assert c.miles > 0
            assert c.contributing_item_ids
            assert set(c.contributing_item_ids) <= set(step)
            taken[c.offer_code] += c.miles
        for k, v in step.items():
            before[k] = before.get(k, 0) + v
        # Never more than the original, per offer; and the rest is what the remainder earns.
        left = miles_of(offers, engine.remaining(b, before))
        for code in set(earned) | set(taken):
            assert taken[code] <= earned.get(code, 0)
            assert earned.get(code, 0) - taken[code] == left.get(code, 0)
    assert before == {i.id: i.quantity for i in b.items}
    assert dict(taken) == earned
    assert miles_of(offers, engine.remaining(b, before)) == {}


@PROPERTY_SETTINGS
@given(st.data(), offers_st(), baskets)
def test_property_a_single_full_return_withdraws_exactly_the_issue(
    data: st.DataObject, offers: list[Offer], b: Basket
) -> None:
    everything = {i.id: i.quantity for i in b.items}
    withdrawn = engine.withdrawal(offers, b, {}, everything)
    assert {c.offer_code: c.miles for c in withdrawn} == miles_of(offers, b)
    partial = data.draw(returned_st(b))
    assert engine.total(engine.withdrawal(offers, b, {}, partial)) <= engine.total(
        engine.calculate(offers, b)
    )
