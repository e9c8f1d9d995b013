"""Command-line commands kept apart from ``retrysafe.cli``: progress bars and ``logs tail``."""
