"""A ``Runtime`` in memory: instances in a dict, no process behind them. It proves the seam and runs
the operations' unit tests in milliseconds.

The test decides what a real backend would find out: whether a started server answers
(``ready_on_start``, ``answer``), whether it exits while loading (``fail_next_start``), a crash
(``crash``), an image that is missing (``missing_images``). ``reading`` stages a race: it is
awaited inside ``instances()``, after the snapshot is taken, so a test can change things while a
refresh holds a stale read. Every change is reported to the change callback, as a backend's
event feed would.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timezone
from typing import AsyncIterator, Awaitable, Callable, Sequence

from common.errors import ApiError
from contract.listing import HostInfo, InstanceState
from contract.nodes import NodeView
from contract.placement import Placement
from contract.pools import LOCAL_NODE, Pool
from contract.spec import ModelSpec

from .pools import node_pools
from .runtime import Change, Fingerprint, Instance

SIGTERM_EXIT = 143  # how a stopped server's exit code reads


class MemoryRuntime:
    def __init__(self, *, gpus: Sequence[int] = (), node: str = LOCAL_NODE) -> None:
        self.host = HostInfo(kind="memory")
        self.stack_image = "llama:memory"
        self.broken_images: dict[str, list[str]] = {}  # image -> what a server made from it logs as it exits
        self.silent_images: set[str] = set()  # images whose servers answer /health but make no completion
        self.gpu = bool(gpus)
        self.gpus = tuple(gpus)
        self.node = node
        self.by_id: dict[str, Instance] = {}
        self.answering: set[str] = set()  # instances whose /health says 200
        self.ready_on_start = True  # a started server answers at once; False: the test calls answer()
        self.failing: dict[str, tuple[int, list[str]]] = {}  # model -> (exit code, log) of its next start
        self.missing_images: set[str] = set()
        self.absent_files: dict[str, dict[str, str]] = {}  # GGUF file -> {node: why}: the nodes without it
        self.views: list[NodeView] = []  # the nodes the listing shows
        self.log: dict[str, list[str]] = {}  # instance id -> its output lines
        self.calls: list[tuple[str, str]] = []  # (operation, model), in order
        self.reading: Callable[[], Awaitable[None]] | None = None
        self.opened = False
        self._changed: Callable[[Change], None] = lambda change: None
        self._ids = itertools.count(1)

    # ---- what a test sets up or looks at -------------------------------------------------------

    def instance(self, model: str) -> Instance | None:
        return next((i for i in self.by_id.values() if i.model == model and not _is_candidate(i)), None)

    def candidate_of(self, model: str) -> Instance | None:
        return next((i for i in self.by_id.values() if i.model == model and _is_candidate(i)), None)

    def answer(self, model: str) -> None:
        """Its server now answers /health."""
        self.answering.add(self.instance(model).id)

    def fail_next_start(self, model: str, exit_code: int = 1, log: Sequence[str] = ("error: it failed",)) -> None:
        self.failing[model] = (exit_code, list(log))

    def crash(self, model: str, exit_code: int = 1, oom: bool = False) -> None:
        """Its server exits by itself (reported as a change, as an event would be)."""
        instance = self.instance(model)
        self._set(instance, state=InstanceState.EXITED, exit_code=exit_code, oom_killed=oom, pids=())
        self._changed(Change(instance.id, down=True))

    def put(self, instance: Instance) -> None:
        """An instance found there (left by an earlier run, or made outside the operations)."""
        self.by_id[instance.id] = instance

    # ---- the change feed -----------------------------------------------------------------------

    def on_change(self, callback: Callable[[Change], None]) -> None:
        self._changed = callback

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    # ---- reading -------------------------------------------------------------------------------

    def fingerprint(self, spec: ModelSpec, placement: Placement | None = None) -> Fingerprint:
        # Of what is made, as Docker's hash is: a spec naming the stack's image is the same instance.
        made = spec if spec.image else spec.model_copy(update={"image": self.stack_image})
        return Fingerprint(made.digest(), placement.label() if placement is not None and self.gpu else "")

    async def instances(self) -> list[Instance]:
        snapshot = [i for i in self.by_id.values() if not _is_candidate(i)]
        if self.reading is not None:
            await self.reading()
        return snapshot

    async def inspect(self, instance_id: str) -> Instance:
        return self.by_id[instance_id]

    async def healthy(self, instance: Instance) -> bool:
        now = self.by_id.get(instance.id)
        return now is not None and now.state is InstanceState.RUNNING and instance.id in self.answering

    async def logs(self, instance: Instance, tail: int, follow: bool) -> AsyncIterator[bytes]:
        lines = self.log.get(instance.id, [])[-tail:] if tail else []

        async def chunks() -> AsyncIterator[bytes]:
            for line in lines:
                yield (line + "\n").encode()
        return chunks()

    async def log_tail(self, instance: Instance, lines: int) -> list[str]:
        return [line for line in self.log.get(instance.id, []) if line.strip()][-lines:]

    def node_names(self) -> list[str]:
        return [self.node]

    def pools(self, instances: Sequence[Instance]) -> list[Pool]:
        return node_pools(self.gpus, instances, self.node)

    def absent_on(self, spec: ModelSpec) -> dict[str, str]:
        return dict(self.absent_files.get(spec.model or "", {}))

    def node_views(self) -> list[NodeView]:
        return list(self.views)

    # ---- effects -------------------------------------------------------------------------------

    def image(self, spec: ModelSpec) -> str:
        return spec.image or self.stack_image

    async def ensure_image(self, spec: ModelSpec) -> None:
        await self.pull(self.image(spec))

    async def pull(self, image: str) -> None:
        if image in self.missing_images:
            raise ApiError(400, f"The image {image} is not there.", "image_unavailable", "image")

    async def run(self, spec: ModelSpec, placement: Placement | None = None, *, candidate: bool = False) -> Instance:
        self.calls.append(("run candidate" if candidate else "run", spec.name))
        if (self.candidate_of if candidate else self.instance)(spec.name) is not None:
            raise ApiError(409, f"An instance of {spec.name} exists.", "container_name_taken", "name")
        number = next(self._ids)
        made = self.fingerprint(spec, placement)
        kind = "candidate" if candidate else "model"
        instance = Instance(
            id=f"{number:012d}{'0' * 52}", name=f"memory-{kind}-{spec.name}", model=spec.name,
            state=InstanceState.CREATED, spec_hash=made.spec_hash, spec=spec, placement=made.placement,
            image=self.image(spec), url=f"http://memory-{kind}-{spec.name}:8080",
            probe_url=f"memory://{number}", node=self.node)
        self.by_id[instance.id] = instance
        self._launch(instance)
        return self.by_id[instance.id]

    async def replace(self, old: Instance, spec: ModelSpec, placement: Placement | None = None) -> Instance:
        await self.remove(spec.name)  # as the engine does: the old one goes, a new one is made
        return await self.run(spec, placement)

    async def start(self, instance: Instance) -> None:
        self.calls.append(("start", instance.model))
        self._launch(self.by_id[instance.id])

    async def stop(self, instance: Instance) -> None:
        self.calls.append(("stop", instance.model))
        self.answering.discard(instance.id)
        self._set(self.by_id[instance.id], state=InstanceState.EXITED, exit_code=SIGTERM_EXIT, pids=())
        self._changed(Change(instance.id, down=True))

    async def restart(self, instance: Instance) -> None:
        self.calls.append(("restart", instance.model))
        self.answering.discard(instance.id)
        self._changed(Change(instance.id, down=True))
        self._launch(self.by_id[instance.id])

    async def candidate(self, model: str) -> Instance | None:
        return self.candidate_of(model)

    async def promote(self, model: str) -> None:
        self.calls.append(("promote", model))
        new = self.candidate_of(model)
        old = self.instance(model)
        if old is not None:
            self._changed(Change(old.id, down=True))
            del self.by_id[old.id]
            self.answering.discard(old.id)
        self._set(new, name=f"memory-model-{model}", url=f"http://memory-model-{model}:8080")
        self._changed(Change(new.id))

    async def remove_candidate(self, model: str) -> None:
        found = self.candidate_of(model)
        if found is not None:
            self.calls.append(("remove candidate", model))
            del self.by_id[found.id]
            self.answering.discard(found.id)

    async def completes(self, instance: Instance) -> str | None:
        return "it answered 500 to a completion" if instance.image in self.silent_images else None

    async def remove(self, model: str) -> None:
        self.calls.append(("remove", model))
        for instance in [i for i in self.by_id.values() if i.model == model]:
            self._changed(Change(instance.id, down=True))
            del self.by_id[instance.id]
            self.answering.discard(instance.id)
        self._changed(Change())

    def _launch(self, instance: Instance) -> None:
        """Its server starts; it answers, waits for the test, or exits at once as set up."""
        started = datetime.now(timezone.utc)
        exit_code, lines = self.failing.pop(instance.model, (None, []))
        if instance.image in self.broken_images:
            exit_code, lines = 1, self.broken_images[instance.image]
        self.log.setdefault(instance.id, []).extend(lines or [f"{instance.model}: listening"])
        if exit_code is not None:
            self._set(instance, state=InstanceState.EXITED, exit_code=exit_code, started_at=started, pids=())
        else:
            number = int(instance.id[:12])
            self._set(instance, state=InstanceState.RUNNING, exit_code=0, started_at=started, pids=(10_000 + number,))
            if self.ready_on_start:
                self.answering.add(instance.id)
        self._changed(Change(instance.id))

    def _set(self, instance: Instance, **changes) -> None:
        self.by_id[instance.id] = replace(self.by_id[instance.id], **changes)


def _is_candidate(instance: Instance) -> bool:
    return instance.name.startswith("memory-candidate-")
