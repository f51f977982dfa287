"""Sponsors, their offers and locations: operator-managed reference data."""
