"""The chaos run: thousands of SDK calls through network faults, server kills and database restarts.

``python -m benchmarks.chaos`` from the repository root runs it and checks the
final database against the client's log, Jepsen-style; ``docs/chaos.md``
explains what it does and what it proves.
"""
