"""What a code generator reads from the document: operation names, response headers, error codes.

The error codes are held to the source: every ``(status, code)`` the package can
raise is in the enum of that status, and every enum member is raised somewhere,
so a new code cannot go undocumented and a removed one cannot linger.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from tests.fuzz import test_openapi_document

import retrysafe
from retrysafe.service.openapi import ERROR_CODES

Document = dict[str, Any]
# The document of an app never served (a module fixture), and its (METHOD, path, op) triples.
document = test_openapi_document.document
operations = test_openapi_document.operations
PACKAGE = Path(retrysafe.__file__).parent

OPERATION_IDS = {
    ("POST", "/api/v1/accounts"): "accounts_create",
    ("GET", "/api/v1/accounts"): "accounts_list",
    ("GET", "/api/v1/accounts/{account_id}"): "accounts_get",
    ("PATCH", "/api/v1/accounts/{account_id}"): "accounts_update",
    ("POST", "/api/v1/inquiries"): "inquiries_create",
    ("GET", "/api/v1/inquiries"): "inquiries_list",
    ("GET", "/api/v1/inquiries/{inquiry_id}"): "inquiries_get",
    ("POST", "/api/v1/inquiries/{inquiry_id}/complete"): "inquiries_complete",
    ("POST", "/api/v1/inquiries/{inquiry_id}/approve"): "inquiries_approve",
    ("POST", "/api/v1/inquiries/{inquiry_id}/decline"): "inquiries_decline",
    ("POST", "/api/v1/inquiries/{inquiry_id}/expire"): "inquiries_expire",
    ("POST", "/api/v1/inquiries/{inquiry_id}/documents"): "documents_create",
    ("GET", "/api/v1/documents/{document_id}"): "documents_get",
    ("GET", "/api/v1/documents/{document_id}/content"): "documents_get_content",
    ("POST", "/api/v1/inquiries/{inquiry_id}/verifications"): "verifications_create",
    ("GET", "/api/v1/verifications/{verification_id}"): "verifications_get",
    ("GET", "/api/v1/api-logs"): "api_logs_list",
    ("GET", "/api/v1/api-logs/{log_id}"): "api_logs_get",
    ("GET", "/health"): "health_get",
}


def headers_of(document: Document, response: Document) -> dict[str, Document]:
    """A response's headers with ``$ref`` resolved against ``components.headers``."""
    resolved = {}
    for name, header in response.get("headers", {}).items():
        if "$ref" in header:
            header = document["components"]["headers"][header["$ref"].rpartition("/")[2]]
        resolved[name] = header
    return resolved


def test_operation_ids_are_resource_then_action(document: Document) -> None:
    """Not FastAPI's ``create_account_api_v1_accounts_post``: the names a client method gets."""
    assert {(m, p): op["operationId"] for m, p, op in operations(document)} == OPERATION_IDS


def test_every_response_declares_its_request_id(document: Document) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            header = headers_of(document, response).get("Request-Id")
            assert header is not None, f"{method} {path} {status}"
            assert header["required"] is True


def test_rate_limit_headers_on_every_answer_the_limiter_sees(document: Document) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            names = set(headers_of(document, response))
            rate_limited = path != "/health" and status not in ("413", "415")
            trio = {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
            assert (trio <= names) is rate_limited, f"{method} {path} {status}"


def test_retry_after_where_a_client_is_told_to_wait(document: Document) -> None:
    """Always on 429 and 503; on 409 only for the request still in flight, so optional."""
    seen = set()
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            header = headers_of(document, response).get("Retry-After")
            if status in ("429", "503"):
                assert header is not None, f"{method} {path} {status}"
                assert header.get("required") is True, f"{method} {path} {status}"
                seen.add(status)
            elif status == "409":
                assert header is not None, f"{method} {path} {status}"
                assert not header.get("required"), f"{method} {path} {status}"
                seen.add(status)
            else:
                assert header is None, f"{method} {path} {status}"
    assert seen == {"409", "429", "503"}


def test_write_operations_declare_idempotent_replayed(document: Document) -> None:
    for method, path, operation in operations(document):
        responses = operation["responses"]
        success = next(s for s in responses if s.startswith("2"))
        replayed = headers_of(document, responses[success]).get("Idempotent-Replayed")
        if method in ("POST", "PATCH"):
            assert replayed is not None, f"{method} {path}"
            assert replayed["schema"]["enum"] == ["true"]
            # Answers the idempotency layer never records are never replays either.
            for status in ("401", "413", "415", "429", "503"):
                if status in responses:
                    names = headers_of(document, responses[status])
                    assert "Idempotent-Replayed" not in names, f"{method} {path} {status}"
        else:
            assert replayed is None, f"{method} {path}"


def test_inquiry_creates_declare_the_quota_headers(document: Document) -> None:
    create = document["paths"]["/api/v1/inquiries"]["post"]["responses"]
    for status in ("201", "403"):
        assert {"QuotaLimit-Limit", "QuotaLimit-Remaining"} <= set(
            headers_of(document, create[status])
        ), status
    account = document["paths"]["/api/v1/accounts"]["post"]["responses"]["201"]
    assert "QuotaLimit-Limit" not in headers_of(document, account)


def test_each_error_status_names_exactly_its_codes(document: Document) -> None:
    schemas = document["components"]["schemas"]
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            reference = response["content"]["application/json"]["schema"]["$ref"]
            envelope = schemas[reference.rpartition("/")[2]]
            item = schemas[envelope["properties"]["errors"]["items"]["$ref"].rpartition("/")[2]]
            assert item["properties"]["code"]["enum"] == list(ERROR_CODES[int(status)]), (
                f"{method} {path} {status}"
            )
            assert item["properties"]["status"]["const"] == status


def raised_codes() -> set[tuple[int, str]]:
    """Every ``(status, code)`` written as literals in an ApiError, ErrorObject or errors.add."""
    found = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else None
            if isinstance(function, ast.Name):
                name = function.id
            status, code = node.args[0], node.args[1]
            if (
                name in ("ApiError", "ErrorObject", "add")
                and isinstance(status, ast.Constant)
                and isinstance(status.value, int)
                and isinstance(code, ast.Constant)
                and isinstance(code.value, str)
            ):
                found.add((status.value, code.value))
    return found


def test_the_code_enums_are_the_codes_the_package_raises() -> None:
    raised = raised_codes()
    assert len(raised) > 20  # the scan finds the calls at all
    documented = {(status, code) for status, codes in ERROR_CODES.items() for code in codes}
    # A body with a shape error beside a value error is one 400 whose every object says 400
    # (FieldErrors.raise_if_any), so the 422 field codes reach 400 without a literal 400.
    restated = {(400, code) for status, code in raised if status == 422 and code == "invalid_value"}
    assert raised - documented == set(), "raised but not documented"
    assert documented - raised - restated == set(), "documented but never raised"
