"""A PostgreSQL URL that names two servers, the first of them down: libpq tries them in turn, so
everything that connects must get past the first to the real one. In each of the three ways an
operator may write it (docs/operations.md)."""

from __future__ import annotations

from sqlalchemy.engine import make_url

# Nothing listens on port 1: a connection to it is refused at once, like a server that is down.
DOWN = "127.0.0.1:1"
# The ways of naming several servers: libpq's list in the host part, SQLAlchemy's repeated
# `host=HOST:PORT`, and libpq's `host=` and `port=` lists in the query.
FORMS = ("libpq-list", "repeated-host", "hosts-and-ports")


def two_servers(url: str, form: str, *, first: str = DOWN) -> str:
    """`url` (one PostgreSQL server) with `first` named before its server, written as `form`,
    and `target_session_attrs=read-write`: only a server that takes writes is chosen."""
    parsed = make_url(url)
    user = parsed.username or ""
    if parsed.password:
        user += f":{parsed.password}"
    second = f"{parsed.host}:{parsed.port or 5432}"
    attrs = "target_session_attrs=read-write"
    if form == "libpq-list":
        return f"postgresql://{user}@{first},{second}/{parsed.database}?{attrs}"
    if form == "repeated-host":
        return f"postgresql://{user}@/{parsed.database}?host={first}&host={second}&{attrs}"
    if form == "hosts-and-ports":
        (host_1, port_1), (host_2, port_2) = first.rsplit(":", 1), second.rsplit(":", 1)
        return (
            f"postgresql://{user}@/{parsed.database}?host={host_1},{host_2}"
            f"&port={port_1},{port_2}&{attrs}"
        )
    raise ValueError(f"unknown form {form!r}")
