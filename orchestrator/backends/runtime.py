"""The seam between the orchestrator's operations and where models run: ``Runtime``.

The operations (orchestrator/manager.py) decide; a runtime backend carries the decisions out and
reports what runs, as neutral ``Instance`` records. Docker on one box is one backend
(backends/docker/); an in-memory one (backends/memory.py) runs the operations' unit tests.

A backend never calls into the manager: it reports changes (an instance started, died, went) to
the one callback the manager registers with ``on_change``, from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import AsyncIterator, Callable, Protocol, Sequence

from contract.listing import HostInfo, InstanceState
from contract.nodes import NodeView
from contract.placement import Placement
from contract.pools import LOCAL_NODE, Pool
from contract.spec import ModelSpec

# States in which the server process is there, or is being brought back by the backend itself.
LIVE = (InstanceState.RUNNING, InstanceState.RESTARTING)
# States a stop has something to stop in.
STOPPABLE = (InstanceState.RUNNING, InstanceState.RESTARTING, InstanceState.PAUSED)


@dataclass(frozen=True)
class Instance:
    """One model's server as a backend runs it (a Docker container), in words any backend has."""

    id: str
    name: str
    model: str
    state: InstanceState
    spec_hash: str  # of what it was made from (``Runtime.fingerprint``): equal hashes, same instance
    spec: ModelSpec | None = None  # the spec it was made from, for models no longer declared
    placement: str = ""  # the placement label it was made with ("": none)
    image: str = ""
    health: str | None = None  # the backend's own check: starting, healthy, unhealthy; None without one
    started_at: datetime | None = None  # when it last started (UTC)
    exit_code: int = 0
    restart_count: int = 0
    oom_killed: bool = False
    pids: tuple[int, ...] = ()  # its server's PIDs as the node's host sees them (for NVML)
    url: str | None = None  # where clients (the gateway) reach its server
    probe_url: str | None = None  # where the orchestrator asks /health; None: not reachable yet
    node: str = LOCAL_NODE
    container_id: str | None = None  # its server's container (a swarm task's), as a node's agent names it

    @property
    def ready(self) -> bool:
        """The backend's own check calls it healthy (the orchestrator's probe may know sooner)."""
        return self.health == "healthy"


@dataclass(frozen=True)
class Fingerprint:
    """What an instance made now from a spec (and a placement) would be known by."""

    spec_hash: str
    placement: str  # its placement label ("": none, or the backend places nothing, e.g. no GPU)


@dataclass(frozen=True)
class Change:
    """Something changed where models run: the listing is read again. ``down``: this instance
    stopped or is about to, so its readiness must be seen again before it is ready."""

    instance_id: str | None = None
    down: bool = False


class Runtime(Protocol):
    """Where models run. Every method but ``fingerprint``, ``image``, ``pools``, ``absent_on``, ``node_views`` and ``on_change`` may block
    on the backend, so they are coroutines; each raises ``common.errors.ApiError`` for a failure
    the user can act on (no image, a name taken, no GPU for containers)."""

    host: HostInfo  # the host's kind and warnings, for the listing
    gpu: bool  # models get GPUs here (their memory is estimated for a GPU, not RAM)

    def on_change(self, callback: Callable[[Change], None]) -> None:
        """The one callback told of every change (from any thread)."""

    async def open(self) -> None:
        """Begin reporting changes (the backend's event feed)."""

    async def close(self) -> None:
        """Stop reporting changes; free what the backend holds."""

    def fingerprint(self, spec: ModelSpec, placement: Placement | None = None) -> Fingerprint:
        """Pure: the hash and placement label an instance made now from ``spec`` would carry."""

    async def instances(self) -> list[Instance]:
        """Every instance of this stack, in any state (candidates aside)."""

    async def inspect(self, instance_id: str) -> Instance:
        """One instance as it is now (raises when it is gone)."""

    stack_image: str  # what a spec without an `image` runs, unless the catalog's defaults say otherwise
    def image(self, spec: ModelSpec) -> str:
        """Pure: what an instance of ``spec`` would run from (part of its KV cache key)."""

    async def ensure_image(self, spec: ModelSpec) -> None:
        """What ``spec`` runs from is there (pulled if need be)."""

    async def pull(self, image: str) -> None:
        """``image`` is there (pulled if need be); ApiError 400 ``image_unavailable`` when it cannot be."""

    async def run(self, spec: ModelSpec, placement: Placement | None = None, *, candidate: bool = False) -> Instance:
        """Make an instance of ``spec`` and start it (removed again when it cannot start).
        ``candidate``: a second instance of the model beside its own (an image upgrade's trial), not
        listed by ``instances`` until ``promote`` makes it the model's instance."""

    async def candidate(self, model: str) -> Instance | None:
        """The model's candidate instance, if one is there."""

    async def promote(self, model: str) -> None:
        """The candidate becomes the model's instance; the instance it replaces is removed."""

    async def remove_candidate(self, model: str) -> None:
        """Stop and remove the model's candidate (none: nothing to do)."""

    async def completes(self, instance: Instance) -> str | None:
        """Whether its server makes a one-token completion: None when it does, else why not."""

    async def replace(self, old: Instance, spec: ModelSpec, placement: Placement | None = None) -> Instance:
        """Make ``old`` into an instance of ``spec`` and start it: the engine removes it and runs a
        new one; a backend that updates in place (a Swarm service) keeps its id."""

    async def start(self, instance: Instance) -> None:
        """Start a stopped instance again, as it was made."""

    async def stop(self, instance: Instance) -> None:
        """SIGTERM, the grace period, SIGKILL; the instance stays for a quick start."""

    async def restart(self, instance: Instance) -> None:
        """Stop and start it in place."""

    async def remove(self, model: str) -> None:
        """Stop and remove every instance of ``model`` (none: nothing to do)."""

    async def healthy(self, instance: Instance) -> bool:
        """Whether its server answers /health now (False when it cannot be reached)."""

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[bytes]:
        """Its output: the last ``tail`` lines, then more while ``follow``."""

    async def log_tail(self, instance: Instance, lines: int) -> list[str]:
        """Its last non-empty lines (what a failed start is reported with); [] when unreadable."""

    def node_names(self) -> list[str]:
        """Every name a spec's ``node`` may give (a single box: only ``local``)."""

    def pools(self, instances: Sequence[Instance]) -> list[Pool]:
        """The capacity it offers (each node's GPUs, or its memory budget), and which of
        ``instances`` run in each."""

    def absent_on(self, spec: ModelSpec) -> dict[str, str]:
        """Pure: the nodes ``spec`` cannot run on for want of its GGUF file (or projector) there,
        each with why ({} on one box: the orchestrator checks models/ itself)."""

    def node_views(self) -> list[NodeView]:
        """Pure: the nodes as the listing shows them ([] on one box)."""
