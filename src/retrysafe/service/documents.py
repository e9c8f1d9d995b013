"""Documents: multipart uploads streamed to disk with size and SHA-256, metadata and content."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter
from sqlalchemy import bindparam, select
from sqlalchemy.engine import RowMapping
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from retrysafe import ids
from retrysafe.database import Database
from retrysafe.database.schema import documents, inquiries
from retrysafe.envelope import ApiError, FieldErrors
from retrysafe.service import openapi
from retrysafe.service.attributes import DOCUMENT, DOCUMENT_KIND
from retrysafe.service.bodies import (
    FilePart,
    MultipartReader,
    form_pointer,
    media_type,
    unsupported_media_type,
)
from retrysafe.service.scopes import require_scope
from retrysafe.service.serialization import Resource, created, resource, single, timestamp
from retrysafe.service.validation import check_value

FILE_PART = "file"
_KIND_FIELDS = ("kind", "data[attributes][kind]")
_ATTRIBUTES = DOCUMENT.names
COLUMNS = (documents.c.id, *(documents.c[name] for name in _ATTRIBUTES))

_INQUIRY_EXISTS = select(inquiries.c.id).where(
    inquiries.c.id == bindparam("inquiry"), inquiries.c.organization_id == bindparam("org")
)
_GET = select(*COLUMNS, documents.c.storage_path).where(
    documents.c.id == bindparam("document"), documents.c.organization_id == bindparam("org")
)
_INSERT = documents.insert()


def document_resource(values: Mapping[Any, Any]) -> Resource:
    return resource("document", values["id"], {name: values[name] for name in _ATTRIBUTES})


def not_found(document_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No document {document_id} exists in your organization.")


def _printable(value: str | None, limit: int = 255) -> str | None:
    """Client-chosen names, kept only as printable text that every database can store."""
    if value is None:
        return None
    return "".join(ch for ch in value if ch.isprintable())[:limit] or None


class DocumentUpload:
    """One upload's bytes on their way to ``<document_dir>/<document id>``.

    Data goes to a hidden partial file while its size and SHA-256 are computed
    (in a worker thread: hashing and writing would otherwise stall the event
    loop), and is renamed into place only when complete, so a crash or a
    refused upload never leaves a half-written file under a document's name.
    """

    def __init__(self, directory: Path, document_id: str) -> None:
        self.path = directory / document_id
        self._partial = directory / f".{document_id}.partial"
        self._file: IO[bytes] | None = None
        self._sha256 = hashlib.sha256()
        self.size = 0
        self.part: FilePart | None = None

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    async def write(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write, data)

    async def finish(self) -> None:
        await anyio.to_thread.run_sync(self._finish)

    def discard(self) -> None:
        """Drop whatever was written; synchronous so it also runs while being cancelled."""
        if self._file is None:
            return  # nothing was created
        self._file.close()
        # A failing clean-up must not mask the error that made us clean up.
        with contextlib.suppress(OSError):
            self._partial.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._partial.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._partial.open("xb")
        return self._file

    def _write(self, data: bytes) -> None:
        self._open().write(data)
        self._sha256.update(data)
        self.size += len(data)

    def _finish(self) -> None:
        file = self._open()  # an empty upload still gets its (empty) file
        file.flush()
        # The row that points at this file may commit right after: make the bytes
        # durable first, so the database never names a file a power cut could lose.
        os.fsync(file.fileno())
        file.close()
        os.replace(self._partial, self.path)


def documents_router(db: Database, directory: Path) -> APIRouter:
    """The document endpoints; contents live under ``directory`` (``--document-dir``)."""
    router = APIRouter(tags=["documents"])
    document_path_id = openapi.path_parameter("document_id", "A document id (doc_…).")

    @router.post(
        "/inquiries/{inquiry_id}/documents",
        summary="Upload a document to an inquiry",
        description="multipart/form-data with the part `file` (any size up to --max-upload,"
        " streamed to storage) and optionally `kind`.",
        **openapi.operation(
            name="documents_create",
            status=201,
            schema="DocumentDocument",
            description="The stored document with its size and SHA-256.",
            errors=(403, 404),
            write=True,
            body=("DocumentUpload", "DocumentUpload"),
            form_only=True,
            parameters=(openapi.path_parameter("inquiry_id", "An inquiry id (inq_…)."),),
        ),
    )
    async def upload_document(request: Request) -> Response:
        principal = require_scope(request, "documents:write")
        inquiry_id: str = request.path_params["inquiry_id"]
        media = media_type(request)
        if media != "multipart/form-data":
            raise unsupported_media_type(media, "multipart/form-data with a part named file")
        organization_id = principal.organization_id
        # Refuse before receiving what may be megabytes for an inquiry that is not there.
        # Read outside the request's transaction (inquiries are never deleted), so the
        # upload that follows holds no transaction, on SQLite not the writer.
        async with db.read_committed() as conn:
            exists = await conn.scalar(
                _INQUIRY_EXISTS, {"inquiry": inquiry_id, "org": organization_id}
            )
        if exists is None:
            raise ApiError(
                404, "not_found", f"No inquiry {inquiry_id} exists in your organization."
            )

        document_id = ids.new_id("doc")
        upload = DocumentUpload(directory, document_id)

        def open_file(part: FilePart) -> DocumentUpload | None:
            if part.name != FILE_PART:
                return None
            if upload.part is not None:
                raise ApiError(
                    400, "invalid_multipart", "Send one part named file.", pointer="/file"
                )
            upload.part = part
            return upload

        try:
            fields = await MultipartReader(open_file=open_file).read(request)
            kind = _kind(fields, upload)
            await upload.finish()
            row = {
                "id": document_id,
                "organization_id": organization_id,
                "inquiry_id": inquiry_id,
                "kind": kind,
                "filename": _printable(upload.part.filename if upload.part else None),
                "content_type": _printable(upload.part.content_type if upload.part else None),
                "size": upload.size,
                "sha256": upload.sha256,
                "storage_path": document_id,
                "created_at": timestamp(),
            }
            async with db.write() as conn:
                await conn.execute(_INSERT, row)
        except BaseException:
            upload.discard()
            raise
        return created(document_resource(row), "documents")

    @router.get(
        "/documents/{document_id}",
        summary="Get a document's metadata",
        **openapi.operation(
            name="documents_get",
            status=200,
            schema="DocumentDocument",
            description="The document.",
            errors=(403, 404),
            parameters=(document_path_id,),
        ),
    )
    async def get_document(request: Request) -> Response:
        principal = require_scope(request, "documents:read")
        row = await _find(db, request, principal.organization_id)
        return single(document_resource(row))

    @router.get(
        "/documents/{document_id}/content",
        summary="Download a document's content",
        description="The bytes as uploaded. `ETag` is the quoted SHA-256 and `Repr-Digest`"
        " (RFC 9530) its base64 form, so a client can check what it received. A single"
        " `Range: bytes=…` is answered 206 with that part (with `If-Range` naming the `ETag`),"
        " which lets a cut download resume; other `Range` forms are ignored (200, whole).",
        response_class=Response,
        **_content_operation(document_path_id),
    )
    async def get_document_content(request: Request) -> Response:
        principal = require_scope(request, "documents:read")
        row = await _find(db, request, principal.organization_id)
        path = directory / row["storage_path"]
        try:
            size = (await anyio.Path(path).stat()).st_size
        except FileNotFoundError:
            # The row exists, so the bytes were committed: their absence is our fault (500).
            raise RuntimeError(f"content of document {row['id']} is missing from storage") from None
        etag = f'"{row["sha256"]}"'
        headers = {
            "ETag": etag,
            "Repr-Digest": repr_digest(row["sha256"]),
            "Accept-Ranges": "bytes",
            "Content-Disposition": _attachment(row["filename"] or row["id"]),
            # Uploaded bytes are the client's, never a page of ours: no sniffing into HTML.
            "X-Content-Type-Options": "nosniff",
        }
        media = row["content_type"] or "application/octet-stream"
        wanted = requested_range(
            request.headers.get("range"), request.headers.get("if-range"), etag, size
        )
        if wanted is None:
            headers["Content-Length"] = str(size)
            return StreamingResponse(_file_bytes(path, 0, size), media_type=media, headers=headers)
        start, stop = wanted
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        headers["Content-Length"] = str(stop - start)
        return StreamingResponse(
            _file_bytes(path, start, stop), status_code=206, media_type=media, headers=headers
        )

    return router


def _content_operation(document_path_id: openapi.Schema) -> dict[str, Any]:
    """The OpenAPI operation of the content route: 200 or 206, the validators, the range headers."""
    validators = {
        "ETag": {"schema": {"type": "string"}, "description": "The quoted SHA-256 (hex)."},
        "Repr-Digest": {"schema": {"type": "string"}, "description": "sha-256=:<base64>:"},
        "Accept-Ranges": {"schema": {"type": "string"}, "description": "bytes"},
    }
    content_range = {
        "Content-Range": {"schema": {"type": "string"}, "description": "bytes F-L/SIZE"}
    }
    return openapi.operation(
        name="documents_get_content",
        status=200,
        schema=None,
        description="The bytes as uploaded, as an attachment.",
        also={206: "The part named by Range."},
        errors=(403, 404, 416),
        headers={
            200: validators,
            206: {**validators, **content_range},
            416: {"Content-Range": {"schema": {"type": "string"}, "description": "bytes */SIZE"}},
        },
        # Range and If-Range are described, not declared as parameters: a fuzzer would
        # send schema-valid ranges past the end and take their (correct) 416 for a refusal.
        parameters=(document_path_id,),
    )


def repr_digest(sha256_hex: str) -> str:
    """``Repr-Digest`` (RFC 9530) of content whose SHA-256 is ``sha256_hex``."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode('ascii')}:"


def _attachment(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def requested_range(
    range_header: str | None, if_range: str | None, etag: str, size: int
) -> tuple[int, int] | None:
    """The ``[start, stop)`` a ``Range`` header asks for, or ``None`` to send everything.

    Only one ``bytes`` range is honoured; anything else is ignored, as RFC 9110
    §14.2 allows, and so is a ``Range`` whose ``If-Range`` names another
    version. A range starting past the end is a 416.
    """
    if range_header is None or size == 0:
        return None
    if if_range is not None and if_range.strip() != etag:
        return None
    unit, _, spec = range_header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    matched = _BYTE_RANGE.fullmatch(spec.strip())
    if matched is None:  # several ranges, or not a range at all
        return None
    first = matched.group(1) or ""
    last = matched.group(2) if matched.group(1) is not None else matched.group(4)
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    stop = min(int(last) + 1, size) if last else size
    if start >= size:
        raise _unsatisfiable(size)
    if stop <= start:
        return None  # last before first: not a valid range, so not one to refuse
    return start, stop


_BYTE_RANGE = re.compile(r"([0-9]+)-([0-9]*)|()-([0-9]+)")


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"The range starts past the end of the document ({size} bytes).",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _file_bytes(path: Path, start: int, stop: int) -> AsyncIterator[bytes]:
    """``path``'s bytes ``[start, stop)`` in 64 KiB chunks, never the whole file at once."""
    async with await anyio.open_file(path, "rb") as file:
        await file.seek(start)
        left = stop - start
        while left > 0:
            chunk = await file.read(min(_CHUNK, left))
            if not chunk:
                # Shorter than when it was measured: end the body, the length check fails it.
                return
            left -= len(chunk)
            yield chunk


_CHUNK = 64 * 1024


async def _find(db: Database, request: Request, organization_id: str) -> RowMapping:
    document_id: str = request.path_params["document_id"]
    async with db.read() as conn:
        params = {"document": document_id, "org": organization_id}
        row = (await conn.execute(_GET, params)).mappings().first()
    if row is None:
        raise not_found(document_id)
    return row


def _kind(fields: list[tuple[str, str]], upload: DocumentUpload) -> str | None:
    """Validate the form around the file: its ``kind``, unknown fields, a missing file."""
    errors = FieldErrors()
    kind: str | None = None
    for name, value in fields:
        if name in _KIND_FIELDS:
            checked = check_value(value, DOCUMENT_KIND, "kind", form_pointer(name), errors)
            kind = checked if isinstance(checked, str) else None
        else:
            errors.add(
                400,
                "unknown_parameter",
                f"form field {name!r} is not file or kind",
                form_pointer(name),
            )
    if upload.part is None:
        errors.add(
            400,
            "parameter_missing",
            "file is required: send the content as the part named file",
            "/file",
        )
    errors.raise_if_any()
    return kind
