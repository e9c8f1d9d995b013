"""The API's resources (accounts, inquiries, documents, verifications) for both clients.

Each operation is described once, as a :class:`Call` built by a plain
function; the sync and async resource classes only hand that description to
their client's retry loop. So the request a method sends, and how its answer
is parsed, cannot differ between ``Client`` and ``AsyncClient``.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import quote

from ._base import NOT_GIVEN, Call, NotGiven
from ._errors import UnexpectedResponseError
from ._models import Account, Document, Inquiry, Model, Verification, parse_resource
from ._pagination import AsyncPaginator, Page, Paginator, parse_page
from ._streams import DownloadSink, MultipartUpload

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client

__all__ = [
    "Accounts",
    "AsyncAccounts",
    "AsyncDocuments",
    "AsyncInquiries",
    "AsyncVerifications",
    "Documents",
    "Inquiries",
    "Verifications",
]

T = TypeVar("T")

FileSource = str | os.PathLike[str] | BinaryIO
"""What an upload reads from: a path (opened and closed by the client) or a binary file object."""


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


def create_account(attributes: Mapping[str, Any], key: str | None) -> Call[Account]:
    return Call("POST", "accounts", _one(Account), json=_body(attributes), idempotency_key=key)


def retrieve_account(account_id: str) -> Call[Account]:
    return Call("GET", f"accounts/{_segment(account_id)}", _one(Account))


def update_account(
    account_id: str, attributes: Mapping[str, Any], key: str | None
) -> Call[Account]:
    return Call(
        "PATCH",
        f"accounts/{_segment(account_id)}",
        _one(Account),
        json=_body(attributes),
        idempotency_key=key,
    )


def list_accounts(params: Mapping[str, str]) -> Call[Page[Account]]:
    return Call("GET", "accounts", _list(Account), params=params)


def create_inquiry(attributes: Mapping[str, Any], key: str | None) -> Call[Inquiry]:
    return Call("POST", "inquiries", _one(Inquiry), json=_body(attributes), idempotency_key=key)


def retrieve_inquiry(inquiry_id: str) -> Call[Inquiry]:
    return Call("GET", f"inquiries/{_segment(inquiry_id)}", _one(Inquiry))


def list_inquiries(params: Mapping[str, str]) -> Call[Page[Inquiry]]:
    return Call("GET", "inquiries", _list(Inquiry), params=params)


def transition_inquiry(inquiry_id: str, action: str, key: str | None) -> Call[Inquiry]:
    return Call(
        "POST", f"inquiries/{_segment(inquiry_id)}/{action}", _one(Inquiry), idempotency_key=key
    )


def upload_document(inquiry_id: str, upload: MultipartUpload, key: str | None) -> Call[Document]:
    return Call(
        "POST",
        f"inquiries/{_segment(inquiry_id)}/documents",
        _one(Document),
        upload=upload,
        idempotency_key=key,
    )


def retrieve_document(document_id: str) -> Call[Document]:
    return Call("GET", f"documents/{_segment(document_id)}", _one(Document))


def download_document(document_id: str, sink: DownloadSink) -> Call[int]:
    return Call("GET", f"documents/{_segment(document_id)}/content", int, download=sink)


def create_verification(inquiry_id: str, kind: str | None, key: str | None) -> Call[Verification]:
    body = _body({"kind": kind}) if kind is not None else None
    return Call(
        "POST",
        f"inquiries/{_segment(inquiry_id)}/verifications",
        _one(Verification),
        json=body,
        idempotency_key=key,
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


# -- sync resources -----------------------------------------------------------------------


class Accounts:
    """``client.accounts``: people, grouped by your ``reference_id``."""

    def __init__(self, client: Client) -> None:
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
    ) -> Account:
        """Create an account; a ``reference_id`` already used raises :class:`ConflictError`.

        Arguments left as ``None`` are not sent. ``idempotency_key`` defaults
        to a fresh uuid4, reused by every retry of this call.
        """
        attributes = _given(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        return self._client._execute(create_account(attributes, idempotency_key))

    def retrieve(self, account_id: str) -> Account:
        return self._client._execute(retrieve_account(account_id))

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
    ) -> Account:
        """Change the attributes passed (``None`` clears one); the others stay as they are."""
        attributes = _changed(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        return self._client._execute(update_account(account_id, attributes, idempotency_key))

    def list(
        self, *, reference_id: str | None = None, page_size: int | None = None
    ) -> Paginator[Account]:
        """Every account (newest first), optionally only the one with ``reference_id``."""
        params = _list_params(page_size, reference_id=reference_id)
        return Paginator(lambda page: self._client._execute(list_accounts(page)), params)


class Inquiries:
    """``client.inquiries``: identity checks and their state transitions."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        reference_id: str | None = None,
        account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inquiry:
        """Start an inquiry for ``account_id``, or for the account with ``reference_id``.

        With ``reference_id`` the server creates that account if needed and
        otherwise joins it, so inquiries re-created after an indeterminate
        failure still group under one account.
        """
        attributes = _given(reference_id=reference_id, account_id=account_id)
        return self._client._execute(create_inquiry(attributes, idempotency_key))

    def retrieve(self, inquiry_id: str) -> Inquiry:
        return self._client._execute(retrieve_inquiry(inquiry_id))

    def list(
        self,
        *,
        reference_id: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
    ) -> Paginator[Inquiry]:
        params = _list_params(page_size, reference_id=reference_id, status=status)
        return Paginator(lambda page: self._client._execute(list_inquiries(page)), params)

    def complete(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        """created → completed."""
        return self._client._execute(transition_inquiry(inquiry_id, "complete", idempotency_key))

    def approve(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        """completed → approved."""
        return self._client._execute(transition_inquiry(inquiry_id, "approve", idempotency_key))

    def decline(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        """completed → declined."""
        return self._client._execute(transition_inquiry(inquiry_id, "decline", idempotency_key))

    def expire(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        """created or completed → expired."""
        return self._client._execute(transition_inquiry(inquiry_id, "expire", idempotency_key))


class Documents:
    """``client.documents``: files attached to inquiries, streamed both ways."""

    def __init__(self, client: Client) -> None:
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
    ) -> Document:
        """Attach a file to an inquiry, streamed as multipart/form-data (never read whole).

        A file object is read from its current offset and left open; a
        retry re-reads it from that offset, so it must be seekable for the
        upload to be retried once sending began.
        """
        with _opened_upload(
            file, kind=kind, filename=filename, content_type=content_type
        ) as upload:
            return self._client._execute(upload_document(inquiry_id, upload, idempotency_key))

    def retrieve(self, document_id: str) -> Document:
        return self._client._execute(retrieve_document(document_id))

    def download(self, document_id: str, destination: str | os.PathLike[str] | BinaryIO) -> int:
        """Stream the file's content to ``destination``; returns the number of bytes written.

        A path is replaced atomically once the whole file arrived; a file
        object is written from its current offset.
        """
        return self._client._execute(download_document(document_id, DownloadSink(destination)))


class Verifications:
    """``client.verifications``: checks of an inquiry against the upstream provider."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, inquiry_id: str, *, kind: str | None = None, idempotency_key: str | None = None
    ) -> Verification:
        """Run a verification; a provider failure or timeout is a :class:`ServerError` (502/504)."""
        return self._client._execute(create_verification(inquiry_id, kind, idempotency_key))


# -- async resources (same calls, awaited) ------------------------------------------------


class AsyncAccounts:
    """``client.accounts`` of :class:`AsyncClient`; see :class:`Accounts`."""

    def __init__(self, client: AsyncClient) -> None:
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
    ) -> Account:
        attributes = _given(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        return await self._client._execute(create_account(attributes, idempotency_key))

    async def retrieve(self, account_id: str) -> Account:
        return await self._client._execute(retrieve_account(account_id))

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
    ) -> Account:
        attributes = _changed(
            reference_id=reference_id,
            name_first=name_first,
            name_last=name_last,
            email_address=email_address,
            birthdate=birthdate,
        )
        return await self._client._execute(update_account(account_id, attributes, idempotency_key))

    def list(
        self, *, reference_id: str | None = None, page_size: int | None = None
    ) -> AsyncPaginator[Account]:
        params = _list_params(page_size, reference_id=reference_id)
        return AsyncPaginator(lambda page: self._client._execute(list_accounts(page)), params)


class AsyncInquiries:
    """``client.inquiries`` of :class:`AsyncClient`; see :class:`Inquiries`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        reference_id: str | None = None,
        account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inquiry:
        attributes = _given(reference_id=reference_id, account_id=account_id)
        return await self._client._execute(create_inquiry(attributes, idempotency_key))

    async def retrieve(self, inquiry_id: str) -> Inquiry:
        return await self._client._execute(retrieve_inquiry(inquiry_id))

    def list(
        self,
        *,
        reference_id: str | None = None,
        status: str | None = None,
        page_size: int | None = None,
    ) -> AsyncPaginator[Inquiry]:
        params = _list_params(page_size, reference_id=reference_id, status=status)
        return AsyncPaginator(lambda page: self._client._execute(list_inquiries(page)), params)

    async def complete(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        return await self._client._execute(
            transition_inquiry(inquiry_id, "complete", idempotency_key)
        )

    async def approve(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        return await self._client._execute(
            transition_inquiry(inquiry_id, "approve", idempotency_key)
        )

    async def decline(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        return await self._client._execute(
            transition_inquiry(inquiry_id, "decline", idempotency_key)
        )

    async def expire(self, inquiry_id: str, *, idempotency_key: str | None = None) -> Inquiry:
        return await self._client._execute(
            transition_inquiry(inquiry_id, "expire", idempotency_key)
        )


class AsyncDocuments:
    """``client.documents`` of :class:`AsyncClient`; see :class:`Documents`."""

    def __init__(self, client: AsyncClient) -> None:
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
    ) -> Document:
        with _opened_upload(
            file, kind=kind, filename=filename, content_type=content_type
        ) as upload:
            return await self._client._execute(upload_document(inquiry_id, upload, idempotency_key))

    async def retrieve(self, document_id: str) -> Document:
        return await self._client._execute(retrieve_document(document_id))

    async def download(
        self, document_id: str, destination: str | os.PathLike[str] | BinaryIO
    ) -> int:
        return await self._client._execute(
            download_document(document_id, DownloadSink(destination))
        )


class AsyncVerifications:
    """``client.verifications`` of :class:`AsyncClient`; see :class:`Verifications`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, inquiry_id: str, *, kind: str | None = None, idempotency_key: str | None = None
    ) -> Verification:
        return await self._client._execute(create_verification(inquiry_id, kind, idempotency_key))
