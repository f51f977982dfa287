"""How the console says how long something has waited (Today's oldest pending line, each line
of Pending review)."""

from __future__ import annotations

import pytest

from rewardmiles.console.web import age_text


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (-5, "under a minute"),  # a clock a little behind
        (0, "under a minute"),
        (59, "under a minute"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h 0 min"),
        (5 * 3600 + 12 * 60 + 59, "5 h 12 min"),
        (86399, "23 h 59 min"),
        (86400, "1 d 0 h"),
        (2 * 86400 + 3 * 3600 + 59 * 60, "2 d 3 h"),
    ],
)
def test_an_age_is_said_in_its_two_largest_units(seconds: int, said: str) -> None:
    assert age_text(seconds) == said
