"""/docs (Swagger UI) and /redoc (ReDoc) served from files in the package, never from a CDN.

The viewers are vendored (see README.md beside this module for versions, licences and
digests), so the pages work on a machine without network access. Their pages load
only files of this origin and a Content-Security-Policy holds them to it; it is the
dashboard's, loosened only where the viewers need it: inline styles (both set
style attributes, ReDoc injects style elements), ``data:`` images (Swagger UI's
icons) and a ``blob:`` worker (ReDoc's search index).
"""

from __future__ import annotations

from starlette.routing import Route

from retrysafe.service.package_files import package_file_routes

__all__ = ["DOCS_PATHS", "api_docs_routes"]

_JS = "text/javascript; charset=utf-8"
_FILES = {
    "/docs": ("docs.html", "text/html; charset=utf-8"),
    "/docs/swagger-ui.css": ("swagger-ui.css", "text/css; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", _JS),
    "/docs/swagger-init.js": ("swagger-init.js", _JS),
    "/redoc": ("redoc.html", "text/html; charset=utf-8"),
    "/redoc/redoc.standalone.js": ("redoc.standalone.js", _JS),
}
DOCS_PATHS = frozenset(_FILES)
"""Served without an API key, like /openapi.json they read."""

_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def api_docs_routes() -> list[Route]:
    """The two pages and the files they load."""
    # The viewers change only with the package: an hour of caching spares the 3 MB.
    return package_file_routes(
        __name__, _FILES, content_security_policy=_POLICY, cache_control="public, max-age=3600"
    )
