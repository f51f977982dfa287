"""Partner write calls run in-process through the same service the HTTP routes call."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.idempotency.service import InFlightRegistry
from rewardmiles.issuance import service
from rewardmiles.issuance.schemas import PostEventRequest, ReverseEventRequest, event_command
from rewardmiles.web import canonical_json

_REGISTRY = InFlightRegistry()


def call(
    db: Database,
    settings: Settings,
    body: dict[str, Any],
    *,
    reverse: bool = False,
    now: datetime | None = None,
) -> service.Outcome:
    model = ReverseEventRequest if reverse else PostEventRequest
    request = model.model_validate(
        body, context={"miles_per_line_max": settings.miles_per_line_max}
    )
    canonical = canonical_json(body)
    outcome_call = service.PartnerCall(
        endpoint=service.Endpoint.REVERSE_EVENT if reverse else service.Endpoint.POST_EVENT,
        client_id="in-process",
        command=event_command(request),
        request_json=canonical.decode(),
        fingerprint=secrets.token_hex(16),
        idempotency_key=None,
        request_id="test",
    )
    return service.execute(
        db, settings, _REGISTRY, outcome_call, now=(lambda: now) if now else clock.utc_now
    )
