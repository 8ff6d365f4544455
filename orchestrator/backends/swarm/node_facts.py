"""The latest facts of each node's agent (contract/nodes.py), read on a thread of its own.

Every ``POLL_S`` it lists the agent service's tasks, and asks each one's ``/facts`` at its address
on the overlay, all at once with a ``TIMEOUT_S`` each, so one silent node never holds back the
others. A node whose agent does not answer keeps the facts it last gave, with their time: the
runtime treats facts older than ``STALE_S`` as unknown. A change that matters to the listing
(files, GPUs, free memory by the quarter GiB, NVML's problem, going stale) is reported as a Change.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping

import httpx
from pydantic import ValidationError

from contract.nodes import NodeFacts

from ..runtime import Change

log = logging.getLogger("llamadock.orchestrator")

POLL_S = 1.0
TIMEOUT_S = 1.5
STALE_S = 10.0
FREE_STEP = 256 * 1024 * 1024  # free GPU memory moves by less than this without a new listing


@dataclass(frozen=True)
class Reading:
    facts: NodeFacts
    at: float  # monotonic time of the answer


def http_fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=TIMEOUT_S)
    response.raise_for_status()
    return response.content


def summary(facts: NodeFacts | None) -> tuple | None:
    """What of a node's facts the listing shows (not the time it was read)."""
    if facts is None:
        return None
    return (facts.host_kind, facts.nvml, tuple((f.name, f.size_bytes) for f in facts.files),
            tuple((g.index, g.uuid, g.total_bytes, None if g.free_bytes is None else g.free_bytes // FREE_STEP)
                  for g in facts.gpus))


class NodeFactsReader:
    """``targets()``: node id -> the URL of its agent's /facts (its running task's, on the overlay)."""

    def __init__(self, targets: Callable[[], Mapping[str, str]], on_change: Callable[[Change], None],
                 fetch: Callable[[str], bytes] = http_fetch, clock: Callable[[], float] = time.monotonic,
                 every: float = POLL_S) -> None:
        self.targets, self.on_change, self.fetch, self.clock, self.every = targets, on_change, fetch, clock, every
        self._readings: dict[str, Reading] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="node-facts")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-facts", daemon=True)
        self._shown: dict[str, tuple | None] = {}

    def readings(self) -> dict[str, Reading]:
        with self._lock:
            return dict(self._readings)

    def fresh(self) -> dict[str, NodeFacts]:
        """Node id -> its facts, for the nodes whose agent answered within STALE_S."""
        now = self.clock()
        return {node: r.facts for node, r in self.readings().items() if now - r.at < STALE_S}

    def ages(self) -> dict[str, float]:
        """Node id -> seconds since its agent last answered (every node that ever did)."""
        now = self.clock()
        return {node: now - r.at for node, r in self.readings().items()}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.step()
            except Exception as exc:  # the manager's engine away: the old facts age, then read again
                log.debug("node facts: cannot list the agent's tasks (%s)", exc)
            self._stopped.wait(self.every)

    def step(self) -> None:
        """One round: ask every agent at once, keep what answered, report what the listing would show differently."""
        targets = dict(self.targets())
        answers = dict(zip(targets, self._pool.map(self._ask, targets.values())))
        now = self.clock()
        with self._lock:
            for node, facts in answers.items():
                if facts is not None:
                    self._readings[node] = Reading(facts, now)
        fresh = self.fresh()
        shown = {node: summary(fresh.get(node)) for node in set(self._shown) | set(self.readings())}
        if shown != self._shown:
            self._shown = shown
            self.on_change(Change())

    def _ask(self, url: str) -> NodeFacts | None:
        try:
            return NodeFacts.model_validate_json(self.fetch(url))
        except (httpx.HTTPError, OSError) as exc:
            log.debug("node facts: %s did not answer (%s)", url, exc)
        except ValidationError as exc:
            log.warning("node facts: %s answered what does not read as facts (%s)", url, exc.errors()[0]["msg"])
        except Exception as exc:  # a test's fetch, say: no round may end the reader
            log.debug("node facts: %s failed (%s)", url, exc)
        return None
