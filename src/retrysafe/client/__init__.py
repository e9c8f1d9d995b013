"""The retrysafe SDK: sync and async httpx clients that retry only where it is safe."""

from __future__ import annotations

from ._async_client import AsyncClient, AsyncClientWithRawResponse
from ._base import DEFAULT_TIMEOUT, NOT_GIVEN, CallOptions, LargeBodyPolicy, NotGiven
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
from ._retry import RetrySettings

__all__ = [
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
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
    "NotGiven",
    "Paginator",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Quota",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "RawResponse",
    "ResponseMetadata",
    "RetrySettings",
    "RetrysafeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "Verification",
]
