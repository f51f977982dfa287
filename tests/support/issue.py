"""Partner write calls run in-process through the same service the HTTP routes call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rewardmiles import clock
from rewardmiles.config import Settings
from rewardmiles.db.engine import Database
from rewardmiles.idempotency.service import InFlightRegistry, fingerprint
from rewardmiles.issuance import service
from rewardmiles.issuance.schemas import PostEventRequest, ReverseEventRequest, event_command
from rewardmiles.web import canonical_json

_REGISTRY = InFlightRegistry()
# The route paths whose fingerprint a call carries, as the HTTP route computes it: the same body
# sent again under a key is the same request (replayed), another body is another (refused).
_PATHS = {False: "/checkout/issuance/post/event", True: "/checkout/issuance/reverse/event"}


def call(
    db: Database,
    settings: Settings,
    body: dict[str, Any],
    *,
    reverse: bool = False,
    now: datetime | None = None,
    idempotency_key: str | None = None,
    registry: InFlightRegistry | None = None,
    client_id: str = "in-process",
) -> service.Outcome:
    """`body` as a POST/EVENT (or, with `reverse`, a REVERSE/EVENT) call of `client_id`, at `now`
    (default: the real clock), under `idempotency_key` if given, in flight in `registry` (default:
    one shared by the calls that name none)."""
    model = ReverseEventRequest if reverse else PostEventRequest
    request = model.model_validate(
        body, context={"miles_per_line_max": settings.miles_per_line_max}
    )
    canonical = canonical_json(body)
    outcome_call = service.PartnerCall(
        endpoint=service.Endpoint.REVERSE_EVENT if reverse else service.Endpoint.POST_EVENT,
        client_id=client_id,
        command=event_command(request),
        request_json=canonical.decode(),
        fingerprint=fingerprint("POST", _PATHS[reverse], canonical),
        idempotency_key=idempotency_key,
        request_id="test",
    )
    return service.execute(
        db,
        settings,
        registry or _REGISTRY,
        outcome_call,
        now=(lambda: now) if now else clock.utc_now,
    )
