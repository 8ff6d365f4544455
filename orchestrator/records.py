"""What the orchestrator itself holds about each model, between and during operations: one record
per model, so one place owns a model's orchestrator-side state (the runtime holds the rest).

All of it belongs to the manager's event loop; threads hand their changes over (manager.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Iterable


@dataclass(eq=False)
class ModelRecord:
    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one operation at a time on this model
    ready_id: str | None = None  # the instance our probe saw answer /health since it started
    stopping: bool = False  # a stop is under way: reported stopped, never starting
    stop_number: int = 0  # the number of its last stop (of all stops, counted by Records); 0: none
    failure: str | None = None  # declared, but reconcile could not start it: why
    estimate: tuple[tuple, dict] | None = None  # (spec digest, file stamp) and the need read for them


class Records:
    """The records by model name, made on first use; and the count of stops begun, which orders
    a stop against a refresh's read of the runtime."""

    def __init__(self) -> None:
        self._by_name: dict[str, ModelRecord] = {}
        self.stops = 0

    def __getitem__(self, name: str) -> ModelRecord:
        record = self._by_name.get(name)
        if record is None:  # setdefault: a listing's thread and the loop never make two for one name
            record = self._by_name.setdefault(name, ModelRecord(name))
        return record

    def __iter__(self):
        return iter(list(self._by_name.values()))

    # ---- stops ---------------------------------------------------------------------------

    def begin_stop(self, name: str) -> None:
        self.stops += 1
        record = self[name]
        record.stopping, record.stop_number = True, self.stops

    def end_stop(self, name: str) -> None:
        self[name].stopping = False

    def stopping(self) -> frozenset[str]:
        """Models whose stop is under way."""
        return frozenset(r.name for r in self if r.stopping)

    def stopped_since(self, stops: int) -> frozenset[str]:
        """Models whose stop began after the first ``stops`` stops."""
        return frozenset(r.name for r in self if r.stop_number > stops)

    # ---- readiness -----------------------------------------------------------------------

    def is_ready(self, model: str, instance_id: str) -> bool:
        record = self._by_name.get(model)
        return record is not None and record.ready_id == instance_id

    def mark_ready(self, model: str, instance_id: str) -> None:
        self[model].ready_id = instance_id

    def forget_ready(self, instance_id: str) -> None:
        """That instance stopped or is about to: not ready until it is probed again."""
        for record in self:
            if record.ready_id == instance_id:
                record.ready_id = None

    def keep_ready_only(self, live_ids: Iterable[str]) -> None:
        """Instances no longer running are not ready."""
        live = set(live_ids)
        for record in self:
            if record.ready_id is not None and record.ready_id not in live:
                record.ready_id = None

    # ---- failures --------------------------------------------------------------------------

    def failure(self, name: str) -> str | None:
        record = self._by_name.get(name)
        return None if record is None else record.failure
