"""The report of a run: latest.md (the Markdown also printed on stdout) and latest.json."""

from __future__ import annotations

import argparse
import json
import math
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import pyspy_summary
from bench.run.config import (
    NCPU,
    PGBENCH_ONE_STATEMENT,
    PGBENCH_REVERSE,
    PGBENCH_SCRIPT,
    ROOT,
    SCRIPT_MIRRORS,
    SERVER_ENV,
)
from bench.run.harness import Harness
from bench.run.measurement import Measurement
from bench.run.scripts import ceiling_column


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def table(measurements: list[Measurement]) -> str:
    head = (
        "| row | measurement | target | procs | conc | req/s | p50 ms | p99 ms | max ms | non-2xx | "
        "transport err | server RSS peak MB | CPU % srv / pg / gen / other | "
        f"× DB ceiling ({ceiling_column(PGBENCH_SCRIPT)}) | "
        f"× DB ceiling ({ceiling_column(PGBENCH_ONE_STATEMENT)}) | × HTTP ceiling |"
    )
    lines = [head, "|" + "---|" * 16]
    for m in measurements:
        cpu = m.cpu
        cpu_text = (
            f"{_num(cpu.get('server'), 0)} / {_num(cpu.get('postgres'), 0)} / "
            f"{_num(cpu.get('generator'), 0)} / {_num(cpu.get('other'), 0)}"
            if cpu
            else "–"
        )
        title = f"{m.title} [{m.tool}]" if m.tool != "loadgen" else m.title
        db_ratios = []
        for ratio in (m.ratio_db, m.ratio_db_one_statement):
            text = _num(ratio, 2)
            db_ratios.append(f"({text})" if ratio is not None and m.target == "SQLite" else text)
        lines.append(
            f"| `{m.id}` | {title} | {m.target} | {m.processes or '–'} | {m.concurrency} | "
            f"{_num(m.rps, 0)} | "
            f"{_num(m.p50_ms)} | {_num(m.p99_ms)} | {_num(m.max_ms)} | {m.non_2xx} | "
            f"{m.transport_errors} | {_num(m.server_rss_peak_mb, 0)} | {cpu_text} | "
            f"{db_ratios[0]} | {db_ratios[1]} | {_num(m.ratio_http, 2)} |"
        )
    return "\n".join(lines)


def render(h: Harness, machine: dict[str, Any], command: str, elapsed: float) -> str:
    """The Markdown report (latest.md) of the run so far."""
    out = _head(h, machine, command, elapsed)
    out += _method(h.args)
    out += _warnings(h.measurements)
    out += ["## Results", "", table(h.measurements), ""]
    out += _notes(h.measurements)
    out += _pg_workers_section(h)
    out += _generator_section(h)
    out += _ledger_section(h)
    out += _sql_section(h)
    out += _pgbench_statements_section(h)
    out += _profile_section(h)
    return "\n".join(out) + "\n"


def _head(h: Harness, machine: dict[str, Any], command: str, elapsed: float) -> list[str]:
    machine = {
        "cpu_model": "?",
        "cores": NCPU,
        "memory_gib": "?",
        "kernel": platform.release(),
        "load_average_at_start": ["?"],
        "python": platform.python_version(),
        "packages": {},
        "tools": {},
        "git": {},
        **machine,
    }
    pg = machine.get("postgresql") or {}
    return [
        "# rewardmiles benchmark",
        "",
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {elapsed / 60:.1f} min. Command:",
        "",
        f"    {command}",
        "",
        "## Machine",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cores']} cores; RAM {machine['memory_gib']} GiB; "
        f"Linux {machine['kernel']}; load average at start {' '.join(machine['load_average_at_start'])}",
        f"- PostgreSQL {pg.get('server_version', '–')} (synchronous_commit={pg.get('synchronous_commit', '–')}, "
        f"fsync={pg.get('fsync', '–')}, wal_sync_method={pg.get('wal_sync_method', '–')}, "
        f"shared_buffers={pg.get('shared_buffers', '–')}), same machine, loopback",
        f"- Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        "- tools: " + "; ".join(f"{v}" for v in machine["tools"].values()),
        f"- code: commit {machine['git'].get('commit', '?')}, "
        f"{machine['git'].get('src_uncommitted_files', '?')} uncommitted file(s) under src/ "
        f"(source fingerprint {h.src_at_start}; rows whose server started on other code are "
        "noted)",
        "",
    ]


def _method(a: argparse.Namespace) -> list[str]:
    return [
        "## Method",
        "",
        f"- Closed loop, {a.concurrency} connections (headline)"
        f"{' and 1 (latency floor)' if a.latency_floor else ''}; "
        f"{a.warmup:g} s warm-up excluded, then {a.duration:g} s measured per row. Load generator: "
        "bench/loadgen.py, a separate process (uvloop, raw HTTP/1.1 keep-alive sockets).",
        f"- Each request: one 5-mile STANDARD line, fresh Idempotency-Key and clientTransactionId, "
        f"collector drawn at random from {a.collectors:,} enrolled ACTIVE ones (10 for the hot "
        "rows). One partner client; its rate limit is raised so the limiter runs but never refuses "
        f"({', '.join(f'{k}={v}' for k, v in SERVER_ENV.items())}).",
        "- `rewardmiles serve --port P --workers N` as shipped (access log on, embedded settlement "
        "worker on); fresh databases copied from one seeded template; durability untouched.",
        "- CPU % is of one core over the measured window, sampled from /proc: the server's process "
        "tree, every PostgreSQL process, the generator, and **other** = the rest of the machine "
        "(other sessions' processes share these cores; a high value marks a noisy row).",
        "- Two database ceilings, pgbench doing the SQL work of one POST/EVENT on a copy of the "
        f"same seeded database: `{PGBENCH_SCRIPT.relative_to(ROOT)}` as separate statements in a "
        f"transaction ({ceiling_column(PGBENCH_SCRIPT)}: the general unit of work, which the "
        "service falls back to) and "
        f"`{PGBENCH_ONE_STATEMENT.relative_to(ROOT)}` as the service's one statement in "
        f"autocommit ({ceiling_column(PGBENCH_ONE_STATEMENT)}, one round trip: the path a "
        "POST/EVENT now takes). Their rows run one after the other at each concurrency.",
        f"- Two more for reversals: `{PGBENCH_REVERSE.relative_to(ROOT)}`, the SQL work of one "
        f"REVERSE/EVENT ({ceiling_column(PGBENCH_REVERSE)}: the unit of work, one call at a "
        "time, which a reversal the batch cannot decide falls back to) of an original written "
        "beforehand, and the 50/50 mix of scenario (c) "
        "(bench/run/ceilings.py `mix_script`: each connection issues, then reverses what it "
        "issued; a pgbench transaction is one call).",
        f"- × DB ceiling ({ceiling_column(PGBENCH_SCRIPT)}) and × DB ceiling "
        f"({ceiling_column(PGBENCH_ONE_STATEMENT)}): req/s over that pgbench run's tps at the same "
        "concurrency (hot rows: the 10-collector runs; the (c) rows: the mix's ceiling, in the "
        "first column; SQLite rows in parentheses, for scale only). × HTTP ceiling: over the "
        "no-op endpoint with the same number of API processes and concurrency.",
        "",
    ]


def _warnings(measurements: list[Measurement]) -> list[str]:
    failing = [
        m
        for m in measurements
        if m.kind == "rewardmiles" and (m.non_2xx or m.transport_errors or m.unexpected)
    ]
    if not failing:
        return []
    out = ["## Warnings", ""]
    for m in failing:
        first = (m.detail.get("server_errors") or ["(no error line in the server log)"])[-1]
        out.append(
            f"- **{m.id}**: {m.non_2xx} non-2xx, {m.transport_errors} transport errors, "
            f"{m.unexpected} unexpected; statuses {json.dumps(m.statuses)}; server: "
            f"`{first[:400]}`"
        )
    return [*out, ""]


def _notes(measurements: list[Measurement]) -> list[str]:
    notes = [f"- {m.id}: {'; '.join(m.notes)}" for m in measurements if m.notes]
    mixed = [
        m
        for m in measurements
        if len(m.statuses) > 1 or any(len(v) > 1 for v in m.statuses.values())
    ]
    notes += [f"- {m.id} statuses: {json.dumps(m.statuses)}" for m in mixed]
    noisy = [m.id for m in measurements if m.cpu.get("other", 0) > 30]
    if noisy:
        which = "every row" if len(noisy) == len(measurements) else ", ".join(noisy)
        notes.append(
            f"- noisy (other processes used > 30% of a core while measuring): {which}. Compare "
            "rows of one run with each other; re-run on a quiet machine for absolute numbers."
        )
    return ["Notes:", "", *notes, ""] if notes else []


def _pg_workers_section(h: Harness) -> list[str]:
    choice = h.extra.get("pg_workers")
    if not choice:
        return []
    cands = ", ".join(
        f"{w} process(es): {_num(r, 0)} successful req/s" for w, r in choice["candidates"].items()
    )
    return [
        "## API processes on PostgreSQL",
        "",
        f"Scenario (a) at concurrency {h.args.concurrency}: {cands}. Chosen for (b)–(d): "
        f"**{choice['chosen']}**.",
        "",
    ]


def _ledger_section(h: Harness) -> list[str]:
    out = ["## Ledger verification", ""]
    out += [
        f"- {v['database']}: " + v["result"].splitlines()[-1]
        if v["result"]
        else f"- {v['database']}: ok"
        for v in h.verifications
    ]
    return [*out, ""]


def _pgbench_statements_section(h: Harness) -> list[str]:
    pgb = next(
        (
            m
            for m in h.measurements
            if m.id.startswith("pgbench-many") and m.concurrency == h.args.concurrency
        ),
        None,
    )
    if not (pgb and pgb.detail.get("statements_ms")):
        return []
    out = [
        f"## pgbench per-statement latency ({pgb.id}, {pgb.detail.get('script', '')}, ms)",
        "",
        "| ms | statement |",
        "|---|---|",
    ]
    out += [f"| {s['ms']:.3f} | `{s['statement'][:90]}` |" for s in pgb.detail["statements_ms"]]
    return [*out, ""]


def _profile_section(h: Harness) -> list[str]:
    prof = h.extra.get("profile")
    if not (prof and "summary" in prof):
        return []
    out = [
        "## Profile (py-spy, scenario (a), PostgreSQL, 1 API process)",
        "",
        f"See profile.md and profile.txt (collapsed stacks; open in speedscope). "
        f"`{prof['command']}`",
        "",
    ]
    out += pyspy_summary.group_table(prof["summary"])
    out += [
        "",
        "| # | function (own time) | group | own % | total % |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {i} | `{r['function']}` | {r['group']} | {r['own_pct']} | {r['total_pct']} |"
        for i, r in enumerate(prof["summary"]["top_own"], 1)
    ]
    return [*out, ""]


def write(
    h: Harness, machine: dict[str, Any], command: str, elapsed: float, failure: str | None
) -> str:
    """latest.md and latest.json in the output directory; returns the Markdown."""
    text = render(h, machine, command, elapsed)
    if failure:
        text += f"\n**FAILED:** {failure}\n"
    results = Path(h.args.output_dir)
    (results / "latest.md").write_text(text)
    (results / "latest.json").write_text(
        json.dumps(
            {
                "command": command,
                "failed": failure,
                "elapsed_s": round(elapsed, 1),
                "settings": vars(h.args),
                "server_env": SERVER_ENV,
                "machine": machine,
                "measurements": [asdict(m) for m in h.measurements],
                "ledger_verification": h.verifications,
                **h.extra,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    return text


def _generator_section(h: Harness) -> list[str]:
    gen = [m for m in h.measurements if m.kind == "generator"]
    if not gen:
        return []
    best_rm = max(
        (m for m in h.measurements if m.kind == "rewardmiles"), key=lambda m: m.rps, default=None
    )
    lines = ["## Is the load generator the bottleneck?", ""]
    for m in gen:
        own = m.detail.get("generator_cpu", {})
        extra = (
            f", generator CPU {own.get('percent_of_one_core', m.cpu.get('generator', '–'))}% of a core ({own.get('us_per_request', '–')} µs/request)"
            if own
            else f", generator CPU {m.cpu.get('generator', '–')}% of a core"
        )
        lines.append(f"- {m.tool} → fixed responder: {m.rps:,.0f} req/s{extra}.")
    http = {m.id: m for m in h.measurements if m.kind == "http"}
    c = h.args.concurrency
    ours, theirs = http.get(f"http-w1-c{c}"), http.get(f"http-w1-c{c}-wrk")
    if ours and theirs:
        lines.append(
            f"- No-op endpoint, 1 process: loadgen {ours.rps:,.0f} req/s vs wrk {theirs.rps:,.0f} "
            "req/s — the server, not the generator, sets the HTTP ceiling."
        )
    if best_rm is not None:
        raw = next((m for m in gen if m.tool == "loadgen"), None)
        share = (
            f" ({100 * best_rm.rps / raw.rps:.0f}% of the generator's ceiling)"
            if raw and raw.rps
            else ""
        )
        cpu = best_rm.detail.get("generator_cpu", {})
        lines.append(
            f"- Fastest rewardmiles row: {best_rm.id} at {best_rm.rps:,.0f} req/s{share}; the "
            f"generator used {cpu.get('percent_of_one_core', '–')}% of one core there "
            f"({cpu.get('us_per_request', '–')} µs CPU per request)."
        )
    return [*lines, ""]


def _statement_lines(request: dict[str, Any]) -> list[str]:
    out = []
    for i, s in enumerate(request["statements"], 1):
        many = f"  -- executemany × {s['executemany']}" if s.get("executemany") else ""
        path = s.get("path", "")
        if path == "one statement":
            name = f"{s['name']}, " if s.get("name") else ""
            many += f"  -- {name}one statement in autocommit (full text in latest.json)"
        out.append(f"{i}. `{s['sql'][:160]}{'…' if len(s['sql']) > 160 else ''}`{many}")
    return out


def _sql_section(h: Harness) -> list[str]:
    sql = h.extra.get("sql")
    if not sql or "requests" not in sql:
        return []
    out = ["## SQL of one request (PostgreSQL, captured in process)", ""]
    if sql.get("one_statement_path") is False:
        out += ["The one-statement path was off in the captured process.", ""]
    for r in sql["requests"]:
        trips = r.get("round_trips")
        by_path = r.get("round_trips_by_path") or {}
        split = (
            ": " + " + ".join(f"{n} {path}" for path, n in by_path.items())
            if len(by_path) > 1
            else ""
        )
        trips_text = (
            f"**{trips} round trip{'' if trips == 1 else 's'}** on the wire (libpq trace{split}; "
            f"{r.get('round_trips_if_unpipelined', '?')} without pipelining)"
            if trips is not None
            else f"{r.get('round_trips_if_unpipelined', '?')} round trips (estimated)"
        )
        warn = "" if r["status"] in (200, 202) else " — **not a success: see latest.json**"
        paths = r.get("paths") or []
        explicit = any(s["sql"] == "BEGIN" for s in r.get("statements") or ())
        commit = (
            "BEGIN and COMMIT included"
            if "unit of work" in paths or explicit
            else "autocommit: no BEGIN/COMMIT"
        )
        out.append(
            f"- {r['request']}: {r['status']}{' (replayed)' if r['replayed'] else ''}{warn}, "
            f"{' then '.join(paths) or '?'}: {r['executes']} "
            f"statement{'' if r['executes'] == 1 else 's'}, {trips_text}, {commit}"
        )
    mirrored = set(SCRIPT_MIRRORS.values())
    for r in sql["requests"]:
        if r["request"] in mirrored:
            out += ["", f"{r['request']}, in order:", "", *_statement_lines(r)]
    scripts = sql.get("pgbench_scripts") or []
    if scripts:
        out += ["", "The database ceilings against the requests they mirror:", ""]
        for c in scripts:
            service = (
                f"{c['service_round_trips']} round trip(s), {c['service_statements']} statement(s)"
                if "service_statements" in c
                else "not captured"
            )
            same = (
                "; same statement text"
                if c.get("same_statement_text")
                else "; statement text differs"
                if c.get("same_statement_text") is False
                else ""
            )
            out.append(
                f"- `{c['script']}`: {c['round_trips']} round trip(s), {c['statements']} "
                f"statement(s); the service's {c['mirrors']}: {service}{same}"
            )
    for mismatch in sql.get("pgbench_mismatches") or []:
        out += ["", f"**Warning:** {mismatch}"]
    return [*out, ""]
