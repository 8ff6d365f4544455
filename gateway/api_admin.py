"""Admin endpoints: add, remove, restart, inspect models. They need the admin token and
are forwarded to the orchestrator, which alone holds the Docker socket."""

from __future__ import annotations

import hmac

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from orchestrator.spec import ModelSpec

from .errors import GatewayError


async def require_admin(request: Request) -> None:
    settings = request.app.state.gateway.settings
    if not settings.admin_token:
        raise GatewayError(403, "Admin endpoints are off: set LLAMADOCK_ADMIN_TOKEN (`make up` writes one into .env).",
                           type="permission_error", code="admin_disabled")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {settings.admin_token}".encode()):
        raise GatewayError(401, "This needs the admin token: send 'Authorization: Bearer <LLAMADOCK_ADMIN_TOKEN>'.",
                           type="authentication_error", code="invalid_admin_token")
    if not settings.orchestrator_url:
        raise GatewayError(503, "No orchestrator is configured (LLAMADOCK_ORCHESTRATOR_URL), so models cannot be "
                           "managed from here.", type="server_error", code="no_orchestrator")


router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(require_admin)])


async def forward(request: Request, method: str, path: str, *, json: dict | None = None,
                  params: dict | None = None, stream: bool = False) -> Response:
    settings = request.app.state.gateway.settings
    client: httpx.AsyncClient = request.app.state.admin_client
    outgoing = client.build_request(method, f"{settings.orchestrator_url.rstrip('/')}{path}", json=json,
                                    params=params, headers={"authorization": f"Bearer {settings.admin_token}"})
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise GatewayError(502, f"The orchestrator did not answer: {exc}.", type="server_error",
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


@router.post("/models", summary="Add a model: validate, start its container, wait until it answers",
             responses={201: {"description": "Started and ready."}, 200: {"description": "Already there, same spec."},
                        400: {"description": "Invalid spec or file."}, 409: {"description": "Name taken."},
                        422: {"description": "The server exited while loading; `log_tail` says why."}})
async def add_model(request: Request, spec: ModelSpec,
                    replace: bool = Query(False, description="Replace a model of that name with a new spec.")):
    return await forward(request, "POST", "/models", json=spec.model_dump(mode="json", exclude_unset=True),
                         params={"replace": str(replace).lower()})


@router.get("/models/{name}", summary="One model's state")
async def get_model(request: Request, name: str) -> Response:
    return await forward(request, "GET", f"/models/{name}")


@router.delete("/models/{name}", summary="Stop and remove a model (and drop it from the catalog)")
async def remove_model(request: Request, name: str) -> Response:
    return await forward(request, "DELETE", f"/models/{name}")


@router.post("/models/{name}/restart", summary="Restart a model's server and wait until it answers")
async def restart_model(request: Request, name: str) -> Response:
    return await forward(request, "POST", f"/models/{name}/restart")


@router.get("/models/{name}/logs", summary="A model's server log: the last lines, or followed live")
async def model_logs(request: Request, name: str, tail: int = Query(100, ge=0, le=100_000),
                     follow: bool = False) -> Response:
    return await forward(request, "GET", f"/models/{name}/logs",
                         params={"tail": tail, "follow": str(follow).lower()}, stream=True)


@router.post("/reconcile", summary="Bring the containers in line with config/models.yaml")
async def reconcile(request: Request) -> Response:
    return await forward(request, "POST", "/reconcile")
