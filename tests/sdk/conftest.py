"""The SDK tests reuse the end-to-end `world` (a real server, its database, one sponsor)."""

from tests.e2e.conftest import world  # noqa: F401
