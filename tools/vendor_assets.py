"""Fetch the console's vendored front-end assets from the npm registry (`make vendor`).

The console serves htmx and uPlot from its own static folder, never from a CDN: the browser of an
operator on a closed network loads nothing from outside. For each package of PACKAGES, at the
version VENDORED.json records (or the one given as NAME@VERSION on the command line), this runs
`npm pack NAME@VERSION`, checks the tarball against the integrity npm reports (and against the
one recorded, when the version is unchanged), copies the listed files and the licence (as
SHORT.LICENSE) into src/rewardmiles/console/static/vendor/, and rewrites VENDORED.json: name,
version, SPDX licence, tarball integrity and every copied file with its sha256.

To update a package: `make vendor UPDATE=htmx.org@2.0.12` (or
`.venv/bin/python -m tools.vendor_assets htmx.org@2.0.12`).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENDOR_DIR = ROOT / "src" / "rewardmiles" / "console" / "static" / "vendor"
RECORD = VENDOR_DIR / "VENDORED.json"


@dataclass(frozen=True)
class Package:
    name: str  # the npm package
    short: str  # its licence is copied as SHORT.LICENSE
    files: tuple[str, ...]  # paths inside the tarball's package/ folder, copied by base name
    license_file: str = "LICENSE"


PACKAGES = (
    Package("htmx.org", "htmx", ("dist/htmx.min.js",)),
    Package("uplot", "uplot", ("dist/uPlot.iife.min.js", "dist/uPlot.min.css")),
)
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sri_sha512(path: Path) -> str:
    """The tarball's integrity in npm's Subresource Integrity form (sha512-BASE64)."""
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def npm_pack(spec: str, destination: Path) -> dict[str, Any]:
    """`npm pack SPEC` into `destination`; npm's JSON description of the tarball."""
    result = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(destination)],
        cwd=destination,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"npm pack {spec} failed:\n{result.stderr}")
    described: list[dict[str, Any]] = json.loads(result.stdout)
    return described[0]


def read_member(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.getmember(f"package/{name}")
    if not member.isfile():
        raise SystemExit(f"{name} is not a regular file in the tarball")
    extracted = archive.extractfile(member)
    assert extracted is not None
    return extracted.read()


def recorded_packages() -> list[dict[str, Any]]:
    if not RECORD.exists():
        return []
    packages: list[dict[str, Any]] = json.loads(RECORD.read_text())["packages"]
    return packages


def vendor(
    package: Package, version: str, workdir: Path, known: dict[tuple[str, str], str]
) -> dict[str, Any]:
    spec = f"{package.name}@{version}"
    described = npm_pack(spec, workdir)
    if described["version"] != version:
        raise SystemExit(f"npm packed {described['version']} for {spec}")
    tarball = workdir / described["filename"]
    integrity = sri_sha512(tarball)
    if integrity != described["integrity"]:
        raise SystemExit(
            f"{spec}: tarball integrity {integrity} is not npm's {described['integrity']}"
        )
    recorded = known.get((package.name, version))
    if recorded is not None and recorded != integrity:
        raise SystemExit(
            f"{spec}: tarball integrity {integrity} differs from the recorded {recorded}"
        )
    with tarfile.open(tarball, "r:gz") as archive:
        manifest = json.loads(read_member(archive, "package.json"))
        contents = {name: read_member(archive, name) for name in package.files}
        licence_text = read_member(archive, package.license_file)
    files = []
    copies = [*contents.items(), (f"{package.short}.LICENSE", licence_text)]
    for source, data in copies:
        path = VENDOR_DIR / Path(source).name
        path.write_bytes(data)
        origin = package.license_file if source.endswith(".LICENSE") else source
        files.append({"path": path.name, "source": f"package/{origin}", "sha256": sha256_of(path)})
    return {
        "name": package.name,
        "version": version,
        "license": manifest["license"],
        "license_file": f"{package.short}.LICENSE",
        "integrity": integrity,
        "tarball": described["filename"],
        "files": files,
    }


def versions(arguments: list[str]) -> dict[str, str]:
    """The version of each package: NAME@VERSION arguments, else the record's."""
    chosen = {p["name"]: p["version"] for p in recorded_packages()}
    names = {package.name for package in PACKAGES}
    for argument in arguments:
        name, _, version = argument.rpartition("@")
        if name not in names or not EXACT_VERSION.fullmatch(version):
            raise SystemExit(f"{argument}: expected NAME@X.Y.Z, NAME one of {sorted(names)}")
        chosen[name] = version
    missing = sorted(names - set(chosen))
    if missing:
        raise SystemExit(f"no version recorded for {missing}: give NAME@X.Y.Z")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", metavar="NAME@VERSION", help="update to VERSION")
    chosen = versions(parser.parse_args(argv).packages)
    known = {(p["name"], p["version"]): p["integrity"] for p in recorded_packages()}
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        packages = [vendor(package, chosen[package.name], Path(tmp), known) for package in PACKAGES]
    record = {
        "about": "Front-end assets copied from npm tarballs by `make vendor` "
        "(tools/vendor_assets.py); paths are relative to this folder.",
        "packages": packages,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    # The folder holds what the record lists and nothing else: a file a package dropped goes.
    kept = {file["path"] for package in packages for file in package["files"]} | {RECORD.name}
    for entry in VENDOR_DIR.iterdir():
        if entry.name not in kept:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for package in packages:
        copied = ", ".join(file["path"] for file in package["files"])
        print(f"{package['name']} {package['version']} ({package['license']}): {copied}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
