"""``GET /ui``: the web console, static files from gateway/ui/ (plain JS, no CDN: it works
offline). The page reads the same typed JSON as the CLI (/status, /gpu, /admin/activity) and
sends the admin token itself; nothing here needs a key to be served."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_URL = "/ui"

# The page talks to its own origin only: a script or request to another host is refused by the
# browser, and model names or chat text can never become markup that runs.
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",  # revalidated each load: a gateway upgrade shows its new page at once
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def serve_console(app: FastAPI) -> None:
    @app.get(UI_URL, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        # Relative asset URLs in index.html resolve under /ui/ only with the slash.
        return RedirectResponse(UI_URL + "/", status_code=307)

    app.mount(UI_URL, ConsoleFiles(directory=str(UI_DIR), html=True), name="console")
