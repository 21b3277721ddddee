"""The web playground: plain HTML, CSS and ES modules in ``static/`` (no build step, nothing from a CDN),
served by `rag serve`: the page at ``/``, its files under ``/playground/``.

Everything it shows comes from the public API of the same origin (``/v1``, ``/ready``) with the key typed into
the page, so it can never show more than that key may see. The page's Content-Security-Policy allows scripts,
styles and requests to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.response import File
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/playground"

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_NO_CACHE = CacheControlHeader(no_cache=True)  # revalidate: an upgraded service never runs yesterday's script


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@get("/", include_in_schema=False, sync_to_thread=False, cache_control=_NO_CACHE, after_request=_secure)
def playground_page() -> File:
    """The playground's page (its assets are under /playground/)."""
    return File(STATIC_DIR / "index.html", content_disposition_type="inline", media_type="text/html")


def playground_routes() -> list:
    """Route handlers to register on the app: the page at ``/`` and the static files under ``/playground/``.

    The files are not mounted at ``/`` itself: a catch-all path there would answer every unknown API path
    (``POST /v1/nope`` would become a 405 instead of a 404)."""
    assets = create_static_files_router(path=ASSETS_PATH, directories=[STATIC_DIR], html_mode=True,
                                        name="playground", cache_control=_NO_CACHE, after_request=_secure,
                                        include_in_schema=False)
    return [playground_page, assets]
