"""Admin endpoints: add, remove, restart, inspect models. They need the admin token and
are forwarded to the orchestrator, which alone holds the Docker socket."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from common.auth import bearer_matches
from common.errors import ApiError
from contract.images import ImageChange, UpgradeReport
from contract.spec import NAME_PATTERN, ModelSpec
from contract.status import Loaded, Unloaded, UnloadedIdle

from ..scheduling import control
from . import adds, upgrade
from .models import resolve


def require_admin_token(request: Request) -> None:
    settings = request.app.state.gateway.settings
    if not settings.admin_token:
        raise ApiError(403, "Admin endpoints are off: set LLAMADOCK_ADMIN_TOKEN (`make up` writes one into .env).",
                       type="permission_error", code="admin_disabled")
    if not bearer_matches(request.headers.get("authorization"), settings.admin_token):
        raise ApiError(401, "This needs the admin token: send 'Authorization: Bearer <LLAMADOCK_ADMIN_TOKEN>'.",
                       type="authentication_error", code="invalid_admin_token")


async def require_admin(request: Request) -> None:
    require_admin_token(request)
    if not request.app.state.gateway.settings.orchestrator_url:
        raise ApiError(503, "No orchestrator is configured (LLAMADOCK_ORCHESTRATOR_URL), so models cannot be "
                       "managed from here.", type="server_error", code="no_orchestrator")


_BAD_NAME = {400: {"description": "Not a name a model can have."}, 404: {"description": "No such model."}}
router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(require_admin)])

# Checked here, before forwarding: a name no model can have (control characters, slashes,
# capitals) is the client's mistake, 400, never a URL the orchestrator call chokes on.
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="The model's name: lowercase, digits, . _ -")]


def _model_path(name: str, action: str = "") -> str:
    return f"/models/{quote(name, safe='')}{action}"  # quoted too: the check above is the rule, this the guard


async def forward(request: Request, method: str, path: str, *, content: bytes | None = None,
                  params: dict | None = None, stream: bool = False) -> Response:
    settings = request.app.state.gateway.settings
    client: httpx.AsyncClient = request.app.state.admin_client
    sent = {"authorization": f"Bearer {settings.admin_token}"}
    if content is not None:
        sent["content-type"] = "application/json"
    outgoing = client.build_request(method, f"{settings.orchestrator_url.rstrip('/')}{path}", content=content,
                                    params=params, headers=sent)
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise ApiError(502, f"The orchestrator did not answer: {exc}.", type="server_error",
                       code="orchestrator_unreachable") from None
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "retry-after")}
    if stream and upstream.status_code == 200:
        return StreamingResponse(upstream.aiter_raw(), status_code=200, headers=headers,
                                 background=BackgroundTask(upstream.aclose))
    body = await upstream.aread()
    await upstream.aclose()
    return Response(body, status_code=upstream.status_code, headers=headers)


@router.get("/models", summary="Declared models, their containers and state; GGUF files available to add")
async def list_models(request: Request) -> Response:
    return await forward(request, "GET", "/models")


@router.post("/models", summary="Add a model: validate, make room as a request would, start it, wait until it answers",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": ModelSpec.model_json_schema()}}}},
             responses={201: {"description": "Added (and started, unless start=false): `Added`, with the models "
                              "stopped to make room."},
                        200: {"description": "Already there with that spec."},
                        400: {"description": "Invalid spec or file."},
                        409: {"description": "Name taken, or `model_does_not_fit` (need, free memory, what holds "
                              "it): nothing changed."},
                        422: {"description": "The server exited while loading; `log_tail` says why; the catalog is "
                              "as it was."}})
async def add_model(request: Request,
                    replace: bool = Query(False, description="Replace a model of that name with a new spec."),
                    start: bool = Query(True, description="false: into the catalog only; it starts on its first "
                                        "request.")):
    # The body goes to the orchestrator as sent: it judges the spec and its errors name the field
    # and the rule (a second check here would only hide them behind a vaguer one).
    return await adds.add(request, await request.body(), replace=replace, start=start)


@router.patch("/models/{name}", summary="Change fields of a model's spec (null: back to the default)",
              responses={**_BAD_NAME, 400: {"description": "Invalid value or unknown field: nothing changed."},
                         422: {"description": "It would not start with the change: its old spec is back."}})
async def edit_model(request: Request, name: ModelName) -> Response:
    return await forward(request, "PATCH", _model_path(name), content=await request.body())


@router.get("/models/{name}", summary="One model's state", responses=_BAD_NAME)
async def get_model(request: Request, name: ModelName) -> Response:
    return await forward(request, "GET", _model_path(name))


@router.delete("/models/{name}", summary="Stop and remove a model (and drop it from the catalog)", responses=_BAD_NAME)
async def remove_model(request: Request, name: ModelName) -> Response:
    return await forward(request, "DELETE", _model_path(name))


@router.post("/models/{name}/restart", summary="Restart a model's server and wait until it answers", responses=_BAD_NAME)
async def restart_model(request: Request, name: ModelName) -> Response:
    return await forward(request, "POST", _model_path(name, "/restart"))


@router.get("/models/{name}/logs", summary="A model's server log: the last lines, or followed live", responses=_BAD_NAME)
async def model_logs(request: Request, name: ModelName, tail: int = Query(100, ge=0, le=100_000),
                     follow: bool = False) -> Response:
    return await forward(request, "GET", _model_path(name, "/logs"),
                         params={"tail": tail, "follow": str(follow).lower()}, stream=True)


@router.get("/llama/image", summary="The llama-server image models without their own run, and the one before it")
async def llama_image(request: Request) -> Response:
    return await forward(request, "GET", "/llama/image")


@router.post("/llama/upgrade", summary="Move the models to another llama-server image, one at a time, each when idle",
             responses={400: {"description": "The image is not there (nothing changed)."}})
async def llama_upgrade(request: Request, change: ImageChange) -> UpgradeReport:
    return await upgrade.upgrade(request, _lifecycle(request), change.image)


@router.post("/llama/rollback", summary="Move the models back to the previous llama-server image",
             responses={409: {"description": "No previous image is known."}})
async def llama_rollback(request: Request) -> UpgradeReport:
    return await upgrade.rollback(request, _lifecycle(request))


@router.post("/reconcile", summary="Bring the containers in line with config/models.yaml")
async def reconcile(request: Request) -> Response:
    return await forward(request, "POST", "/reconcile")


def _lifecycle(request: Request):
    lifecycle = request.app.state.gateway.lifecycle
    if lifecycle is None:
        raise ApiError(503, "The scheduler is not running (no orchestrator listing yet).", type="server_error",
                       code="no_scheduler")
    return lifecycle


def _scheduled_name(request: Request, name: str) -> str:
    return resolve(request.app.state.gateway, name).name


@router.post("/models/{name}/load", summary="Start a model (making room as a request would) and wait until it answers",
             responses={**_BAD_NAME, 503: {"description": "It cannot be started (does not fit, failed)."}})
async def load_model(request: Request, name: str) -> Loaded:
    lifecycle = _lifecycle(request)
    model = _scheduled_name(request, name)
    await control.load(lifecycle, model)
    return Loaded(model=model)


@router.post("/models/{name}/unload", summary="Stop a model now if it is idle (409 if it is busy)",
             responses={**_BAD_NAME, 409: {"description": "Busy (requests running or waiting) or still starting: "
                                                            "left as it is."}})
async def unload_model(request: Request, name: str) -> Unloaded:
    lifecycle = _lifecycle(request)
    model = _scheduled_name(request, name)
    return Unloaded(model=model, result=await control.unload(lifecycle, model))


@router.post("/unload", summary="Stop every idle model, pinned ones too; busy ones are listed and left running")
async def unload_all(request: Request) -> UnloadedIdle:
    return await control.unload_idle(_lifecycle(request))
