"""The support desk's look-ups: failed partner requests by request id, transactions, pending
review in bulk, the operator audit log."""
