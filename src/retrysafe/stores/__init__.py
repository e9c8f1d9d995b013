"""Idempotency stores: one protocol (``retrysafe.idempotency.store``), one module per backend."""
