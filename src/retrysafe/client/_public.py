"""The client's everyday names: what ``import retrysafe`` offers, declared once.

``retrysafe`` re-exports exactly these; ``retrysafe.client`` adds its lower-level
ones (``DEFAULT_TIMEOUT``, ``NOT_GIVEN``, ``NotGiven``, ``RetrySettings``).
"""

from __future__ import annotations

from ._async_client import AsyncClient, AsyncClientWithRawResponse
from ._base import CallOptions, LargeBodyPolicy
from ._client import Client, ClientWithRawResponse
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
from ._metadata import Quota, RateLimit, RawResponse, ResponseMetadata
from ._models import Account, Document, Inquiry, InquiryStatus, Verification
from ._pagination import AsyncPaginator, Paginator

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "Account",
    "AsyncClient",
    "AsyncClientWithRawResponse",
    "AsyncPaginator",
    "AuthenticationError",
    "BadRequestError",
    "CallOptions",
    "Client",
    "ClientWithRawResponse",
    "ConflictError",
    "Document",
    "ErrorDetail",
    "IdempotencyInProgressError",
    "IdempotencyMismatchError",
    "Inquiry",
    "InquiryStatus",
    "InvalidStateTransitionError",
    "LargeBodyPolicy",
    "NotFoundError",
    "Paginator",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Quota",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "RawResponse",
    "ResponseMetadata",
    "RetrysafeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "Verification",
]
