"""The hottest routes called straight from a small ASGI router, every other one through FastAPI.

FastAPI's path to a handler is general: its middleware stack (server errors,
telemetry, body limits, exceptions, exit stacks), a walk over every route, and
dependency solving for each call. For a handler that takes only the ``Request``
none of that does anything, yet it cost about a fifth of a create's CPU. This
router answers a few such routes itself: an exact method and path (or the
route's own path pattern), the handler called with the request, its response
sent, and an exception rendered by the same exception handlers FastAPI would use,
with the same rules (a handler for the exception's class answers it; anything
else gets the app's 500 handler and is raised again, as Starlette's
``ServerErrorMiddleware`` does). Everything else, the lifespan included, goes to
the FastAPI app, which still holds every route: the OpenAPI document, the
authorization table and the metrics' route labels are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DirectRoutes", "NotDirect"]

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Any], Any]
"""Starlette's: async (returns a response to await) or sync (run in the thread pool)."""


class NotDirect(ValueError):
    """A route asked to be called straight is not one, or does more than take the request."""


@dataclass(frozen=True, slots=True)
class _Direct:
    route: Any
    """What FastAPI matched (put in ``scope["route"]``, as FastAPI does)."""
    endpoint: Endpoint
    regex: re.Pattern[str] | None
    convertors: Mapping[str, Convertor[Any]]


class DirectRoutes:
    """``app``, with the routes in ``direct`` (``(method, path template)``) called straight.

    Each must be a FastAPI route whose handler takes only the request (no
    parameters, no dependencies): :class:`NotDirect` otherwise.
    """

    def __init__(self, app: FastAPI, direct: Iterable[tuple[str, str]]) -> None:
        self.app: ASGIApp = app
        """Where every other request goes."""
        self._fastapi = app
        wanted = set(direct)
        self._static: dict[tuple[str, str], _Direct] = {}
        self._patterns: dict[str, list[_Direct]] = {}
        found: set[tuple[str, str]] = set()
        for context in _route_contexts(app.routes):
            for method in getattr(context, "methods", None) or ():
                key = (method, getattr(context, "path_format", None))
                if key not in wanted or key in found:
                    continue
                found.add(key)  # the first route of a method and path is the one FastAPI runs
                target = _direct(context, key)
                if target.regex is None:
                    self._static[(method, context.path_format)] = target
                else:
                    self._patterns.setdefault(method, []).append(target)
        missing = wanted - found
        if missing:
            raise NotDirect(f"no such route to call straight: {sorted(missing)}")
        self._handlers = _exception_handlers(app.exception_handlers)
        self._server_error: ErrorHandler | None = app.exception_handlers.get(
            Exception, app.exception_handlers.get(500)
        )

    @property
    def routes(self) -> list[BaseRoute]:
        """The app's routes (the pipeline reads them for its route labels)."""
        return self._fastapi.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            target = self._static.get((method, path))
            params: dict[str, Any] = {}
            if target is None:
                for candidate in self._patterns.get(method, ()):
                    assert candidate.regex is not None
                    matched = candidate.regex.match(path)
                    if matched is not None:
                        target = candidate
                        params = {
                            name: candidate.convertors[name].convert(value)
                            for name, value in matched.groupdict().items()
                        }
                        break
            if target is not None:
                await self._call(target, params, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _call(
        self, target: _Direct, params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["app"] = self._fastapi
        scope.setdefault("router", self._fastapi.router)
        scope["route"] = target.route
        scope["endpoint"] = target.endpoint
        scope["path_params"] = params
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = Request(scope, receive, sending)
        try:
            response = await target.endpoint(request)
            await response(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            handler = self._handler_for(exc)
            if handler is not None:
                await (await _render(handler, request, exc))(scope, receive, sending)
                return
            if self._server_error is not None:
                await (await _render(self._server_error, request, exc))(scope, receive, sending)
            raise

    def _handler_for(self, exc: Exception) -> ErrorHandler | None:
        """As Starlette's ``ExceptionMiddleware`` picks: by status, then by class."""
        by_status, by_class = self._handlers
        if isinstance(exc, HTTPException):
            handler = by_status.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            handler = by_class.get(cls)
            if handler is not None:
                return handler
        return None


async def _render(handler: ErrorHandler, request: Request, exc: Exception) -> Response:
    if is_async_callable(handler):
        response: Response = await handler(request, exc)
    else:
        response = await run_in_threadpool(handler, request, exc)
    return response


def _route_contexts(routes: Sequence[BaseRoute]) -> list[Any]:
    """Every route, looking inside FastAPI's included routers (in FastAPI's order)."""
    found: list[Any] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        found.extend(contexts() if callable(contexts) else [route])
    return found


def _direct(context: Any, key: tuple[str, str]) -> _Direct:
    dependant = getattr(context, "dependant", None)
    endpoint = getattr(context, "endpoint", None)
    if dependant is None or endpoint is None:
        raise NotDirect(f"{key} is not a FastAPI route")
    takes_only_the_request = dependant.request_param_name is not None and not any(
        (
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.body_params,
            dependant.dependencies,
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
        )
    )
    if not takes_only_the_request:
        raise NotDirect(f"{key}: its handler takes more than the request")
    convertors: Mapping[str, Convertor[Any]] = getattr(context, "param_convertors", {}) or {}
    regex = context.path_regex if convertors else None
    return _Direct(context, endpoint, regex, convertors)


def _exception_handlers(
    handlers: Mapping[Any, ErrorHandler],
) -> tuple[dict[int, ErrorHandler], dict[type[BaseException], ErrorHandler]]:
    """The handlers Starlette's ``ExceptionMiddleware`` gets: all but the 500 one."""
    by_status: dict[int, ErrorHandler] = {}
    by_class: dict[type[BaseException], ErrorHandler] = {}
    for key, handler in handlers.items():
        if key in (500, Exception):
            continue
        if isinstance(key, int):
            by_status[key] = handler
        else:
            by_class[key] = handler
    return by_status, by_class
