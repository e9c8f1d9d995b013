"""Operability: the request record, prometheus metrics and the API-log writer behind them.

The pipeline's :class:`~retrysafe.pipeline.observation.ObservationLayer` builds one
:class:`RequestRecord` per request and hands it to the three consumers here: the
JSON log line, :class:`Metrics` and an :class:`ApiLogSink` (in the service, the
batching :class:`ApiLogWriter`).
"""

from __future__ import annotations

from retrysafe.observability.metrics import Metrics
from retrysafe.observability.records import (
    DEPENDENCY_ERROR_STATE_KEY,
    ApiLogSink,
    RequestRecord,
    note_dependency_error,
)

__all__ = [
    "DEPENDENCY_ERROR_STATE_KEY",
    "ApiLogSink",
    "Metrics",
    "RequestRecord",
    "note_dependency_error",
]
