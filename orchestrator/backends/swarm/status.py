"""A model's Swarm service and its tasks as the runtime's neutral ``Instance``: pure functions over
``docker service inspect`` and ``docker service ps`` data.

A service outlives its tasks: each start, restart or update makes a new task, and Swarm keeps a
few old ones. The instance is the service (its id stays through a spec change); its state is its
current task's: the newest one Swarm wants running, else the newest one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Mapping, Sequence

from pydantic import ValidationError

from contract.listing import InstanceState
from contract.placement import Placement
from contract.pools import LOCAL_NODE
from contract.spec import ModelSpec

from ..docker.containers import LABEL_HASH, LABEL_MODEL, LABEL_PLACEMENT, LABEL_SPEC, SERVER_PORT
from ..docker.status import docker_time
from ..runtime import Instance

# Swarm's task states (swarmkit api/types.proto TaskState), in the runtime's words. Before
# "starting" no process runs yet; "starting" is a container that runs while its healthcheck has not
# passed yet (Swarm waits for it), "running" one that passed.
STATES = {
    "new": InstanceState.CREATED,
    "allocated": InstanceState.CREATED,
    "pending": InstanceState.CREATED,  # no node fits (yet): its Err says why
    "assigned": InstanceState.CREATED,
    "accepted": InstanceState.CREATED,
    "preparing": InstanceState.CREATED,  # pulling the image on its node
    "ready": InstanceState.CREATED,
    "starting": InstanceState.RUNNING,
    "running": InstanceState.RUNNING,
    "complete": InstanceState.EXITED,
    "shutdown": InstanceState.EXITED,
    "failed": InstanceState.EXITED,
    "rejected": InstanceState.EXITED,  # its node could not run it (no image, a bind path missing)
    "remove": InstanceState.REMOVING,
    "orphaned": InstanceState.UNKNOWN,  # its node is gone
}
HEALTH = {"starting": "starting", "running": "healthy"}  # what our healthcheck means for each
FAILED = ("failed", "rejected")
BEFORE_START = tuple(state for state, mapped in STATES.items() if mapped is InstanceState.CREATED)


NEVER = datetime.min.replace(tzinfo=timezone.utc)


def _state(task: dict) -> str:
    return (task.get("Status") or {}).get("State", "")


def _when(stamp: str | None) -> datetime:
    # Parsed: Docker trims trailing zeros of the nanoseconds, so the strings do not sort.
    return docker_time(stamp) or NEVER


def current_task(tasks: Sequence[dict]) -> dict | None:
    """The newest task Swarm wants running; else the newest (a stopped service's last run)."""
    newest = sorted(tasks, key=lambda t: _when(t.get("CreatedAt")), reverse=True)
    return next((t for t in newest if t.get("DesiredState") == "running"), newest[0] if newest else None)


def made_from(task: dict, template: dict) -> bool:
    """Whether the task was made from ``template`` (the service's task spec now): a task's spec is
    a copy of it, which Swarm may have filled fewer fields of. (Not by time: Swarm rewrites the
    service, and so its UpdatedAt, when a rolling update completes, after the new task began.)"""
    return all(template.get(key) == value for key, value in (task.get("Spec") or {}).items())


def restarts(service: dict, tasks: Sequence[dict]) -> int:
    """Tasks of the current spec that failed: Swarm's restarts of what runs now, not those of an
    earlier spec (an update, or a restart, which bumps ForceUpdate, starts again at 0)."""
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    return sum(1 for t in tasks if _state(t) in FAILED and made_from(t, template))


def after_failure(task: dict, tasks: Sequence[dict]) -> bool:
    """Whether the task before ``task`` failed: Swarm made ``task`` to bring it back."""
    earlier = sorted((t for t in tasks if _when(t.get("CreatedAt")) < _when(task.get("CreatedAt"))),
                     key=lambda t: _when(t.get("CreatedAt")))
    return bool(earlier) and _state(earlier[-1]) in FAILED


def task_address(task: dict, network: str) -> str | None:
    """Its address on ``network`` (the overlay), without the prefix length."""
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return address.partition("/")[0]
    return None


def task_error(task: dict | None) -> str | None:
    """Why Swarm could not place or run it (e.g. "no suitable node", "No such image"); None if all is well."""
    status = (task or {}).get("Status") or {}
    return status.get("Err") or None


def last_error(tasks: Sequence[dict]) -> str | None:
    """The newest task's error: the current one's, or, while Swarm makes a new task after a
    failure, the failed one's (the new task has none yet)."""
    newest = sorted(tasks, key=lambda t: _when(t.get("CreatedAt")), reverse=True)
    return next((error for t in newest if (error := task_error(t))), None)


def node_of(task: dict | None, hostnames: dict[str, str], local_id: str) -> str:
    """The task's node by hostname; the manager's own node is the contract's LOCAL_NODE, so its
    GPUs keep the keys the gateway's NVML reading gives them (``gpu0``, not ``<host>/gpu0``)."""
    node_id = (task or {}).get("NodeID", "")
    if not node_id or node_id == local_id:
        return LOCAL_NODE
    return hostnames.get(node_id, node_id)


def target_node(placement_label: str, task: dict | None, hostnames: dict[str, str], local_id: str) -> str:
    """The node the service runs on: its placement's (a constraint), else its current task's."""
    if placement_label:
        try:
            return Placement.model_validate_json(placement_label).node
        except ValidationError:
            pass  # a label of another version: by the task, then
    return node_of(task, hostnames, local_id)


def instance_from_service(service: dict, tasks: Sequence[dict], network: str, hostnames: dict[str, str],
                          local_id: str, unreachable: Mapping[str, str] | None = None) -> Instance:
    """``unreachable``: the nodes Swarm cannot reach now (down, or cut off), by the contract's node
    name, each with its state. A service meant to run on one of them is LOST: its task may still run
    there, but nothing can reach it, and Swarm will not move it (its placement pins the node)."""
    spec_data = service.get("Spec") or {}
    labels = spec_data.get("Labels") or {}
    try:
        spec = ModelSpec.model_validate(json.loads(labels.get(LABEL_SPEC, "null")))
    except (json.JSONDecodeError, ValidationError):
        spec = None
    task = current_task(tasks)
    state_name = _state(task) if task else ""
    restarted = restarts(service, tasks)
    if task is None:
        state = InstanceState.EXITED if _replicas(spec_data) == 0 else InstanceState.CREATED
    elif state_name in BEFORE_START and task.get("DesiredState") == "running" and after_failure(task, tasks):
        state = InstanceState.RESTARTING  # an earlier task failed; Swarm brings it back
    else:
        state = STATES.get(state_name, InstanceState.UNKNOWN)
    node = target_node(labels.get(LABEL_PLACEMENT, ""), task, hostnames, local_id)
    if node in (unreachable or {}) and _replicas(spec_data) > 0:
        state = InstanceState.LOST
    status = (task or {}).get("Status") or {}
    container = status.get("ContainerStatus") or {}
    pid = int(container.get("PID") or 0)
    address = task_address(task, network) if task and state is InstanceState.RUNNING else None
    url = f"http://{address}:{SERVER_PORT}" if address else None
    return Instance(
        id=service.get("ID", ""),
        name=spec_data.get("Name", ""),
        model=labels.get(LABEL_MODEL, ""),
        state=state,
        spec_hash=labels.get(LABEL_HASH, ""),
        spec=spec,
        placement=labels.get(LABEL_PLACEMENT, ""),
        image=((spec_data.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "").partition("@")[0],
        health=HEALTH.get(state_name) if state is InstanceState.RUNNING else None,
        started_at=_started(status) if state is InstanceState.RUNNING else None,
        exit_code=int(container.get("ExitCode") or 0),
        restart_count=restarted,
        pids=(pid,) if pid and state is InstanceState.RUNNING else (),
        # By address, not by name: the name resolves only once Swarm's healthcheck passed, seconds
        # after the probe sees the server answer.
        url=url,
        probe_url=url,
        node=node,
        container_id=(container.get("ContainerID") or None) if state is InstanceState.RUNNING else None,
    )


def _replicas(spec_data: dict) -> int:
    return int(((spec_data.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))


def _started(status: dict) -> datetime | None:
    """When the task last changed state; for a running one, about when its server started."""
    return docker_time(status.get("Timestamp"))
