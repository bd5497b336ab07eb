"""GET /ui: the live page (static files in corral/api/static, shipped in the wheel).

The files hold no data, so they are served without an API key (tenancy.py lets /ui through);
the page then asks /api/events, which needs one, and prompts for it on a 401.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from corral.errors import NotFound

router = APIRouter()

STATIC = files("corral.api") / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}
PREFIX = "/ui"


def is_ui_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _file(name: str) -> Response:
    # Only the package's own files, by exact name: no path ever reaches the file system.
    suffix = name[name.rfind("."):] if "." in name else ""
    entry = STATIC / name
    if "/" in name or suffix not in TYPES or not entry.is_file():
        raise NotFound(f"{PREFIX}/{name} not found")
    return Response(entry.read_bytes(), media_type=TYPES[suffix], headers={"Cache-Control": "no-cache"})


@router.get(PREFIX, include_in_schema=False)
@router.get(PREFIX + "/", include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@router.get(PREFIX + "/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    return _file(name)
