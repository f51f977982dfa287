"""client/README.md's examples run against a demo server, and run again: re-runnable as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from rewardmiles import clock, demo
from rewardmiles.db.engine import Database
from tests.conftest import DatabaseFactory, ServerFactory
from tests.support.operators import COST

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "client" / "README.md").read_text()
DEMO_URL = "http://127.0.0.1:8000"


def _runnable_examples() -> list[str]:
    """The python blocks that talk to the demo server as written (a `with IssuanceClient(...)`)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return [b for b in blocks if f'IssuanceClient("{DEMO_URL}"' in b]


def test_the_readme_has_runnable_examples() -> None:
    assert len(_runnable_examples()) >= 3


@pytest.fixture
def demo_base_url(
    dialect: str, database_factory: DatabaseFactory, server_factory: ServerFactory
) -> str:
    url = database_factory.create(dialect)
    db = Database.from_url(url)
    try:
        with db.unit_of_work() as session:
            demo.seed(session, clock.utc_now(), secret_hash_cost=10, password_cost=COST)
    finally:
        db.dispose()
    return server_factory(dialect, database_url=url).base_url


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_readme_examples_run_twice(demo_base_url: str) -> None:
    for block in _runnable_examples():
        code = block.replace(DEMO_URL, demo_base_url)
        for attempt in ("first", "second"):
            result = _run(code)
            assert result.returncode == 0, f"{attempt} run of:\n{block}\n{result.stderr}"


def test_partner_walkthrough_runs_twice(demo_base_url: str) -> None:
    for _ in range(2):
        result = _run(
            "import runpy, sys; sys.argv = ['partner_walkthrough.py', '--base-url', "
            f"{demo_base_url!r}]; runpy.run_path('examples/partner_walkthrough.py', "
            "run_name='__main__')"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok: 8 issued, 3 reversed" in result.stdout


def test_the_readmes_demo_admin_signs_in_to_the_console(demo_base_url: str) -> None:
    """README.md prints the demo admin's credentials: they open the console."""
    readme = (ROOT / "README.md").read_text()
    assert f"`{demo.OPERATOR_EMAIL}`" in readme
    assert f"`{demo.OPERATOR_PASSWORD}`" in readme
    answer = httpx.post(
        demo_base_url + "/console/sign-in",
        data={"email": demo.OPERATOR_EMAIL, "password": demo.OPERATOR_PASSWORD},
        headers={"Origin": demo_base_url},
        timeout=30,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/today"
    me = httpx.get(demo_base_url + "/admin/v1/me", cookies=answer.cookies, timeout=30)
    assert me.json()["role"] == "admin"
