"""Under pytest-xdist every worker takes free ports from its own share of them."""

from __future__ import annotations

import pytest
from tests.support.throwaway import free_port


@pytest.mark.parametrize("worker", ["gw0", "gw1", "gw2"])
def test_each_worker_gets_only_ports_of_its_own_share(
    worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    share = int(worker.removeprefix("gw"))
    ports = {free_port() for _ in range(20)}
    assert all((port // 2) % 3 == share for port in ports), sorted(ports)


def test_without_xdist_any_free_port_will_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert 1024 <= free_port() <= 65535
