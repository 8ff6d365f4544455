"""Explicit control of what is loaded: load, unload, keep_alive. Effects around the scheduler's
``KeepAlive`` and ``Unload`` events (gateway/scheduling/scheduler.py); used by /admin and the Ollama API.

A load is a request that holds nothing: it takes a ticket (which starts the model, making room
as any request would), waits for its turn and gives it back at once. An unload stops an idle
model; a busy one is refused (409) rather than cut off or stopped later behind the caller's back.
"""

from __future__ import annotations

import asyncio

from common.errors import ApiError
from contract.status import UnloadedIdle

from .lifecycle import Lifecycle
from .scheduler import FREEING, KeepAlive, Phase, Unload

STOP_WAIT_S = 120.0


def keep_alive(lifecycle: Lifecycle, name: str, seconds: float) -> None:
    if lifecycle.knows(name):
        lifecycle.dispatch(KeepAlive(name, seconds, lifecycle.clock()))


async def load(lifecycle: Lifecycle, name: str) -> None:
    """Start ``name`` if it is not running and wait until it answers; the scheduler's refusal
    (cannot fit, timed out, failed to start) is raised as its ApiError."""
    model = lifecycle.state.models.get(name)
    if model is not None and model.phase is Phase.READY:
        return
    await lifecycle.load(name)


def _busy(name: str, in_flight: int, queued: int) -> ApiError:
    return ApiError(409, f"Model '{name}' is busy ({in_flight} request(s) running, {queued} waiting): "
                    "not unloaded. Retry once it is idle.", code="model_busy")


async def unload(lifecycle: Lifecycle, name: str) -> str:
    """Stop ``name`` if it is idle and wait until it has stopped. Returns what happened
    ("unloaded", "not loaded"); 409 when it is busy or still starting, 404 when unknown."""
    model = lifecycle.state.models.get(name)
    if model is None:
        raise ApiError(404, f"No model named '{name}' is scheduled here.", code="model_not_found",
                       param="model")
    if model.phase is Phase.STARTING:
        raise ApiError(409, f"Model '{name}' is still starting: not unloaded. Retry once it is ready.",
                       code="model_busy")
    if model.phase is Phase.READY and model.busy:
        raise _busy(name, model.in_flight, len(model.queue))
    if model.phase is Phase.READY:
        lifecycle.dispatch(Unload(name, lifecycle.clock()))
    elif model.phase not in FREEING:
        return "not loaded"
    await _stopped(lifecycle, [name])
    return "unloaded"


async def unload_idle(lifecycle: Lifecycle) -> UnloadedIdle:
    """Stop every idle loaded model (pinned ones included); busy ones are named and left."""
    unloaded, busy = [], []
    for model in list(lifecycle.state.models.values()):
        if model.phase is not Phase.READY:
            continue
        if model.busy:
            busy.append(model.name)
            continue
        lifecycle.dispatch(Unload(model.name, lifecycle.clock()))
        unloaded.append(model.name)
    await _stopped(lifecycle, unloaded)
    return UnloadedIdle(unloaded=unloaded, busy=busy)


async def _stopped(lifecycle: Lifecycle, names: list[str]) -> None:
    """Until none of ``names`` is stopping (the orchestrator's stop returned, memory seen free)."""
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            while any((m := lifecycle.state.models.get(n)) is not None and m.phase in FREEING for n in names):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise ApiError(504, f"Asked to stop {', '.join(names)}, but it had not stopped after "
                       f"{STOP_WAIT_S:g} s.", type="server_error", code="stop_timeout") from None
