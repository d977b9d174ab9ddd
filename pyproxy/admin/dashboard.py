"""The dashboard page at GET /: the static files in pyproxy/admin/static/, served as they are."""

from __future__ import annotations

from importlib import resources

from pyproxy.admin.http_messages import Response, error_response

# Every file the page is made of, and its media type; nothing else is served.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# The page loads nothing from elsewhere and talks only to this listener; the browser enforces it.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
]


class Dashboard:
    """The page's files, read once from the installed package."""

    def __init__(self) -> None:
        folder = resources.files("pyproxy.admin").joinpath("static")
        self.files = {name: folder.joinpath(name).read_bytes() for name in FILES}

    def serve(self, segments: list[str], request_id: str) -> Response:
        """``/`` is the page, ``/static/NAME`` one of its files; anything else is 404."""
        if segments == [""]:
            name = "index.html"
        elif len(segments) == 2 and segments[0] == "static" and segments[1] in FILES:
            name = segments[1]
        else:
            return error_response(404, "There is no such page.", request_id)
        headers = [("content-type", FILES[name]), *HEADERS]
        return Response(200, self.files[name], headers)
