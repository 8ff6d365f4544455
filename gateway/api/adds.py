"""An add through the scheduler (``POST /admin/models``): room is made the way a request makes it.

1. The orchestrator checks the spec (``POST /models/check``): valid, files and image there, names
   free, and what it needs. Nothing is written yet; its 400 / 409 go back as they are.
2. The scheduler's state is asked whether it can run now (gateway/scheduling/adding.py, pure):
   if not, 409 ``model_does_not_fit`` naming its need, the free memory and what holds it, and
   nothing has changed.
3. The orchestrator writes it into the catalog without starting it (``POST /models?start=false``).
4. The gateway loads it through the scheduler (gateway/scheduling/control.py), which stops the
   idle models it must, then starts it; the answer (``Added``) names what was stopped.
   If it fails to start, the catalog is put back as it was and the answer is the
   orchestrator's reason with the server's last log lines.

With ``start=false`` it ends after step 3: the model starts on its first request.
"""

from __future__ import annotations

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from common.errors import ApiError
from contract.adding import AddCheck, Added
from contract.listing import ModelState, ModelStatus
from contract.spec import ModelSpec

from ..scheduling import control
from ..scheduling.adding import DoesNotFit, plan_add
from ..scheduling.lifecycle import Lifecycle
from ..scheduling.scheduler import HOLDS_MEMORY, Phase


# What the orchestrator's own add answered for a server that would not start.
FAILED_START_STATUS = {"model_failed_to_start": 422, "model_start_timeout": 504, "model_out_of_memory": 503}


async def orchestrator_call(request: Request, method: str, path: str, *, content: bytes | None = None,
                            params: dict | None = None) -> httpx.Response:
    settings = request.app.state.gateway.settings
    client: httpx.AsyncClient = request.app.state.admin_client
    headers = {"authorization": f"Bearer {settings.admin_token}"}
    if content is not None:
        headers["content-type"] = "application/json"
    try:
        return await client.request(method, f"{settings.orchestrator_url.rstrip('/')}{path}", content=content,
                                    params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise ApiError(502, f"The orchestrator did not answer: {exc}.", type="server_error",
                       code="orchestrator_unreachable") from None


def passed_on(response: httpx.Response) -> Response:
    """The orchestrator's refusal, as it answered it (its 400 names the field and the rule)."""
    return Response(response.content, status_code=response.status_code,
                    headers={k: v for k, v in response.headers.items() if k.lower() in ("content-type", "retry-after")})


async def add(request: Request, body: bytes, *, replace: bool, start: bool) -> Response:
    lifecycle: Lifecycle | None = request.app.state.gateway.lifecycle
    flag = str(replace).lower()
    if lifecycle is None:  # no scheduler to make room: the orchestrator's own add (start and wait)
        return await _without_scheduler(request, body, flag, start)
    checked = await orchestrator_call(request, "POST", "/models/check", content=body, params={"replace": flag})
    if checked.status_code != 200:
        return passed_on(checked)
    check = AddCheck.model_validate_json(checked.content)
    spec = check.spec
    known = lifecycle.state.models.get(spec.name)
    running = check.unchanged and known is not None and known.phase in HOLDS_MEMORY
    if start and not running:
        verdict = plan_add(lifecycle.state, spec.name, lifecycle.policy_for(_as_listed(check)), lifecycle.clock())
        if isinstance(verdict, DoesNotFit):
            raise ApiError(409, verdict.message + " Nothing was added: stop a model first, or add it with "
                           "start=false (`--no-start`) to start it later.", "model_does_not_fit",
                           extra={"need_bytes": verdict.need, "free_bytes": verdict.free,
                                  "held_by": list(verdict.held_by)})
    declared = await orchestrator_call(request, "POST", "/models", content=_json(spec),
                                       params={"replace": flag, "start": "false"})
    if declared.status_code not in (200, 201):
        return passed_on(declared)
    created = declared.status_code == 201
    status = ModelStatus.model_validate_json(declared.content)
    if not start:
        return _answer(Added(model=status, created=created, started=False), created)
    registry = request.app.state.gateway.registry
    await registry.refresh(spec.name)  # the scheduler hears of it before it is asked to load it
    lifecycle.stopped_for[spec.name] = []
    lifecycle.start_errors.pop(spec.name, None)
    try:
        await _load(lifecycle, spec.name)
    except ApiError as exc:
        put_back = created and await _put_back(request, spec, check.previous)
        if created:
            await registry.refresh(spec.name)
        raise _not_added(exc, lifecycle.start_errors.get(spec.name), spec.name, created, put_back) from None
    finally:
        stopped = lifecycle.stopped_for.pop(spec.name, [])
    now = await orchestrator_call(request, "GET", f"/models/{spec.name}")
    status = ModelStatus.model_validate_json(now.content) if now.status_code == 200 else status
    return _answer(Added(model=status, created=created, started=True, stopped=stopped), created)


async def _without_scheduler(request: Request, body: bytes, replace: str, start: bool) -> Response:
    answer = await orchestrator_call(request, "POST", "/models", content=body,
                                     params={"replace": replace, "start": str(start).lower()})
    if answer.status_code not in (200, 201):
        return passed_on(answer)
    created = answer.status_code == 201
    return _answer(Added(model=ModelStatus.model_validate_json(answer.content), created=created, started=start),
                   created)


def _as_listed(check: AddCheck) -> ModelStatus:
    """The model as the listing will show it once declared: what its policy is read from."""
    return ModelStatus(name=check.spec.name, declared=True, spec=check.spec, aliases=list(check.spec.aliases),
                       state=ModelState.STOPPED, need_bytes=check.need_bytes, need_detail=check.need_detail,
                       estimate=check.estimate)


def _json(spec: ModelSpec) -> bytes:
    return spec.model_dump_json().encode()


async def _load(lifecycle: Lifecycle, name: str) -> None:
    """Load through the scheduler. A load that outlives the queue timeout while the model is still
    loading (a large download) waits again: the add waits for the start, not for a queue slot."""
    while True:
        try:
            await control.load(lifecycle, name)
            return
        except ApiError as exc:
            model = lifecycle.state.models.get(name)
            if exc.status == 503 and model is not None and model.phase is Phase.STARTING:
                continue
            raise


async def _put_back(request: Request, spec: ModelSpec, previous: ModelSpec | None) -> bool:
    """The catalog as it was before the add: the model gone, or its previous spec back. False when
    the orchestrator could not do it (it is restarting, say)."""
    try:
        if previous is None:
            answer = await orchestrator_call(request, "DELETE", f"/models/{spec.name}")
        else:
            answer = await orchestrator_call(request, "POST", "/models", content=_json(previous),
                                             params={"replace": "true", "start": "false"})
    except ApiError:
        return False
    return answer.status_code in (200, 201)


def _not_added(exc: ApiError, failure, name: str, created: bool, put_back: bool) -> ApiError:
    if not created:
        after = ""
    elif put_back:
        after = " It was not added: the catalog is as it was."
    else:
        after = f" It could not be taken out of the catalog again: `make rm NAME={name}` does it."
    if failure is not None:
        status = FAILED_START_STATUS.get(failure.code or "", exc.status)
        return ApiError(status, failure.message + after, failure.code, type=None, log_tail=failure.log_tail)
    return ApiError(exc.status, exc.message + after, exc.code, exc.param, type=exc.type, headers=exc.headers)


def _answer(added: Added, created: bool) -> JSONResponse:
    return JSONResponse(added.model_dump(mode="json"), status_code=201 if created else 200)
