"""One shared, pipelined Redis connection for the Redis store's per-request scripts.

Why not redis-py for these: each of its commands takes a pooled connection of
its own, so every command is one write, one wake-up and one read: 60 to 75 µs
of client CPU a command at 32 concurrent callers on this project's 2-core
machine. Here every caller writes its command on the one connection and waits
on a future; the commands written in one turn of the event loop go out in one
write, Redis reads them at once, and the replies come back in order, each
handed to the oldest waiting future (9 to 11 µs a command, same callers). A
request through ``RetrySafe`` on this store costs 40 to 60 % less client CPU
for it (``benchmarks/redis_store_cpu.py``).

What it keeps from redis-py, exactly (the store's tests hold it to that):

- **Failures are redis-py's exceptions** (:class:`~redis.exceptions.ConnectionError`,
  :class:`~redis.exceptions.TimeoutError`, :class:`~redis.exceptions.ResponseError`),
  so the store turns them into ``StoreUnavailable`` in one place for both paths.
- **Retry on a lost connection**: a command whose connection failed before its
  reply arrived (or failed to open) is sent again on a new connection, as many
  times as the client's ``Retry`` says (``from_url``'s store: once), after its
  backoff's pause (``Redis()``'s default: up to three retries, backing off from
  1 s), within the command's timeout. When a
  connection breaks, every command waiting on it fails or is retried; none is
  left waiting. The store's scripts are written to be safe when run twice.
- **Timeout**: the client's ``socket_timeout`` bounds each command, its retry
  included (redis-py gives each try a timeout of its own, so a Redis that stops
  answering took twice as long to become a 503). A command that times out closes
  the connection, as redis-py closes its own: the next command gets a new one, and
  a command waiting behind it with no retry left fails as a timeout too.
- **Lazy reconnect**: a connection that failed to open is tried again by the
  next command, never by a loop in the background while Redis is down.

The order of replies is the one invariant: a caller cancelled while its command
is in flight leaves its future in the queue, and the reply, when it comes, is
consumed and dropped with it instead of being handed to the next caller.

Only a client this connection can stand in for is pipelined (see
:meth:`PipelineSettings.from_client`): plain TCP or a unix socket, RESP2, bytes
replies, password or ACL authentication, and a ``Retry`` on its default errors.
The pipelined connection does not announce itself with ``CLIENT SETINFO`` (a
label in ``CLIENT LIST``, nothing else); it does set ``client_name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis import exceptions as redis_errors
from redis._parsers import BaseParser  # its parse_error: the error classes redis-py raises
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff, NoBackoff

from retrysafe.stores.resp import ErrorReply, Reply, ReplyParser, command

__all__ = ["PipelineSettings", "PipelinedRedis"]

# Connection settings that change nothing here: they tune redis-py's own pool,
# parser or client metadata, none of which this connection uses.
_NEUTRAL = frozenset(
    {
        "driver_info",
        "encoder_class",
        "encoding_errors",
        "event_dispatcher",
        "health_check_interval",
        "lib_name",
        "lib_version",
        "max_connections",
        "parser_class",
        "socket_read_size",
        "timeout",  # BlockingConnectionPool's wait for a free connection
    }
)

# Settings this connection understands, with the values it accepts for those it
# only accepts as redis-py's defaults.
_USED = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "client_name",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "retry",
    }
)
_DEFAULT_ONLY: Mapping[str, tuple[object, ...]] = {
    "credential_provider": (None,),
    "redis_connect_func": (None,),
    "decode_responses": (False,),
    "encoding": ("utf-8", "utf8", "UTF-8"),
    "protocol": (None, 2, "2"),
    "retry_on_error": (None, []),
    "retry_on_timeout": (False,),
    "socket_type": (0,),
}


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Where and how to connect, read from the redis-py client the store was given."""

    host: str = "localhost"
    """Redis's host (TCP), unless ``path`` is set."""
    port: int = 6379
    path: str | None = None
    """A unix socket to connect to instead of ``host`` and ``port``."""
    db: int = 0
    """The database to ``SELECT`` after connecting (none for 0)."""
    username: str | None = None
    password: str | None = None
    """With ``username``, ``AUTH username password`` (ACL); alone, ``AUTH password``."""
    client_name: str | None = None
    """``CLIENT SETNAME`` after connecting, as redis-py sends it."""
    command_timeout: float | None = None
    """Seconds one command may wait for its reply, retry included (``socket_timeout``)."""
    connect_timeout: float | None = None
    """Seconds to connect and authenticate (``socket_connect_timeout``, else ``socket_timeout``)."""
    retries: int = 0
    """How many times a command is sent again after its connection failed (``Retry``)."""
    backoff: AbstractBackoff = field(default_factory=NoBackoff)
    """The ``Retry``'s backoff: seconds to wait before each retry, within ``command_timeout``."""
    keepalive: bool = False
    keepalive_options: Mapping[int, int | bytes] = field(default_factory=dict)
    """TCP options set with ``socket_keepalive``, as redis-py sets them."""

    @classmethod
    def from_client(cls, client: object) -> PipelineSettings | None:
        """The settings of ``client``, or ``None`` when this connection cannot stand in for it.

        ``None`` (the store keeps using redis-py) for anything but a plain
        :class:`redis.asyncio.Redis` on a plain ``ConnectionPool`` or
        ``BlockingConnectionPool`` of TCP or unix-socket connections: TLS
        (``rediss://``), another ``connection_class``, a cluster or Sentinel
        client, ``decode_responses=True``, RESP3, a credential provider or a
        connect callback, a setting this module does not know, and a ``Retry``
        on other errors than its default ones (connection errors and timeouts).
        """
        if type(client) is not Redis:
            return None
        pool = client.connection_pool
        if type(pool) not in (ConnectionPool, BlockingConnectionPool):
            return None
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        kwargs: dict[str, Any] = dict(pool.connection_kwargs)
        for name, value in kwargs.items():
            if name in _NEUTRAL or name in _USED:
                continue
            if name not in _DEFAULT_ONLY or value not in _DEFAULT_ONLY[name]:
                return None
        plan = _retry_plan(kwargs.get("retry"))
        if plan is None:
            return None
        retries, backoff = plan
        if kwargs.get("username") and not kwargs.get("password"):
            return None  # redis-py would send AUTH with no password; leave that to it
        timeout = kwargs.get("socket_timeout")
        connect_timeout = kwargs.get("socket_connect_timeout")
        unix = pool.connection_class is UnixDomainSocketConnection
        return cls(
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            path=str(kwargs.get("path", "")) if unix else None,
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            client_name=kwargs.get("client_name"),
            command_timeout=timeout,
            connect_timeout=timeout if connect_timeout is None else connect_timeout,
            retries=retries,
            backoff=backoff,
            keepalive=bool(kwargs.get("socket_keepalive")) and not unix,
            keepalive_options=dict(kwargs.get("socket_keepalive_options") or {}),
        )


def _retry_plan(retry: object) -> tuple[int, AbstractBackoff] | None:
    """How many retries ``retry`` makes and its backoff (redis-py's ``from_url``: none), or
    ``None`` when it retries on other errors than the default ones."""
    if retry is None:
        return 0, NoBackoff()
    if not isinstance(retry, Retry):
        return None
    retries = retry.get_retries()
    backoff = getattr(retry, "_backoff", None)  # Retry has no public getter for it
    # Retry's own equality compares backoff, count and the errors retried on.
    if retries < 0 or not isinstance(backoff, AbstractBackoff) or retry != Retry(backoff, retries):
        return None
    return retries, backoff


class _Lost(Exception):
    """The connection failed before the reply came: the command may be sent again.

    A new one for every waiting command, so no two callers raise one exception
    object (its traceback would grow with each).
    """

    def __init__(
        self,
        message: str,
        *,
        error: type[redis_errors.RedisError] = redis_errors.ConnectionError,
        retry: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error
        self.retry = retry

    def again(self) -> _Lost:
        return _Lost(self.message, error=self.error_class, retry=self.retry)

    def error(self) -> redis_errors.RedisError:
        """What the caller raises: redis-py's error for the same failure."""
        return self.error_class(self.message)


class _Expired(Exception):
    """A command's timeout ran out; its connection is closed, the command is not retried."""


class _ConnectionProtocol(asyncio.Protocol):
    """One TCP or unix connection: commands out in order, replies to their futures in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self._loop = loop
        self._where = where
        self._transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._unsent: list[bytes] = []
        self.lost: _Lost | None = None
        """Why the connection ended; set once, and every later send fails with it."""
        self.closed: asyncio.Future[None] = loop.create_future()
        """Done when the socket is closed."""

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ValueError as exc:
            self.abort(_Lost(f"Protocol error from {self._where}: {exc}"))
            return
        waiting = self._waiting
        for reply in replies:
            if not waiting:
                self.abort(_Lost(f"Reply without a command from {self._where}"))
                return
            future = waiting.popleft()
            # A cancelled (or timed-out) command's reply is consumed here and dropped.
            if not future.done():
                future.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close our side too: a Redis that hung up sends no more replies

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            reason = "Connection closed by server." if exc is None else str(exc)
            self.lost = _Lost(f"Error while reading from {self._where}: {reason}")
        self._fail_waiting(self.lost)
        self._transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def connected(self) -> bool:
        """Whether the protocol holds its transport (``connection_made`` ran) and it is open."""
        return self._transport is not None and self.lost is None

    # commands

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        """Queue ``data`` (one command) to go out this turn; its reply resolves the future."""
        if self.lost is not None:
            raise self.lost.again()
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._waiting.append(future)
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(data)
        return future

    def _flush(self) -> None:
        # Every command queued in one turn of the loop leaves in one write.
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and self.lost is None:
            self._transport.write(b"".join(unsent))

    def abort(self, why: _Lost) -> None:
        """Close the connection now; every command waiting on it fails with ``why``."""
        if self.lost is None:
            self.lost = why
        self._fail_waiting(self.lost)
        if self._transport is not None:
            self._transport.abort()
        elif not self.closed.done():
            # Never connected (connection_made failed): nothing will call connection_lost,
            # and whoever waits for the socket to close must not wait forever.
            self.closed.set_result(None)

    def _fail_waiting(self, why: _Lost) -> None:
        waiting = self._waiting
        while waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_exception(why.again())

    def expire(self, future: asyncio.Future[Reply]) -> None:
        """``future``'s timeout ran out: fail it, and close the connection (it may be stuck).

        The commands waiting behind it fail with it, before their own deadlines: one with
        a retry left sends again on a new connection; one without is a timeout too, as
        the stuck connection's is, not a lost connection.
        """
        if future.done():
            return
        future.set_exception(_Expired())
        message = f"Connection to {self._where} closed after a command timed out"
        self.abort(_Lost(message, error=redis_errors.TimeoutError))

    def set_keepalive(self, options: Mapping[int, int | bytes]) -> None:
        """``SO_KEEPALIVE`` and the TCP ``options``, as redis-py sets them on its sockets."""
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in options.items():
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class PipelinedRedis:
    """Commands from every caller on one connection, replies matched to callers in order.

    The connection opens at the first command and again at the first command
    after it broke; :meth:`aclose` closes it (a later command would open a new
    one, as redis-py's client does).
    """

    def __init__(self, settings: PipelineSettings) -> None:
        self._settings = settings
        self._where = settings.path or f"{settings.host}:{settings.port}"
        self._connection: _ConnectionProtocol | None = None
        self._opening: asyncio.Task[_ConnectionProtocol] | None = None

    @property
    def settings(self) -> PipelineSettings:
        return self._settings

    async def execute(self, *args: str | bytes) -> Reply:
        """Run one command; an error reply is raised as redis-py raises it (``ResponseError``,
        ``NoScriptError``, …), and retried as redis-py retries it (``LOADING``, a
        ``ConnectionError`` to redis-py)."""
        return await self._send(command(args))

    async def run_script(
        self, sha: str, script: str | bytes, keys: Sequence[str], args: Sequence[str | bytes]
    ) -> Reply:
        """``EVALSHA`` the script; when Redis lost its scripts (a restart, ``SCRIPT FLUSH``),
        ``EVAL`` it, which runs it and caches it for the next ``EVALSHA``."""
        try:
            return await self.execute("EVALSHA", sha, str(len(keys)), *keys, *args)
        except redis_errors.NoScriptError:
            return await self.execute("EVAL", script, str(len(keys)), *keys, *args)

    async def aclose(self) -> None:
        """Close the connection (and stop one being opened); waiting commands fail, not retried."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Lost):
                await opening
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort(_Lost(f"Connection to {self._where} closed by aclose()", retry=False))
            await connection.closed

    async def _send(self, data: bytes) -> Reply:
        loop = asyncio.get_running_loop()
        timeout = self._settings.command_timeout
        deadline = None if timeout is None else loop.time() + timeout
        failures = 0
        while True:
            future = None
            try:
                connection = self._connection
                if connection is None or connection.lost is not None:
                    connection = await self._connected()
                future = connection.send(data)
                if deadline is None:
                    reply = await future
                else:
                    timer = loop.call_at(deadline, connection.expire, future)
                    try:
                        reply = await future
                    finally:
                        timer.cancel()
                if type(reply) is not ErrorReply:
                    return reply
                error = _error(reply)
                if not isinstance(error, redis_errors.ConnectionError):
                    raise error
                lost = _Lost(str(error), error=type(error))
            except _Lost as exc:
                lost = exc
            except _Expired:
                raise redis_errors.TimeoutError(f"Timeout reading from {self._where}") from None
            except asyncio.CancelledError:
                # Cancelled just as the connection failed: that failure is nobody's now.
                if future is not None and future.done() and not future.cancelled():
                    future.exception()
                raise
            failures += 1
            if not lost.retry or failures > self._settings.retries:
                raise lost.error() from None
            if failures == 1:
                # As redis-py's Retry resets it for each command (a stateful backoff).
                self._settings.backoff.reset()  # type: ignore[no-untyped-call]
            pause = self._settings.backoff.compute(failures)
            if pause > 0:
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - loop.time()))
                await asyncio.sleep(pause)
            if deadline is not None and loop.time() >= deadline:
                raise redis_errors.TimeoutError(f"Timeout reading from {self._where}") from None

    async def _connected(self) -> _ConnectionProtocol:
        """The open connection; the first caller to need one opens it, the others wait for it."""
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            self._opening.add_done_callback(_retrieve)
        # Shielded: a caller cancelled meanwhile must not cancel the others' connection.
        return await asyncio.shield(self._opening)

    async def _open(self) -> _ConnectionProtocol:
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                connection = await self._handshake()
        except _Lost:
            raise
        except TimeoutError as exc:
            message = f"Timeout connecting to {self._where}"
            raise _Lost(message, error=redis_errors.TimeoutError) from exc
        except Exception as exc:  # OSError mostly; redis-py wraps anything that fails here
            raise _Lost(f"Error connecting to {self._where}: {exc}") from exc
        finally:
            if self._opening is asyncio.current_task():
                self._opening = None
        self._connection = connection
        return connection

    async def _handshake(self) -> _ConnectionProtocol:
        loop = asyncio.get_running_loop()
        settings = self._settings

        def protocol() -> _ConnectionProtocol:
            return _ConnectionProtocol(loop, self._where)

        if settings.path is not None:
            transport, connection = await loop.create_unix_connection(protocol, settings.path)
        else:
            transport, connection = await loop.create_connection(
                protocol, settings.host, settings.port
            )
        try:
            if not connection.connected:
                raise _Lost(f"Connection to {self._where} not set up")
            if settings.keepalive:
                connection.set_keepalive(settings.keepalive_options)
            setup: list[tuple[str, ...]] = []
            if settings.password:
                who = () if settings.username is None else (settings.username,)
                setup.append(("AUTH", *who, settings.password))
            if settings.client_name:
                setup.append(("CLIENT", "SETNAME", settings.client_name))
            if settings.db:
                setup.append(("SELECT", str(settings.db)))
            replies = await asyncio.gather(*(connection.send(command(each)) for each in setup))
            for each, reply in zip(setup, replies, strict=True):
                if isinstance(reply, ErrorReply):
                    error = _error(reply)
                    # AuthenticationError for a wrong password, as redis-py raises it.
                    kind = type(error)
                    if not isinstance(error, redis_errors.ConnectionError):
                        kind = redis_errors.ConnectionError
                    raise _Lost(f"{each[0]} failed on {self._where}: {error}", error=kind)
        except BaseException:
            connection.abort(_Lost(f"Connection to {self._where} not set up"))
            transport.abort()  # the socket, even if the protocol never received it
            await asyncio.shield(connection.closed)
            raise
        return connection


def _error(reply: ErrorReply) -> redis_errors.RedisError:
    """The exception redis-py raises for ``reply`` (``NOSCRIPT`` is ``NoScriptError``, …)."""
    return cast(redis_errors.RedisError, BaseParser.parse_error(reply.message))  # type: ignore[no-untyped-call]


def _retrieve(task: asyncio.Task[_ConnectionProtocol]) -> None:
    # The callers waiting on a failed connect see its error; this keeps asyncio
    # from logging it as never retrieved when they were all cancelled meanwhile.
    if not task.cancelled():
        task.exception()
