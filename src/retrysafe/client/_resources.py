"""The API's resources (accounts, inquiries, documents, verifications) for both clients.

Each operation is described once, as a :class:`Call` built by a plain
function; the sync and async resource classes only hand that description to
their client's retry loop. So the request a method sends, and how its answer
is parsed, cannot differ between ``Client`` and ``AsyncClient``. The
``…WithRawResponse`` views are the same methods returning
:class:`RawResponse` instead (``client.with_raw_response.accounts.create``).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, Protocol, TypeVar, Unpack, cast
from urllib.parse import quote

from ._base import NOT_GIVEN, Call, CallOptions, NotGiven, check_call_options
from ._errors import UnexpectedResponseError
from ._metadata import RawResponse
from ._models import Account, Document, Inquiry, Model, Verification, parse_resource
from ._pagination import AsyncPaginator, Page, Paginator, parse_page
from ._streams import DownloadSink, MultipartUpload

__all__ = [
    "Accounts",
    "AccountsWithRawResponse",
    "AsyncAccounts",
    "AsyncAccountsWithRawResponse",
    "AsyncDocuments",
    "AsyncDocumentsWithRawResponse",
    "AsyncInquiries",
    "AsyncInquiriesWithRawResponse",
    "AsyncVerifications",
    "AsyncVerificationsWithRawResponse",
    "Documents",
    "DocumentsWithRawResponse",
    "Inquiries",
    "InquiriesWithRawResponse",
    "Verifications",
    "VerificationsWithRawResponse",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

FileSource = str | os.PathLike[str] | BinaryIO
"""What an upload reads from: a path (opened and closed by the client) or a binary file object."""


class Executor(Protocol):
    """What a sync resource needs of its client: run one call through the retry loop."""

    def _execute(self, call: Call[T]) -> T: ...


class AsyncExecutor(Protocol):
    """What an async resource needs of its client."""

    async def _execute(self, call: Call[T]) -> T: ...


class RawExecutor(Protocol):
    def _execute_raw(self, call: Call[T]) -> RawResponse[T]: ...


class AsyncRawExecutor(Protocol):
    async def _execute_raw(self, call: Call[T]) -> RawResponse[T]: ...


# -- request descriptions, shared by both clients ---------------------------------------


def _one(model: type[Model]) -> Callable[[Any], Model]:
    def parse(document: Any) -> Model:
        if not isinstance(document, Mapping) or "data" not in document:
            raise UnexpectedResponseError(
                f"expected a {model.__name__} document, got {document!r:.200}"
            )
        return parse_resource(model, document["data"])

    return parse


def _list(model: type[Model]) -> Callable[[Any], Page[Model]]:
    return lambda document: parse_page(model, document)


def _only(model: type[Model], reference_id: str) -> Callable[[Any], Model]:
    """The single item of a list filtered by ``reference_id``: how a duplicate is looked up."""

    def parse(document: Any) -> Model:
        items = parse_page(model, document).items
        if len(items) != 1:
            raise UnexpectedResponseError(
                f"409 duplicate_resource, but {len(items)} {model.__name__.lower()}s have"
                f" reference_id {reference_id!r}"
            )
        return items[0]

    return parse


def _segment(resource_id: str) -> str:
    # An id is one path segment: a "/" or "?" in it must not reach another route.
    return quote(resource_id, safe="")


def _body(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "data": {"attributes": {name: _json_value(value) for name, value in attributes.items()}}
    }


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _given(**attributes: Any) -> dict[str, Any]:
    """The attributes the caller set: ``None`` on create means "leave it out"."""
    return {name: value for name, value in attributes.items() if value is not None}


def _changed(**attributes: Any) -> dict[str, Any]:
    """The attributes the caller passed on update: ``None`` clears, ``NOT_GIVEN`` leaves alone."""
    return {name: value for name, value in attributes.items() if not isinstance(value, NotGiven)}


def _list_params(page_size: int | None, **filters: str | None) -> dict[str, str]:
    params = {f"filter[{name}]": value for name, value in filters.items() if value is not None}
    if page_size is not None:
        params["page[size]"] = str(page_size)
    return params


def create_account(
    attributes: Mapping[str, Any], key: str | None, options: CallOptions
) -> Call[Account]:
    reference_id = attributes.get("reference_id")
    lookup = None
    if isinstance(reference_id, str):
        lookup = Call(
            "GET",
            "accounts",
            _only(Account, reference_id),
            params={"filter[reference_id]": reference_id},
            options=_lookup_options(options),
        )
    return Call(
        "POST",
        "accounts",
        _one(Account),
        json=_body(attributes),
        idempotency_key=key,
        form=True,
        # A second execution under a new key is refused as a duplicate of the first
        # (409), which the lookup resolves to the account the first one made.
        regroupable=lookup is not None,
        on_duplicate=lookup,
        options=options,
    )


def _lookup_options(options: CallOptions) -> CallOptions:
    """The follow-up read of a create keeps the caller's headers and timeout, nothing else."""
    kept = CallOptions()
    if "timeout" in options:
        kept["timeout"] = options["timeout"]
    if "extra_headers" in options:
        kept["extra_headers"] = options["extra_headers"]
    return kept


def retrieve_account(account_id: str, options: CallOptions) -> Call[Account]:
    return Call("GET", f"accounts/{_segment(account_id)}", _one(Account), options=options)


def update_account(
    account_id: str, attributes: Mapping[str, Any], key: str | None, options: CallOptions
) -> Call[Account]:
    return Call(
        "PATCH",
        f"accounts/{_segment(account_id)}",
        _one(Account),
        json=_body(attributes),
        idempotency_key=key,
        options=options,
    )


def list_accounts(params: Mapping[str, str], options: CallOptions) -> Call[Page[Account]]:
    return Call("GET", "accounts", _list(Account), params=params, options=options)


def create_inquiry(
    attributes: Mapping[str, Any], key: str | None, options: CallOptions
) -> Call[Inquiry]:
    return Call(
        "POST",
        "inquiries",
        _one(Inquiry),
        json=_body(attributes),
        idempotency_key=key,
        form=True,
        # With a reference_id a re-created inquiry joins the same account (SPEC §4).
        regroupable="reference_id" in attributes,
        options=options,
    )


def retrieve_inquiry(inquiry_id: str, options: CallOptions) -> Call[Inquiry]:
    return Call("GET", f"inquiries/{_segment(inquiry_id)}", _one(Inquiry), options=options)


def list_inquiries(params: Mapping[str, str], options: CallOptions) -> Call[Page[Inquiry]]:
    return Call("GET", "inquiries", _list(Inquiry), params=params, options=options)


def transition_inquiry(
    inquiry_id: str, action: str, key: str | None, options: CallOptions
) -> Call[Inquiry]:
    return Call(
        "POST",
        f"inquiries/{_segment(inquiry_id)}/{action}",
        _one(Inquiry),
        idempotency_key=key,
        options=options,
    )


def upload_document(
    inquiry_id: str, upload: MultipartUpload, key: str | None, options: CallOptions
) -> Call[Document]:
    return Call(
        "POST",
        f"inquiries/{_segment(inquiry_id)}/documents",
        _one(Document),
        upload=upload,
        idempotency_key=key,
        options=options,
    )


def retrieve_document(document_id: str, options: CallOptions) -> Call[Document]:
    return Call("GET", f"documents/{_segment(document_id)}", _one(Document), options=options)


def download_document(document_id: str, sink: DownloadSink, options: CallOptions) -> Call[int]:
    return Call(
        "GET", f"documents/{_segment(document_id)}/content", int, download=sink, options=options
    )


def create_verification(
    inquiry_id: str, kind: str | None, key: str | None, options: CallOptions
) -> Call[Verification]:
    body = _body({"kind": kind}) if kind is not None else None
    return Call(
        "POST",
        f"inquiries/{_segment(inquiry_id)}/verifications",
        _one(Verification),
        json=body,
        idempotency_key=key,
        form=True,
        # Never regroupable: every execution is a real check at the provider.
        options=options,
    )


@contextmanager
def _opened_upload(
    file: FileSource, *, kind: str | None, filename: str | None, content_type: str | None
) -> Iterator[MultipartUpload]:
    """A streaming multipart body over ``file``; a path is opened here and closed afterwards."""
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        with path.open("rb") as opened:
            yield _multipart(
                opened, path.name, kind=kind, filename=filename, content_type=content_type
            )
        return
    default_name = Path(str(getattr(file, "name", "upload"))).name
    yield _multipart(file, default_name, kind=kind, filename=filename, content_type=content_type)


def _multipart(
    file: BinaryIO,
    default_name: str,
    *,
    kind: str | None,
    filename: str | None,
    content_type: str | None,
) -> MultipartUpload:
    name = filename or default_name
    guessed = mimetypes.guess_type(name)[0]
    return MultipartUpload(
        file=file,
        filename=name,
        content_type=content_type or guessed or "application/octet-stream",
        fields=[("kind", kind)] if kind is not None else [],
    )


def _opts(options: Mapping[str, Any]) -> CallOptions:
    return check_call_options(dict(options))


# -- sync resources -----------------------------------------------------------------------


class Accounts:
    """``client.accounts``: people, grouped by your ``reference_id``.

    Every method also takes the per-call options of :class:`CallOptions`
    (``timeout``, ``max_retries``, ``deadline``, ``retry_server_errors``,
    ``extra_headers``).
    """

    def __init__(self, client: Executor) -> None:
        self._client = client

    def create(
        self,
        *,
        reference_id: str | None = None,
        name_first: str | None = None,
        name_last: str | None = None,
        email_address: str | None = None,
        birthdate: date | str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Account:
        """Create an account; a ``reference_id`` already used raises :class:`ConflictError`.

        Arguments left as ``None`` are not sent. ``idempotency_key`` defaults
        to a fresh uuid4, reused by every retry of this call. When a retry
        under a new key (``retry_server_errors``) meets the account an earlier
        attempt created, that account is returned instead of a conflict.
        """
        attributes = _given(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        return self._client._execute(create_account(attributes, idempotency_key, _opts(options)))

    def retrieve(self, account_id: str, **options: Unpack[CallOptions]) -> Account:
        return self._client._execute(retrieve_account(account_id, _opts(options)))

    def update(
        self,
        account_id: str,
        *,
        reference_id: str | NotGiven | None = NOT_GIVEN,
        name_first: str | NotGiven | None = NOT_GIVEN,
        name_last: str | NotGiven | None = NOT_GIVEN,
        email_address: str | NotGiven | None = NOT_GIVEN,
        birthdate: date | str | NotGiven | None = NOT_GIVEN,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Account:
        """Change the attributes passed (``None`` clears one); the others stay as they are."""
        attributes = _changed(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        call = update_account(account_id, attributes, idempotency_key, _opts(options))
        return self._client._execute(call)

    def list(
        self,
        *,
        reference_id: str | None = None,
        page_size: int | None = None,
        **options: Unpack[CallOptions],
    ) -> Paginator[Account]:
        """Every account (newest first), optionally only the one with ``reference_id``."""
        params = _list_params(page_size, reference_id=reference_id)
        checked = _opts(options)
        return Paginator(lambda page: self._client._execute(list_accounts(page, checked)), params)


class Inquiries:
    """``client.inquiries``: identity checks and their state transitions."""

    def __init__(self, client: Executor) -> None:
        self._client = client

    def create(
        self,
        *,
        reference_id: str | None = None,
        account_id: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Inquiry:
        """Start an inquiry for ``account_id``, or for the account with ``reference_id``.

        With ``reference_id`` the server creates that account if needed and
        otherwise joins it, so inquiries re-created after a server error
        still group under one account.
        """
        attributes = _given(reference_id=reference_id, account_id=account_id)
        return self._client._execute(create_inquiry(attributes, idempotency_key, _opts(options)))

    def retrieve(self, inquiry_id: str, **options: Unpack[CallOptions]) -> Inquiry:
        return self._client._execute(retrieve_inquiry(inquiry_id, _opts(options)))

    def list(
        self,
        *,
        reference_id: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
        **options: Unpack[CallOptions],
    ) -> Paginator[Inquiry]:
        params = _list_params(page_size, reference_id=reference_id, status=status)
        checked = _opts(options)
        return Paginator(lambda page: self._client._execute(list_inquiries(page, checked)), params)

    def complete(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        """created → completed."""
        call = transition_inquiry(inquiry_id, "complete", idempotency_key, _opts(options))
        return self._client._execute(call)

    def approve(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        """completed → approved."""
        call = transition_inquiry(inquiry_id, "approve", idempotency_key, _opts(options))
        return self._client._execute(call)

    def decline(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        """completed → declined."""
        call = transition_inquiry(inquiry_id, "decline", idempotency_key, _opts(options))
        return self._client._execute(call)

    def expire(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        """created or completed → expired."""
        call = transition_inquiry(inquiry_id, "expire", idempotency_key, _opts(options))
        return self._client._execute(call)


class Documents:
    """``client.documents``: files attached to inquiries, streamed both ways."""

    def __init__(self, client: Executor) -> None:
        self._client = client

    def upload(
        self,
        inquiry_id: str,
        file: FileSource,
        *,
        kind: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Document:
        """Attach a file to an inquiry, streamed as multipart/form-data (never read whole).

        A file object is read from its current offset and left open; a
        retry re-reads it from that offset, so it must be seekable for the
        upload to be retried once sending began.
        """
        checked = _opts(options)
        with _opened_upload(
            file, kind=kind, filename=filename, content_type=content_type
        ) as upload:
            return self._client._execute(
                upload_document(inquiry_id, upload, idempotency_key, checked)
            )

    def retrieve(self, document_id: str, **options: Unpack[CallOptions]) -> Document:
        return self._client._execute(retrieve_document(document_id, _opts(options)))

    def download(
        self,
        document_id: str,
        destination: str | os.PathLike[str] | BinaryIO,
        **options: Unpack[CallOptions],
    ) -> int:
        """Stream the file's content to ``destination``; returns the number of bytes written.

        A path is replaced atomically once the whole file arrived and matched
        the server's length and SHA-256; a file object is written from its
        current offset. A cut transfer resumes where it stopped (``Range``).
        """
        sink = DownloadSink(destination)
        return self._client._execute(download_document(document_id, sink, _opts(options)))


class Verifications:
    """``client.verifications``: checks of an inquiry against the upstream provider."""

    def __init__(self, client: Executor) -> None:
        self._client = client

    def create(
        self,
        inquiry_id: str,
        *,
        kind: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Verification:
        """Run a verification; a provider failure or timeout is a :class:`ServerError` (502/504).

        The client-wide ``retry_server_errors`` never applies here: each new key
        would be another real check at the provider.
        """
        call = create_verification(inquiry_id, kind, idempotency_key, _opts(options))
        return self._client._execute(call)


# -- async resources (same calls, awaited) ------------------------------------------------


class AsyncAccounts:
    """``client.accounts`` of :class:`AsyncClient`; see :class:`Accounts`."""

    def __init__(self, client: AsyncExecutor) -> None:
        self._client = client

    async def create(
        self,
        *,
        reference_id: str | None = None,
        name_first: str | None = None,
        name_last: str | None = None,
        email_address: str | None = None,
        birthdate: date | str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Account:
        attributes = _given(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        call = create_account(attributes, idempotency_key, _opts(options))
        return await self._client._execute(call)

    async def retrieve(self, account_id: str, **options: Unpack[CallOptions]) -> Account:
        return await self._client._execute(retrieve_account(account_id, _opts(options)))

    async def update(
        self,
        account_id: str,
        *,
        reference_id: str | NotGiven | None = NOT_GIVEN,
        name_first: str | NotGiven | None = NOT_GIVEN,
        name_last: str | NotGiven | None = NOT_GIVEN,
        email_address: str | NotGiven | None = NOT_GIVEN,
        birthdate: date | str | NotGiven | None = NOT_GIVEN,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Account:
        attributes = _changed(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        call = update_account(account_id, attributes, idempotency_key, _opts(options))
        return await self._client._execute(call)

    def list(
        self,
        *,
        reference_id: str | None = None,
        page_size: int | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncPaginator[Account]:
        params = _list_params(page_size, reference_id=reference_id)
        checked = _opts(options)
        return AsyncPaginator(
            lambda page: self._client._execute(list_accounts(page, checked)), params
        )


class AsyncInquiries:
    """``client.inquiries`` of :class:`AsyncClient`; see :class:`Inquiries`."""

    def __init__(self, client: AsyncExecutor) -> None:
        self._client = client

    async def create(
        self,
        *,
        reference_id: str | None = None,
        account_id: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Inquiry:
        attributes = _given(reference_id=reference_id, account_id=account_id)
        call = create_inquiry(attributes, idempotency_key, _opts(options))
        return await self._client._execute(call)

    async def retrieve(self, inquiry_id: str, **options: Unpack[CallOptions]) -> Inquiry:
        return await self._client._execute(retrieve_inquiry(inquiry_id, _opts(options)))

    def list(
        self,
        *,
        reference_id: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
        **options: Unpack[CallOptions],
    ) -> AsyncPaginator[Inquiry]:
        params = _list_params(page_size, reference_id=reference_id, status=status)
        checked = _opts(options)
        return AsyncPaginator(
            lambda page: self._client._execute(list_inquiries(page, checked)), params
        )

    async def complete(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        call = transition_inquiry(inquiry_id, "complete", idempotency_key, _opts(options))
        return await self._client._execute(call)

    async def approve(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        call = transition_inquiry(inquiry_id, "approve", idempotency_key, _opts(options))
        return await self._client._execute(call)

    async def decline(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        call = transition_inquiry(inquiry_id, "decline", idempotency_key, _opts(options))
        return await self._client._execute(call)

    async def expire(
        self, inquiry_id: str, *, idempotency_key: str | None = None, **options: Unpack[CallOptions]
    ) -> Inquiry:
        call = transition_inquiry(inquiry_id, "expire", idempotency_key, _opts(options))
        return await self._client._execute(call)


class AsyncDocuments:
    """``client.documents`` of :class:`AsyncClient`; see :class:`Documents`."""

    def __init__(self, client: AsyncExecutor) -> None:
        self._client = client

    async def upload(
        self,
        inquiry_id: str,
        file: FileSource,
        *,
        kind: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Document:
        checked = _opts(options)
        with _opened_upload(
            file, kind=kind, filename=filename, content_type=content_type
        ) as upload:
            return await self._client._execute(
                upload_document(inquiry_id, upload, idempotency_key, checked)
            )

    async def retrieve(self, document_id: str, **options: Unpack[CallOptions]) -> Document:
        return await self._client._execute(retrieve_document(document_id, _opts(options)))

    async def download(
        self,
        document_id: str,
        destination: str | os.PathLike[str] | BinaryIO,
        **options: Unpack[CallOptions],
    ) -> int:
        sink = DownloadSink(destination)
        return await self._client._execute(download_document(document_id, sink, _opts(options)))


class AsyncVerifications:
    """``client.verifications`` of :class:`AsyncClient`; see :class:`Verifications`."""

    def __init__(self, client: AsyncExecutor) -> None:
        self._client = client

    async def create(
        self,
        inquiry_id: str,
        *,
        kind: str | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[CallOptions],
    ) -> Verification:
        call = create_verification(inquiry_id, kind, idempotency_key, _opts(options))
        return await self._client._execute(call)


# -- raw-response views ---------------------------------------------------------------------


class _Raw:
    """Runs calls through a client's loop but hands back the :class:`RawResponse`."""

    def __init__(self, client: RawExecutor) -> None:
        self._client = client

    def _execute(self, call: Call[T]) -> T:
        # The resource methods are typed for results; the view re-types them (see _raw).
        return cast(T, self._client._execute_raw(call))


class _AsyncRaw:
    def __init__(self, client: AsyncRawExecutor) -> None:
        self._client = client

    async def _execute(self, call: Call[T]) -> T:
        return cast(T, await self._client._execute_raw(call))


def _raw(method: Callable[P, R]) -> Callable[P, RawResponse[R]]:
    """A resource method bound to a raw executor, typed for what it really returns."""
    return cast(Callable[P, RawResponse[R]], method)


def _araw(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[RawResponse[R]]]:
    return cast(Callable[P, Awaitable[RawResponse[R]]], method)


class AccountsWithRawResponse:
    """``client.with_raw_response.accounts``: the single-answer methods, returning RawResponse."""

    def __init__(self, client: RawExecutor) -> None:
        accounts = Accounts(_Raw(client))
        self.create = _raw(accounts.create)
        self.retrieve = _raw(accounts.retrieve)
        self.update = _raw(accounts.update)


class InquiriesWithRawResponse:
    def __init__(self, client: RawExecutor) -> None:
        inquiries = Inquiries(_Raw(client))
        self.create = _raw(inquiries.create)
        self.retrieve = _raw(inquiries.retrieve)
        self.complete = _raw(inquiries.complete)
        self.approve = _raw(inquiries.approve)
        self.decline = _raw(inquiries.decline)
        self.expire = _raw(inquiries.expire)


class DocumentsWithRawResponse:
    def __init__(self, client: RawExecutor) -> None:
        documents = Documents(_Raw(client))
        self.upload = _raw(documents.upload)
        self.retrieve = _raw(documents.retrieve)
        self.download = _raw(documents.download)


class VerificationsWithRawResponse:
    def __init__(self, client: RawExecutor) -> None:
        self.create = _raw(Verifications(_Raw(client)).create)


class AsyncAccountsWithRawResponse:
    def __init__(self, client: AsyncRawExecutor) -> None:
        accounts = AsyncAccounts(_AsyncRaw(client))
        self.create = _araw(accounts.create)
        self.retrieve = _araw(accounts.retrieve)
        self.update = _araw(accounts.update)


class AsyncInquiriesWithRawResponse:
    def __init__(self, client: AsyncRawExecutor) -> None:
        inquiries = AsyncInquiries(_AsyncRaw(client))
        self.create = _araw(inquiries.create)
        self.retrieve = _araw(inquiries.retrieve)
        self.complete = _araw(inquiries.complete)
        self.approve = _araw(inquiries.approve)
        self.decline = _araw(inquiries.decline)
        self.expire = _araw(inquiries.expire)


class AsyncDocumentsWithRawResponse:
    def __init__(self, client: AsyncRawExecutor) -> None:
        documents = AsyncDocuments(_AsyncRaw(client))
        self.upload = _araw(documents.upload)
        self.retrieve = _araw(documents.retrieve)
        self.download = _araw(documents.download)


class AsyncVerificationsWithRawResponse:
    def __init__(self, client: AsyncRawExecutor) -> None:
        self.create = _araw(AsyncVerifications(_AsyncRaw(client)).create)
