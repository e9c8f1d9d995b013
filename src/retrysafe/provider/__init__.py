"""The reference upstream provider: identity checks behind an HTTP API with its own idempotency.

``retrysafe provider`` serves it on its own port (with fault knobs for tests);
``retrysafe serve`` without ``--provider-url`` runs the same code in-process.
"""
