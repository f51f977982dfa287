"""The partner Issuance API endpoints."""
