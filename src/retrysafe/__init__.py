"""retrysafe: make HTTP APIs safe to retry.

This module exports the client SDK only, so ``from retrysafe import Client``
works in a process that never serves: it imports httpx and
``retrysafe.client``, never the server's frameworks. The server lives in
``retrysafe.pipeline``, ``retrysafe.service`` and ``retrysafe.cli``.
"""

from __future__ import annotations

from retrysafe.client import _public
from retrysafe.client._public import *  # noqa: F403 - the client's everyday names

__all__: list[str] = []
__all__ += _public.__all__
