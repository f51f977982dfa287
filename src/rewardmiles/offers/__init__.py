"""The offers engine (program-calculated issuance): rules, the pure engine, the catalogue."""
