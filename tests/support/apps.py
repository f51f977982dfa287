"""The service's application in process, for tests that drive it through an ASGI transport."""

from __future__ import annotations

from rewardmiles.app import create_app
from rewardmiles.config import Settings
from rewardmiles.http.application import IssuanceApp
from tests.conftest import TEST_SECRET_KEY


def in_process_app(url: str) -> IssuanceApp:
    """The app on the database at `url`: no embedded worker, quiet logs, the tests' key."""
    return create_app(
        Settings(
            database_url=url,
            embedded_worker=False,
            log_level="warning",
            secret_key=TEST_SECRET_KEY,
        )
    )
