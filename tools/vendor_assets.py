"""Fetch the console's vendored front-end assets from the npm registry (`make vendor`).

The console serves htmx and uPlot from its own static folder, never from a CDN: the browser of an
operator on a closed network loads nothing from outside. For each package pinned in PACKAGES this
runs `npm pack NAME@VERSION`, checks the tarball against the integrity npm reports (and against
the one VENDORED.json recorded, when the version is unchanged), copies the listed files and the
licence into src/rewardmiles/console/static/vendor/DIRECTORY/, and rewrites VENDORED.json: name,
version, SPDX licence, tarball integrity and every copied file with its sha256.

To update a package, change its version here and run `make vendor`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
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
    version: str  # exact; no ranges
    directory: str  # under VENDOR_DIR
    files: tuple[str, ...]  # paths inside the tarball's package/ folder, copied by base name
    license_file: str = "LICENSE"


PACKAGES = (
    Package("htmx.org", "2.0.11", "htmx", ("dist/htmx.min.js",)),
    Package("uplot", "1.6.32", "uplot", ("dist/uPlot.iife.min.js", "dist/uPlot.min.css")),
)


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


def previous_integrity() -> dict[tuple[str, str], str]:
    if not RECORD.exists():
        return {}
    record = json.loads(RECORD.read_text())
    return {(p["name"], p["version"]): p["integrity"] for p in record["packages"]}


def vendor(package: Package, workdir: Path, known: dict[tuple[str, str], str]) -> dict[str, Any]:
    spec = f"{package.name}@{package.version}"
    described = npm_pack(spec, workdir)
    if described["version"] != package.version:
        raise SystemExit(f"npm packed {described['version']} for {spec}")
    tarball = workdir / described["filename"]
    integrity = sri_sha512(tarball)
    if integrity != described["integrity"]:
        raise SystemExit(
            f"{spec}: tarball integrity {integrity} is not npm's {described['integrity']}"
        )
    recorded = known.get((package.name, package.version))
    if recorded is not None and recorded != integrity:
        raise SystemExit(
            f"{spec}: tarball integrity {integrity} differs from the recorded {recorded}"
        )
    with tarfile.open(tarball, "r:gz") as archive:
        manifest = json.loads(read_member(archive, "package.json"))
        contents = {name: read_member(archive, name) for name in package.files}
        licence_text = read_member(archive, package.license_file)
    target = VENDOR_DIR / package.directory
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files = []
    for source, data in [*contents.items(), (package.license_file, licence_text)]:
        path = target / Path(source).name
        path.write_bytes(data)
        files.append(
            {
                "path": path.relative_to(VENDOR_DIR).as_posix(),
                "source": f"package/{source}",
                "sha256": sha256_of(path),
            }
        )
    return {
        "name": package.name,
        "version": package.version,
        "license": manifest["license"],
        "license_file": f"{package.directory}/{Path(package.license_file).name}",
        "integrity": integrity,
        "tarball": described["filename"],
        "files": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    known = previous_integrity()
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    # The folder holds what PACKAGES lists and nothing else: a package dropped from it goes.
    wanted = {package.directory for package in PACKAGES}
    for entry in VENDOR_DIR.iterdir():
        if entry.is_dir() and entry.name not in wanted:
            shutil.rmtree(entry)
    with tempfile.TemporaryDirectory(prefix="vendor-") as tmp:
        packages = [vendor(package, Path(tmp), known) for package in PACKAGES]
    record = {
        "about": "Front-end assets copied from npm tarballs by `make vendor` (tools/vendor_assets.py); "
        "paths are relative to this folder.",
        "packages": packages,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    for package in packages:
        print(
            f"{package['name']} {package['version']} ({package['license']}): "
            + ", ".join(f["path"] for f in package["files"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
