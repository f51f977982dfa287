"""The ledger: how miles move (entry pairs, balances) and its invariants. No web framework here."""

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
