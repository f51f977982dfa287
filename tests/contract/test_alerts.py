"""deploy/prometheus/alerts.yml is valid Prometheus rules (`promtool check rules`), and its alerts
fire on the series of deploy/prometheus/alerts.test.yml, and stay quiet on others, as that file
expects (`promtool test rules`). promtool is Debian's `prometheus` package; `.ci/run` installs it
and sets REWARDMILES_REQUIRE_PROMTOOL=1, so CI never skips these."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("REWARDMILES_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is not installed and REWARDMILES_REQUIRE_PROMTOOL is set")
        pytest.skip(
            "promtool is not installed (apt-get install prometheus); set "
            "REWARDMILES_REQUIRE_PROMTOOL=1 to make this a failure"
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alert_rules_are_valid() -> None:
    result = _run("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_as_their_tests_expect() -> None:
    result = _run("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
