"""A model's state, read from its container: pure functions over ``docker inspect`` data.

The states are the contract's ``ModelState`` (ready, starting, stopped, failed), each with a
reason in words, so a user asking "why is my model not answering" gets an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from contract.listing import ModelState
from contract.spec import ModelSpec

from .containers import LABEL_HASH, LABEL_MODEL, LABEL_SPEC, SERVER_PORT

READY, STARTING, STOPPED, FAILED = ModelState.READY, ModelState.STARTING, ModelState.STOPPED, ModelState.FAILED


@dataclass(frozen=True)
class ContainerView:
    id: str
    name: str
    model: str
    spec_hash: str
    spec: ModelSpec | None  # the spec it was created from (label), for models no longer declared
    image: str
    status: str  # created, running, restarting, paused, exited, dead, removing
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    started_at: str | None
    exit_code: int
    restart_count: int
    oom_killed: bool
    pid: int
    ip: str | None


def container_view(attrs: dict, network: str) -> ContainerView:
    """The parts of ``docker inspect`` llamadock uses."""
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    endpoint = networks.get(network) or next(iter(networks.values()), {}) or {}
    try:
        spec = ModelSpec.model_validate(json.loads(labels.get(LABEL_SPEC, "null")))
    except (json.JSONDecodeError, ValidationError):
        spec = None  # none, or written by a version whose spec no longer reads: shown without one
    started = state.get("StartedAt")
    return ContainerView(
        id=attrs.get("Id", ""),
        name=attrs.get("Name", "").lstrip("/"),
        model=labels.get(LABEL_MODEL, ""),
        spec_hash=labels.get(LABEL_HASH, ""),
        spec=spec,
        image=attrs.get("Config", {}).get("Image", ""),
        status=state.get("Status", "unknown"),
        health=(state.get("Health") or {}).get("Status"),
        started_at=None if not started or started.startswith("0001-") else started,
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(attrs.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        pid=int(state.get("Pid") or 0),
        ip=endpoint.get("IPAddress") or None,
    )


def model_state(view: ContainerView | None, probed_ready: bool = False,
                stopping: bool = False) -> tuple[ModelState, str | None]:
    """(state, reason) of a model from its container; ``probed_ready``: our own /health probe said 200
    since the container last started (faster than Docker's healthcheck interval); ``stopping``: a stop
    we were asked for is under way."""
    if view is None:
        return STOPPED, "not running (no container)"
    if stopping and view.status in ("running", "restarting", "paused"):
        # Not "starting": the gateway would take a listing made mid-stop, arriving after the stop's
        # answer, for a start it did not ask for, and start the model again.
        return STOPPED, "stopping"
    if view.status == "running":
        if view.health == "unhealthy":
            return FAILED, "running, but its /health check keeps failing"
        if probed_ready or view.health == "healthy":
            return READY, None
        return STARTING, "loading the model"
    if view.status == "restarting":
        return STARTING, f"restarting after it exited with code {view.exit_code} (restart {view.restart_count})"
    if view.status in ("exited", "dead"):
        if view.oom_killed:
            return FAILED, f"killed: out of memory (exit code {view.exit_code})"
        if view.exit_code in (0, 143):  # 143: it ended on SIGTERM, i.e. it was stopped
            return STOPPED, "stopped"
        killed = " (killed)" if view.exit_code == 137 else ""
        return FAILED, f"exited with code {view.exit_code}{killed}"
    if view.status == "created":
        return STOPPED, "created, not started"
    return STOPPED, view.status


def docker_time(stamp: str | None) -> datetime | None:
    """A Docker timestamp (UTC, nanoseconds, e.g. StartedAt) as a datetime; None for none or the zero time."""
    if not stamp or stamp.startswith("0001-"):
        return None
    # Docker writes nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{frac[:6] or '0'}+00:00")
    except ValueError:
        return None


def uptime_s(view: ContainerView | None, now: datetime) -> float | None:
    if view is None or view.status != "running":
        return None
    started = docker_time(view.started_at)
    return None if started is None else max(0.0, (now - started).total_seconds())


def model_url(view: ContainerView, by: str) -> str | None:
    """Where the model's server answers: by container name on the stack's network, or by IP."""
    if by == "ip":
        return f"http://{view.ip}:{SERVER_PORT}" if view.ip else None
    return f"http://{view.name}:{SERVER_PORT}"
