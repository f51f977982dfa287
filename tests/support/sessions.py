"""Ending PostgreSQL sessions as a restart or a failover ends them (`pg_terminate_backend`), and
waiting until their clients can tell.

A session leaves `pg_stat_activity` a moment before its process closes the socket: a client that
looks in between has the server's last message but not yet the end of the stream. So besides
waiting for the sessions to leave, `end_sessions` waits, for each client socket it is given,
until the server's end of it is shut (POLLRDHUP, Linux), reading nothing from it;
`wait_until_closed_by_server` waits so for every connection of another process (a server's).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg
from sqlalchemy import Connection, text

from tests.conftest import PG_ADMIN_URL

ENDED_WITHIN = 10.0


def backend_pid(conn: Connection) -> int:
    """The pid of the server process behind `conn` (the session's name in `pg_stat_activity`)."""
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def client_socket(conn: Connection) -> int:
    """The file descriptor of `conn`'s socket, for `end_sessions` to watch."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return int(dbapi.pgconn.socket)


def sessions_of(database: str) -> list[int]:
    """The backend pids of the sessions open on `database` (by its name)."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def end_sessions(pids: Iterable[int], sockets: Iterable[int] = ()) -> None:
    """End the sessions `pids`; return once they have left `pg_stat_activity` and each of the
    client `sockets` (file descriptors) sees the server's side closed."""
    pids = list(pids)
    deadline = time.monotonic() + ENDED_WITHIN
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, f"the sessions {pids} did not end"
            time.sleep(0.02)
    for fd in sockets:
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
        while not poller.poll(20):
            assert time.monotonic() < deadline, f"socket {fd}: the server's side is still open"


ESTABLISHED = "01"  # /proc/net/tcp's state of a connection neither side has closed


def wait_until_closed_by_server(pid: int, port: int = 5432) -> None:
    """Wait until no TCP connection of process `pid` to `port` (PostgreSQL's) is still open on
    the server's side, going by the kernel's tables (Linux): for a server process whose sockets
    the test cannot reach itself, after `end_sessions`."""
    deadline = time.monotonic() + ENDED_WITHIN
    while _open_connections(pid, port):
        assert time.monotonic() < deadline, f"process {pid}: the server kept a connection open"
        time.sleep(0.02)


def _open_connections(pid: int, port: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    remote_port = f":{port:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if inode in inodes and remote.endswith(remote_port) and state == ESTABLISHED:
                count += 1
    return count
