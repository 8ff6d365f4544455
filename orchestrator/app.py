"""The orchestrator's HTTP API, reachable on the stack's network (and on 127.0.0.1 with the
host-network override, docker/compose.hostnet.yaml), always behind the admin token.

The gateway long-polls ``GET /models?after=N`` for the live model set and forwards
its admin endpoints here. Every route but /health needs the admin token.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .containers import Placement
from .errors import OpError
from .manager import ModelManager
from .settings import OrchestratorSettings
from .spec import ModelSpec

log = logging.getLogger("llamadock.orchestrator")


def create_app(settings: OrchestratorSettings, manager: ModelManager, lifespan=None) -> FastAPI:
    # No /docs: it has no host port, so no browser reaches it (and its assets would come from a CDN).
    app = FastAPI(title="llamadock orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)

    def require_token(request: Request) -> None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.admin_token}"
        if not settings.admin_token:
            raise OpError(403, "The orchestrator has no admin token configured (LLAMADOCK_ADMIN_TOKEN).",
                          "admin_disabled")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise OpError(401, "Missing or wrong admin token.", "invalid_admin_token")

    guarded = [Depends(require_token)]

    def snapshot_body(snapshot) -> dict:
        return {"version": snapshot.version, "host": {"kind": manager.host.kind, "warnings": list(manager.host.warnings)},
                "catalog_error": snapshot.catalog_error, "available": snapshot.available,
                "models": [m.as_dict() for m in snapshot.models]}

    def with_version(status) -> dict:
        # The listing version this status is at least as new as: the gateway then skips a listing
        # made before it that reaches it later (a start or stop must never be undone by one).
        return {**status.as_dict(), "listing_version": manager.snapshot.version}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/models", dependencies=guarded)
    async def list_models(after: int | None = Query(None, description="Long poll: answer once version > after."),
                          timeout: float = Query(25.0, ge=0, le=60)) -> dict:
        if after is None:
            snapshot = await manager.refresh()
        else:
            snapshot = await manager.wait_change(after, timeout)
        return snapshot_body(snapshot)

    @app.post("/models", dependencies=guarded, status_code=201)
    async def add_model(spec: ModelSpec, replace: bool = False) -> JSONResponse:
        status, created = await manager.add(spec, replace=replace)
        return JSONResponse(status.as_dict(), status_code=201 if created else 200)

    @app.get("/models/{name}", dependencies=guarded)
    async def get_model(name: str) -> dict:
        return (await manager.status(name)).as_dict()

    @app.delete("/models/{name}", dependencies=guarded)
    async def remove_model(name: str) -> dict:
        await manager.remove(name)
        return {"name": name, "removed": True}

    @app.post("/models/{name}/restart", dependencies=guarded)
    async def restart_model(name: str) -> dict:
        return (await manager.restart(name)).as_dict()

    @app.post("/models/{name}/start", dependencies=guarded)
    async def start_model(name: str, placement: Placement | None = None) -> dict:
        """Optional body: the GPUs to use and the layer split (the gateway's scheduler places models)."""
        return with_version(await manager.start(name, placement))

    @app.post("/models/{name}/stop", dependencies=guarded)
    async def stop_model(name: str) -> dict:
        return with_version(await manager.stop(name))

    @app.get("/models/{name}/logs", dependencies=guarded)
    async def model_logs(name: str, tail: int = Query(100, ge=0, le=100_000), follow: bool = False):
        chunks = await manager.logs(name, tail, follow)
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")

    @app.post("/reconcile", dependencies=guarded)
    async def reconcile() -> dict:
        return await manager.reconcile()

    @app.exception_handler(OpError)
    async def _op_error(request: Request, exc: OpError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        first = exc.errors()[0] if exc.errors() else {}
        param = next((str(p) for p in first.get("loc", ()) if p != "body"), None)
        return OpError(400, "Invalid model spec: " + "; ".join(problems) + ".", "invalid_spec", param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return OpError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}.", "not_found"
                       if exc.status_code == 404 else "http_error").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return OpError(500, f"The orchestrator failed: {type(exc).__name__}: {exc}.", "internal_error").response()

    return app
