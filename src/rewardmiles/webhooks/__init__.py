"""Partner webhooks: settlement events from an outbox, signed, delivered at least once."""
