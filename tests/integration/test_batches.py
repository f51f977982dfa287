"""Partner transaction logs matched against the real-time records."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.db.models import BatchRecord, LedgerEntry, Transaction
from rewardmiles.ledger.verify import verify
from rewardmiles.reports import batches, repository
from rewardmiles.vocabulary import Endpoint
from tests.conftest import DatabaseFactory
from tests.support import data
from tests.support.issue import call

HEADER = "transactionType,partnerTransactionId,collectorNumber,transactionDateTime,milesAmount\n"


@pytest.fixture(scope="module")
def own_db(dialect: str, database_factory: DatabaseFactory) -> Iterator[Database]:
    database = Database.from_url(database_factory.create(dialect))
    yield database
    with database.reader() as session:
        report = verify(session)
    database.dispose()
    assert report.ok, report.problems


def _run(
    db: Database, sponsor: str, text: str, kind: str = "csv", *, issue_missing: bool = False
) -> dict[str, Any]:
    with db.unit_of_work() as session:
        batch_id = batches.start_batch(session, sponsor, "test", issue_missing, clock.utc_now())
    batches.run_batch(db, Settings(), batch_id, io.BytesIO(text.encode()), kind, client_id="test")
    with db.reader() as session:
        view = batches.batch_view(session, batch_id, limit=10_000)
    assert view is not None
    assert view["status"] == "done"
    return view


def _outcomes(view: dict[str, Any]) -> dict[str, set[object]]:
    out: dict[str, set[object]] = {}
    for record in view["records"]:
        out.setdefault(record["outcome"], set()).add(
            record["partnerTransactionId"] or record["lineNo"]
        )
    return out


def _stored(db: Database, view: dict[str, Any], column: Any) -> list[Any]:
    """The batch's outcome rows as stored: (seq, line number, `column`), by seq."""
    with db.reader() as session:
        return list(
            session.execute(
                select(BatchRecord.seq, BatchRecord.line_no, column)
                .where(BatchRecord.batch_id == view["batchId"])
                .order_by(BatchRecord.seq)
            ).all()
        )


def _day_of_records(
    db: Database, settings: Settings, sponsor: str, count: int
) -> tuple[list[dict[str, Any]], str]:
    """Real-time traffic of one sponsor: `count` POST/EVENTs of 10 miles for one collector."""
    collector = data.new_collector(db)
    bodies = [data.event_body(sponsor, collector, miles=10) for _ in range(count)]
    for body in bodies:
        assert call(db, settings, body).status == 200
    return bodies, collector


def test_injected_discrepancies_are_reported_exactly(own_db: Database) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 6)
    when = bodies[0]["transactionDateTime"]
    lines = [f"POST/EVENT,{b['clientTransactionId']},{collector},{when},10" for b in bodies[:4]]
    lines[1] = f"POST/EVENT,{bodies[1]['clientTransactionId']},{collector},{when},11"  # mismatch
    lines.append(f"POST/EVENT,log-only-1,{collector},{when},7")  # missing in program
    lines.append(f"POST/EVENT,bad-collector,1234,{when},7")  # invalid
    lines.append(f"REFUND,x,{collector},{when},7")  # invalid type
    lines.append(f"POST/EVENT,no-miles,{collector},{when},")  # missing field
    # bodies[4] and bodies[5] are not in the log: missing in log

    view = _run(own_db, sponsor, HEADER + "\n".join(lines) + "\n")

    outcomes = _outcomes(view)
    assert view["counts"] == {
        "matched": 3,
        "amount_mismatch": 1,
        "missing_in_program": 1,
        "invalid": 3,
        "missing_in_log": 2,
    }
    assert outcomes["amount_mismatch"] == {bodies[1]["clientTransactionId"]}
    assert outcomes["missing_in_program"] == {"log-only-1"}
    assert outcomes["missing_in_log"] == {
        bodies[4]["clientTransactionId"],
        bodies[5]["clientTransactionId"],
    }
    invalid = {r["lineNo"]: r["errorCode"] for r in view["records"] if r["outcome"] == "invalid"}
    assert invalid == {7: "COLLECTOR_NUMBER_INVALID", 8: "FIELD_INVALID", 9: "FIELD_REQUIRED"}
    mismatch = next(r for r in view["records"] if r["outcome"] == "amount_mismatch")
    assert (mismatch["logMiles"], mismatch["programMiles"]) == (11, 10)


def test_text_that_only_looks_like_a_number_or_an_id_is_refused(own_db: Database) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 1)
    when = bodies[0]["transactionDateTime"]
    arabic_digits = "".join(chr(0x0660 + int(d)) for d in collector)  # 11 digits, not ASCII
    lines = [
        f"POST/EVENT,{bodies[0]['clientTransactionId']},{collector},{when},10",  # 2: matched
        f"POST/EVENT,u1,{collector},{when},1_000",  # 3: int() would read 1000
        f"POST/EVENT,u2,{collector},{when},+5",  # 4
        f"POST/EVENT,u3,{collector},{when},\uff15",  # 5: a full-width 5
        f"POST/EVENT,u4,{collector},{when},-5",  # 6: an integer, below 1
        f"POST/EVENT,u5,{arabic_digits},{when},5",  # 7
        f"POST/EVENT,a b,{collector},{when},5",  # 8: a space
        f"POST/EVENT,caf\u00e9,{collector},{when},5",  # 9: not ASCII
        f"POST/EVENT,{'x' * 65},{collector},{when},5",  # 10: too long
        f"POST/EVENT,{'x' * 64},{collector},{when},5",  # 11: the longest: missing in program
    ]

    view = _run(own_db, sponsor, HEADER + "\n".join(lines) + "\n")

    invalid = {r["lineNo"]: r["errorCode"] for r in view["records"] if r["outcome"] == "invalid"}
    assert invalid == {
        3: "MILES_AMOUNT_INVALID",
        4: "MILES_AMOUNT_INVALID",
        5: "MILES_AMOUNT_INVALID",
        6: "MILES_AMOUNT_INVALID",
        7: "COLLECTOR_NUMBER_INVALID",
        8: "FIELD_INVALID",
        9: "FIELD_INVALID",
        10: "FIELD_INVALID",
    }
    assert view["counts"] == {"matched": 1, "invalid": 8, "missing_in_program": 1}
    assert _outcomes(view)["missing_in_program"] == {"x" * 64}


def test_outcomes_written_in_groups_are_all_written_in_order(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 2 records, outcomes written 3 at a time by the writer's thread: every outcome
    is there once, numbered in the log's order, and the transactions the log lacks (read after
    the last write) are the ones no record named."""
    monkeypatch.setattr(batches, "CHUNK_RECORDS", 2)
    monkeypatch.setattr(batches, "WRITE_ROWS", 3)
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 9)
    when = bodies[0]["transactionDateTime"]
    named = bodies[:7]
    lines = [f"POST/EVENT,{b['clientTransactionId']},{collector},{when},10" for b in named]
    lines += [f"POST/EVENT,only-in-log-{i},{collector},{when},3" for i in range(4)]

    view = _run(own_db, sponsor, HEADER + "\n".join(lines) + "\n")

    records = _stored(own_db, view, BatchRecord.partner_transaction_id)
    assert [seq for seq, _, _ in records] == list(range(1, 14))
    assert [(line, pid) for _, line, pid in records[:11]] == list(
        zip(
            range(2, 13),
            [
                *(b["clientTransactionId"] for b in named),
                *(f"only-in-log-{i}" for i in range(4)),
            ],
            strict=True,
        )
    )
    assert {(line, pid) for _, line, pid in records[11:]} == {
        (None, b["clientTransactionId"]) for b in bodies[7:]
    }
    assert view["counts"] == {"matched": 7, "missing_in_program": 4, "missing_in_log": 2}


def test_refused_records_are_numbered_in_the_log_order_among_the_rest(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome's `seq` follows its line, whether the record was refused as read, matched, or
    found missing, across chunk boundaries (a chunk is looked up while the next one is read)."""
    monkeypatch.setattr(batches, "CHUNK_RECORDS", 3)
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 4)
    when = bodies[0]["transactionDateTime"]
    lines = [
        f"POST/EVENT,{bodies[0]['clientTransactionId']},{collector},{when},10",
        f"POST/EVENT,bad-amount,{collector},{when},1_000",
        f"POST/EVENT,{bodies[1]['clientTransactionId']},{collector},{when},9",
        f"POST/EVENT,only-in-log,{collector},{when},3",
        f"POST/EVENT,bad-collector,123,{when},3",
        f"POST/EVENT,{bodies[2]['clientTransactionId']},{collector},{when},10",
        f"POST/EVENT,{bodies[3]['clientTransactionId']},{collector},{when},10",
    ]

    view = _run(own_db, sponsor, HEADER + "\n".join(lines) + "\n")

    records = _stored(own_db, view, BatchRecord.outcome)
    assert [tuple(r) for r in records] == [
        (1, 2, "matched"),
        (2, 3, "invalid"),
        (3, 4, "amount_mismatch"),
        (4, 5, "missing_in_program"),
        (5, 6, "invalid"),
        (6, 7, "matched"),
        (7, 8, "matched"),
    ]


def test_a_record_named_twice_in_two_chunks_is_issued_once(
    own_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With missing records issued, a chunk is looked up only once the one before has issued
    its own: the second copy of a record is found (matched), not issued again."""
    monkeypatch.setattr(batches, "CHUNK_RECORDS", 1)
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    when = data.iso(clock.utc_now() - timedelta(minutes=1))
    line = f"POST/EVENT,twice-{collector},{collector},{when},7\n"

    view = _run(own_db, sponsor, HEADER + line + line + line, issue_missing=True)

    assert view["counts"] == {"issued": 1, "matched": 2}
    assert data.balance(own_db, collector) == 7


def test_csv_columns_are_found_by_name_in_any_order(own_db: Database) -> None:
    """The header names the columns: any order, extra columns ignored, of two of one name the
    later one, a short record's missing values absent; the optional ones are read too (a
    basket's amounts, to issue it)."""
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 1)
    when = bodies[0]["transactionDateTime"]
    header = (
        "milesAmount,note,collectorNumber,basketPostTaxAmount,transactionDateTime,"
        "partnerTransactionId,basketPreTaxAmount,transactionType,note\n"
    )
    lines = [
        f"10,x,{collector},,{when},{bodies[0]['clientTransactionId']},,POST/EVENT,y,extra",
        f"6,x,{collector},22.60,{when},basket-{collector},20.00,POST,y",
        f"6,x,{collector},22.60,{when},short-{collector}",
    ]

    view = _run(own_db, sponsor, header + "\n".join(lines) + "\n", issue_missing=True)

    assert view["counts"] == {"matched": 1, "issued": 1, "invalid": 1}
    refused = next(r for r in view["records"] if r["outcome"] == "invalid")
    assert (refused["lineNo"], refused["errorCode"]) == (4, "FIELD_REQUIRED")
    assert refused["detail"] == "missing transactionType"
    assert data.balance(own_db, collector) == 10 + 6


def test_issue_missing_posts_once_and_the_second_import_posts_nothing(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    when = data.iso(clock.utc_now() - timedelta(minutes=1))
    log = HEADER + "".join(
        f"POST/EVENT,late-{i}-{collector},{collector},{when},{5 + i}\n" for i in range(5)
    )
    log += f"POST/EVENT,closed-{collector},{data.new_collector(own_db, 'CLOSED')},{when},5\n"

    first = _run(own_db, sponsor, log, issue_missing=True)
    with own_db.reader() as session:
        entries_after_first = session.execute(
            select(func.count()).select_from(LedgerEntry)
        ).scalar_one()
    second = _run(own_db, sponsor, log, issue_missing=True)
    with own_db.reader() as session:
        entries_after_second = session.execute(
            select(func.count()).select_from(LedgerEntry)
        ).scalar_one()
        accepted = session.execute(
            select(func.count()).where(
                Transaction.sponsor_code == sponsor, Transaction.status != "rejected"
            )
        ).scalar_one()

    assert first["counts"] == {"issued": 5, "issue_rejected": 1}
    rejected = next(r for r in first["records"] if r["outcome"] == "issue_rejected")
    assert rejected["errorCode"] == "COLLECTOR_CLOSED"
    assert second["counts"] == {"matched": 5, "issue_rejected": 1}
    assert entries_after_second == entries_after_first
    assert accepted == 5
    assert data.balance(own_db, collector) == sum(5 + i for i in range(5))


def test_json_lines_and_chunk_boundaries(own_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "CHUNK_RECORDS", 3)
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 7)
    records = [
        {
            "transactionType": "POST/EVENT",
            "partnerTransactionId": b["clientTransactionId"],
            "collectorNumber": collector,
            "transactionDateTime": b["transactionDateTime"],
            "milesAmount": 10,
        }
        for b in bodies
    ]
    text = "\n".join(json.dumps(r) for r in records) + "\nnot json\n[1, 2]\n"
    view = _run(own_db, sponsor, text, "jsonl")
    assert view["counts"] == {"matched": 7, "invalid": 2}
    assert {r["lineNo"]: r["errorCode"] for r in view["records"]} == {
        8: "MALFORMED_JSON",
        9: "MALFORMED_JSON",
    }


def test_basket_records_need_amounts_to_be_issued(own_db: Database) -> None:
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    when = data.iso(clock.utc_now())
    log = (
        HEADER.rstrip("\n") + ",basketPreTaxAmount,basketPostTaxAmount\n"
        f"POST,b1-{collector},{collector},{when},4,,\n"
        f"POST,b2-{collector},{collector},{when},6,20.00,22.60\n"
    )
    view = _run(own_db, sponsor, log, issue_missing=True)
    assert view["counts"] == {"issue_rejected": 1, "issued": 1}
    assert data.balance(own_db, collector) == 6


def test_log_date_times_follow_the_api_rule(own_db: Database) -> None:
    """The same RFC 3339 rule as the API's (SPEC §6, amended): a looser form is an invalid
    record at FIELD_INVALID; nine fraction digits are fine."""
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 1)
    moment = clock.utc_now() - timedelta(minutes=1)
    loose = [
        moment.strftime("%Y-%m-%d %H:%M:%SZ"),
        moment.strftime("%Y-%m-%dt%H:%M:%SZ"),
        moment.strftime("%Y-%m-%dT%H:%MZ"),
        moment.strftime("%Y%m%dT%H%M%SZ"),
        moment.strftime("%Y-%m-%dT%H:%M:%S+00"),
        moment.strftime("%G-W%V-%uT%H:%M:%SZ"),
    ]
    matched = bodies[0]["transactionDateTime"].replace("Z", "456789Z")  # .mmm → 9 digits
    log = HEADER + "".join(
        f"POST/EVENT,x{i}-{collector},{collector},{when},10\n" for i, when in enumerate(loose)
    )
    log += f"POST/EVENT,{bodies[0]['clientTransactionId']},{collector},{matched},10\n"

    view = _run(own_db, sponsor, log)

    assert view["counts"] == {"invalid": len(loose), "matched": 1}
    invalid = [r for r in view["records"] if r["outcome"] == "invalid"]
    assert {r["errorCode"] for r in invalid} == {"FIELD_INVALID"}
    assert all("transactionDateTime" in r["detail"] for r in invalid)


def test_log_json_line_with_a_duplicated_member_is_malformed_json(own_db: Database) -> None:
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 1)
    record = (
        f'{{"transactionType": "POST/EVENT", "partnerTransactionId": '
        f'"{bodies[0]["clientTransactionId"]}", "collectorNumber": "{collector}", '
        f'"transactionDateTime": "{bodies[0]["transactionDateTime"]}", "milesAmount": 10'
    )
    text = record + ', "milesAmount": 99}\n' + record + "}\n"

    view = _run(own_db, sponsor, text, "jsonl")

    assert view["counts"] == {"invalid": 1, "matched": 1}
    (invalid,) = [r for r in view["records"] if r["outcome"] == "invalid"]
    assert (invalid["lineNo"], invalid["errorCode"]) == (1, "MALFORMED_JSON")
    assert '"milesAmount"' in invalid["detail"]


def _run_bytes(
    db: Database, sponsor: str, raw: bytes, kind: str, settings: Settings
) -> dict[str, Any]:
    with db.unit_of_work() as session:
        batch_id = batches.start_batch(session, sponsor, "test", False, clock.utc_now())
    batches.run_batch(db, settings, batch_id, io.BytesIO(raw), kind, client_id="test")
    with db.reader() as session:
        view = batches.batch_view(session, batch_id, limit=10_000)
    assert view is not None
    assert view["status"] == "done", view
    return view


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_line_over_the_limit_is_refused_by_number_and_reading_goes_on(
    own_db: Database, kind: str
) -> None:
    settings = Settings(batch_line_bytes_max=1024)
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    when = "2026-11-30T04:10:41Z"

    def record(tid: str) -> str:
        if kind == "csv":
            return f"POST/EVENT,{tid},{collector},{when},5"
        return json.dumps(
            {
                "transactionType": "POST/EVENT",
                "partnerTransactionId": tid,
                "collectorNumber": collector,
                "transactionDateTime": when,
                "milesAmount": 5,
            }
        )

    lines = [record("a"), "x" * 5000, record("b"), "y" * 1025]  # the last one without a newline
    if kind == "csv":
        lines.insert(0, HEADER.strip())
    raw = "\n".join(lines).encode()
    view = _run_bytes(own_db, sponsor, raw, kind, settings)

    first = 2 if kind == "csv" else 1
    invalid = {r["lineNo"]: r for r in view["records"] if r["outcome"] == "invalid"}
    assert sorted(invalid) == [first + 1, first + 3]
    assert {r["errorCode"] for r in invalid.values()} == {"PAYLOAD_TOO_LARGE"}
    assert "longer than 1024 bytes" in invalid[first + 1]["detail"]
    missing = {r["lineNo"]: r["partnerTransactionId"] for r in view["records"]}
    assert (missing[first], missing[first + 2]) == ("a", "b")


def test_a_csv_record_may_not_grow_past_the_limit_over_quoted_line_breaks(
    own_db: Database,
) -> None:
    settings = Settings(batch_line_bytes_max=1024)
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    endless = 'POST/EVENT,"' + "z\n" * 2000  # an open quote: each line is short, the record not
    good = f"POST/EVENT,after,{collector},2026-11-30T04:10:41Z,5\n"
    view = _run_bytes(own_db, sponsor, (HEADER + endless + good).encode(), "csv", settings)
    codes = [r["errorCode"] for r in view["records"] if r["outcome"] == "invalid"]
    assert codes[0] == "PAYLOAD_TOO_LARGE"
    assert [r["partnerTransactionId"] for r in view["records"] if r["outcome"] != "invalid"] == [
        "after"
    ]


@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n"])
def test_a_line_that_is_not_utf8_is_refused_and_reading_goes_on(
    own_db: Database, ending: str
) -> None:
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    raw = (
        (HEADER.strip() + ending).encode()
        + b"POST/EVENT,caf\xe9,1,2,3"
        + ending.encode()
        + f"POST/EVENT,after,{collector},2026-11-30T04:10:41Z,5{ending}".encode()
    )
    view = _run_bytes(own_db, sponsor, raw, "csv", Settings())
    by_line = {r["lineNo"]: r for r in view["records"]}
    assert by_line[2]["outcome"] == "invalid"
    assert by_line[2]["errorCode"] == "FIELD_INVALID"
    assert "UTF-8" in by_line[2]["detail"]
    assert by_line[3]["partnerTransactionId"] == "after"


def _log(kind: str, records: list[dict[str, object]], ending: str) -> str:
    """`records` as a CSV (header row first) or JSON-lines log whose lines end with `ending`;
    a CSV field with a line break in it is quoted, the break written as `ending` too."""
    if kind == "jsonl":
        return "".join(json.dumps(r) + ending for r in records)
    names = list(records[0])
    out = io.StringIO()
    csv.writer(out, lineterminator=ending).writerow(names)
    for r in records:
        row = [str(r.get(n, "")).replace("\n", ending) for n in names]
        csv.writer(out, lineterminator=ending).writerow(row)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_logs_with_cr_or_crlf_line_endings_match_like_one_with_lf(
    own_db: Database, kind: str
) -> None:
    """Old Mac spreadsheets save CSV with CR line endings, Windows ones with CR LF: each line is
    a record with its own line number, as with LF."""
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    bodies, collector = _day_of_records(own_db, settings, sponsor, 4)
    records: list[dict[str, object]] = [
        {
            "transactionType": "POST/EVENT",
            "partnerTransactionId": b["clientTransactionId"],
            "collectorNumber": collector,
            "transactionDateTime": b["transactionDateTime"],
            "milesAmount": 10,
            "locationCode": "",
        }
        for b in bodies[:3]
    ]
    records[1]["milesAmount"] = 11  # amount mismatch
    records[2]["locationCode"] = "store\n12"  # a quoted line break (CSV): two physical lines
    records.append({**records[0], "partnerTransactionId": "log-only", "milesAmount": 3})
    records.append({**records[0], "collectorNumber": "1234"})  # invalid
    # bodies[3] is not in the log: missing in log

    def shape(ending: str) -> list[tuple[object, ...]]:
        view = _run(own_db, sponsor, _log(kind, records, ending), kind)
        assert view["counts"] == {
            "matched": 2,
            "amount_mismatch": 1,
            "missing_in_program": 1,
            "invalid": 1,
            "missing_in_log": 1,
        }, ending
        return [
            (r["lineNo"], r["outcome"], r["errorCode"], r["partnerTransactionId"], r["logMiles"])
            for r in view["records"]
        ]

    expected = shape("\n")
    assert {(n, o) for n, o, *_ in expected} == (
        {(3, "amount_mismatch"), (6, "missing_in_program"), (7, "invalid")}
        if kind == "csv"
        else {(2, "amount_mismatch"), (4, "missing_in_program"), (5, "invalid")}
    ) | {(None, "missing_in_log")}
    assert shape("\r") == expected
    assert shape("\r\n") == expected


@pytest.mark.parametrize("ending", ["\r", "\r\n"])
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_long_line_with_cr_endings_is_refused_alone_by_its_number(
    own_db: Database, kind: str, ending: str
) -> None:
    """Over the limit in pieces: a CR LF split between two pieces is still one line ending; the
    limit counts bytes, so 600 two-byte characters are over 1024."""
    settings = Settings(batch_line_bytes_max=1024)
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    good = [
        {
            "transactionType": "POST/EVENT",
            "partnerTransactionId": tid,
            "collectorNumber": collector,
            "transactionDateTime": "2026-11-30T04:10:41Z",
            "milesAmount": 5,
        }
        for tid in "abcd"
    ]
    lines = _log(kind, good, ending).split(ending)[:-1]
    first = len(lines) - len(good) + 1  # line number of "a"
    for at, long in zip(
        (first, first + 2, first + 4), ("x" * 5000, "x" * 2048, "é" * 600), strict=True
    ):
        lines.insert(at, long)
    view = _run_bytes(own_db, sponsor, (ending.join(lines) + ending).encode(), kind, settings)

    by_line = {r["lineNo"]: r for r in view["records"]}
    assert {n: r["errorCode"] for n, r in by_line.items() if r["outcome"] == "invalid"} == {
        first + 1: "PAYLOAD_TOO_LARGE",
        first + 3: "PAYLOAD_TOO_LARGE",
        first + 5: "PAYLOAD_TOO_LARGE",
    }
    assert {
        n: r["partnerTransactionId"] for n, r in by_line.items() if r["outcome"] != "invalid"
    } == {
        first: "a",
        first + 2: "b",
        first + 4: "c",
        first + 6: "d",
    }


def test_the_default_upload_limit_is_in_line_with_real_logs() -> None:
    assert Settings().batch_upload_bytes_max == 256 * 1024 * 1024
    assert Settings().batch_line_bytes_max == 64 * 1024


def test_the_lookup_answers_exactly_the_pairs_asked(own_db: Database) -> None:
    """A log's records are looked up by (endpoint, partner id): a transaction that shares an
    asked-for pair's partner id and another asked-for pair's endpoint is not one of them; a
    value that holds the separator PostgreSQL's lookup joins values by is refused, never
    split into two."""
    settings = Settings()
    sponsor = data.new_sponsor(own_db)
    collector = data.new_collector(own_db)
    event = data.event_body(sponsor, collector, miles=12)
    assert call(own_db, settings, event).status == 200
    reversal = data.event_body(
        sponsor, collector, miles=5, originalClientTransactionId=event["clientTransactionId"]
    )
    assert call(own_db, settings, reversal, reverse=True).status == 200
    post, rev = Endpoint.POST_EVENT.value, Endpoint.REVERSE_EVENT.value

    with own_db.statement_reader() as session:
        found = repository.accepted_miles(
            session,
            sponsor,
            [(post, event["clientTransactionId"]), (post, "nowhere"), (rev, "nowhere-either")],
        )
        both = repository.accepted_miles(
            session,
            sponsor,
            [(post, event["clientTransactionId"]), (rev, reversal["clientTransactionId"])],
        )
        crossed = repository.accepted_miles(
            session, sponsor, [(rev, event["clientTransactionId"]), (post, "x")]
        )
    assert {key: miles for key, (_, miles) in found.items()} == {
        (post, event["clientTransactionId"]): 12
    }
    assert {key: miles for key, (_, miles) in both.items()} == {
        (post, event["clientTransactionId"]): 12,
        (rev, reversal["clientTransactionId"]): 5,
    }
    assert crossed == {}
    if own_db.dialect == "postgresql":
        with own_db.statement_reader() as session, pytest.raises(ValueError, match="separator"):
            repository.accepted_miles(session, sponsor, [(post, "a\x1fb")])
