"""Storage: engines per dialect, the schema, migrations and the unit of work (the only committer)."""
