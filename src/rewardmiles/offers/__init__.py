"""Offers and program-calculated issuance: rules (data), the pure engine, the offers that apply
to a transaction (applicable), operator actions (service), repository."""
