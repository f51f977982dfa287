"""The pgbench scripts of the database ceilings: their shape (round trips, statements), their names
in the report, and whether they still do the work of the requests they mirror."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import pgbench_one_statement
from bench.run.config import PGBENCH_ONE_STATEMENT, ROOT, SCRIPT_MIRRORS


def pgbench_script_shape(path: Path) -> tuple[int, int]:
    """(round trips, SQL statements) of one transaction of a pgbench script: each SQL command
    (ended by `;`, or by `\\gset`/`\\aset`) is a round trip, except that a \\startpipeline …
    \\endpipeline block is one; BEGIN and END (COMMIT) are round trips, not statements of the
    work."""
    trips = statements = 0
    in_pipeline = False
    command: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        if stripped.startswith("\\startpipeline"):
            in_pipeline = True
            trips += 1
        elif stripped.startswith("\\endpipeline"):
            in_pipeline = False
        elif stripped.startswith("\\"):
            continue  # \set and other meta-commands run in pgbench, not in the database
        else:
            command.append(stripped)
            if stripped.endswith(";") or re.search(r"\\[ga]set\b", stripped):
                first = command[0].split(None, 1)[0].rstrip(";").upper()
                command = []
                trips += 0 if in_pipeline else 1
                if first not in ("BEGIN", "START", "END", "COMMIT"):
                    statements += 1
    return trips, statements


def ceiling_column(script: Path) -> str:
    """How a database ceiling is named in the report: by the shape of its script."""
    trips, statements = pgbench_script_shape(script)
    return "1 statement" if statements == 1 and trips == 1 else f"{trips} round trips"


def ceiling_name(script: Path) -> str:
    trips, statements = pgbench_script_shape(script)
    if statements == 1 and trips == 1:
        return "one statement"
    return f"separate statements, {trips} round trips"


def service_shape(request: dict[str, Any]) -> tuple[int | None, int]:
    statements = sum(
        s.get("executemany") or 1
        for s in request["statements"]
        if s["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")
    )
    return request.get("round_trips"), statements


def compare_scripts(requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each pgbench script against the captured request it mirrors (`SCRIPT_MIRRORS`): round
    trips and statements, and for the one-statement script the statement's text. Returns what
    was compared and the mismatches (a ceiling that no longer does the service's work)."""
    by_name = {r["request"]: r for r in requests}
    compared: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for script, mirrors in SCRIPT_MIRRORS.items():
        entry, found = _compare_script(script, mirrors, by_name.get(mirrors))
        compared.append(entry)
        mismatches += found
    return compared, mismatches


def _compare_script(
    script: Path, mirrors: str, request: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    script_trips, script_statements = pgbench_script_shape(script)
    entry: dict[str, Any] = {
        "script": str(script.relative_to(ROOT)),
        "round_trips": script_trips,
        "statements": script_statements,
        "mirrors": mirrors,
    }
    if request is None:
        return entry, [f"no capture of {mirrors!r} to compare {script.name} with"]
    mismatches: list[str] = []
    trips, statements = service_shape(request)
    entry["service_round_trips"], entry["service_statements"] = trips, statements
    if (trips is not None and trips != script_trips) or statements != script_statements:
        mismatches.append(
            f"{script.name} makes {script_trips} round trip(s) with {script_statements} "
            f"statement(s); the service's {mirrors} now makes {trips} with {statements}. "
            "That database ceiling no longer mirrors the service: "
            + (
                "see why the POST/EVENT did not take the one-statement path, or regenerate "
                "the script (python -m bench.pgbench_one_statement) if the path changed."
                if script == PGBENCH_ONE_STATEMENT
                else "update the script from the statements above."
            )
        )
    if script == PGBENCH_ONE_STATEMENT:
        ones = [s["sql"] for s in request["statements"] if s.get("path") == "one statement"]
        if ones:
            drift = pgbench_one_statement.drift(ones[0], script)
            entry["same_statement_text"] = drift is None
            if drift is not None:
                mismatches.append(drift)
    return entry, mismatches
