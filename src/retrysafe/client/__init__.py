"""The retrysafe SDK: sync and async httpx clients that retry only where it is safe."""

from __future__ import annotations

from ._async_client import AsyncClient
from ._base import DEFAULT_TIMEOUT, NOT_GIVEN, NotGiven
from ._client import Client
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ErrorDetail,
    IdempotencyInProgressError,
    IdempotencyMismatchError,
    InvalidStateTransitionError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    RetrysafeError,
    ServerError,
    ServiceUnavailableError,
    UnexpectedResponseError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)
from ._models import Account, Document, Inquiry, InquiryStatus, Verification
from ._pagination import AsyncPaginator, Paginator
from ._retry import RetrySettings

__all__ = [
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "Account",
    "AsyncClient",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Document",
    "ErrorDetail",
    "IdempotencyInProgressError",
    "IdempotencyMismatchError",
    "Inquiry",
    "InquiryStatus",
    "InvalidStateTransitionError",
    "NotFoundError",
    "NotGiven",
    "Paginator",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetrySettings",
    "RetrysafeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "Verification",
]
