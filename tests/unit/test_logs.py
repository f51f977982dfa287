"""The log pipeline: collector masking spares the ids the service makes, and lines go to the
stderr of the moment."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest

from rewardmiles import logs

SERVER_ID_WITH_ELEVEN_DIGITS = "ab41585175382cdef0123456789abcde"  # 41585175382: eleven digits


def _masked(**event: Any) -> dict[str, Any]:
    return dict(logs._mask(None, "info", dict(event)))


def test_a_request_id_the_service_made_is_never_masked() -> None:
    event = _masked(request_id=SERVER_ID_WITH_ELEVEN_DIGITS, event="request")
    assert event["request_id"] == SERVER_ID_WITH_ELEVEN_DIGITS


def test_the_same_digits_elsewhere_and_a_client_sent_id_are_masked() -> None:
    event = _masked(
        request_id="order-80085102028", path=SERVER_ID_WITH_ELEVEN_DIGITS, event="request"
    )
    assert event["request_id"] == "order-800*****028"
    assert "41585175382" not in event["path"]


def test_logging_after_the_configured_stderr_was_closed_writes_to_the_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("info", json=True)
    try:
        first.close()  # e.g. the output capture of whoever configured logging is gone
        now = io.StringIO()
        monkeypatch.setattr(sys, "stderr", now)
        logs.get_logger("rewardmiles.test").info("after_close", n=1)
        assert '"event":"after_close"' in now.getvalue()
    finally:
        monkeypatch.undo()
        logs.configure("info", json=True)
