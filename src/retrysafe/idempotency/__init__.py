"""Idempotency without ASGI or SQL: keys, fingerprints, records and the decision state machine."""
