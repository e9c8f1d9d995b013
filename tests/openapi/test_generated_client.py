"""A client generated from the served document by openapi-python-client works against the server.

The client is generated once per session, from the document of this very code,
into a temporary directory, and imported from there; the tests drive it over
real HTTP: a create with an Idempotency-Key, its replay, a get, a 422 and a 404,
each answer parsed into the generated model its status declares.
"""

from __future__ import annotations

import datetime
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from tests.conftest import LiveServer

from retrysafe.database import Database
from retrysafe.service.app import create_api
from retrysafe.settings import Settings

PACKAGE = "retrysafe_generated_client"
GENERATE_TIMEOUT = 120


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated client package, importable for the whole session."""
    directory = tmp_path_factory.mktemp("generated-client")
    settings = Settings(database_url=f"sqlite:///{directory / 'db'}", document_dir=directory)
    document = create_api(Database(settings.database_url), settings).openapi()
    (directory / "openapi.json").write_text(json.dumps(document))
    # No post hooks: formatting the generated code with ruff would only cost time.
    (directory / "config.json").write_text(json.dumps({"post_hooks": []}))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(directory / "openapi.json"),
            "--config",
            str(directory / "config.json"),
            "--meta",
            "none",
            "--output-path",
            str(directory / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Anything the generator warns about is a part of the document it could not use.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(directory))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(generated: ModuleType, name: str) -> ModuleType:
    return importlib.import_module(f"{generated.__name__}.{name}")


def account_request(generated: ModuleType, **attributes: object) -> object:
    models = module(generated, "models")
    return models.AccountRequest(
        data=models.AccountRequestData(attributes=models.AccountRequestDataAttributes(**attributes))
    )


@pytest.fixture
def client(generated: ModuleType, server: LiveServer, api_key: str) -> Iterator[Any]:
    """The generated ``AuthenticatedClient`` on the live server, with a key of every scope."""
    with generated.AuthenticatedClient(base_url=server.url, token=api_key) as authenticated:
        yield authenticated


def test_create_replay_get_422_and_404_through_the_generated_client(
    generated: ModuleType, client: Any
) -> None:
    models = module(generated, "models")
    accounts_create = module(generated, "api.accounts.accounts_create")
    accounts_get = module(generated, "api.accounts.accounts_get")
    body = account_request(
        generated,
        reference_id="user-42",
        name_first="Ada",
        birthdate=datetime.date(1990, 12, 10),
    )

    created = accounts_create.sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert created.status_code == 201, created.content
    assert isinstance(created.parsed, models.AccountDocument)
    account = created.parsed.data
    assert account.id.startswith("act_")
    assert account.attributes.name_first == "Ada"
    assert account.attributes.birthdate == datetime.date(1990, 12, 10)
    assert created.headers["location"] == f"/api/v1/accounts/{account.id}"
    assert "idempotent-replayed" not in created.headers

    replayed = accounts_create.sync_detailed(client=client, body=body, idempotency_key="gen-1")
    assert replayed.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == created.content
    assert replayed.parsed.data.id == account.id

    fetched = accounts_get.sync(client=client, account_id=account.id)
    assert isinstance(fetched, models.AccountDocument)
    assert fetched.data.attributes.reference_id == "user-42"

    refused = accounts_create.sync_detailed(
        client=client,
        body=account_request(generated, email_address="not an address"),
        idempotency_key="gen-2",
    )
    assert refused.status_code == 422
    assert isinstance(refused.parsed, models.Errors422)
    (error,) = refused.parsed.errors
    assert error.code is models.Error422Code.INVALID_VALUE
    assert error.status == "422"
    assert error.source.pointer == "/data/attributes/email_address"

    missing = accounts_get.sync_detailed(client=client, account_id="act_01m8000000000000000000000")
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Errors404)
    assert missing.parsed.errors[0].code is models.Error404Code.NOT_FOUND
    assert missing.headers["request-id"].startswith("req_")


def test_an_inquiry_and_its_transition_through_the_generated_client(
    generated: ModuleType, client: Any
) -> None:
    """The either/or request body and a state transition's 422 code come through typed too."""
    models = module(generated, "models")
    inquiries_create = module(generated, "api.inquiries.inquiries_create")
    inquiries_approve = module(generated, "api.inquiries.inquiries_approve")
    attributes = models.InquiryRequestDataAttributes(reference_id="user-7")
    body = models.InquiryRequest(data=models.InquiryRequestData(attributes=attributes))
    created = inquiries_create.sync_detailed(client=client, body=body, idempotency_key="inq-1")
    assert created.status_code == 201, created.content
    inquiry = created.parsed.data
    assert inquiry.attributes.status is models.InquiryAttributesStatus.CREATED
    refused = inquiries_approve.sync_detailed(inquiry.id, client=client)
    assert refused.status_code == 422
    assert refused.parsed.errors[0].code is models.Error422Code.INVALID_STATE_TRANSITION
