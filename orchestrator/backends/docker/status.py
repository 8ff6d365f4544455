"""A model container as the runtime's neutral ``Instance``: pure functions over ``docker inspect`` data.

Docker's words stay here: its status strings become an ``InstanceState`` ("dead" reads as exited),
its timestamps datetimes, its network endpoint the model's URL and the address its /health is
probed at.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import ValidationError

from contract.listing import InstanceState
from contract.spec import ModelSpec

from ..runtime import Instance
from .containers import LABEL_HASH, LABEL_MODEL, LABEL_PLACEMENT, LABEL_SPEC, SERVER_PORT

# Docker's container statuses, in the runtime's words.
STATES = {
    "created": InstanceState.CREATED,
    "running": InstanceState.RUNNING,
    "restarting": InstanceState.RESTARTING,
    "paused": InstanceState.PAUSED,
    "exited": InstanceState.EXITED,
    "dead": InstanceState.EXITED,  # could not be removed; as stopped as an exited one
    "removing": InstanceState.REMOVING,
}


def instance_from_attrs(attrs: dict, network: str, url_by: Literal["name", "ip"] = "name") -> Instance:
    """The parts of ``docker inspect`` llamadock uses, as an Instance."""
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    endpoint = networks.get(network) or next(iter(networks.values()), {}) or {}
    try:
        spec = ModelSpec.model_validate(json.loads(labels.get(LABEL_SPEC, "null")))
    except (json.JSONDecodeError, ValidationError):
        spec = None  # none, or written by a version whose spec no longer reads: shown without one
    name = attrs.get("Name", "").lstrip("/")
    ip = endpoint.get("IPAddress") or None
    pid = int(state.get("Pid") or 0)
    return Instance(
        id=attrs.get("Id", ""),
        name=name,
        model=labels.get(LABEL_MODEL, ""),
        state=STATES.get(state.get("Status", "unknown"), InstanceState.UNKNOWN),
        spec_hash=labels.get(LABEL_HASH, ""),
        spec=spec,
        placement=labels.get(LABEL_PLACEMENT, ""),
        image=attrs.get("Config", {}).get("Image", ""),
        health=(state.get("Health") or {}).get("Status"),
        started_at=docker_time(state.get("StartedAt")),
        exit_code=int(state.get("ExitCode") or 0),
        restart_count=int(attrs.get("RestartCount") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        pids=(pid,) if pid else (),
        url=model_url(name, ip, url_by),
        probe_url=f"http://{ip}:{SERVER_PORT}" if ip else None,
    )


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


def model_url(name: str, ip: str | None, by: str) -> str | None:
    """Where the model's server answers: by container name on the stack's network, or by IP."""
    if by == "ip":
        return f"http://{ip}:{SERVER_PORT}" if ip else None
    return f"http://{name}:{SERVER_PORT}"
