"""Reports per sponsor and Transaction Day: the audit report and the reconciliation file."""
