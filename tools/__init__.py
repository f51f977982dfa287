"""Maintenance scripts run by the Makefile (`python -m tools.NAME`)."""
