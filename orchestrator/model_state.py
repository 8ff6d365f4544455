"""A model's state, read from its instance: pure functions over the runtime's neutral ``Instance``.

The states are the contract's ``ModelState`` (ready, starting, stopped, failed), each with a
reason in words, so a user asking "why is my model not answering" gets an answer.
"""

from __future__ import annotations

from datetime import datetime

from contract.listing import InstanceState, ModelState

from .backends.runtime import STOPPABLE, Instance

READY, STARTING, STOPPED, FAILED = ModelState.READY, ModelState.STARTING, ModelState.STOPPED, ModelState.FAILED


def model_state(instance: Instance | None, probed_ready: bool = False,
                stopping: bool = False) -> tuple[ModelState, str | None]:
    """(state, reason) of a model from its instance; ``probed_ready``: our own /health probe said 200
    since the instance last started (faster than the backend's own health check); ``stopping``: a
    stop we were asked for is under way."""
    if instance is None:
        return STOPPED, "not running (no container)"
    state = instance.state
    if stopping and state in STOPPABLE:
        # Not "starting": the gateway would take a listing made mid-stop, arriving after the stop's
        # answer, for a start it did not ask for, and start the model again.
        return STOPPED, "stopping"
    if state is InstanceState.RUNNING:
        if instance.health == "unhealthy":
            return FAILED, "running, but its /health check keeps failing"
        if probed_ready or instance.ready:
            return READY, None
        return STARTING, "loading the model"
    if state is InstanceState.RESTARTING:
        return STARTING, f"restarting after it exited with code {instance.exit_code} (restart {instance.restart_count})"
    if state is InstanceState.EXITED:
        if instance.oom_killed:
            return FAILED, f"killed: out of memory (exit code {instance.exit_code})"
        if instance.exit_code in (0, 143):  # 143: it ended on SIGTERM, i.e. it was stopped
            return STOPPED, "stopped"
        killed = " (killed)" if instance.exit_code == 137 else ""
        return FAILED, f"exited with code {instance.exit_code}{killed}"
    if state is InstanceState.LOST:
        return FAILED, f"its node {instance.node} cannot be reached (its engine stopped, or it is cut off)"
    if state is InstanceState.CREATED:
        return STOPPED, "created, not started"
    return STOPPED, state.value


def uptime_s(instance: Instance | None, now: datetime) -> float | None:
    if instance is None or instance.state is not InstanceState.RUNNING or instance.started_at is None:
        return None
    return max(0.0, (now - instance.started_at).total_seconds())
