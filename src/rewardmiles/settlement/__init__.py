"""Settlement of pending lines (SPEC §3.6): the worker and the operator's review."""
