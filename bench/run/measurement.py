"""One row of the report (a Measurement), and reading the outputs of pgbench and wrk into rows."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measurement:
    id: str
    kind: str  # generator | http | database | rewardmiles
    title: str
    target: str
    processes: int | None
    concurrency: int
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int = 0
    transport_errors: int = 0
    unexpected: int = 0
    requests: int = 0
    statuses: dict[str, Any] = field(default_factory=dict)
    server_rss_peak_mb: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    background_before_pct: float | None = None
    ratio_db: float | None = None  # to the separate-statements ceiling (pgbench_issue.sql)
    ratio_db_one_statement: float | None = None  # to pgbench_issue_one_statement.sql
    ratio_http: float | None = None
    ceiling_db: str | None = None
    ceiling_db_one_statement: str | None = None
    ceiling_http: str | None = None
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


# What one run of the load generator gives: its result (bench/loadgen.py's JSON), the CPU use
# over its measured window, the server tree's peak RSS in MiB and the machine's busy % before it.
LoadRun = tuple[dict[str, Any], dict[str, float], float, float | None]


def from_loadgen(
    mid: str,
    kind: str,
    title: str,
    target: str,
    processes: int | None,
    run: LoadRun,
    tool: str = "loadgen",
) -> Measurement:
    result, usage, rss_mb, background = run
    lat = result["latency_ms"]
    m = Measurement(
        id=mid,
        kind=kind,
        title=title,
        target=target,
        processes=processes,
        concurrency=result["concurrency"],
        tool=tool,
        rps=result["rps"],
        p50_ms=lat["p50"],
        p99_ms=lat["p99"],
        max_ms=lat["max"],
        non_2xx=result["non_2xx"],
        transport_errors=result["transport_errors"],
        unexpected=result["unexpected"],
        requests=result["requests"],
        statuses=result["by_kind"],
        server_rss_peak_mb=round(rss_mb, 1) if rss_mb else None,
        cpu=usage,
        background_before_pct=background,
        detail={
            "duration_s": result["duration_s"],
            "latency_ms": lat,
            "generator_cpu": result["cpu"],
            "error_samples": result["error_samples"],
            "prepared_requests": result["prepared_requests"],
        },
    )
    if result["unexpected"]:
        m.notes.append(f"{result['unexpected']} 2xx responses not as expected")
    if result["error_samples"]:
        m.notes.append("errors: " + " | ".join(result["error_samples"][:2]))
    return m


def set_ratios(measurements: list[Measurement]) -> None:
    """Each rewardmiles row over the ceilings of the same concurrency: both database ceilings
    (the 10-collector runs for the hot rows; for the 50/50 mix of (c), the mix's ceiling) and the
    HTTP ceiling with as many API processes."""
    by_id = {m.id: m for m in measurements}
    for m in measurements:
        if m.kind != "rewardmiles":
            continue
        hot = "-b-" in m.id and m.concurrency > 1
        suffix = f"{'hot' if hot else 'many'}-c{m.concurrency}"
        db_id, one_id = f"pgbench-{suffix}", f"pgbench-one-{suffix}"
        if "-c-c" in m.id:  # scenario (c): the 50/50 mix's own ceiling, which has one form
            db_id, one_id = f"pgbench-mix-{suffix}", ""
        http_id = f"http-w{m.processes if m.concurrency > 1 else 1}-c{m.concurrency}"
        if db_id in by_id and by_id[db_id].rps:
            m.ratio_db = round(m.rps / by_id[db_id].rps, 3)
            m.ceiling_db = db_id
        if one_id in by_id and by_id[one_id].rps:
            m.ratio_db_one_statement = round(m.rps / by_id[one_id].rps, 3)
            m.ceiling_db_one_statement = one_id
        if http_id in by_id and by_id[http_id].rps:
            m.ratio_http = round(m.rps / by_id[http_id].rps, 3)
            m.ceiling_http = http_id


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


def parse_pgbench(out: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {
        "tps": 0.0,
        "failed": 0,
        "transactions": 0,
        "latency_avg_ms": None,
        "statements": [],
    }
    in_statements = False
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("tps ="):
            parsed["tps"] = float(text.split()[2])
        elif text.startswith("number of failed transactions:"):
            parsed["failed"] = int(text.split(":")[1].split()[0])
        elif text.startswith("number of transactions actually processed:"):
            parsed["transactions"] = int(text.split(":")[1].split("/")[0].split()[0])
        elif text.startswith("latency average ="):
            parsed["latency_avg_ms"] = float(text.split()[3])
        elif text.startswith("statement latencies"):
            in_statements = True
        elif in_statements and text:
            parts = text.split(None, 2)
            if len(parts) == 3 and not parts[2].startswith("\\"):
                with contextlib.suppress(ValueError):
                    parsed["statements"].append({"ms": float(parts[0]), "statement": parts[2]})
    return parsed


def _wrk_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * factor, 3)
    return float(text)


def parse_wrk(out: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {
        "rps": 0.0,
        "p50_ms": math.nan,
        "p99_ms": math.nan,
        "max_ms": math.nan,
        "non_2xx": 0,
        "socket_errors": 0,
        "requests": 0,
    }
    for line in out.splitlines():
        text = line.strip()
        parts = text.split()
        if text.startswith("Requests/sec:"):
            parsed["rps"] = float(parts[1])
        elif (
            text.startswith("Latency")
            and len(parts) >= 4
            and not text.startswith("Latency Distribution")
        ):
            parsed["max_ms"] = _wrk_ms(parts[3])
        elif text.startswith("50%"):
            parsed["p50_ms"] = _wrk_ms(parts[1])
        elif text.startswith("99%"):
            parsed["p99_ms"] = _wrk_ms(parts[1])
        elif text.startswith("Non-2xx or 3xx responses:"):
            parsed["non_2xx"] = int(parts[-1])
        elif text.startswith("Socket errors:"):
            parsed["socket_errors"] = sum(
                int(p.rstrip(",")) for p in parts if p.rstrip(",").isdigit()
            )
        elif "requests in" in text:
            parsed["requests"] = int(parts[0])
    return parsed
