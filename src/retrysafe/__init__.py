"""retrysafe: make HTTP APIs safe to retry.

This module exports the client SDK only, so ``from retrysafe import Client``
works in a process that never serves: it imports httpx and
``retrysafe.client``, never the server's frameworks. The server lives in
``retrysafe.pipeline``, ``retrysafe.service`` and ``retrysafe.cli``.
"""

from __future__ import annotations

from retrysafe.client import (
    Account,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncPaginator,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    Document,
    ErrorDetail,
    IdempotencyInProgressError,
    IdempotencyMismatchError,
    Inquiry,
    InquiryStatus,
    InvalidStateTransitionError,
    NotFoundError,
    Paginator,
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
    Verification,
)

__all__ = [
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
    "Paginator",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetrysafeError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "UnsupportedMediaTypeError",
    "Verification",
]
