"""Unique, unpredictable-enough values for the hot path: request ids, resource ids, tokens.

``os.urandom`` (and ``uuid4``/``secrets``, built on it) releases the GIL around its
system call. Under load the driver threads are waiting for the GIL, so the event loop
pays up to a switch interval (5 ms) to get it back, once per call: in a profile of
the replay path this was a third of the event loop's time. The values made here need
to be unique (and not trivially guessable), not secret, so they come from the
Mersenne Twister of the ``random`` module, which Python seeds from the OS and reseeds
in every forked child. Secrets (API keys) still come from ``secrets``.
"""

from __future__ import annotations

import random


def random_bits(bits: int) -> int:
    """A random integer of ``bits`` bits, without a system call."""
    return random.getrandbits(bits)


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` lower-case hex characters."""
    return f"{random.getrandbits(8 * nbytes):0{2 * nbytes}x}"
