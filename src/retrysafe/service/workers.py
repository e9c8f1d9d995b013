"""``serve --workers N``: uvicorn's supervisor, each worker on its own SO_REUSEPORT socket.

uvicorn's multiprocess mode binds one socket in the supervisor and hands that
same socket to every worker, so all workers wait on one accept queue. Linux
wakes the most recently idle waiter first, which lets a burst of keep-alive
connections (a load balancer's pool, a benchmark client) land almost all on one
worker while the other idles: 93/7 % of the CPU with two workers under wrk in
docs/benchmarks.md. With ``SO_REUSEPORT`` each worker listens on a socket of its
own and the kernel spreads new connections over the sockets by a hash of their
addresses, so connections are shared evenly whatever the order workers wake in.

uvicorn stays the supervisor (restarts, signals, health pings); it only gets a
stand-in for its socket list that, unpickled in a freshly spawned worker, binds
that worker's own socket (:class:`PerWorkerSockets`).
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["ListenError", "PerWorkerSockets", "reserve_port", "reuse_port_socket", "run_workers"]


class ListenError(Exception):
    """The address cannot be listened on (in use by another program, not local, no permission)."""


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other SO_REUSEPORT sockets may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_in_worker(host: str, port: int) -> list[socket.socket]:
    return [reuse_port_socket(host, port)]


class PerWorkerSockets(list[socket.socket]):
    """uvicorn's ``sockets`` argument, empty in the supervisor, one fresh socket in each worker.

    uvicorn pickles the list into every worker it spawns (at start and on every
    restart); unpickling calls :func:`_bind_in_worker` there instead of
    duplicating a socket of the supervisor's.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return (_bind_in_worker, (self.host, self.port))


def reserve_port(host: str, port: int) -> socket.socket:
    """Claim ``host:port`` for the workers before any starts; :class:`ListenError` if unusable.

    The socket is held by the supervisor, bound but never listening: it claims the
    port (a port in use fails here, once, instead of in every worker) and receives
    no connection, because the kernel hands connections to listening sockets only.
    """
    try:
        return reuse_port_socket(host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_workers(
    app: str, *, workers: int, reservation: socket.socket, host: str, **options: Any
) -> None:
    """Serve the import string ``app`` (a factory) with ``workers`` processes on ``reservation``.

    ``reservation`` comes from :func:`reserve_port` and is closed when the workers
    stop; ``options`` are further :class:`uvicorn.Config` arguments.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options.pop("port", None)
    try:
        port = reservation.getsockname()[1]  # port 0: every worker joins the port chosen here
        config = uvicorn.Config(app, factory=True, workers=workers, host=host, port=port, **options)
        Multiprocess(config, sockets=PerWorkerSockets(host, port)).run()
    finally:
        reservation.close()
