"""``/playground``: one page to try the API from a browser (plain HTML and a small script, no build).

The page uses only the public API, with the key typed into it (kept in the tab's
sessionStorage). Its Content-Security-Policy allows scripts, styles and connections from this
origin only, plus the object store's (presigned uploads, and the result image); nothing inline,
no frames, no forms posted elsewhere.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from producer.api.errors import ApiError
from producer.core.settings import Settings

router = APIRouter()

#: The page's files and their types.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def store_origin(settings: Settings) -> str:
    """Where browsers reach the object store: its public (else its) endpoint's origin, else AWS S3's hosts."""
    endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
    if not endpoint:
        return "https://*.amazonaws.com"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def policy(settings: Settings) -> str:
    """The page's Content-Security-Policy."""
    store = store_origin(settings)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' {store}",
            f"connect-src 'self' {store}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def _asset(name: str, settings: Settings) -> Response:
    body = resources.files("producer.api").joinpath("playground").joinpath(name).read_bytes()
    headers = {
        "Content-Security-Policy": policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(body, media_type=ASSETS[name], headers=headers)


@router.get("/playground", include_in_schema=False)
def page(request: Request) -> Response:
    """The page."""
    return _asset("index.html", request.app.state.settings)


@router.get("/playground/{name}", include_in_schema=False)
def asset(name: str, request: Request) -> Response:
    """The page's script and style sheet."""
    if name not in ASSETS or name == "index.html":
        raise ApiError(404, "NotFound", f"no playground file {name!r}")
    return _asset(name, request.app.state.settings)
