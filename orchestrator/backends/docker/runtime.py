"""The Docker engine on one box as a ``Runtime``: one container per model, on the stack's network.

The decisions stay pure (containers.py: the create arguments and labels; status.py: ``docker
inspect`` as an Instance); this module makes the Docker SDK calls. The SDK blocks, so every call
runs in a thread; what those threads see change is reported to the change callback from there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable, Sequence

import docker
import docker.errors

from common.errors import ApiError
from contract.listing import HostInfo, InstanceState
from contract.nodes import NodeView
from contract.placement import Placement
from contract.pools import LOCAL_NODE, Pool
from contract.spec import ModelSpec

from ...settings import OrchestratorSettings
from ..pools import node_pools
from ..probe import answers_health, completes_one_token, probe_client
from ..runtime import Change, Fingerprint, Instance
from .images import ensure_local_image
from .containers import (LABEL_MODEL, LABEL_PLACEMENT, LABEL_PROJECT, StackFacts, candidate_name, container_name,
                         create_kwargs, spec_hash)
from .host import HostFacts
from .status import instance_from_attrs
from .watch import EventWatcher, LogCopier, change_of, is_start

log = logging.getLogger("llamadock.orchestrator")

STOPPABLE_STATUSES = ("running", "restarting", "paused")  # Docker's statuses a container is stopped from


class DockerRuntime:
    def __init__(self, client: docker.DockerClient, settings: OrchestratorSettings, stack: StackFacts,
                 facts: HostFacts) -> None:
        self.client = client
        self.settings = settings
        self.stack = stack
        self.facts = facts
        self.host = HostInfo(kind=facts.kind, warnings=list(facts.warnings))
        self.gpu = facts.gpu
        self._changed: Callable[[Change], None] = lambda change: None
        self._watcher: EventWatcher | None = None
        self._copier = LogCopier(client, mode=settings.model_logs, as_json=settings.log_format == "json") \
            if settings.model_logs != "off" else None
        self._probe = probe_client()

    @property
    def stack_image(self) -> str:
        """What a spec without an image runs (unless the catalog's defaults name another)."""
        return self.stack.gpu_image if self.gpu else self.stack.cpu_image

    # ---- the change feed -----------------------------------------------------------------------

    def on_change(self, callback: Callable[[Change], None]) -> None:
        self._changed = callback

    async def open(self) -> None:
        """Watch this stack's container events; copy the output of the models already running."""
        self._watcher = EventWatcher(self.client, self.stack.project, self._event,
                                     on_connect=lambda: self._changed(Change()))
        self._watcher.start()
        if self._copier is not None:
            for instance in await self.instances():
                if instance.state is InstanceState.RUNNING:
                    self._copier.follow(instance.id, since_now=True)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        await self._probe.aclose()

    def _event(self, event: dict) -> None:  # on the watcher's thread
        change = change_of(event)
        if change is None:
            return
        if is_start(event) and self._copier is not None:
            self._copier.follow(change.instance_id, since_now=False)
        self._changed(change)

    # ---- reading ---------------------------------------------------------------------------------

    def _instance(self, attrs: dict) -> Instance:
        return instance_from_attrs(attrs, self.stack.network, self.settings.model_url_by)

    def _list(self) -> list:
        return self.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.stack.project}"})

    async def instances(self) -> list[Instance]:
        found = [self._instance(c.attrs) for c in await asyncio.to_thread(self._list)]
        return [i for i in found if i.name != candidate_name(self.stack.project, i.model)]

    async def candidate(self, model: str) -> Instance | None:
        container = await asyncio.to_thread(self._get, candidate_name(self.stack.project, model))
        return None if container is None else self._instance(container.attrs)

    def _get(self, name: str):
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None

    async def inspect(self, instance_id: str) -> Instance:
        container = await asyncio.to_thread(self.client.containers.get, instance_id)
        return self._instance(container.attrs)

    def fingerprint(self, spec: ModelSpec, placement: Placement | None = None) -> Fingerprint:
        if placement is not None and placement.node != LOCAL_NODE:
            raise ApiError(400, f"This Docker engine runs models on one node ({LOCAL_NODE}), "
                           f"not on {placement.node!r}.", "invalid_placement", "node")
        kwargs = create_kwargs(spec, self.facts, self.stack, placement)
        return Fingerprint(spec_hash(kwargs), kwargs["labels"][LABEL_PLACEMENT])

    async def healthy(self, instance: Instance) -> bool:
        return await answers_health(self._probe, instance)

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[bytes]:
        container = await asyncio.to_thread(self.client.containers.get, instance.id)
        stream = await asyncio.to_thread(container.logs, stream=True, follow=follow, tail=tail)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
                    yield chunk
            finally:
                stream.close()  # unblocks the reader thread when the client leaves mid-follow
        return chunks()

    async def log_tail(self, instance: Instance, lines: int) -> list[str]:
        return await asyncio.to_thread(self._log_tail, instance.id, lines)

    def _log_tail(self, instance_id: str, lines: int) -> list[str]:
        try:
            raw = self.client.containers.get(instance_id).logs(tail=lines)
        except docker.errors.APIError:
            return []
        return [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]

    def node_names(self) -> list[str]:
        return [LOCAL_NODE]

    def pools(self, instances: Sequence[Instance]) -> list[Pool]:
        # GPUs by index when the daemon lists them; else the node's memory budget.
        return node_pools(self.facts.gpu_indices if self.facts.gpu else (), instances)

    def absent_on(self, spec: ModelSpec) -> dict[str, str]:
        return {}  # one box: models/ is the orchestrator's own, checked when the model is added

    def node_views(self) -> list[NodeView]:
        return []

    # ---- effects ---------------------------------------------------------------------------------

    def image(self, spec: ModelSpec) -> str:
        return create_kwargs(spec, self.facts, self.stack)["image"]

    async def ensure_image(self, spec: ModelSpec) -> None:
        await self.pull(self.image(spec))

    async def pull(self, image: str) -> None:
        await asyncio.to_thread(self._ensure_image, image)

    def _ensure_kv_dir(self, model: str) -> None:
        """The model's KV cache directory, made before its server starts: Docker refuses a bind mount
        whose source is missing (and would make it as root if it did not)."""
        if self.stack.kv_dir is None:
            return
        path = self.settings.kv_root / model
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ApiError(500, f"Cannot make the KV cache directory {path} ({exc.strerror or exc}): "
                           "check LLAMADOCK_KV_CACHE_DIR is writable.", "kv_cache_dir") from None

    def _ensure_image(self, image: str) -> None:
        ensure_local_image(self.client, image)

    async def run(self, spec: ModelSpec, placement: Placement | None = None, *, candidate: bool = False) -> Instance:
        """Create and start the container; on a failed start remove it. The Instance is as it
        was created (its state may be behind already: ``inspect`` tells)."""
        kwargs = create_kwargs(spec, self.facts, self.stack, placement)
        if candidate:
            kwargs["name"] = candidate_name(self.stack.project, spec.name)
        await asyncio.to_thread(self._ensure_kv_dir, spec.name)
        try:
            container = await asyncio.to_thread(self.client.containers.create, **kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # the name is held by a container we did not label: not ours to remove
                raise ApiError(409, f"A container named {kwargs['name']} exists and is not managed by llamadock.",
                               "container_name_taken", "name") from None
            raise ApiError(500, f"Docker could not create the container: {exc.explanation or exc}.",
                           "docker_error") from None
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.APIError as exc:
            await (self.remove_candidate(spec.name) if candidate else self.remove(spec.name))
            raise ApiError(500, f"Docker could not start the container: {_gpu_hint(exc)}.", "docker_error") from None
        log.info("model %s: container %s started", spec.name, container.short_id)
        self._changed(Change(container.id))
        return self._instance(container.attrs)

    async def replace(self, old: Instance, spec: ModelSpec, placement: Placement | None = None) -> Instance:
        await self.remove(spec.name)  # a container is made once: a new spec is a new one
        return await self.run(spec, placement)

    async def start(self, instance: Instance) -> None:
        await asyncio.to_thread(self._ensure_kv_dir, instance.model)
        container = await asyncio.to_thread(self.client.containers.get, instance.id)
        await asyncio.to_thread(container.start)
        self._changed(Change(instance.id))

    async def stop(self, instance: Instance) -> None:
        container = await asyncio.to_thread(self.client.containers.get, instance.id)
        await asyncio.to_thread(container.stop, timeout=int(self.settings.stop_grace_s))

    async def restart(self, instance: Instance) -> None:
        container = await asyncio.to_thread(self.client.containers.get, instance.id)
        await asyncio.to_thread(container.restart, timeout=int(self.settings.stop_grace_s))

    async def remove(self, model: str) -> None:
        await asyncio.to_thread(self._remove, model)

    async def remove_candidate(self, model: str) -> None:
        container = await asyncio.to_thread(self._get, candidate_name(self.stack.project, model))
        if container is not None:
            await asyncio.to_thread(self._stop_and_remove, container, model)

    async def promote(self, model: str) -> None:
        """The candidate takes the model's container name (Docker's DNS follows a rename), once the
        model's own container is gone: its id, its address and its logs stay the ones checked."""
        await asyncio.to_thread(self._promote, model)

    def _promote(self, model: str) -> None:
        new = self.client.containers.get(candidate_name(self.stack.project, model))
        old = self._get(container_name(self.stack.project, model))
        if old is not None:
            self._stop_and_remove(old, model)
        new.rename(container_name(self.stack.project, model))
        log.info("model %s: container %s now serves it", model, new.short_id)
        self._changed(Change(new.id))

    def _stop_and_remove(self, container, model: str) -> None:
        self._take_down(container, model)
        self._changed(Change())

    def _take_down(self, container, model: str) -> None:
        """SIGTERM, the grace period, SIGKILL, remove: one container (the caller tells the change)."""
        self._changed(Change(container.id, down=True))
        try:
            if container.status in STOPPABLE_STATUSES:
                container.stop(timeout=int(self.settings.stop_grace_s))
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # already gone: what we wanted
        log.info("model %s: container %s removed", model, container.short_id)

    async def completes(self, instance: Instance) -> str | None:
        return await completes_one_token(self._probe, instance)

    def _remove(self, model: str) -> None:
        """SIGTERM, the grace period, SIGKILL, remove: every container of ours for that model."""
        found = self.client.containers.list(all=True, filters={
            "label": [f"{LABEL_PROJECT}={self.stack.project}", f"{LABEL_MODEL}={model}"]})
        for container in found:
            self._take_down(container, model)
        self._changed(Change())


def _gpu_hint(exc: docker.errors.APIError) -> str:
    text = str(exc.explanation or exc)
    if "could not select device driver" in text or "nvidia" in text.lower():
        return (f"{text}. Docker cannot hand the GPU to containers here: install the NVIDIA Container Toolkit, "
                "or set LLAMADOCK_GPU=none to run on the CPU")
    return text
