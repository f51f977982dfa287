"""The processes the harness starts: the rewardmiles CLI, and the servers it measures (started and
stopped by tests/support/server.py, as the end-to-end tests start theirs)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import launch, start_server, stop_process

from bench.run.config import ROOT, SCRATCH, SERVER_ENV, VENV_BIN, BenchError

# A server with 2 API processes on a machine busy with other work can take a while to answer.
START_TIMEOUT = 180


def src_fingerprint() -> str:
    """Short hash of the service's source files (path, size, mtime): a server started after
    someone edited src/ runs other code than the rows before it."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((ROOT / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:10]


def base_env(database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDMILES_")}
    env.update(SERVER_ENV)
    if database_url is not None:
        env["REWARDMILES_DATABASE_URL"] = database_url
    return env


def rewardmiles_cmd() -> list[str]:
    script = VENV_BIN / "rewardmiles"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rewardmiles"]


def cli(database_url: str, *args: str) -> str:
    proc = subprocess.run(
        [*rewardmiles_cmd(), *args],
        env=base_env(database_url),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"rewardmiles {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def http_request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def token(port: int, creds: dict[str, str]) -> str:
    """A bearer token of the partner client `creds` from the server on `port`."""
    data = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        }
    ).encode()
    status, body = http_request(
        f"http://127.0.0.1:{port}/oauth/token",
        data,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise BenchError(f"token request failed: {status} {body[:300]!r}")
    return str(json.loads(body)["access_token"])


@dataclass
class Server:
    """A server process we started, in its own session (its workers go with it), its output in
    .bench/NAME.log."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    src: str = ""  # src_fingerprint() when it started

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def errors_since(self, offset: int, limit: int = 8) -> list[str]:
        """Error lines the server logged after `offset` (JSON error events, tracebacks, uvicorn's
        supervisor messages), the last `limit` of them, shortened."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        keep = [
            line
            for line in text.splitlines()
            if '"level": "error"' in line
            or '"level": "warning"' in line
            or line.startswith(("Traceback", "ERROR", "WARNING", "Child process"))
            or "Error:" in line
        ]
        return [line[:1500] for line in keep[-limit:]]

    def stop(self) -> None:
        stop_process(self.process, group=True)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# Starts a server with its output in the given log; returns its port and process.
Start = Callable[[Path], tuple[int, "subprocess.Popen[bytes]"]]


@contextlib.contextmanager
def _server(name: str, start: Start) -> Iterator[Server]:
    src = src_fingerprint()
    log_path = SCRATCH / f"{name}.log"
    try:
        port, process = start(log_path)
    except RuntimeError as exc:  # a server that does not start fails the run, with its log
        first = str(exc).splitlines()[0] if str(exc) else "did not start"
        raise BenchError(f"{name}: {first}\n{_log_tail(log_path)}") from None
    server = Server(name, port, process, log_path, src)
    try:
        yield server
    finally:
        server.stop()


def running(
    name: str, command: list[str], env: dict[str, str], port: int
) -> contextlib.AbstractContextManager[Server]:
    """A server of the harness (bench/rawserver.py, bench/noop_server.py) on `port`, for the
    block."""

    def start(log_path: Path) -> tuple[int, subprocess.Popen[bytes]]:
        process = launch(
            command,
            cwd=ROOT,
            env=env,
            log_path=log_path,
            ready_url=f"http://127.0.0.1:{port}/healthz",
            timeout=START_TIMEOUT,
            new_session=True,
        )
        return port, process

    return _server(name, start)


def serving(
    name: str, database_url: str, workers: int
) -> contextlib.AbstractContextManager[Server]:
    """`rewardmiles serve --workers N` on `database_url`, with the harness's environment and the
    service's own log level (the access log on), for the block."""

    def start(log_path: Path) -> tuple[int, subprocess.Popen[bytes]]:
        server = start_server(
            database_url,
            "sqlite" if database_url.startswith("sqlite") else "postgresql",
            ROOT,
            env={},
            workers=workers,
            environ=base_env(database_url),
            log_level=None,
            log_path=log_path,
            timeout=START_TIMEOUT,
            new_session=True,
        )
        return server.port, server.process

    return _server(name, start)
