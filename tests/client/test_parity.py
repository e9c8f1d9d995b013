"""``Client`` and ``AsyncClient`` offer the same calls with the same parameters.

Behaviour parity is what every loop and live test checks by running each case
through both flavours (the ``flavor`` fixture); this checks the surface, so a
parameter added to one twin and forgotten on the other fails here.
"""

from __future__ import annotations

import inspect

import pytest

from retrysafe import AsyncClient, Client
from retrysafe.client import _resources

PAIRS = [
    (_resources.Accounts, _resources.AsyncAccounts),
    (_resources.Inquiries, _resources.AsyncInquiries),
    (_resources.Documents, _resources.AsyncDocuments),
    (_resources.Verifications, _resources.AsyncVerifications),
]


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(("sync", "asynchronous"), PAIRS, ids=lambda cls: cls.__name__)
def test_resources_have_the_same_methods_and_parameters(sync: type, asynchronous: type) -> None:
    ours, theirs = public_methods(sync), public_methods(asynchronous)
    assert ours.keys() == theirs.keys()
    for name, signature in ours.items():
        assert list(signature.parameters) == list(theirs[name].parameters), name
        for parameter, spec in signature.parameters.items():
            other = theirs[name].parameters[parameter]
            assert (spec.kind, spec.default) == (other.kind, other.default), (name, parameter)
        sync_is_coroutine = inspect.iscoroutinefunction(getattr(sync, name))
        assert sync_is_coroutine is False
        if name != "list":  # lists return an async iterator, created without awaiting
            assert inspect.iscoroutinefunction(getattr(asynchronous, name)), name


def test_clients_take_the_same_options() -> None:
    for method in ("__init__", "with_options"):
        sync = inspect.signature(getattr(Client, method)).parameters
        asynchronous = inspect.signature(getattr(AsyncClient, method)).parameters
        assert list(sync) == list(asynchronous), method
        assert [p.default for p in sync.values()] == [p.default for p in asynchronous.values()]


async def test_raw_views_offer_the_same_methods() -> None:
    with Client("k") as sync_client:
        async with AsyncClient("k") as async_client:
            sync, asynchronous = sync_client.with_raw_response, async_client.with_raw_response
            for resource in ("accounts", "inquiries", "documents", "verifications"):
                ours = set(vars(getattr(sync, resource)))
                theirs = set(vars(getattr(asynchronous, resource)))
                assert ours == theirs, resource
                assert ours  # each view has methods
