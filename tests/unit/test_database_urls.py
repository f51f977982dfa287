"""`REWARDMILES_DATABASE_URL` as operators write it: the driver chosen for them, PostgreSQL's
servers named one or several ways (libpq tries them in turn), what libpq is handed for each, a
clear error for a URL that is none of these, and the URL as shown with its password masked.

No database is reached: building an engine connects to nothing.
"""

from __future__ import annotations

import pytest

from rewardmiles.db.engine import (
    DatabaseUrlError,
    build_engine,
    libpq_conninfo,
    normalize_url,
    shown_url,
)

# The three ways of naming two servers, the first of them a closed port.
LIBPQ_LIST = "postgresql://rm:s3cret@127.0.0.1:1,127.0.0.1:5432/rm?target_session_attrs=read-write"
REPEATED_HOST = (
    "postgresql://rm:s3cret@/rm?host=127.0.0.1:1&host=127.0.0.1:5432"
    "&target_session_attrs=read-write"
)
HOSTS_AND_PORTS = (
    "postgresql://rm:s3cret@/rm?host=127.0.0.1,127.0.0.1&port=1,5432"
    "&target_session_attrs=read-write"
)


def _conninfo(raw: str) -> dict[str, str]:
    engine = build_engine(raw)
    try:
        return dict(item.split("=", 1) for item in libpq_conninfo(engine).split())
    finally:
        engine.dispose()


@pytest.mark.parametrize("raw", [LIBPQ_LIST, REPEATED_HOST, HOSTS_AND_PORTS])
def test_two_servers_reach_libpq_as_a_list_of_hosts_and_a_list_of_ports(raw: str) -> None:
    assert _conninfo(raw) == {
        "dbname": "rm",
        "user": "rm",
        "password": "s3cret",
        "host": "127.0.0.1,127.0.0.1",
        "port": "1,5432",
        "target_session_attrs": "read-write",
    }


def test_libpqs_list_becomes_the_query_sqlalchemy_reads() -> None:
    url = normalize_url(LIBPQ_LIST)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "rm",
        "s3cret",
        None,
        None,
        "rm",
    )
    assert dict(url.query) == {
        "host": "127.0.0.1,127.0.0.1",
        "port": "1,5432",
        "target_session_attrs": "read-write",
    }


def test_ipv6_servers_in_brackets_and_servers_without_a_port() -> None:
    info = _conninfo("postgresql://rm@[::1]:5433,db2.internal,[fe80::2]/rm")
    assert (info["host"], info["port"]) == ("::1,db2.internal,fe80::2", "5433,,")
    info = _conninfo("postgres://rm@db1.internal,db2.internal/rm")
    assert (info["host"], info["port"]) == ("db1.internal,db2.internal", ",")  # each the default


def test_one_server_reaches_libpq_as_before() -> None:
    assert _conninfo("postgresql://rm:p%40ss@db.internal:6432/rm?sslmode=require") == {
        "host": "db.internal",
        "port": "6432",
        "dbname": "rm",
        "user": "rm",
        "password": "p@ss",
        "sslmode": "require",
    }


def test_a_comma_in_the_password_or_the_query_names_no_second_server() -> None:
    info = _conninfo("postgresql://rm:p,w@db.internal:6432/rm?application_name=a,b")
    assert (info["host"], info["port"], info["password"]) == ("db.internal", "6432", "p,w")
    assert info["application_name"] == "a,b"


def test_sqlite_urls_are_left_alone() -> None:
    url = normalize_url("sqlite:////var/lib/rm/a,b.db")
    assert (url.drivername, url.database) == ("sqlite", "/var/lib/rm/a,b.db")
    assert normalize_url("sqlite+pysqlite:///rm.db").drivername == "sqlite+pysqlite"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("postgresql://rm:s3cret@db1:abc,db2:5432/rm", "'db1:abc' is not a server"),
        ("postgresql://rm:s3cret@db1:5432,,db2/rm", "'' is not a server"),
        ("postgresql://rm:s3cret@db1:5432,[::1/rm", "'[::1' is not a server"),
        ("postgresql://rm:s3cret@db1,db2/rm?host=db3", "not in both"),
        ("postgresql://rm:s3cret@/rm?host=db1,db2&port=1,2,3", "number of hosts and ports"),
        ("postgresql://rm:s3cret@/rm?host=db1:1&host=db2:x", "non-integer port"),
        ("postgresql://rm:s3cret@/rm?host=db1:1&host=db2:2&port=3", "Can't mix"),
        ("postgresql://rm:s3cret@db1:x/rm", "not a database URL"),
        ("nonsense", "not a database URL"),
        ("mysql://rm:s3cret@db1/rm", "unsupported database 'mysql'"),
    ],
)
def test_a_url_that_names_no_database_is_an_error_that_says_why(raw: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError) as refused:
        build_engine(raw).dispose()
    assert says in str(refused.value)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            LIBPQ_LIST,
            "postgresql://rm:***@127.0.0.1:1,127.0.0.1:5432/rm?target_session_attrs=read-write",
        ),
        (
            REPEATED_HOST,
            "postgresql://rm:***@/rm?host=127.0.0.1:1&host=127.0.0.1:5432"
            "&target_session_attrs=read-write",
        ),
        (
            "postgresql://rm@db/rm?sslmode=require&password=s3cret&application_name=x",
            "postgresql://rm@db/rm?sslmode=require&password=***&application_name=x",
        ),
        ("postgresql://rm:s3/cr:et@db:5432/rm", "postgresql://rm:***@db:5432/rm"),
        ("postgresql://rm@db:5432/rm", "postgresql://rm@db:5432/rm"),
        ("sqlite:////var/lib/rm/rm.db", "sqlite:////var/lib/rm/rm.db"),
    ],
)
def test_a_url_is_shown_as_written_with_its_password_masked(raw: str, shown: str) -> None:
    assert shown_url(raw) == shown
