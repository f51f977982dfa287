"""Summarise a py-spy profile recorded with `--format raw` (collapsed stacks, one per line).

Own time: samples whose innermost Python frame is the function (time inside a C extension —
pydantic-core, orjson, psycopg's C parts — is charged to the Python frame that called it).
Total time: samples with the function anywhere on the stack. Groups are by the innermost frame's
file (HTTP/ASGI layer, pydantic, JSON, SQLAlchemy, psycopg, auth, logging, event loop, ours).

    python -m bench.pyspy_summary bench/results/profile.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)$")

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("auth / token verify", ("jwt/", "cryptography/", "rewardmiles/auth/")),
    ("logging", ("structlog/", "logging/", "rewardmiles/logs.py")),
    ("HTTP/ASGI (uvicorn, starlette, fastapi)", ("uvicorn/", "starlette/", "fastapi/", "h11/")),
    ("pydantic validation", ("pydantic/", "pydantic_core/")),
    ("JSON", ("json/", "orjson/")),
    ("SQLAlchemy compile/execute", ("sqlalchemy/",)),
    ("psycopg", ("psycopg/", "psycopg_binary/", "psycopg_c/", "psycopg_pool/")),
    (
        "event loop / threads (asyncio, anyio, threading)",
        ("asyncio/", "anyio/", "threading.py", "concurrent/", "selectors.py", "queue.py"),
    ),
    ("our code (rewardmiles)", ("rewardmiles/",)),
)
OTHER = "other (stdlib: uuid, hashlib, re, datetime, …)"
# Inclusive time means something for these (the HTTP layer and the event loop are on every stack
# of their thread, our code on nearly every stack).
INCLUSIVE_GROUPS = {
    "auth / token verify",
    "logging",
    "pydantic validation",
    "JSON",
    "SQLAlchemy compile/execute",
    "psycopg",
}


# Frames every sample of a thread passes through (process start, the CLI, the event loop's and
# the worker threads' run loops): left out of the "total time" ranking, which they would top.
SCAFFOLD = re.compile(
    r"^(<frozen runpy>|typer/|click/|rewardmiles/cli/|rewardmiles/__main__|uvicorn/main\.py|"
    r"uvicorn/server\.py|uvicorn/_compat\.py|asyncio/runners\.py|asyncio/base_events\.py|"
    r"threading\.py|bench/)"
)
SCAFFOLD_FUNCS = {"WorkerThread.run", "<module>"}


@dataclass(frozen=True)
class Frame:
    func: str
    path: str

    @property
    def name(self) -> str:
        return f"{self.func} ({self.path})"


def _path(raw: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/src/"):
        if marker in raw:
            raw = raw.split(marker, 1)[1]
            if marker == "/lib/python3":
                raw = raw.split("/", 1)[1] if "/" in raw else raw
    return raw


def parse_frame(text: str) -> Frame:
    match = FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "")
    return Frame(match["func"], _path(match["path"]))


def group_of(frame: Frame) -> str:
    for name, prefixes in GROUPS:
        if any(frame.path.startswith(p) or f"/{p}" in frame.path for p in prefixes):
            return name
    return OTHER


def summarise(lines: list[str], top: int = 15) -> dict[str, Any]:
    own: Counter[Frame] = Counter()
    total: Counter[Frame] = Counter()
    groups: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [parse_frame(f) for f in stack.split(";") if f]
        frames = [f for f in frames if f.path]  # drop process / thread name pseudo-frames
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        own[leaf] += count
        groups[group_of(leaf)] += count
        for frame in set(frames):
            total[frame] += count
        for name in {group_of(f) for f in frames}:
            inclusive[name] += count

    def pct(n: int) -> float:
        return round(100 * n / samples, 1) if samples else 0.0

    ours = [
        (f, n)
        for f, n in total.most_common()
        if f.path.startswith("rewardmiles/") and not SCAFFOLD.match(f.path)
    ]
    return {
        "samples": samples,
        "groups": [
            {
                "group": g,
                "own_pct": pct(n),
                "inclusive_pct": pct(inclusive[g]) if g in INCLUSIVE_GROUPS else None,
            }
            for g, n in groups.most_common()
        ],
        "top_own": [
            {
                "function": f.name,
                "group": group_of(f),
                "own_pct": pct(n),
                "total_pct": pct(total[f]),
            }
            for f, n in own.most_common(top)
        ],
        "top_total": [
            {"function": f.name, "group": group_of(f), "total_pct": pct(n), "own_pct": pct(own[f])}
            for f, n in [
                (f, n)
                for f, n in total.most_common()
                if not SCAFFOLD.match(f.path) and f.func not in SCAFFOLD_FUNCS
            ][:top]
        ],
        "top_total_ours": [
            {"function": f.name, "total_pct": pct(n), "own_pct": pct(own[f])} for f, n in ours[:top]
        ],
    }


def group_table(summary: dict[str, Any]) -> list[str]:
    rows = ["| group | own % | inclusive % |", "|---|---|---|"]
    for g in summary["groups"]:
        inclusive = g.get("inclusive_pct")
        rows.append(
            f"| {g['group']} | {g['own_pct']} | {'–' if inclusive is None else inclusive} |"
        )
    return rows


def markdown(summary: dict[str, Any]) -> str:
    out = [
        f"{summary['samples']:,} samples.",
        "",
        "Time by group: own = innermost frame in the group; inclusive = the group anywhere on the "
        "stack (SQLAlchemy's includes the psycopg calls it makes).",
        "",
    ]
    out += group_table(summary)
    out += ["", "Top functions by own time:", "", "| # | function | group | own % | total % |"]
    out += ["|---|---|---|---|---|"]
    out += [
        f"| {i} | `{r['function']}` | {r['group']} | {r['own_pct']} | {r['total_pct']} |"
        for i, r in enumerate(summary["top_own"], 1)
    ]
    out += [
        "",
        "Top functions by total time (process, CLI, event-loop and thread run loops left out):",
        "",
        "| # | function | group | total % | own % |",
    ]
    out += ["|---|---|---|---|---|"]
    out += [
        f"| {i} | `{r['function']}` | {r['group']} | {r['total_pct']} | {r['own_pct']} |"
        for i, r in enumerate(summary["top_total"], 1)
    ]
    out += ["", "rewardmiles functions by total time:", "", "| # | function | total % | own % |"]
    out += ["|---|---|---|---|"]
    out += [
        f"| {i} | `{r['function']}` | {r['total_pct']} | {r['own_pct']} |"
        for i, r in enumerate(summary["top_total_ours"], 1)
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.pyspy_summary PROFILE_RAW_TXT")
    with open(sys.argv[1], encoding="utf-8") as fh:
        sys.stdout.write(markdown(summarise(fh.readlines())))


if __name__ == "__main__":
    main()
