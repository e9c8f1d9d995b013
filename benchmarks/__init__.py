"""Load benchmarks of retrysafe: scripts that start real servers and drive them with wrk.

Not tests: ``python benchmarks/run.py`` runs them all and writes ``docs/benchmarks.md``.
"""
