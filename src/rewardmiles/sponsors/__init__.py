"""Sponsors and their locations: operator-managed reference data (offers: `offers/`)."""
