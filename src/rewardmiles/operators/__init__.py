"""Operators of the support desk: accounts and roles, browser sessions, admin API tokens,
sign-in throttling and the operator audit log."""
