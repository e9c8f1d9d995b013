"""``serve --workers N`` shares keep-alive connections between its workers (SO_REUSEPORT).

With uvicorn's single shared accept socket, a burst of connections opened at once
can all be accepted by one worker; here every worker listens on a socket of its
own and the kernel spreads connections over them. The test counts, from /proc,
which worker process holds each established connection.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from retrysafe.service.workers import PerWorkerSockets, reuse_port_socket
from server_process import free_port, run_cli, start_server

CONNECTIONS = 32
MINIMUM_SHARE = 4
"""Connections each of 2 workers must hold out of 32. Hashing puts fewer than 4 on
one worker about 3 times in a million runs; one shared accept queue does it often."""

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; SO_REUSEPORT")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _workers(supervisor: int) -> list[int]:
    """uvicorn's worker processes: the spawned children, not multiprocessing's tracker."""
    workers = []
    for pid in _children(supervisor):
        command = (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ")
        if b"multiprocessing.spawn" in command:
            workers.append(pid)
    return workers


def _sockets(port: int, state: str) -> dict[str, int]:
    """TCP sockets on local port ``port`` in ``state`` (01 established, 0A listening).

    Maps each socket's inode to its receive queue, which for a listening socket is
    the number of connections waiting in its accept queue.
    """
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found[fields[9]] = int(fields[4].split(":")[1], 16)
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def connections_per_worker(port: int, workers: list[int]) -> dict[int, int]:
    """Open 32 connections while the first worker is paused; who holds them afterwards?

    A worker busy with a request is not accepting; that is the moment a burst of
    new connections arrives in practice. Pausing it (SIGSTOP) makes that moment
    certain. With one shared accept queue the running worker takes every
    connection, for the connections' whole keep-alive life; with a socket per
    worker, the paused worker's share waits in its own queue until it resumes.
    """
    paused, running = workers[0], workers[1:]
    os.kill(paused, signal.SIGSTOP)
    try:
        conns = [
            socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(CONNECTIONS)
        ]
        for conn in conns:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
        listening_for_running = set().union(*(_socket_inodes(pid) for pid in running))

        def running_workers_caught_up() -> bool:
            queues = _sockets(port, "0A")
            return all(queues[inode] == 0 for inode in listening_for_running if inode in queues)

        _wait(running_workers_caught_up, "the running worker to accept what reached it")
    finally:
        os.kill(paused, signal.SIGCONT)
    try:
        for conn in conns:
            answer = b""
            while b'{"status":"ok"}' not in answer:
                chunk = conn.recv(4096)
                assert chunk, f"connection closed after {answer!r}"
                answer += chunk
        established = set(_sockets(port, "01"))
        return {pid: len(_socket_inodes(pid) & established) for pid in workers}
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.slow
def test_keep_alive_connections_are_shared_by_both_workers(tmp_path: Path) -> None:
    """Each of 2 workers holds a fair part of 32 connections opened in one burst."""
    server = start_server(
        [
            "--workers",
            "2",
            "--database",
            f"sqlite:///{tmp_path / 'w.db'}",
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
    )
    try:
        server.wait_healthy()
        workers = _workers(server.process.pid)
        assert len(workers) == 2, server.log()
        # /health answers once one worker is up; wait for the other's socket too.
        _wait(lambda: len(_sockets(server.port, "0A")) >= 2, "both workers to listen")
        held = connections_per_worker(server.port, workers)
        assert sum(held.values()) == CONNECTIONS, held
        assert min(held.values()) >= MINIMUM_SHARE, held
    finally:
        server.stop()


def test_each_unpickled_copy_binds_its_own_socket_on_the_port() -> None:
    """What a spawned worker receives: a fresh socket that listens beside the others."""
    reservation = reuse_port_socket("127.0.0.1", 0)
    port = reservation.getsockname()[1]
    # Our own bytes, pickled a line earlier: what uvicorn sends a spawned worker.
    first = pickle.loads(pickle.dumps(PerWorkerSockets("127.0.0.1", port)))  # noqa: S301
    second = pickle.loads(pickle.dumps(PerWorkerSockets("127.0.0.1", port)))  # noqa: S301
    try:
        assert len(first) == len(second) == 1
        for sock in (first[0], second[0]):
            assert sock.getsockname() == ("127.0.0.1", port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            sock.listen()
        assert first[0].fileno() != second[0].fileno()
    finally:
        for sock in (reservation, *first, *second):
            sock.close()


@pytest.mark.slow
def test_a_port_taken_by_another_program_is_one_error_line(tmp_path: Path) -> None:
    """A plain listener on the port: exit 1 with one line, before any worker starts."""
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        outcome = run_cli(
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
            "--database",
            f"sqlite:///{tmp_path / 'w.db'}",
            cwd=tmp_path,
        )
    assert outcome.returncode == 1
    assert f"retrysafe: error: cannot listen on 127.0.0.1:{port}" in outcome.stderr
    assert "Traceback" not in outcome.stderr
