"""The ledger: how miles move, and its invariants. The only package that writes ledger entries
and collectors' balances (`tests/unit/test_architecture.py` keeps it so), with two strategies
over one vocabulary, `Posting`:

- `post(session, account, postings)`: inside a unit of work, under the collector's row lock;
- `post_adjustment(session, account, adjustment_id, miles)`: an operator's adjustment, its
  pair against the program's `ADJUSTMENTS` account;
- `GroupCommit.post_batched(call)`: group commit, one statement per batch of calls (PostgreSQL),
  issues and reversals of an original, writing the same rows
  (`tests/integration/test_one_statement_issue.py` and `…_reversal.py` hold them identical).

`verify` checks the invariants over a whole database. No web framework here.
"""

from rewardmiles.ledger.batched import BatchedCall, BatchedOutcome, GroupCommit, Original
from rewardmiles.ledger.service import (
    CollectorAccount,
    LedgerInvariantError,
    Posting,
    entry_rows,
    invariant,
    lock_collector,
    post,
    post_adjustment,
    present,
    signed_miles,
)

__all__ = [
    "BatchedCall",
    "BatchedOutcome",
    "CollectorAccount",
    "GroupCommit",
    "LedgerInvariantError",
    "Original",
    "Posting",
    "entry_rows",
    "invariant",
    "lock_collector",
    "post",
    "post_adjustment",
    "present",
    "signed_miles",
]
