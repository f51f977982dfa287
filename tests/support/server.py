"""A real `rewardmiles serve` process on a free port (the benchmark harness starts its servers
with the same functions: `launch` for any HTTP server process, `start_server` for rewardmiles)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 15 s: to the process, or to its whole session (`group`: it was
    started in a session of its own, with the worker processes it spawned)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(timeout=5)


def launch(
    command: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    ready_url: str,
    timeout: float = 60,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start an HTTP server process (output to `log_path`) and wait until `ready_url` answers 200.
    Raises RuntimeError, with the log, when it exits or does not get ready within `timeout` s."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"server exited with {process.returncode}:\n{log}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_process(process, group=new_session)
    raise RuntimeError(f"server did not become ready:\n{log_path.read_text(errors='replace')}")


@dataclass
class Server:
    base_url: str
    database_url: str
    dialect: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    new_session: bool = False

    @property
    def port(self) -> int:
        return int(urlsplit(self.base_url).port or 0)

    def stop(self) -> None:
        stop_process(self.process, group=self.new_session)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    database_url: str,
    dialect: str,
    workdir: Path,
    *,
    env: dict[str, str],
    workers: int = 1,
    environ: Mapping[str, str] | None = None,
    log_level: str | None = "warning",
    log_path: Path | None = None,
    timeout: float = 60,
    new_session: bool = False,
) -> Server:
    """`rewardmiles serve` in `workdir`, its output in `workdir`/server.log (or `log_path`), with
    the environment `environ` (default: this process's) plus the database URL, the log level
    (None: the service's default) and `env`; ready when /readyz answers 200."""
    port = free_port()
    full_env = {
        **(os.environ if environ is None else environ),
        "REWARDMILES_DATABASE_URL": database_url,
        **({} if log_level is None else {"REWARDMILES_LOG_LEVEL": log_level}),
        **env,
    }
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log" if log_path is None else log_path
    command = [sys.executable, "-m", "rewardmiles", "serve", "--port", str(port)]
    process = launch(
        [*command, "--workers", str(workers)],
        cwd=workdir,
        env=full_env,
        log_path=log_path,
        ready_url=f"{base_url}/readyz",
        timeout=timeout,
        new_session=new_session,
    )
    return Server(base_url, database_url, dialect, process, log_path, env, new_session)
