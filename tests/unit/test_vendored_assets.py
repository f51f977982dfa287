"""The console's vendored front-end assets are exactly what VENDORED.json records (`make vendor`
writes both): every recorded file is there with its sha256, nothing else lies in the folder, and
every package carries its licence."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

VENDOR = Path(__file__).resolve().parents[2] / "src/rewardmiles/console/static/vendor"
RECORD_NAME = "VENDORED.json"


def _record() -> dict[str, Any]:
    record: dict[str, Any] = json.loads((VENDOR / RECORD_NAME).read_text())
    return record


def _recorded_files() -> list[dict[str, str]]:
    return [file for package in _record()["packages"] for file in package["files"]]


def test_the_record_names_htmx_and_uplot_at_exact_versions() -> None:
    packages = {package["name"]: package for package in _record()["packages"]}
    assert set(packages) == {"htmx.org", "uplot"}
    for package in packages.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), package
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", package["integrity"]), package
        assert package["license"], package
    assert packages["htmx.org"]["version"].startswith("2.")


@pytest.mark.parametrize("file", _recorded_files(), ids=lambda file: file["path"])
def test_every_recorded_file_exists_with_its_sha256(file: dict[str, str]) -> None:
    path = VENDOR / file["path"]
    assert path.is_file(), f"{file['path']} is recorded but missing: run `make vendor`"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == file["sha256"], f"{file['path']} differs from the record: run `make vendor`"


def test_every_vendored_file_is_recorded() -> None:
    present = {
        path.relative_to(VENDOR).as_posix()
        for path in VENDOR.rglob("*")
        if path.is_file() and path.name != RECORD_NAME
    }
    recorded = [file["path"] for file in _recorded_files()]
    assert len(recorded) == len(set(recorded)), "a file is recorded twice"
    assert present == set(recorded), (
        f"not recorded: {sorted(present - set(recorded))}; missing: {sorted(set(recorded) - present)}"
    )


@pytest.mark.parametrize("package", _record()["packages"], ids=lambda package: package["name"])
def test_each_package_has_its_licence_file(package: dict[str, Any]) -> None:
    licence = package["license_file"]
    assert licence in {file["path"] for file in package["files"]}, licence
    text = (VENDOR / licence).read_text()
    # A licence text, not a placeholder: MIT and 0BSD both grant permission and disclaim warranty.
    assert "Permission" in text, f"{licence} grants no permission"
    assert "AS IS" in text, f"{licence} disclaims no warranty"
