"""Files shipped inside the package, served as GET/HEAD routes (the dashboard, the API docs)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["package_file_routes"]


def package_file_routes(
    package: str,
    files: Mapping[str, tuple[str, str]],
    *,
    content_security_policy: str,
    cache_control: str,
) -> list[Route]:
    """One route per ``path: (file name, media type)``, its bytes read once from ``package``.

    Read at start-up rather than per request: the files never change while the
    process runs, and a missing one fails at once instead of at the first visit.
    Every answer says ``nosniff`` and sends no referrer; the pages' policy and
    caching are the caller's.
    """
    headers = {
        "Content-Security-Policy": content_security_policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": cache_control,
    }
    root = resources.files(package)
    routes = []
    for path, (name, media_type) in files.items():
        content = root.joinpath(name).read_bytes()

        async def serve(
            _request: Request, content: bytes = content, media_type: str = media_type
        ) -> Response:
            return Response(content, media_type=media_type, headers=dict(headers))

        routes.append(Route(path, serve, methods=["GET", "HEAD"], include_in_schema=False))
    return routes
