"""The API-log dashboard: static HTML, JS and CSS shipped in the package, served at /dashboard.

No build step and no external asset: the page works on a machine without
network access. A strict Content-Security-Policy allows scripts, styles and
requests to this origin only.
"""

from __future__ import annotations

from starlette.routing import Route

from retrysafe.service.package_files import package_file_routes

__all__ = ["DASHBOARD_PATH", "DASHBOARD_PATHS", "dashboard_routes"]

DASHBOARD_PATH = "/dashboard"

_FILES = {
    DASHBOARD_PATH: ("index.html", "text/html; charset=utf-8"),
    f"{DASHBOARD_PATH}/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    f"{DASHBOARD_PATH}/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
DASHBOARD_PATHS = frozenset(_FILES)
"""Served without an API key: the page asks for one and sends it to the API itself."""

_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def dashboard_routes() -> list[Route]:
    """One GET route per file, its bytes read once from the package."""
    return package_file_routes(
        __name__, _FILES, content_security_policy=_POLICY, cache_control="no-cache"
    )
