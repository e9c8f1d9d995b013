"""The retrysafe SDK: sync and async httpx clients that retry only where it is safe."""

from __future__ import annotations

from . import _public
from ._base import DEFAULT_TIMEOUT, NOT_GIVEN, NotGiven
from ._public import *  # noqa: F403 - the everyday names, listed once in _public
from ._retry import RetrySettings

__all__ = ["DEFAULT_TIMEOUT", "NOT_GIVEN", "NotGiven", "RetrySettings"]
__all__ += _public.__all__
