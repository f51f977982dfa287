"""Verify a `transaction.settled` webhook before trusting it.

Header `Rewardmiles-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from rewardmiles_client._errors import RewardMilesError

SIGNATURE_HEADER = "Rewardmiles-Signature"


class WebhookVerificationError(RewardMilesError):
    """The signature is missing, malformed, wrong, or too old."""


def verify_webhook(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check the signature of the raw request body and return the parsed event.

    Pass the body bytes exactly as received (before any JSON parsing). Raises
    `WebhookVerificationError` when the signature is absent, does not match, or its timestamp
    is more than `tolerance_seconds` away from `now` (default: the current time).
    """
    header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    if not header:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookVerificationError("malformed signature timestamp") from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookVerificationError("malformed signature header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("signature timestamp outside the tolerance")
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookVerificationError("signature does not match")
    try:
        event = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookVerificationError("payload is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("payload is not a JSON object")
    return event
