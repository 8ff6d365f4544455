"""What every route needs, built once per app and kept on ``app.state.gateway``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .activity import ActivityLog
from .gpu import NvmlReader
from .kvcache.keeper import KvKeeper
from .scheduling.lifecycle import Lifecycle
from .metrics import GatewayMetrics
from .routes.registry import ModelRegistry
from .settings import GatewaySettings


@dataclass
class GatewayContext:
    settings: GatewaySettings
    registry: ModelRegistry
    gpu: NvmlReader
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    lifecycle: "Lifecycle | None" = None  # the scheduler, when an orchestrator manages the models
    activity: ActivityLog = field(default_factory=lambda: ActivityLog(1000))  # the latest requests, for /admin/activity
    kv_keeper: KvKeeper | None = None  # conversations' KV caches across stops (with an orchestrator and a cache dir)
    _background: set[asyncio.Task] = field(default_factory=set)

    def spawn(self, coroutine) -> None:
        """Run a side job (e.g. re-probe a model) without making the request wait for it."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
