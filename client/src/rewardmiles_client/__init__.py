"""Partner SDK for the rewardmiles Issuance API."""

from rewardmiles_client._client import AsyncIssuanceClient, IssuanceClient
from rewardmiles_client._errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    ProblemError,
    RewardMilesError,
    ServerError,
    TransportError,
)
from rewardmiles_client._models import (
    BasketRequest,
    EventRequest,
    IssuanceResult,
    Item,
    Line,
    LineResult,
    ProgramBasketRequest,
)
from rewardmiles_client._retry import RetryPolicy
from rewardmiles_client.webhooks import WebhookVerificationError, verify_webhook

__version__ = "0.1.0"

__all__ = [
    "AsyncIssuanceClient",
    "AuthenticationError",
    "BadRequestError",
    "BasketRequest",
    "ConflictError",
    "EventRequest",
    "FieldError",
    "ForbiddenError",
    "IssuanceClient",
    "IssuanceResult",
    "Item",
    "Line",
    "LineResult",
    "NotFoundError",
    "ProblemError",
    "ProgramBasketRequest",
    "RetryPolicy",
    "RewardMilesError",
    "ServerError",
    "TransportError",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
