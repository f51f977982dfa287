"""bench/pgbench_issue_one_statement.sql: the database ceiling of the one-statement path.

The script is the service's statement (`rewardmiles.ledger.batched.POST_BATCH`),
text for text, with each bound parameter `%(name)s` replaced by the value of one POST/EVENT
computed inline from pgbench variables (`VALUES`), the same values bench/pgbench_issue.sql
computes for its separate statements. It is generated, not written by hand, so that it stays the
service's statement:

    .venv/bin/python -m bench.pgbench_one_statement          # (re)write the script
    .venv/bin/python -m bench.pgbench_one_statement --check  # exit 1 if it is out of date

and the harness (bench/run/) compares it, on every run, with the statement the service was seen
sending (bench/capture_sql.py): "SQL of one request" in the report warns when they differ.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "pgbench_issue_one_statement.sql"

# The values of one POST/EVENT, as bench/pgbench_issue.sql computes them: one 5-mile STANDARD
# line for collector 80000000000 + :c (enrolled, ACTIVE) of sponsor BNCH, with an
# Idempotency-Key; key and transaction ids unique per run/client/seq; request and response JSON
# of the service's size.
_KEY = "'pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text"
_TXN_ID = "md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text"
_COLLECTOR = "(80000000000 + :c)::text"
_FINGERPRINT = (
    "md5(:run::text || :client_id::text || :seq::text) || md5(:seq::text || :client_id::text)"
)
_REQUEST_JSON = (
    '\'{"clientTransactionId":"\' || '
    + _KEY
    + ' || \'","collectorNumber":"\' || '
    + _COLLECTOR
    + ' || \'","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5}],'
    '"sponsorCode":"BNCH","transactionDateTime":"2026-11-25T22:09:40Z"}\''
)
_RESPONSE_JSON = (
    '\'{"clientTransactionId":"\' || '
    + _KEY
    + ' || \'","collectorNumber":"\' || '
    + _COLLECTOR
    + ' || \'","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5,'
    '"status":"ISSUED"}],"sponsorCode":"BNCH",'
    '"transactionDateTime":"2026-11-25T17:09:41.494-05:00","transactionId":"\' || '
    + _TXN_ID
    + " || '\"}'"
)

# The rows, column by column (the keys the service's row dictionaries have).
TRANSACTION: dict[str, str] = {
    "id": _TXN_ID,
    "client_id": "'pgbench'",
    "sponsor_code": "'BNCH'",
    "endpoint": "'post_event'",
    "partner_transaction_id": _KEY,
    "collector_number": _COLLECTOR,
    "original_transaction_id": "NULL",
    "status": "'posted'",
    "http_status": "200",
    "error_code": "NULL",
    "fingerprint": _FINGERPRINT,
    "partner_datetime": "now()",
    "processed_at": "now()",
    "request_json": _REQUEST_JSON,
    "response_json": _RESPONSE_JSON,
    "calculation_json": "NULL",
}
LINES: list[dict[str, str]] = [
    {
        "transaction_id": _TXN_ID,
        "line_no": "0",
        "direction": "'credit'",
        "offer_code": "'STANDARD'",
        "location_code": "NULL",
        "miles": "5",
        "status": "'posted'",
        "pending_reason": "NULL",
        "error_code": "NULL",
        "settled_at": "now()",
    }
]
ENTRIES: list[dict[str, str]] = [  # the pair: collector credited, sponsor debited
    {
        "transaction_id": _TXN_ID,
        "line_no": "0",
        "account_kind": "'collector'",
        "account_code": _COLLECTOR,
        "amount_miles": "5",
        "posted_at": "now()",
    },
    {
        "transaction_id": _TXN_ID,
        "line_no": "0",
        "account_kind": "'sponsor'",
        "account_code": "'BNCH'",
        "amount_miles": "-5",
        "posted_at": "now()",
    },
]
KEY_ROW: dict[str, str] = {
    "client_id": "'pgbench'",
    "key": _KEY,
    "fingerprint": _FINGERPRINT,
    "transaction_id": _TXN_ID,
    "response_status": "200",
    "response_json": _RESPONSE_JSON,
    "created_at": "now()",
}


def _json_object(row: dict[str, str]) -> str:
    return "json_build_object(" + ", ".join(f"'{k}', {v}" for k, v in row.items()) + ")"


def _json_array(rows: list[dict[str, str]]) -> str:
    return "json_build_array(" + ", ".join(_json_object(row) for row in rows) + ")"


# Every parameter of the statement, by name: the calls and their rows, one JSON document each
# (built here with json_build_object, where the service binds the text orjson made of its
# dictionaries); every row tagged with its call's index `i` — here one call, index 0.
CALL: dict[str, str] = {
    "lock": ":lock::bigint",
    "client_id": "'pgbench'",
    "key": _KEY,
    "version": ":version::bigint",
    "collector": _COLLECTOR,
    "delta": "5",
    "now": "now()",
}


def _tagged(row: dict[str, str]) -> dict[str, str]:
    return {"i": "0", **row}


VALUES: dict[str, str] = {
    "calls": _json_array([_tagged(CALL)]),
    "transactions": _json_array([_tagged(TRANSACTION)]),
    "lines": _json_array([_tagged(line) for line in LINES]),
    "entries": _json_array([_tagged(entry) for entry in ENTRIES]),
    "keys": _json_array([_tagged(KEY_ROW)]),
}


HEADER = """\
-- GENERATED by `python -m bench.pgbench_one_statement` from the service's one-statement issue
-- (rewardmiles.ledger.batched.POST_BATCH): do not edit, regenerate.
--
-- The SQL work of one POST/EVENT (one 5-mile line, enrolled ACTIVE collector, Idempotency-Key)
-- as the service's one-statement path sends it: ONE statement in autocommit (no BEGIN/END), one
-- round trip, commit included. Same rows, same values and JSON sizes as bench/pgbench_issue.sql,
-- which sends the same work as separate statements in a transaction (the general unit of work,
-- 6 round trips). The service computes every value in Python and binds it; here each parameter
-- is computed inline from pgbench variables. The statement's one row is fetched like the service
-- fetches it (`\\gset`); the `\\set` after it divides by its `written` column, so a statement
-- that wrote nothing aborts the client instead of counting as a fast transaction.
--
-- Variables (pgbench -D): collectors=N (enrolled numbers 80000000001 … 80000000000+N),
-- run=R (unique per pgbench run), seq=0 (per-client counter, incremented below),
-- version=V (reference_version.version of the database: the statement checks it).
-- Run by the harness (python -m bench.run) as (the plan mode of the service's statement pool):
--   PGOPTIONS='-c plan_cache_mode=force_generic_plan' \\
--   pgbench -n -c 16 -j 2 -T S -M prepared -f bench/pgbench_issue_one_statement.sql ...
\\set c random(1, :collectors)
\\set seq :seq + 1
\\set lock hash(:seq + 1000000000 * :client_id, :run)
"""

_PARAMETER = re.compile(r"%\((\w+)\)s")


class UnknownParameterError(KeyError):
    pass


def render_statement(statement: str) -> str:
    """The service's statement with every parameter replaced by its inline value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VALUES:
            raise UnknownParameterError(
                f"the service's statement has a parameter bench/pgbench_one_statement.py does not "
                f"know: {name}"
            )
        return f"({VALUES[name]})"

    return _PARAMETER.sub(value, statement)


def render_script(statement: str) -> str:
    return (
        HEADER
        + render_statement(statement).strip()
        + " \\gset\n"
        + "\\set wrote_one_issue 1 / :written\n"
    )


def script_statement(text: str) -> str:
    """The SQL command of a one-statement pgbench script (comments, meta-commands and the
    terminating `\\gset` or `;` left out)."""
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("--", "\\"))
    ]
    return re.sub(r"(\s*\\gset\s*|\s*;\s*)$", "", "\n".join(lines))


def compact(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def named_placeholders(statement: str) -> str:
    """The statement as sent (PostgreSQL's `$1`… placeholders, `numbered_placeholders`) with its
    parameters named again, in `POST_BATCH_PARAMETERS` order."""
    from rewardmiles.ledger.batched import POST_BATCH_PARAMETERS

    def name(match: re.Match[str]) -> str:
        n = int(match.group(1))
        if not 1 <= n <= len(POST_BATCH_PARAMETERS):
            raise UnknownParameterError(
                f"the service's statement has a parameter ${n}; POST_BATCH_PARAMETERS has "
                f"{len(POST_BATCH_PARAMETERS)}"
            )
        return f"%({POST_BATCH_PARAMETERS[n - 1]})s"

    return re.sub(r"\$(\d+)\b", name, statement)


def drift(service_statement: str, script: Path = SCRIPT) -> str | None:
    """Why the script no longer is the service's statement (None when it still is); the
    statement as named (`POST_BATCH`) or as sent (`POST_BATCH_SENT`)."""
    try:
        expected = compact(render_statement(named_placeholders(service_statement)))
    except UnknownParameterError as exc:
        return str(exc.args[0])
    actual = compact(script_statement(script.read_text()))
    if expected == actual:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    return (
        f"{script.name} is not the service's statement any more (first difference at character "
        f"{at}: service …{expected[max(0, at - 40) : at + 40]}… vs script "
        f"…{actual[max(0, at - 40) : at + 40]}…): regenerate it with "
        "`python -m bench.pgbench_one_statement`."
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from rewardmiles.ledger.batched import POST_BATCH

    text = render_script(POST_BATCH)
    if args == ["--check"]:
        current = SCRIPT.read_text() if SCRIPT.exists() else ""
        if current != text:
            sys.stderr.write(f"{SCRIPT} is out of date: python -m bench.pgbench_one_statement\n")
            return 1
        return 0
    if args:
        sys.stderr.write("usage: python -m bench.pgbench_one_statement [--check]\n")
        return 2
    SCRIPT.write_text(text)
    sys.stdout.write(f"wrote {SCRIPT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
