"""What the report says of the machine a run measured on: CPU, memory, versions, tools, code."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from importlib import metadata
from typing import Any

from bench.run.config import NCPU, ROOT, tool_path
from bench.run.databases import Postgres

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "SQLAlchemy",
    "psycopg",
    "orjson",
    "structlog",
)
TOOLS = (("pgbench", "--version"), ("wrk", "-v"), ("py-spy", "--version"))


def describe(pg: Postgres | None) -> dict[str, Any]:
    with open("/proc/loadavg", encoding="ascii") as fh:
        loadavg = fh.read().split()[:3]
    return {
        "cpu_model": _cpu_model(),
        "cores": NCPU,
        "memory_gib": round(_memory_kb() / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg.info() if pg else None,
        "packages": _package_versions(),
        "tools": _tool_versions(),
        "git": _git(),
        "load_average_at_start": loadavg,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def _memory_kb() -> int:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return mem_kb


def _package_versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _tool_versions() -> dict[str, str]:
    tools = {}
    for tool, flag in TOOLS:
        path = tool_path(tool)
        if path:
            out = subprocess.run([path, flag], capture_output=True, text=True, check=False)
            text = out.stdout or out.stderr
            tools[tool] = text.strip().splitlines()[0] if text else "?"
    return tools


def _git() -> dict[str, str]:
    git = {}
    with contextlib.suppress(Exception):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        git["src_uncommitted_files"] = str(
            len([line for line in status.splitlines() if line.strip()])
        )
    return git
