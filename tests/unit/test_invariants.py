"""The money path's invariants (`ledger.invariant`, `ledger.present`) stop a unit of work with
`LedgerInvariantError`, and keep doing so under `python -O`, which strips `assert`s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rewardmiles import ledger
from rewardmiles.ledger import LedgerInvariantError


def test_an_invariant_that_holds_is_silent_and_one_that_fails_stops_the_work() -> None:
    ledger.invariant(True)
    with pytest.raises(
        LedgerInvariantError, match=r"^an invariant of the money path does not hold$"
    ):
        ledger.invariant(False)


def test_a_required_value_is_returned_and_a_missing_one_stops_the_work() -> None:
    assert ledger.present(0) == 0  # falsy, but there
    assert ledger.present("80085102028") == "80085102028"
    with pytest.raises(LedgerInvariantError, match=r"^a value the money path requires is missing$"):
        ledger.present(None)


def test_the_invariants_hold_under_python_optimizations() -> None:
    script = (
        "from rewardmiles import ledger\n"
        "try:\n"
        "    ledger.invariant(False)\n"
        "except ledger.LedgerInvariantError:\n"
        "    print('stopped')\n"
    )
    run = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "stopped"
