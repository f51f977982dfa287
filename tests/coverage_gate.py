"""The coverage gate of `make test` (docs/testing.md): line and branch coverage of each money
package, from the combined data of a `coverage run -m pytest` (servers and CLI runs included).

    python -m tests.coverage_gate                   # after `coverage combine`; fails under 95 %
    python -m tests.coverage_gate --fail-under 95

`coverage report --fail-under` holds one figure, lines and branches counted together; this holds
each package's lines and its branches to the bar separately.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "issuance", "idempotency")
INCLUDE = ",".join(f"src/rewardmiles/{package}/*" for package in PACKAGES)


@dataclass
class Figures:
    statements: int = 0
    covered_lines: int = 0
    branches: int = 0
    covered_branches: int = 0

    def add(self, summary: dict[str, int]) -> None:
        self.statements += summary["num_statements"]
        self.covered_lines += summary["covered_lines"]
        self.branches += summary["num_branches"]
        self.covered_branches += summary["covered_branches"]

    @property
    def lines(self) -> float:
        return 100.0 * self.covered_lines / self.statements if self.statements else 100.0

    @property
    def branch(self) -> float:
        return 100.0 * self.covered_branches / self.branches if self.branches else 100.0


def package_figures(files: dict[str, dict[str, dict[str, int]]]) -> dict[str, Figures]:
    """Each package's sums over its files (coverage's JSON report, paths relative to the root)."""
    figures = {package: Figures() for package in PACKAGES}
    for path, report in files.items():
        parts = Path(path).parts
        package = parts[parts.index("rewardmiles") + 1]
        figures[package].add(report["summary"])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fail-under", type=float, default=95.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        subprocess.run(
            [sys.executable, "-m", "coverage", "json", "-q", "--include", INCLUDE, "-o", str(out)],
            cwd=ROOT,
            check=True,
        )
        files = json.loads(out.read_text())["files"]
    figures = package_figures(files)
    total = Figures()
    for package in PACKAGES:
        total.statements += figures[package].statements
        total.covered_lines += figures[package].covered_lines
        total.branches += figures[package].branches
        total.covered_branches += figures[package].covered_branches
    failed = []
    print(f"{'package':<14} {'lines':>8} {'branches':>9}")
    for name, f in [*figures.items(), ("total", total)]:
        print(f"{name:<14} {f.lines:7.2f}% {f.branch:8.2f}%")
        if name != "total" and min(f.lines, f.branch) < args.fail_under:
            failed.append(name)
    if failed:
        print(f"coverage under {args.fail_under:g} % in: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
