"""The models as OpenAI lists them (/v1/models), and the routes that relay whatever else a model's
llama-server serves: any other /v1 endpoint, and /upstream/{model}/* raw. These speak OpenAI's
dialect (gateway/api/openai.py) and are registered after every surface's own routes, since
``/v1/{path}`` would match those too."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from contract.status import ModelList, ModelObject

from .. import errors
from ..auth import require_api_key
from ..proxy.dialect import Asked
from .openai import PLAIN
from ..proxy.exchange import context, incoming, read_body, relay, relay_by_body, resolve
from ..routes.table import ModelRoute, asks_for_stream

router = APIRouter(dependencies=[Depends(require_api_key)])


def model_object(route: ModelRoute) -> ModelObject:
    return ModelObject(id=route.name, created=route.created, aliases=list(route.aliases), state=route.state,
                       reason=route.reason, provider=route.provider, owned_by=route.provider or "llamadock")


_PENDING = {503: {"description": "The gateway has just started and does not know the model list yet (`Retry-After`)."}}


@router.get("/v1/models", tags=["OpenAI"], response_model=ModelList, summary="Every known model, with aliases and state",
            responses=_PENDING)
async def list_models(request: Request) -> ModelList:
    registry = context(request).registry
    if not registry.synced:
        raise errors.model_list_pending(registry.error)  # an empty list would be a lie
    return ModelList(data=[model_object(route) for route in registry.route_table().routes])


@router.get("/v1/models/{model:path}", tags=["OpenAI"], response_model=ModelObject, summary="One model by name or alias",
            responses={404: {"description": "No such model."}, **_PENDING})
async def get_model(request: Request, model: str) -> ModelObject:
    return model_object(resolve(context(request), model))


async def other_v1(request: Request, path: str):
    if request.method == "POST":
        return await relay_by_body(request, PLAIN, path)
    started = time.perf_counter()
    requested = request.query_params.get("model")
    if not requested:
        raise errors.bad_request("Say which model this is for with '?model=NAME'.", param="model")
    return await relay(context(request), PLAIN, Asked(model=requested), incoming(request, request.url.path, b""), path,
                       started)


for _method in ("GET", "POST"):
    router.add_api_route(
        "/v1/{path:path}", other_v1, methods=[_method], tags=["OpenAI"], name=f"other_v1_{_method.lower()}",
        summary="Any other llama-server /v1 endpoint: POST routes on the body's `model`, GET on `?model=`")


async def upstream_passthrough(request: Request, model: str, path: str):
    started = time.perf_counter()
    ctx = context(request)
    # Raw: the body goes to the model's server as it came, JSON object or not.
    body = await read_body(request, ctx.settings.max_body_bytes)
    return await relay(ctx, PLAIN, Asked(model=model, stream=asks_for_stream(body)), incoming(request, "/" + path, body),
                       "upstream", started)


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    router.add_api_route(
        "/upstream/{model}/{path:path}", upstream_passthrough, methods=[_method], tags=["Passthrough"],
        name=f"upstream_{_method.lower()}",
        summary="Raw passthrough to one model's llama-server (/props, /slots, /metrics, its web UI)")
