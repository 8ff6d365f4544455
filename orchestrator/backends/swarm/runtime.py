"""Docker Swarm as a ``Runtime``: one replicated service per model, on the node the scheduler chose,
on an attachable overlay network the gateway and the orchestrator join.

The decisions stay pure (services.py: the service's arguments and labels; status.py: a service and
its tasks as an Instance; nodes.py: the nodes and their agents' facts as pools; agents.py: the node
agent's service); this module makes the SDK calls, each in a thread. A stop scales the service to 0
(kept for a quick start), a spec change updates it (same id), a remove removes it once its task has
stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Callable, Sequence

import docker
import docker.errors
from docker.types import ServiceMode

from common.errors import ApiError
from contract.listing import HostInfo, InstanceState
from contract.nodes import NodeView
from contract.placement import Placement
from contract.pools import Pool
from contract.spec import ModelSpec

from ...settings import OrchestratorSettings
from ..docker.images import ensure_local_image
from ..docker.containers import LABEL_MODEL, LABEL_PLACEMENT, LABEL_PROJECT, StackFacts, spec_hash
from ..probe import answers_health, completes_one_token, probe_client
from ..runtime import LIVE, Change, Fingerprint, Instance
from .agents import NodeAgents
from .nodes import SwarmNode, absent_on, known_names, node_from_attrs, node_pools, node_views, unreachable
from .services import SwarmFacts, service_kwargs
from .status import instance_from_service, last_error
from .watch import Seen, ServiceLogCopier, TaskPoller

log = logging.getLogger("llamadock.orchestrator")

STOP_MARGIN_S = 15.0  # beyond the grace period: Swarm's own round trip to the node and back
STOP_POLL_S = 0.2


class SwarmRuntime:
    def __init__(self, client: docker.DockerClient, settings: OrchestratorSettings, stack: StackFacts,
                 facts: SwarmFacts, local_id: str, host: HostInfo) -> None:
        self.client = client
        self.settings = settings
        self.stack = stack
        self.facts = facts
        self.local_id = local_id
        self.host = host
        self.gpu = facts.gpu
        self.nodes: list[SwarmNode] = []  # as last read (instances() reads them again)
        self._changed: Callable[[Change], None] = lambda change: None
        self._poller: TaskPoller | None = None
        self._copier = ServiceLogCopier(client, self._node_name) if settings.model_logs != "off" else None
        self._probe = probe_client()
        self.agents = NodeAgents(client, stack, settings.agent_port, lambda change: self._changed(change))

    # ---- the change feed -----------------------------------------------------------------------

    def on_change(self, callback: Callable[[Change], None]) -> None:
        self._changed = callback

    async def open(self) -> None:
        await asyncio.to_thread(self.agents.open)
        self._poller = TaskPoller(self._seen, self._changed)
        self._poller.start()
        if self._copier is not None:
            for instance in await self.instances():
                self._copier.follow(instance.id, instance.model)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self.agents.close()
        if self._copier is not None:
            self._copier.stop()
        await self._probe.aclose()

    def _seen(self) -> dict[str, Seen]:  # on the poller's thread
        seen = {}
        for instance in self._read():
            seen[instance.id] = (f"{instance.state}/{instance.health}/{instance.url}/{instance.restart_count}",
                                 instance.state in LIVE)
        return seen

    # ---- the node agents -------------------------------------------------------------------------

    def absent_on(self, spec: ModelSpec) -> dict[str, str]:
        return absent_on(spec, self.nodes, self.agents.fresh())

    def node_views(self) -> list[NodeView]:
        return node_views(self.nodes, self.agents.fresh(), self.agents.ages())

    # ---- reading ---------------------------------------------------------------------------------

    def _services(self, model: str | None = None) -> list:
        # A model label on each: the node agent's service carries the project label too, and is no model.
        labels = [f"{LABEL_PROJECT}={self.stack.project}", f"{LABEL_MODEL}={model}" if model else LABEL_MODEL]
        return self.client.services.list(filters={"label": labels})

    def read_nodes(self) -> list[SwarmNode]:
        nodes = [node_from_attrs(n, self.local_id) for n in self.client.api.nodes()]
        for node in nodes:
            if node.problem:
                log.warning("%s", node.problem)
        self.nodes = nodes
        return nodes

    def _node_name(self, node_id: str) -> str:
        return next((n.name for n in self.nodes if n.id == node_id), node_id[:12] or "?")

    def _read(self, services: list | None = None) -> list[Instance]:
        """Our services, their tasks (one call for all) and the nodes, as instances."""
        services = self._services() if services is None else services
        nodes = self.read_nodes()  # the pools' nodes, fresh with each read
        hostnames = {n.id: n.hostname for n in nodes}
        if not services:
            return []
        tasks = self.client.api.tasks(filters={"service": [s.id for s in services]})
        lost = unreachable(nodes)
        return [instance_from_service(s.attrs, [t for t in tasks if t.get("ServiceID") == s.id],
                                      self.stack.network, hostnames, self.local_id, lost) for s in services]

    async def instances(self) -> list[Instance]:
        return await asyncio.to_thread(self._read)

    async def inspect(self, instance_id: str) -> Instance:
        def one() -> Instance:
            return self._read([self.client.services.get(instance_id)])[0]
        return await asyncio.to_thread(one)

    def fingerprint(self, spec: ModelSpec, placement: Placement | None = None) -> Fingerprint:
        if placement is not None and self.nodes and placement.node not in known_names(self.nodes):
            raise ApiError(400, f"No node {placement.node!r} in this swarm; its nodes: "
                           f"{', '.join(known_names(self.nodes))}.", "invalid_placement", "node")
        kwargs = self._kwargs(spec, placement)
        return Fingerprint(spec_hash(kwargs), kwargs["labels"][LABEL_PLACEMENT])

    @property
    def stack_image(self) -> str:
        """What a spec without an image runs (unless the catalog's defaults name another)."""
        return self.stack.gpu_image if self.facts.gpu else self.stack.cpu_image

    def image(self, spec: ModelSpec) -> str:
        return spec.image or self.stack_image

    def _kwargs(self, spec: ModelSpec, placement: Placement | None) -> dict:
        return service_kwargs(spec, self.facts, self.stack, placement, stop_grace_s=self.settings.stop_grace_s)

    async def candidate(self, model: str) -> Instance | None:
        return None  # never made here (see ``run``)

    async def promote(self, model: str) -> None:
        raise ApiError(409, "Image upgrades are not available on the swarm backend yet.", "unsupported_on_backend")

    async def remove_candidate(self, model: str) -> None:
        return None

    async def completes(self, instance: Instance) -> str | None:
        return await completes_one_token(self._probe, instance)

    async def healthy(self, instance: Instance) -> bool:
        return await answers_health(self._probe, instance)

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[bytes]:
        stream = await asyncio.to_thread(self.client.api.service_logs, instance.id, stdout=True, stderr=True,
                                         follow=follow, tail=tail)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
                    yield chunk
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # unblocks the reader thread when the client leaves mid-follow
        return chunks()

    async def log_tail(self, instance: Instance, lines: int) -> list[str]:
        return await asyncio.to_thread(self._log_tail, instance.id, lines)

    def _log_tail(self, service_id: str, lines: int) -> list[str]:
        """Its last lines, then why Swarm could not run its task (a node without the image, or
        without the models directory, leaves no log, only that)."""
        try:
            raw = b"".join(self.client.api.service_logs(service_id, stdout=True, stderr=True, tail=lines))
        except docker.errors.APIError:
            raw = b""  # no task of it ever ran
        try:
            error = last_error(self.client.api.tasks(filters={"service": service_id}))
        except docker.errors.APIError:
            error = None
        found = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
        return found + [f"swarm: {error}"] if error else found

    def node_names(self) -> list[str]:
        return known_names(self.nodes)

    def pools(self, instances: Sequence[Instance]) -> list[Pool]:
        return node_pools(self.nodes, instances, self.agents.fresh())

    # ---- effects ---------------------------------------------------------------------------------

    async def ensure_image(self, spec: ModelSpec) -> None:
        """On the manager; each other node needs it too (pulled from a registry by Swarm, or
        loaded there by hand: a task that finds none is rejected, and says so)."""
        await asyncio.to_thread(self._ensure_image, self._kwargs(spec, None)["image"])

    def _ensure_image(self, image: str) -> None:
        ensure_local_image(self.client, image)

    async def pull(self, image: str) -> None:
        await asyncio.to_thread(self._ensure_image, image)

    async def run(self, spec: ModelSpec, placement: Placement | None = None, *, candidate: bool = False) -> Instance:
        if candidate:  # an image upgrade's trial beside the model: a service update will do it here, later
            raise ApiError(409, "Image upgrades (make llama-upgrade) are not available on the swarm backend yet; "
                           "set the model's image with make edit NAME=... IMAGE=... instead.",
                           "unsupported_on_backend", "image")
        kwargs = self._kwargs(spec, placement)
        try:
            service = await asyncio.to_thread(self.client.services.create, **kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a service of that name we did not label: not ours to remove
                raise ApiError(409, f"A service named {kwargs['name']} exists and is not managed by llamadock.",
                               "container_name_taken", "name") from None
            raise ApiError(500, f"Swarm could not create the service: {exc.explanation or exc}.",
                           "docker_error") from None
        log.info("model %s: service %s created", spec.name, service.short_id)
        if self._copier is not None:
            self._copier.follow(service.id, spec.name)
        self._changed(Change(service.id))
        return await self.inspect(service.id)

    async def replace(self, old: Instance, spec: ModelSpec, placement: Placement | None = None) -> Instance:
        """The same service, updated to ``spec`` (Swarm stops its task, then starts the new one)."""
        kwargs = self._kwargs(spec, placement)
        self._changed(Change(old.id, down=True))
        if old.state is InstanceState.LOST:
            # Its node is gone: an update would wait on a task nobody can stop. The service goes (the
            # node, should it return, is told to remove the task) and a new one runs where placed.
            await asyncio.to_thread(self._remove_now, old.id)
            log.info("model %s: node %s lost; service %s removed, placed again", spec.name, old.node, old.id[:12])
            return await self.run(spec, placement)
        try:
            await asyncio.to_thread(self._update, old.id, kwargs)
        except docker.errors.NotFound:
            return await self.run(spec, placement)  # gone meanwhile: a new one, then
        except docker.errors.APIError as exc:
            raise ApiError(500, f"Swarm could not update the service: {exc.explanation or exc}.",
                           "docker_error") from None
        log.info("model %s: service %s updated", spec.name, old.id[:12])
        self._changed(Change(old.id))
        return await self.inspect(old.id)

    def _update(self, service_id: str, kwargs: dict) -> None:
        service = self.client.services.get(service_id)
        service.update(**kwargs)

    async def start(self, instance: Instance) -> None:
        await asyncio.to_thread(self._start, instance.id)
        self._changed(Change(instance.id))

    def _start(self, service_id: str) -> None:
        """Scaled to 0 (stopped): back to 1. Still at 1 but with no task running (Swarm gave up
        after its restart attempts): a new task, as a stopped container's start would run it again."""
        service = self.client.services.get(service_id)
        if ((service.attrs["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1) == 0:
            self._scale(service_id, 1)
        else:
            service.force_update()

    async def stop(self, instance: Instance) -> None:
        """Scale to 0 and wait until its task has stopped (SIGTERM, the grace period, SIGKILL)."""
        self._changed(Change(instance.id, down=True))
        await asyncio.to_thread(self._scale, instance.id, 0)
        await asyncio.to_thread(self._wait_stopped, instance.id)
        self._changed(Change(instance.id))

    async def restart(self, instance: Instance) -> None:
        """A new task of the same spec (``docker service update --force``)."""
        self._changed(Change(instance.id, down=True))
        await asyncio.to_thread(lambda: self.client.services.get(instance.id).force_update())
        self._changed(Change(instance.id))

    async def remove(self, model: str) -> None:
        await asyncio.to_thread(self._remove, model)

    def _remove(self, model: str) -> None:
        lost = {i.id for i in self._read(self._services(model)) if i.state is InstanceState.LOST}
        for service in self._services(model):
            self._changed(Change(service.id, down=True))
            if service.id in lost:  # nothing there can be waited for
                self._remove_now(service.id)
                continue
            try:
                self._scale(service.id, 0)
                self._wait_stopped(service.id)
                service.remove()
            except docker.errors.NotFound:
                pass  # already gone: what we wanted
            log.info("model %s: service %s removed", model, service.short_id)
        self._changed(Change())

    def _remove_now(self, service_id: str) -> None:
        try:
            self.client.services.get(service_id).remove()
        except docker.errors.NotFound:
            pass

    def _scale(self, service_id: str, replicas: int) -> None:
        service = self.client.services.get(service_id)
        self.client.api.update_service(service.id, service.version, mode=ServiceMode("replicated", replicas),
                                       fetch_current_spec=True)

    def _wait_stopped(self, service_id: str) -> None:
        """Until no task of it has a container left running: its memory is free then."""
        deadline = time.monotonic() + self.settings.stop_grace_s + STOP_MARGIN_S
        while time.monotonic() < deadline:
            tasks = self.client.api.tasks(filters={"service": service_id})
            if not any((t.get("Status") or {}).get("State") in ("starting", "running") for t in tasks):
                return
            time.sleep(STOP_POLL_S)  # no event for a task on another node: poll it
        log.warning("service %s: its task still runs %.0f s after the stop", service_id[:12],
                    self.settings.stop_grace_s + STOP_MARGIN_S)

