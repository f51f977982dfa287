"""A py-spy profile of `rewardmiles serve` (1 API process, PostgreSQL) under scenario (a), and its
summary (bench/pyspy_summary.py) in profile.md."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench import pyspy_summary
from bench.run.config import log, tool_path
from bench.run.databases import verify_ledger
from bench.run.harness import Harness
from bench.run.measurement import LoadRun
from bench.run.processes import serving, token


def profile(h: Harness) -> None:
    pyspy = tool_path("py-spy")
    if pyspy is None:
        log("py-spy not installed: no profile (pip install py-spy)")
        return
    url = h.pg_copy("profile")
    raw_path = Path(h.args.output_dir) / "profile.txt"
    seconds = max(5, round(h.args.duration))
    with serving("profile-pg-w1", url, 1) as server:
        bearer = token(server.port, h.creds)
        thread, holder = _load_in_background(h, server.port, server.pid, bearer, seconds)
        time.sleep(h.args.warmup + 1.0)
        cmd = _pyspy_command(pyspy, server.pid, seconds, raw_path)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        thread.join()
    h.verified("profile", verify_ledger(url, "profile"))
    if proc.returncode != 0 or not raw_path.exists():
        log(f"py-spy failed (continuing): {proc.stderr[-1000:]}")
        h.extra["profile"] = {"error": proc.stderr[-2000:]}
        return
    _summarise(h, cmd, raw_path, holder["run"][0])


def _pyspy_command(pyspy: str, pid: int, seconds: int, raw_path: Path) -> list[str]:
    return [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "200",
        "--gil",
        "--nonblocking",
        "--format",
        "raw",
        "-o",
        str(raw_path),
    ]


def _load_in_background(
    h: Harness, port: int, pid: int, bearer: str, seconds: int
) -> tuple[threading.Thread, dict[str, LoadRun]]:
    """Scenario (a) in a thread, for a little longer than the profile; the run is in the dict
    ("run") once the thread has ended."""
    holder: dict[str, LoadRun] = {}

    def load() -> None:
        holder["run"] = h.loadgen(
            port,
            "issue",
            h.args.concurrency,
            token=bearer,
            server_pid=pid,
            warmup=h.args.warmup,
            duration=seconds + 2,
            wait_quiet=False,
        )

    thread = threading.Thread(target=load)
    thread.start()
    return thread, holder


def _summarise(h: Harness, cmd: list[str], raw_path: Path, result: dict[str, Any]) -> None:
    summary = pyspy_summary.summarise(raw_path.read_text().splitlines())
    h.extra["profile"] = {
        "command": " ".join(cmd),
        "server": "rewardmiles serve --workers 1, PostgreSQL, scenario (a)",
        "load_rps_while_profiling": result["rps"],
        "summary": summary,
    }
    (raw_path.parent / "profile.md").write_text(
        "# py-spy profile: POST/EVENT, unique keys, PostgreSQL, 1 API process\n\n"
        f"`{' '.join(cmd)}` while the generator ran scenario (a) at concurrency "
        f"{h.args.concurrency} ({result['rps']:,.0f} req/s under the profiler). `--gil`: only "
        "samples of the thread holding the GIL, i.e. where the process spends its Python CPU.\n\n"
        + pyspy_summary.markdown(summary)
    )
    log(f"profile: {summary['samples']:,} samples → {raw_path}")
