"""Idempotency keys (SPEC §4): claim, replay, in-flight detection. Framework-free."""
