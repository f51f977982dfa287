"""Mutation testing of the money modules (docs/testing.md).

    python -m tests.mutation                          # every money module (what `make mutation` runs)
    python -m tests.mutation ledger clock             # some of them
    python -m tests.mutation --changed-since origin/main --max-seconds 240   # CI's bounded sample
    python -m tests.mutation clock --e2e              # survivors also against the module's e2e tests

mutmut (configured in pyproject.toml [tool.mutmut]) copies src/ and tests/ into mutants/ and runs
each mutant against the in-process tests (tests/unit, tests/integration) that reach the mutated
function. Tests that go through a server process reach the mutated code too (tests/conftest.py puts
the mutated copy first on the servers' PYTHONPATH), but mutmut cannot see which functions a server
process calls, so it never picks them: `--e2e` runs each mutant that survived the in-process tests
against the e2e files listed for its module below, and counts it killed if they fail.

Two workers at most (the machine is shared). The figures printed at the end are what
docs/testing.md records.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
MUTMUT = [sys.executable, "-m", "mutmut"]


@dataclass(frozen=True)
class Module:
    path: str  # a file, or a folder ending in "/"
    e2e: tuple[str, ...] = ()  # the e2e files that exercise it through a server
    # At 0 unexplained survivors in the last full run: a survivor here is a regression, and
    # fails even the CI sample. A module still being brought there only reports its survivors
    # in the sample (docs/testing.md lists what remains).
    gated: bool = True
    # Code only PostgreSQL runs (the one-statement issue path and its group commit): on a run
    # without PostgreSQL no test can reach it, so its mutants are set aside, not counted. Globs
    # over the mutant's name after the module's own prefix ("x_f__mutmut_*" for a function of a
    # file, "batched.*" for a whole file of a folder).
    postgres_only: tuple[str, ...] = ()
    # Of a folder, the files mutated (pyproject's [tool.mutmut] only_mutate lists the same);
    # empty: all of them.
    files: tuple[str, ...] = ()

    @property
    def pattern(self) -> str:
        """mutmut's glob for the module's mutant names."""
        dotted = self.path.removeprefix("src/").removesuffix(".py").removesuffix("/")
        return dotted.replace("/", ".") + ".*"

    def owns(self, file: str) -> bool:
        if not self.path.endswith("/"):
            return file == self.path
        return file.startswith(self.path) and (
            not self.files or file.removeprefix(self.path) in self.files
        )


# The issuance package's use cases and rules; not its shape (schemas), queries or routes.
ISSUANCE_RULES = (
    "calculated.py",
    "calls.py",
    "checks.py",
    "keyed.py",
    "lookups.py",
    "records.py",
    "rules.py",
    "service.py",
)
MODULES = {
    "ledger": Module("src/rewardmiles/ledger/", postgres_only=("batched.*",)),
    "clock": Module("src/rewardmiles/clock.py", ("tests/e2e/test_pinned_clock.py",)),
    "settlement": Module(
        "src/rewardmiles/settlement/service.py", ("tests/e2e/test_settlement_flow.py",)
    ),
    "idempotency": Module(
        "src/rewardmiles/idempotency/",
        ("tests/e2e/test_idempotency.py", "tests/e2e/test_concurrency.py"),
    ),
    "offers": Module(
        "src/rewardmiles/offers/engine.py",
        ("tests/e2e/test_basket.py", "tests/e2e/test_program_calculated.py"),
    ),
    "issuance": Module(
        "src/rewardmiles/issuance/",
        ("tests/e2e/test_event_outcomes.py", "tests/e2e/test_basket.py"),
        postgres_only=(
            "service.x_execute_at_once__mutmut_*",
            "service.x_plan_at_once__mutmut_*",
        ),
        files=ISSUANCE_RULES,
    ),
}
WORKERS = 2
E2E_SECONDS_MAX = 300.0  # one mutant against its module's e2e files


@dataclass(frozen=True)
class Explained:
    """A mutant no test can kill because it changes nothing observable. `line` is the mutated
    line as `mutmut show` prints it (without the leading "+"): mutant numbers shift when their
    function changes, so a name whose mutant no longer makes this edit counts as a survivor
    until the entry is brought up to date. docs/testing.md gives the longer story of each."""

    line: str
    reason: str
    # The dialects on which the edit changes nothing: a mutant of code only PostgreSQL runs is
    # unobservable on SQLite and must still be killed on PostgreSQL.
    dialects: tuple[str, ...] = ("sqlite", "postgresql")


_JOIN_ON_INFERRED = (
    "a join's ON clause dropped: SQLAlchemy infers the same condition from the foreign keys"
)
_LINE_ORDER = (
    "a transaction's wrong lines are read through the primary key (transaction_id, line_no) "
    "in line order on both dialects; the ORDER BY makes that order a promise"
)
_SUM_GUARD = "unreachable: entry_rows writes each pair as +m and -m, so the sum is zero"
_ONE_OUTCOME_PER_CALL = (
    "strict only guards an invariant: the outcomes always number the batch's calls (apply_batch "
    "returns one per call, its invariant(len(rows) == len(calls)); the singles one per call; the "
    "fallback [NOT_WRITTEN] * len(batch)), so a zip without strict pairs the same items"
)
_OUTCOMES_ZIP = (
    "for (_, future), outcome in zip(batch, outcomes or [NOT_WRITTEN] * len(batch), {}):"
)

_COUNT_OF_TWO = (
    "an adjustment is lopsided unless it has exactly 2 entries (entries != 2 is the same test), "
    "and of 2 entries the {0} ones number c and the others 2 - c: 2 - c != 1 exactly when "
    "c != 1, so counting the others instead of the {0} entries flags the same adjustments"
)

_ONE_VALUE_IN_ORDER = (
    "the history's collector number is one value (a one-value range): ordering by it too orders "
    "the entries alike; it is in the ORDER BY only to steer PostgreSQL to the collector's index "
    "(docs/benchmarks.md, (i) rows)"
)
_INDEX_ORDER_WITHOUT_ID = (
    "the entry id dropped from the ORDER BY, the order left to the scan: both databases read "
    "ix_ledger_entries_account (kind, code, id) backward for the remaining ORDER BY code DESC, "
    "which yields ids descending; the id in the ORDER BY makes that order a promise"
)

EXPLAINED: dict[str, Explained] = {
    "rewardmiles.ledger.history.x_page__mutmut_9": Explained(
        ".order_by(None, LedgerEntry.id.desc())", _ONE_VALUE_IN_ORDER
    ),
    "rewardmiles.ledger.history.x_page__mutmut_11": Explained(
        ".order_by(LedgerEntry.id.desc())", _ONE_VALUE_IN_ORDER
    ),
    "rewardmiles.ledger.history.x_page__mutmut_10": Explained(
        ".order_by(LedgerEntry.account_code.desc(), None)", _INDEX_ORDER_WITHOUT_ID
    ),
    "rewardmiles.ledger.history.x_page__mutmut_12": Explained(
        ".order_by(LedgerEntry.account_code.desc(), )", _INDEX_ORDER_WITHOUT_ID
    ),
    "rewardmiles.ledger.verify.x_verify__mutmut_125": Explained(
        "None,",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x_verify__mutmut_127": Explained(
        ")",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__statuses_disagreeing_with_lines__mutmut_10": Explained(
        ".join(Transaction, None)",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__statuses_disagreeing_with_lines__mutmut_12": Explained(
        ".join(Transaction, )",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__pairs_disagreeing_with_lines__mutmut_13": Explained(
        ".join(Transaction, None)",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__pairs_disagreeing_with_lines__mutmut_15": Explained(
        ".join(Transaction, )",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__pairs_disagreeing_with_lines__mutmut_17": Explained(
        "None,",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__pairs_disagreeing_with_lines__mutmut_19": Explained(
        ")",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__reversals_beyond_originals__mutmut_13": Explained(
        ".join(rev_txn, None)",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__reversals_beyond_originals__mutmut_15": Explained(
        ".join(rev_txn, )",
        _JOIN_ON_INFERRED,
    ),
    "rewardmiles.ledger.verify.x__statuses_disagreeing_with_lines__mutmut_5": Explained(
        ".order_by(Transaction.id, None)",
        _LINE_ORDER,
    ),
    "rewardmiles.ledger.verify.x__statuses_disagreeing_with_lines__mutmut_7": Explained(
        ".order_by(Transaction.id, )",
        _LINE_ORDER,
    ),
    "rewardmiles.ledger.verify.x__statuses_disagreeing_with_lines__mutmut_48": Explained(
        "select(None)",
        "EXISTS ignores its select list",
    ),
    "rewardmiles.ledger.verify.x__adjustments_disagreeing_with_entries__mutmut_4": Explained(
        ".order_by(None)",
        "SQLite scans ledger_entries (a rowid table, the rowid being the entry's id) in id order "
        "for this query, so the first wrong entries come in id order without the ORDER BY; on "
        "PostgreSQL test_verify_lists_the_first_wrong_adjustment_entries_in_entry_order fails "
        "with it (planted by hand)",
        dialects=("sqlite",),
    ),
    "rewardmiles.ledger.verify.x__adjustments_disagreeing_with_entries__mutmut_53": Explained(
        "case((LedgerEntry.account_kind != AccountKind.COLLECTOR, 1), else_=0)",
        _COUNT_OF_TWO.format("collector"),
    ),
    "rewardmiles.ledger.verify.x__adjustments_disagreeing_with_entries__mutmut_62": Explained(
        "program_entries = func.sum(case((LedgerEntry.account_kind != AccountKind.PROGRAM, 1), "
        "else_=0))",
        _COUNT_OF_TWO.format("program"),
    ),
    "rewardmiles.ledger.service.x_entry_rows__mutmut_34": Explained(
        "raise LedgerInvariantError(None)",
        _SUM_GUARD,
    ),
    "rewardmiles.ledger.service.x_entry_rows__mutmut_35": Explained(
        'raise LedgerInvariantError("XXentries of a posting do not sum to zeroXX")',
        _SUM_GUARD,
    ),
    "rewardmiles.ledger.service.x_entry_rows__mutmut_36": Explained(
        'raise LedgerInvariantError("ENTRIES OF A POSTING DO NOT SUM TO ZERO")',
        _SUM_GUARD,
    ),
    # ledger/batched.py runs on PostgreSQL only (its mutants are set aside on a SQLite run), but
    # these edits change nothing on any dialect.
    "rewardmiles.ledger.batched.x\u01c1GroupCommit\u01c1_run__mutmut_22": Explained(
        _OUTCOMES_ZIP.format("strict=None"),
        _ONE_OUTCOME_PER_CALL,
    ),
    "rewardmiles.ledger.batched.x\u01c1GroupCommit\u01c1_run__mutmut_25": Explained(
        _OUTCOMES_ZIP.format(""),
        _ONE_OUTCOME_PER_CALL,
    ),
    "rewardmiles.ledger.batched.x\u01c1GroupCommit\u01c1_run__mutmut_28": Explained(
        _OUTCOMES_ZIP.format("strict=False"),
        _ONE_OUTCOME_PER_CALL,
    ),
    "rewardmiles.offers.engine.x__spend__mutmut_4": Explained(
        "return sum((item.final_amount for item in items), )",
        "the sum starts at int 0 instead of Fraction(0): a sum of Fractions is the same Fraction, and an empty one (int 0) floors, divides and compares the same",
    ),
    "rewardmiles.offers.engine.x_withdrawal__mutmut_43": Explained(
        ") or tuple(None)",
        "unreachable fallback: miles are taken only when a returned unit changed what an offer counts, and every rule names every item it counts (base: eligible items that spent something; item and coupon: all matching or present items), so a returned item is always among the contributing ones",
    ),
    "rewardmiles.settlement.service.x__decide__mutmut_18": Explained(
        "if (line.pending_reason != PendingReason.ORIGINAL_PENDING) or True",
        "(pending, original_pending) when that already is the reason: same reason, same counts; only skips expiry of a reversal examined while its original is pending, but the older original is examined first in the pass and leaves pending (only a clock stepping back could reorder them)",
    ),
    "rewardmiles.settlement.service.x__parse_line_id__mutmut_3": Explained(
        'transaction_id, sep, number = text.partition(":")',
        "partition vs rpartition: transaction ids are UUIDs without ':'; a text with two or more ':' names no line and is refused (ReviewError) either way, only the wording differs",
    ),
    "rewardmiles.settlement.service.x_settle_collector__mutmut_20": Explained(
        "stopped_early = None",
        "stopped_early = None instead of False: only read as 'not stopped_early' and, returned, as the worker's while condition; both falsy",
    ),
    "rewardmiles.settlement.service.x_settle_collector__mutmut_105": Explained(
        'report.rejected[detail or "XXXX"] += 1',
        "detail or 'XXXX': a rejection always carries an error code, the 'or' only narrows str|None for the Counter key",
    ),
    "rewardmiles.idempotency.service.x_claim__mutmut_30": Explained(
        "return Claim(stored, None)",
        "Claim(stored, None): a claim's reference_version is read (by issuance _claim) only when stored is None; a stored outcome is replayed and returned before it. Equivalent on both dialects.",
    ),
    "rewardmiles.idempotency.repository.x_claim_row__mutmut_7": Explained(
        'return conn.execute(_CLAIM.of(conn), {"XXlockXX": lock, "client_id": client_id, "key": key}).one()',
        "bind key 'lock' renamed ('XXlockXX'); the SQLite claim statement has no :lock parameter (BEGIN IMMEDIATE serialises writers), an unused bind is ignored. Killed on PostgreSQL (every keyed call fails).",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.repository.x_claim_row__mutmut_8": Explained(
        'return conn.execute(_CLAIM.of(conn), {"LOCK": lock, "client_id": client_id, "key": key}).one()',
        "bind key 'lock' renamed ('LOCK'); same as _7. Killed on PostgreSQL.",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.service.x_claim__mutmut_5": Explained(
        "row = repository.claim_row(session, client_id, key, None)",
        "no advisory lock number at all; the SQLite claim statement has no :lock parameter (BEGIN IMMEDIATE serialises writers), so the value is never read. On PostgreSQL pg_try_advisory_xact_lock(NULL) is NULL, not true: every keyed call answers 409, killed.",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.service.x_claim__mutmut_10": Explained(
        "row = repository.claim_row(session, client_id, key, lock_number(None, key))",
        "advisory lock number of (None, key); SQLite takes no advisory lock. On PostgreSQL test_a_key_running_in_another_process_gets_409_and_no_other_key_waits_for_it fails with it (mutmut reports a timeout there, see docs/testing.md).",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.service.x_claim__mutmut_11": Explained(
        "row = repository.claim_row(session, client_id, key, lock_number(client_id, None))",
        "advisory lock number of (client, None); same as _9 (PostgreSQL: the same test fails with it; mutmut reports a timeout).",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.service.x_lock_number__mutmut_1": Explained(
        "return lock_id(None, key)",
        "lock_id(None, key), the lock shared by every client; the number is used only by PostgreSQL's advisory lock. Killed on PostgreSQL.",
        dialects=("sqlite",),
    ),
    "rewardmiles.idempotency.service.x_lock_number__mutmut_2": Explained(
        'return lock_id(f"{LOCK_NAMESPACE}:{client_id}", None)',
        "lock_id(namespace, None), one lock for all of a client's keys; PostgreSQL only, as _1. Killed on PostgreSQL.",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.calculated.x__compute_return__mutmut_138": Explained(
        "left = totals.issued_miles.get(c.offer_code, 0) - totals.reversed_miles.get(None, 0)",
        "An ISSUE has one line per offer code, so issued_miles[code] is either the whole amount the offer computed (line posted or pending) or 0 (line rejected). Whole: the earlier non-rejected returns of the ISSUE took back at most what the basket lost by their returned quantities (withdrawals telescope; their lines refused later only lower reversed_miles; a rejected RETURN has no lines and its quantities are not counted), so issued - reversed >= what the basket left before this return earns >= c.miles > 0, and min(c.miles, left) is c.miles with left = issued - reversed as with the mutant's left = issued. Zero: left is -reversed <= 0 in the code and 0 in the mutant, and the line is dropped either way (min(...) > 0 fails). Killing it would need reversed_miles > 0 with issued_miles whole and below the telescoped sum, which no sequence of ISSUE/RETURN/settlement produces.",
    ),
    "rewardmiles.issuance.calculated.x__compute_return__mutmut_153": Explained(
        "capped.append(replace(c, ))",
        "The line is kept only when min(c.miles, left) > 0, i.e. left > 0, which (see _137) happens only when the offer's ISSUE line was not rejected, and then left = issued - reversed >= c.miles: min(c.miles, left) == c.miles, so replace(c) keeps the same miles. The min is the documented guard (a return takes back at most what each offer still has issued and not yet returned); it binds in no reachable state, and test_a_return_waiting_on_an_issue_line_rejected_meanwhile_takes_nothing_more covers the one case the cap decides (issued 0, reversed > 0: nothing taken).",
    ),
    "rewardmiles.issuance.calculated.x__preview__mutmut_16": Explained(
        "body = _with_lines(command, computed, program.location_code, None).echo",
        "_preview reads only .echo of the Command _with_lines returns; the calculation argument only sets Command.calculation, which is stored with a written transaction (calculation_json), and CALCULATE writes none: the body is the same with {} or None.",
    ),
    "rewardmiles.issuance.service.x__attempt__mutmut_12": Explained(
        "return _execute_rules(session, settings, call, now, optimistic=None)",
        "optimistic is then always false: the rule-3.7 duplicate check runs before the rules instead of after a rule failure or the unique index's violation; _process answers the same either way (a duplicate is replayed or refused DUPLICATE_TRANSACTION, a failed rule of a new id is recorded) - only the number of statements differs",
    ),
    "rewardmiles.issuance.service.x__execute_rules__mutmut_7": Explained(
        "outcome = _process(session, settings, call, now, optimistic=None)",
        "optimistic is then always false: the rule-3.7 duplicate check runs before the rules instead of after a rule failure or the unique index's violation; _process answers the same either way (a duplicate is replayed or refused DUPLICATE_TRANSACTION, a failed rule of a new id is recorded) - only the number of statements differs",
    ),
    "rewardmiles.issuance.service.x_execute__mutmut_7": Explained(
        "return _attempt(session, settings, call, now(), optimistic=None)",
        "optimistic is then always false: the rule-3.7 duplicate check runs before the rules instead of after a rule failure or the unique index's violation; _process answers the same either way (a duplicate is replayed or refused DUPLICATE_TRANSACTION, a failed rule of a new id is recorded) - only the number of statements differs",
    ),
    "rewardmiles.issuance.keyed.x_replay_stored__mutmut_4": Explained(
        "if stored.transaction_id is not None and stored.status in (201, 202):",
        "a stored 200 is then answered from the key's stored body instead of re-rendered: a 200's lines are all posted (final) and the key keeps the same body the transaction row keeps, so render_current gives the identical body (differs only for a response stored by a version before empty optionals were left out)",
    ),
    "rewardmiles.issuance.keyed.x_replay_stored__mutmut_15": Explained(
        "return Outcome(stored.status, stored.body, None, replayed=True)",
        "this branch only answers outcomes without a transaction (400s, keyed CALCULATE 200): every accepted outcome is 200/202 with a transaction id and takes the first branch, so stored.transaction_id is None here",
    ),
    "rewardmiles.issuance.keyed.x_replay_stored__mutmut_19": Explained(
        "return Outcome(stored.status, stored.body, replayed=True)",
        "as _15: transaction_id defaults to None, and stored.transaction_id is None in this branch",
    ),
    "rewardmiles.issuance.keyed.x_render_state__mutmut_7": Explained(
        'for out_line, line in zip(body.get("issuances", ()), lines, strict=None):',
        "strict only guards an invariant: the response's issuances and the transaction's lines are written from the same planned list (build_write), so zip never sees two lengths",
    ),
    "rewardmiles.issuance.keyed.x_render_state__mutmut_10": Explained(
        'for out_line, line in zip(body.get("issuances", ()), lines, ):',
        "as _7: zip without strict over two sequences of equal length",
    ),
    "rewardmiles.issuance.keyed.x_render_state__mutmut_17": Explained(
        'for out_line, line in zip(body.get("issuances", ()), lines, strict=False):',
        "as _7: zip(strict=False) over two sequences of equal length",
    ),
    "rewardmiles.issuance.keyed.x_render_state__mutmut_27": Explained(
        "if line.status == rejected or line.error_code:",
        "every rejected line has an error code (settlement's rejections, operator reject: code required) and no other line ever has one (build_write writes None, only rejections set it), so `status == REJECTED or error_code` selects the same lines as `and`",
    ),
    "rewardmiles.issuance.service.x__record_rejection__mutmut_15": Explained(
        "call, ids.uuid4_text(), None, TransactionStatus.REJECTED, 400, rule.code, None, now",
        "the response_json of a rejected transaction row is never read: lookups, replays (find_accepted, get_accepted_by_id) and reports take accepted rows only (status != 'rejected'); the audit report shows a rejection's request_json, http_status and error_code",
    ),
    "rewardmiles.issuance.service.x__record_rejection__mutmut_30": Explained(
        "return Outcome(400, body, )",
        "transaction_id defaults to None in Outcome",
    ),
    "rewardmiles.issuance.checks.x_locked_original__mutmut_14": Explained(
        'command.original_partner_id or "XXXX",',
        "_locked_original is reached only with a non-empty original id (_load_original returns first without one; RETURN's originalCheckoutTransactionId is required, min length 1), so the `or` default is never taken",
    ),
    "rewardmiles.issuance.checks.x_original_not_found__mutmut_5": Explained(
        'named = command.original_partner_id or "XXXX"',
        "as _locked_original_14: called only for a non-empty original id",
    ),
    "rewardmiles.issuance.lookups.x__lookup_view__mutmut_4": Explained(
        "outcome = keyed.render_current(session, found.id, replayed=None)",
        "lookup keeps only the rendered body; Outcome.replayed is never read there",
    ),
    "rewardmiles.issuance.lookups.x__lookup_view__mutmut_8": Explained(
        "outcome = keyed.render_current(session, found.id, replayed=True)",
        "lookup keeps only the rendered body; Outcome.replayed is never read there",
    ),
    "rewardmiles.issuance.service.x_execute__mutmut_14": Explained(
        "return _attempt(session, settings, call, now(), optimistic=attempt == 2)",
        "attempt == 2: attempt 1 not optimistic (equivalent as _attempt_12); after a lost race attempt 2 is optimistic and fails on the index again, attempt 3 (the last of Database.run_in_unit_of_work's three) is not and replays the winner: same answer, one more attempt",
    ),
    "rewardmiles.issuance.checks.x_locked_original__mutmut_7": Explained(
        "lock=None,",
        "SQLAlchemy's SQLite dialect renders no FOR UPDATE, so the statement is the same. On PostgreSQL killed by test_racing_reversals_of_an_unknown_collectors_original_never_exceed_it (postgres_only)",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.checks.x_locked_original__mutmut_12": Explained(
        ")",
        "as _7 (lock left to its default False): same SQL on SQLite; killed on PostgreSQL by the racing-reversals test",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.checks.x_locked_original__mutmut_15": Explained(
        "lock=False,",
        "as _7 (lock=False): same SQL on SQLite; killed on PostgreSQL by the racing-reversals test",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.service.x_execute__mutmut_13": Explained(
        "return _attempt(session, settings, call, now(), optimistic=attempt != 1)",
        "attempt 1 not optimistic answers every call without a concurrent writer. On PostgreSQL killed by test_racing_resends_of_an_unknown_collectors_event_are_one_transaction (checked: the losers' retries stay optimistic and raise UniqueViolation)",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.service.x__process__mutmut_27": Explained(
        "if optimistic:",
        "The flag only orders rule 3.7's read against _apply: both orders give the same answer (replay, DUPLICATE_TRANSACTION or the rule's refusal). Under the mutant the first attempt reads first (as a retry does) and answers any duplicate there; a second attempt only follows an IntegrityError, i.e. an accepted row inserted by another unit of work between that read and the insert. On SQLite (the mutation dialect) units of work run one at a time (BEGIN IMMEDIATE), so that cannot happen; on PostgreSQL it is a race window no test can open deterministically.",
        dialects=("sqlite",),
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_32": Explained(
        'for out_line, p in zip(body["issuances"], planned, strict=None):',
        "body[\"issuances\"] and planned always have the same length: for partner lines both come one per request line (command.echo's issuances are the request's, _plan_lines/_record plan one line each), for ISSUE/RETURN _with_lines sets the echoed issuances and command.lines from the same computed list; strict only guards that invariant, and a non-strict zip of equal lengths is the same.",
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_35": Explained(
        'for out_line, p in zip(body["issuances"], planned, ):',
        "Same as build_write__mutmut_32: the two sequences are always of equal length, so zip without strict pairs the same items.",
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_38": Explained(
        'for out_line, p in zip(body["issuances"], planned, strict=False):',
        "Same as build_write__mutmut_32: the two sequences are always of equal length, so a non-strict zip pairs the same items.",
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_82": Explained(
        '"XXerror_codeXX": None,',
        "A new line has no error code: the key the mutant misspells is simply not an issuance_lines column, so the insert (Core insert(IssuanceLine) executemany, or json_to_recordset in the one-statement path) leaves error_code out and the nullable column without default is NULL, as with the explicit None; the unknown key is ignored.",
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_83": Explained(
        '"ERROR_CODE": None,',
        "Same as build_write__mutmut_82: error_code is NULL whether given as None or left out.",
    ),
    "rewardmiles.issuance.records.x_build_write__mutmut_101": Explained(
        'command.collector_number or "XXXX",',
        "Postings are built for POSTED lines only, and a line posts only for an enrolled collector of a crediting/debiting endpoint, whose collectorNumber is required: the fallback (there for the type of RECORD's optional collector) is never evaluated with a missing number, since RECORD lines are RECORDED and unknown collectors' lines PENDING.",
    ),
    "rewardmiles.issuance.service.x_plan_at_once__mutmut_26": Explained(
        "sponsor = rules.check_sponsor(entry.sponsor, None)",
        "the code only names the sponsor in the refusal's message; the planner catches every refusal and answers None, so no message is ever read.",
    ),
    "rewardmiles.issuance.service.x_execute_at_once__mutmut_68": Explained(
        "if applied.current is not None or stored.transaction_id is not None:",
        "applied.current is not None exactly when stored.transaction_id is not None. current is t.response_json from POST_BATCH's 'LEFT JOIN transactions AS t ON t.id = s.transaction_id' (response_json NOT NULL), so current set implies transaction_id set. Conversely a key row's transaction_id comes only from _key_row(outcome.transaction_id): None for rejections and CALCULATE, else the id of a transaction inserted in the same commit as the key (build_write: the unit of work, or the statement's txn/kept CTEs under the same 'applied' condition) or of an accepted transaction already committed (render_current on a rule 3.7 replay). Nothing deletes transactions (the only DELETE in src is idempotency.purge_expired, on keys), and the statement reads keys and transactions in one snapshot, so a visible key with a transaction_id always finds its row. Hence 'and' and 'or' take the same branch. Planted by hand: the file's tests all pass.",
    ),
    "rewardmiles.issuance.service.x_execute_at_once__mutmut_84": Explained(
        "return Outcome(stored.status, stored.body, None, replayed=True)",
        "The last return is reached only when 'applied.current is not None and stored.transaction_id is not None' is False, i.e. (see execute_at_once__mutmut_68: current is set exactly when transaction_id is) when stored.transaction_id is None; passing None is passing stored.transaction_id. Planted by hand: the file's tests all pass.",
    ),
    "rewardmiles.issuance.service.x_execute_at_once__mutmut_88": Explained(
        "return Outcome(stored.status, stored.body, replayed=True)",
        "As execute_at_once__mutmut_84: stored.transaction_id is always None on that line, and Outcome.transaction_id defaults to None. Planted by hand: the file's tests all pass.",
    ),
}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def base_of_window(hours: float) -> str | None:
    """The newest commit on HEAD's first-parent line older than `hours`: diffing against it
    covers every commit of the window. None when every commit is younger (a young or shallow
    clone): then there is no base to compare with."""
    found = _git(
        "rev-list", "-1", "--first-parent", f"--before={hours * 3600:.0f} seconds ago", "HEAD"
    )
    return found.strip() or None


def changed_modules(since: str) -> list[str]:
    files = _git("diff", "--name-only", since, "--", "src").split()
    return [name for name, module in MODULES.items() if any(module.owns(f) for f in files)]


def changed_function_patterns(since: str, module: Module) -> list[str]:
    """mutmut globs for the functions of `module` whose lines changed since `since` (the whole
    module when a change lies outside any function: a constant, an import)."""
    patterns: list[str] = []
    for file in _git("diff", "--name-only", since, "--", module.path).split():
        if not file.endswith(".py") or not (ROOT / file).exists() or not module.owns(file):
            continue
        lines: set[int] = set()
        for hunk in re.finditer(
            r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", _git("diff", "-U0", since, "--", file), re.M
        ):
            start, count = int(hunk[1]), int(hunk[2] or 1)
            lines.update(range(start, start + max(count, 1)))
        dotted = file.removeprefix("src/").removesuffix(".py").replace("/", ".")
        dotted = dotted.removesuffix(".__init__")
        text = (ROOT / file).read_text()
        source_lines = text.splitlines()
        spans: list[tuple[int, int, str]] = []
        for node in ast.parse(text).body:
            if isinstance(node, ast.Import | ast.ImportFrom):  # nothing for mutmut to mutate
                lines -= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                spans.append((node.lineno, node.end_lineno or node.lineno, f"x_{node.name}"))
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        mangled = f"x\u01c1{node.name}\u01c1{item.name}"
                        spans.append((item.lineno, item.end_lineno or item.lineno, mangled))
        lines = {  # blank and comment lines change nothing either
            n
            for n in lines
            if n <= len(source_lines) and source_lines[n - 1].strip()[:1] not in ("", "#")
        }
        touched = {name for s, e, name in spans if any(s <= n <= e for n in lines)}
        if any(not any(s <= n <= e for s, e, _ in spans) for n in lines):
            return [module.pattern]  # a change outside the functions: the whole module
        patterns += [f"{dotted}.{name}__mutmut_*" for name in sorted(touched)]
    return patterns


def _prepare(databases: str) -> None:
    """mutmut keeps which tests reach which function in mutants/; that depends on the dialects the
    tests ran on, so another choice of dialects starts from a fresh copy."""
    marker = MUTANTS / ".databases"
    if MUTANTS.exists() and (not marker.exists() or marker.read_text() != databases):
        subprocess.run(["rm", "-rf", str(MUTANTS)], check=True)
    MUTANTS.mkdir(exist_ok=True)
    marker.write_text(databases)


class MutmutError(RuntimeError):
    """mutmut stopped before judging any mutant (its clean run of the tests failed, or it
    found no test): a run that checked nothing must not pass for one that found nothing."""


def run_mutmut(patterns: list[str], env: dict[str, str], max_seconds: float | None) -> bool:
    """`mutmut run` over `patterns`; True if it finished, False if stopped at the deadline (the
    mutants it had checked keep their verdicts, the others stay "not checked"). Raises
    MutmutError when mutmut itself fails."""
    command = [*MUTMUT, "run", "--max-children", str(WORKERS), *patterns]
    with subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True) as process:
        try:
            code = process.wait(timeout=max_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            return False
    if code != 0:
        raise MutmutError(f"mutmut run exited with {code} (its output is above)")
    return True


def verdicts() -> dict[str, str]:
    """Every generated mutant's status as mutmut recorded it in mutants/**/*.meta."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, str] = {}
    for meta in (MUTANTS / "src").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            found[name] = status_by_exit_code[code]
    return found


def mutated_line(name: str) -> str:
    """The lines mutant `name` adds, as `mutmut show` prints them, stripped and joined."""
    shown = subprocess.run(
        [*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    return "\n".join(
        line[1:].strip()
        for line in shown.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    )


def explain(name: str, databases: str) -> str:
    """ "explained" if `name` is listed in EXPLAINED for every dialect of `databases` and still
    makes the listed edit, otherwise "survived" (with a note when the listed edit is out of
    date)."""
    listed = EXPLAINED.get(name)
    if listed is None or not set(databases.split(",")) <= set(listed.dialects):
        return "survived"
    if mutated_line(name) != listed.line:
        print(f"  {name}: listed in EXPLAINED, but the mutant no longer makes that edit")
        return "survived"
    return "explained"


def kill_with_e2e(name: str, module: Module, env: dict[str, str], max_seconds: float) -> str:
    """ "killed (e2e)" if the module's e2e tests fail with mutant `name` active (in-process and in
    the server processes, which import the mutated copy), "survived" if they pass, "timeout
    (e2e)" if they take longer than `max_seconds`."""
    mutant_env = {**env, "MUTANT_UNDER_TEST": name, "PYTHONPATH": str(MUTANTS / "src")}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *module.e2e]
    try:
        result = subprocess.run(
            command,
            cwd=MUTANTS,
            env=mutant_env,
            capture_output=True,
            timeout=max_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timeout (e2e)"
    return "killed (e2e)" if result.returncode != 0 else "survived"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)} (default: all)")
    since = parser.add_mutually_exclusive_group()
    since.add_argument("--changed-since", metavar="REV", help="only functions changed since REV")
    since.add_argument(
        "--changed-within-hours",
        type=float,
        metavar="H",
        help="only functions changed by the commits of the last H hours (CI's sample)",
    )
    parser.add_argument(
        "--gated-only",
        action="store_true",
        help="fail only on survivors of gated modules; report the others (CI's sample)",
    )
    parser.add_argument("--max-seconds", type=float, help="stop mutmut at this deadline")
    parser.add_argument("--e2e", action="store_true", help="survivors against the e2e files too")
    parser.add_argument(
        "--databases",
        default=os.environ.get("REWARDMILES_TEST_DATABASES", "sqlite"),
        help="REWARDMILES_TEST_DATABASES for the runs (default sqlite)",
    )
    return parser


def _selection(args: argparse.Namespace, names: list[str]) -> tuple[list[str], list[str], str]:
    """(modules, mutmut patterns, why) for the run: every mutant of `names`, or only those of
    the functions changed since a revision; no patterns (and why) when there is nothing to run."""
    if args.changed_within_hours is not None:
        args.changed_since = base_of_window(args.changed_within_hours)
        if args.changed_since is None:
            return [], [], f"no commit is older than {args.changed_within_hours:g} hours"
    if not args.changed_since:
        return names, [MODULES[n].pattern for n in names], ""
    changed = changed_modules(args.changed_since)
    names = [n for n in names if n in changed]
    patterns = [p for n in names for p in changed_function_patterns(args.changed_since, MODULES[n])]
    return names, patterns, f"no function of a money module changed since {args.changed_since}"


def _judge(
    name: str,
    results: dict[str, str],
    patterns: list[str],
    args: argparse.Namespace,
    deadline: float | None,
) -> list[str]:
    """Print module `name`'s row of figures and return its mutants left alive (after the
    explained ones, and after the e2e files when asked for, within `deadline`)."""
    module = MODULES[name]
    prefix = module.pattern.removesuffix("*")
    mine = {
        k: v
        for k, v in results.items()
        if k.startswith(prefix) and any(fnmatch.fnmatchcase(k, p) for p in patterns)
    }
    if "postgresql" not in args.databases.split(","):
        aside = {
            k
            for k in mine
            if any(fnmatch.fnmatchcase(k.removeprefix(prefix), f) for f in module.postgres_only)
        }
        if aside:
            print(f"  ({name}: {len(aside)} mutants of PostgreSQL-only functions set aside)")
        mine = {k: v for k, v in mine.items() if k not in aside}
    for mutant, status in mine.items():
        if status in ("survived", "no tests") and mutant in EXPLAINED:
            mine[mutant] = explain(mutant, args.databases)
    if args.e2e and module.e2e:
        env = {**os.environ, "REWARDMILES_TEST_DATABASES": args.databases}
        for mutant, status in sorted(mine.items()):
            budget = E2E_SECONDS_MAX if deadline is None else deadline - time.monotonic()
            if budget <= 0:
                break
            if status in ("survived", "no tests"):
                mine[mutant] = kill_with_e2e(mutant, module, env, min(budget, E2E_SECONDS_MAX))
    counts = {
        s: sum(1 for v in mine.values() if v.startswith(s))
        for s in ("killed", "explained", "survived", "no tests")
    }
    other = len(mine) - sum(counts.values())
    print(
        f"{name:<12} {len(mine):>7} {counts['killed']:>7} {counts['explained']:>9} "
        f"{counts['survived']:>8} {counts['no tests']:>8} {other:>6}"
    )
    return [k for k, v in mine.items() if v in ("survived", "no tests")]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    names, patterns, why = _selection(args, list(args.modules) or list(MODULES))
    if not patterns:
        print(f"{why}: nothing to sample")
        return 0
    started = time.monotonic()
    deadline = None if args.max_seconds is None else started + args.max_seconds
    _prepare(args.databases)
    env = {**os.environ, "REWARDMILES_TEST_DATABASES": args.databases}
    try:
        finished = run_mutmut(patterns, env, args.max_seconds)
    except MutmutError as failure:
        print(f"\n{failure}: no mutant was judged")
        return 2
    results = verdicts()

    surviving: list[str] = []
    reported: list[str] = []  # survivors of modules not yet gated, under --gated-only
    print(
        f"\n{'module':<12} {'mutants':>7} {'killed':>7} {'explained':>9} {'survived':>8} "
        f"{'no tests':>8} {'other':>6}"
    )
    for name in names:
        left = _judge(name, results, patterns, args, deadline)
        if args.gated_only and not MODULES[name].gated:
            reported += left
        else:
            surviving += left
    print(
        f"\n{time.monotonic() - started:.0f} s on {args.databases}"
        + ("" if finished else " (stopped at the deadline: some mutants not checked)")
    )
    for mutant in sorted(surviving):
        print(f"  survived: {mutant}   (python -m mutmut show {mutant})")
    if reported:
        print(f"\n{len(reported)} survivor(s) in modules not gated yet (docs/testing.md):")
        for mutant in sorted(reported):
            print(f"  known gap: {mutant}")
    return 1 if surviving else 0


if __name__ == "__main__":
    sys.exit(main())
