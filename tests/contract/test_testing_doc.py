"""docs/testing.md against the mutation driver: every mutant the driver accepts as explained is
listed in the document with its reason, and every money module has its row of figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import mutation

DOC = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()


@pytest.mark.parametrize("name", sorted(mutation.EXPLAINED))
def test_every_explained_mutant_is_listed_in_the_testing_doc(name: str) -> None:
    assert f"`{name}`" in DOC, f"{name} is accepted as explained but docs/testing.md omits it"


@pytest.mark.parametrize("name", sorted(mutation.MODULES))
def test_every_money_module_has_its_figures_in_the_testing_doc(name: str) -> None:
    path = mutation.MODULES[name].path.removeprefix("src/rewardmiles/")
    assert f"| `{path}" in DOC, f"docs/testing.md has no figures for {path}"


def test_explained_mutants_belong_to_a_money_module() -> None:
    patterns = [m.pattern.removesuffix("*") for m in mutation.MODULES.values()]
    assert all(any(n.startswith(p) for p in patterns) for n in mutation.EXPLAINED)
