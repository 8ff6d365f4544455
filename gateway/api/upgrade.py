"""Moving the models to another llama-server image, one at a time (`make llama-upgrade IMAGE=`,
`make llama-rollback`), without cutting off a request.

1. The orchestrator makes the image the stack-wide default (``POST /llama/image``), kept in
   config/models.yaml beside the one it replaces; an image that is not there changes nothing (400).
2. Each declared model without its own `image`, in turn (gateway/scheduling/upgrading.py says how):
   - running, with room for a second copy: the new server loads beside it (the scheduler counts
     its memory twice meanwhile) and must answer /health and a one-token completion; then new
     requests wait (a CLOSED hold), those in flight finish, and the new server takes the old
     one's place (a rename: a moment);
   - running, without that room: new requests wait, those in flight finish, the old server stops
     and the new one loads and is checked; if it fails, the old one starts again;
   - not running: nothing to move; its next start makes its server on the new image.
   A model that does not run on the new image stays on the previous one: its spec is given that
   image (`make edit NAME=x IMAGE=` clears it), and the report has its server's last log lines.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import Request

from common.errors import ApiError
from contract.errors import error_detail
from contract.images import FailedMove, LlamaImages, UpgradeReport
from contract.listing import Listing

from ..scheduling.lifecycle import Lifecycle
from ..scheduling.scheduler import Hold, HoldKind, Unhold
from ..scheduling.upgrading import Move, how_to_move
from .adds import orchestrator_call

IDLE_WAIT_S = 600.0  # longest wait for a model to be idle (or to finish starting) before it is left as it is
POLL_S = 0.05


_under_way = asyncio.Lock()  # one upgrade at a time: two would swap the same servers under each other


async def upgrade(request: Request, lifecycle: Lifecycle, image: str) -> UpgradeReport:
    if _under_way.locked():
        raise ApiError(409, "An upgrade of the llama-server image is under way; wait for its report.",
                       "upgrade_in_progress")
    async with _under_way:
        return await _upgrade(request, lifecycle, image)


async def _upgrade(request: Request, lifecycle: Lifecycle, image: str) -> UpgradeReport:
    answer = await orchestrator_call(request, "POST", "/llama/image", content=_image_body(image))
    if answer.status_code != 200:
        raise _passed_on(answer)
    images = LlamaImages.model_validate_json(answer.content)
    listed = await orchestrator_call(request, "GET", "/models")
    listing = Listing.model_validate_json(listed.content)
    report = UpgradeReport(image=images.image, previous=images.previous)
    for status in listing.models:
        if not status.declared or status.spec is None:
            continue
        if status.spec.image is not None:
            report.own_image.append(status.name)
            continue
        if status.instance is not None and status.instance.image == image and status.state == "ready":
            report.moved.append(status.name)
            continue
        failure = await _move(request, lifecycle, status.name, image, report)
        if failure is not None:
            report.failed.append(failure)
            ran = status.instance.image if status.instance and status.instance.image else images.previous
            if ran and ran != image:  # it stays on what it ran
                await orchestrator_call(request, "PATCH", f"/models/{status.name}", content=_image_body(ran))
    return report


async def rollback(request: Request, lifecycle: Lifecycle) -> UpgradeReport:
    answer = await orchestrator_call(request, "GET", "/llama/image")
    images = LlamaImages.model_validate_json(answer.content)
    if not images.previous:
        raise ApiError(409, f"There is no previous llama-server image to go back to (the models run {images.image}).",
                       "no_previous_image")
    return await upgrade(request, lifecycle, images.previous)


async def _move(request: Request, lifecycle: Lifecycle, name: str, image: str,
                report: UpgradeReport) -> FailedMove | None:
    move = await _settled(lifecycle, name)
    if move is Move.LATER:
        report.later.append(name)
        return None
    if move is Move.WAIT:
        return FailedMove(name=name, reason=f"it was still starting or stopping after {IDLE_WAIT_S:g} s; "
                          "it moves at its next start")
    model = lifecycle.state.models[name]
    placement = model.placement.wire().model_dump(mode="json") if model.placement else None
    beside = move is Move.BESIDE
    try:
        if beside:
            lifecycle.dispatch(Hold(name, HoldKind.BESIDE, lifecycle.clock()))
        elif not await _closed_when_idle(lifecycle, name):
            return FailedMove(name=name, reason=f"it stayed busy for {IDLE_WAIT_S:g} s; it moves at its next start")
        tried = await orchestrator_call(request, "POST", f"/models/{name}/candidate", content=_json(
            {"image": image, "beside": beside, "placement": placement}))
        if tried.status_code != 200:
            error = error_detail(tried.content)
            return FailedMove(name=name, reason=error.message if error else f"HTTP {tried.status_code}",
                              log_tail=error.log_tail if error else [])
        if beside and not await _closed_when_idle(lifecycle, name):
            await orchestrator_call(request, "DELETE", f"/models/{name}/candidate")
            return FailedMove(name=name, reason=f"it stayed busy for {IDLE_WAIT_S:g} s; it moves at its next start")
        promoted = await orchestrator_call(request, "POST", f"/models/{name}/promote")
        if promoted.status_code != 200:
            error = error_detail(promoted.content)
            return FailedMove(name=name, reason=error.message if error else f"HTTP {promoted.status_code}")
        await request.app.state.gateway.registry.refresh(name)  # its new address before requests go again
        report.moved.append(name)
        return None
    finally:
        lifecycle.dispatch(Unhold(name, lifecycle.clock()))


async def _settled(lifecycle: Lifecycle, name: str) -> Move:
    """How it moves, once it is not starting or stopping (bounded by IDLE_WAIT_S)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IDLE_WAIT_S
    while (move := how_to_move(lifecycle.state, name)) is Move.WAIT and loop.time() < deadline:
        await asyncio.sleep(POLL_S)
    return move


async def _closed_when_idle(lifecycle: Lifecycle, name: str) -> bool:
    """A CLOSED hold: new requests wait, and this returns once those in flight have finished
    (False, the hold given back, if they have not within IDLE_WAIT_S or the model stopped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + IDLE_WAIT_S
    lifecycle.dispatch(Hold(name, HoldKind.CLOSED, lifecycle.clock()))
    while (model := lifecycle.state.models.get(name)) is not None and model.closed and loop.time() < deadline:
        if model.in_flight == 0:
            return True
        await asyncio.sleep(POLL_S)
    lifecycle.dispatch(Unhold(name, lifecycle.clock()))
    return False


def _image_body(image: str) -> bytes:
    return _json({"image": image})


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()


def _passed_on(answer) -> ApiError:
    error = error_detail(answer.content)
    if error is None:
        return ApiError(502, f"The orchestrator answered {answer.status_code}.", "orchestrator_error")
    return ApiError(answer.status_code, error.message + " Nothing was changed.", error.code, error.param)
