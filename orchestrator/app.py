"""The orchestrator's HTTP API, served on a Unix socket only the gateway also reaches (and on its
own container's loopback for the healthcheck: orchestrator/listen.py), always behind the admin token.

The gateway long-polls ``GET /models?after=N`` for the live model set and forwards
its admin endpoints here. Every route but /health needs the admin token.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse

from common.auth import bearer_matches
from common.errors import ApiError, install_error_handlers
from contract.adding import AddCheck
from contract.images import CandidateRequest, ImageChange, LlamaImages
from contract.listing import Listing, ModelStatus, ReconcileReport
from contract.placement import Placement
from contract.spec import ModelSpec

from .manager import ModelManager
from .settings import OrchestratorSettings


def create_app(settings: OrchestratorSettings, manager: ModelManager, lifespan=None) -> FastAPI:
    # No /docs: no browser reaches its socket (and its assets would come from a CDN).
    app = FastAPI(title="llamadock orchestrator", lifespan=lifespan, docs_url=None, redoc_url=None)

    def require_token(request: Request) -> None:
        if not settings.admin_token:
            raise ApiError(403, "The orchestrator has no admin token configured (LLAMADOCK_ADMIN_TOKEN).",
                           "admin_disabled")
        if not bearer_matches(request.headers.get("authorization"), settings.admin_token):
            raise ApiError(401, "Missing or wrong admin token.", "invalid_admin_token")

    guarded = [Depends(require_token)]

    def with_version(status: ModelStatus) -> ModelStatus:
        # The listing version this status is at least as new as: the gateway then skips a listing
        # made before it that reaches it later (a start or stop must never be undone by one).
        return status.model_copy(update={"listing_version": manager.listing.version})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/models", dependencies=guarded)
    async def list_models(after: int | None = Query(None, description="Long poll: answer once version > after."),
                          timeout: float = Query(25.0, ge=0, le=60)) -> Listing:
        if after is None:
            return await manager.refresh()
        return await manager.wait_change(after, timeout)

    @app.post("/models", dependencies=guarded, status_code=201)
    async def add_model(spec: ModelSpec, response: Response, replace: bool = False,
                        start: bool = Query(True, description="false: write it into the catalog only; it starts "
                                            "on its first request (the gateway's add then loads it).")) -> ModelStatus:
        if start:
            status, created = await manager.add(spec, replace=replace)
        else:
            status, created = await manager.declare(spec, replace=replace)
        response.status_code = 201 if created else 200
        return with_version(status)

    @app.post("/models/check", dependencies=guarded)
    async def check_model(spec: ModelSpec, replace: bool = False) -> AddCheck:
        """Validate an add and say what the model needs; nothing is written or started."""
        return await manager.check(spec, replace=replace)

    @app.patch("/models/{name}", dependencies=guarded)
    async def edit_model(name: str, changes: dict[str, Any] = Body(..., description="Fields to change; null: back "
                                                                   "to the default.")) -> ModelStatus:
        return with_version(await manager.edit(name, changes))

    @app.get("/models/{name}", dependencies=guarded)
    async def get_model(name: str) -> ModelStatus:
        return await manager.status(name)

    @app.delete("/models/{name}", dependencies=guarded)
    async def remove_model(name: str) -> dict:
        await manager.remove(name)
        return {"name": name, "removed": True}

    @app.post("/models/{name}/restart", dependencies=guarded)
    async def restart_model(name: str) -> ModelStatus:
        return await manager.restart(name)

    @app.post("/models/{name}/start", dependencies=guarded)
    async def start_model(name: str, placement: Placement | None = None) -> ModelStatus:
        """Optional body: the GPUs to use and the layer split (the gateway's scheduler places models)."""
        return with_version(await manager.start(name, placement))

    @app.post("/models/{name}/stop", dependencies=guarded)
    async def stop_model(name: str) -> ModelStatus:
        return with_version(await manager.stop(name))

    @app.get("/models/{name}/logs", dependencies=guarded)
    async def model_logs(name: str, tail: int = Query(100, ge=0, le=100_000), follow: bool = False):
        chunks = await manager.logs(name, tail, follow)
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")

    @app.get("/llama/image", dependencies=guarded)
    async def llama_image() -> LlamaImages:
        await manager.refresh()  # reads the catalog's defaults
        return manager.images()

    @app.post("/llama/image", dependencies=guarded)
    async def set_llama_image(change: ImageChange) -> LlamaImages:
        """The image models without their own run from now on (their servers move one by one: the
        gateway's upgrade); 400 when it is not there, and then nothing changed."""
        return await manager.set_image(change.image)

    @app.post("/models/{name}/candidate", dependencies=guarded)
    async def try_image(name: str, body: CandidateRequest) -> ModelStatus:
        """Run the model on another image beside its own server and check it answers (422 with the log tail
        when it does not); ``promote`` then swaps them."""
        return await manager.try_image(name, body.image, beside=body.beside, placement=body.placement)

    @app.post("/models/{name}/promote", dependencies=guarded)
    async def promote(name: str) -> ModelStatus:
        return with_version(await manager.promote(name))

    @app.delete("/models/{name}/candidate", dependencies=guarded)
    async def discard_candidate(name: str) -> dict:
        await manager.discard_candidate(name)
        return {"name": name, "candidate": None}

    @app.post("/reconcile", dependencies=guarded)
    async def reconcile() -> ReconcileReport:
        return await manager.reconcile()

    install_error_handlers(app, service="orchestrator", validation_prefix="Invalid model spec",
                           validation_code="invalid_spec")

    return app
