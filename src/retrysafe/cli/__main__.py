"""``python -m retrysafe.cli``: the same command line as the ``retrysafe`` script."""

from __future__ import annotations

from retrysafe.cli import main

main()
