"""The ledger: the one write path for miles, and its invariants. No web framework in here."""

from rewardmiles.ledger.service import (
    CollectorAccount,
    LedgerInvariantError,
    Posting,
    entry_rows,
    lock_collector,
    post,
)

__all__ = [
    "CollectorAccount",
    "LedgerInvariantError",
    "Posting",
    "entry_rows",
    "lock_collector",
    "post",
]
