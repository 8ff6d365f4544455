"""Keeps a model's conversations across its stops: saves its slots before a planned stop, restores
the one a returning request continues before that request reaches the server.

Effects only; the decisions are elsewhere (``choice.choose``: restore or not, on measured
figures; ``files.CacheDir``: what on disk can be trusted, the cap, the free-disk floor).

* ``save`` runs where the lifecycle carries out the scheduler's ``Stop`` (ttl, room, swap group,
  unload, keep_alive 0), before the orchestrator is asked to stop the server. The model is idle
  then (the scheduler stops only idle models) and admits nothing until it has stopped. It takes
  at most ``save_budget_s`` for all the model's slots together: past that the stop goes on and a
  save still being written is left as a temporary file, which is never restored and is swept.
  It never raises: a failed save costs the next start its cache, nothing else.
* ``before_forward`` runs once a request is admitted, when its model has saved conversations
  of its current key not restored in this run: the prompt is tokenized by the model's own
  server, compared with each saved conversation's tokens, and the best is restored when the
  figures say that is faster, into a slot that is not busy. Any failure forwards the request
  as it is; a file that does not check out or that the server refuses is removed.

Per model, one restore at a time (two requests must not pick the same free slot); an entry is
restored at most once per run of its server (it is in a slot from then on, and the next save
writes that slot again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections import deque
from dataclasses import dataclass, field

import httpx

from ..metrics import GatewayMetrics
from . import server
from .choice import Figures, Saved, choose, learned, restore_cost_s
from .files import CacheDir, Entry

log = logging.getLogger("llamadock.kvcache")

SAVE_BUDGET_S = 5.0  # per model and stop, every slot together
RESTORE_TIMEOUT_MIN_S = 5.0  # a restore gets this long at least (four times its estimate if more)
CALL_TIMEOUT_S = 5.0  # /slots, /metrics, /apply-template, /tokenize
PROMPTS_KEPT = 8  # per run of a model


@dataclass(frozen=True)
class Restored:
    """A request's conversation was restored before it was forwarded."""
    entry: str
    tokens: int  # what the file held
    shared: int  # of the prompt's tokens
    seconds: float


@dataclass
class _Run:
    """What one run of a model's server holds from the cache: slot -> entry restored there."""
    run_id: str | None
    slots: dict[int, str] = field(default_factory=dict)
    restored_at: dict[int, float] = field(default_factory=dict)
    # The last prompts tokenized in this run: a file saved later knows where its prompt ends (files.superseded).
    prompts: deque = field(default_factory=lambda: deque(maxlen=PROMPTS_KEPT))


class KvKeeper:
    def __init__(self, files: CacheDir, metrics: GatewayMetrics, *, save_budget_s: float = SAVE_BUDGET_S,
                 client: httpx.AsyncClient | None = None) -> None:
        self.files = files
        self.metrics = metrics
        self.save_budget_s = save_budget_s
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=2.0))
        self.figures: dict[str, Figures] = {}  # model -> what its restores cost
        self._runs: dict[str, _Run] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._unsaved_why: str | None = None  # the last reason saving was paused (said once, not per stop)

    async def close(self) -> None:
        await self.client.aclose()

    # ---- what is saved ------------------------------------------------------------------------

    def saved(self, model: str, kv_key: str | None) -> tuple[int, int]:
        """(conversations, bytes) saved for ``model`` under ``kv_key``: what its next start can restore.
        From the index in memory (read from disk once per model, in a thread: ``refresh_index``)."""
        if kv_key is None:
            return 0, 0
        entries = [e for e in self.files.indexed(model) if e.kv_key == kv_key]
        return len(entries), sum(e.size_bytes for e in entries)

    async def refresh_index(self, models: list[str]) -> None:
        await asyncio.to_thread(lambda: [self.files.entries(m) for m in models])

    # ---- saving ---------------------------------------------------------------------------------

    async def save(self, model: str, url: str | None, kv_key: str | None) -> int:
        """Save ``model``'s slots that hold a conversation; the number saved. Bounded, never raises."""
        if not url or not kv_key:
            return 0
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.save_budget_s):
                return await self._save(model, url, kv_key)
        except TimeoutError:
            log.warning("KV cache: saving %s's slots took over %g s: stopping it without the rest",
                        model, self.save_budget_s)
            self.metrics.kv_save_failures.labels(model, "timeout").inc()
        except Exception as exc:  # a save is never worth a failed stop
            log.warning("KV cache: saving %s's slots failed: %s", model, exc)
            self.metrics.kv_save_failures.labels(model, "error").inc()
        finally:
            log.debug("KV cache: %s saved in %.3f s", model, time.perf_counter() - started)
        return 0

    async def _save(self, model: str, url: str, kv_key: str) -> int:
        try:
            held = [s for s in await server.slots(self.client, url) if s.n_prompt_tokens > 0 and not s.is_processing]
        except (server.SlotCallFailed, httpx.HTTPError) as exc:
            log.warning("KV cache: %s's slots cannot be read (%s): nothing saved", model, exc)
            self.metrics.kv_save_failures.labels(model, "error").inc()
            return 0
        if not held:
            return 0
        speed = await server.prompt_speed(self.client, url)
        per_token = await asyncio.to_thread(self._bytes_per_token, model, kv_key)
        saved = 0
        for slot in sorted(held, key=lambda s: -s.n_prompt_tokens):
            why = await asyncio.to_thread(self.files.room_for, slot.n_prompt_tokens * per_token)
            if why is not None:
                if why != self._unsaved_why:
                    log.warning("KV cache: not saving %s's slots: %s", model, why)
                self._unsaved_why = why
                self.metrics.kv_save_failures.labels(model, "no_room").inc()
                break
            self._unsaved_why = None
            temp = self.files.temp_name(kv_key, slot.id)
            began = time.perf_counter()
            try:
                await server.slot_action(self.client, url, slot.id, "save", temp, self.save_budget_s)
            except server.SlotCallFailed as exc:
                log.warning("KV cache: %s slot %d was not saved: %s", model, slot.id, exc)
                self.metrics.kv_save_failures.labels(model, "error").inc()
                await asyncio.to_thread(self.files.discard_temp, model, temp)
                continue
            run = self._runs.get(model)
            entry = await asyncio.to_thread(self.files.adopt, model, kv_key, temp, save_s=0.0,
                                            prompt_tokens_per_s=speed, prompts=list(run.prompts) if run else ())
            if entry is None:
                self.metrics.kv_save_failures.labels(model, "error").inc()
                continue
            # Saved and checked (read back whole for its checksum): what a restore will also do.
            entry = await asyncio.to_thread(self.files.set_save_s, entry, time.perf_counter() - began)
            saved += 1
            self.metrics.kv_saves.labels(model).inc()
            self.metrics.kv_saved_bytes.labels(model).inc(entry.size_bytes)
            log.info("KV cache: saved %s slot %d: %d tokens, %.1f MiB in %.2f s", model, slot.id, entry.n_tokens,
                     entry.size_bytes / 2**20, entry.save_s)
        for gone in await asyncio.to_thread(self.files.enforce_cap):
            log.info("KV cache: removed %s's %s (least recently used, over the cap)", gone.model, gone.name)
        return saved

    def _bytes_per_token(self, model: str, kv_key: str) -> int:
        """From the files already saved with this key (0 before the first: the floor alone is checked)."""
        entries = [e for e in self.files.entries(model) if e.kv_key == kv_key and e.n_tokens]
        return max((e.size_bytes // e.n_tokens for e in entries), default=0)

    # ---- restoring ------------------------------------------------------------------------------

    async def prepare(self, model: str, kv_key: str | None) -> None:
        """While ``model`` starts: check its saved conversations now, so that a restore does not
        read them again (and finds them in the page cache). Never raises."""
        if kv_key is None:
            return
        try:
            await asyncio.to_thread(self.files.precheck,
                                    [e for e in self.files.entries(model) if e.kv_key == kv_key])
        except Exception as exc:  # the restore checks them itself
            log.warning("KV cache: checking %s's saved slots ahead failed: %s", model, exc)

    def _run(self, model: str, run_id: str | None) -> _Run:
        run = self._runs.get(model)
        if run is None or run.run_id != run_id:
            run = self._runs[model] = _Run(run_id)
        return run

    def candidates(self, model: str, kv_key: str | None, run_id: str | None) -> list[Entry]:
        """Saved conversations of this key not restored in this run (from the index; cheap)."""
        if kv_key is None:
            return []
        live = set(self._run(model, run_id).slots.values())
        return [e for e in self.files.indexed(model) if e.kv_key == kv_key and e.name not in live]

    async def before_forward(self, model: str, url: str, kv_key: str | None, run_id: str | None,
                             target: str, body: bytes) -> Restored | None:
        """Restore the saved conversation this request continues, when that is faster. Never raises."""
        try:
            if not self.candidates(model, kv_key, run_id):
                return None
            # Tokenized outside the lock: requests at once to one model are not serialized for it.
            prompt = await server.prompt_tokens(self.client, url, target, body)
            if prompt is None:
                return None
            self._run(model, run_id).prompts.append(array("i", prompt))
            async with self._locks.setdefault(model, asyncio.Lock()):
                return await self._restore(model, url, kv_key, run_id, prompt)
        except Exception as exc:  # the request goes on as if nothing was saved
            log.warning("KV cache: no restore for %s: %s", model, exc)
            self.metrics.kv_lookups.labels(model, "failed").inc()
            return None

    async def _restore(self, model: str, url: str, kv_key: str, run_id: str | None,
                       prompt: list[int]) -> Restored | None:
        entries = self.candidates(model, kv_key, run_id)  # again: another request may have restored one meanwhile
        if not entries:
            return None
        figures = self.figures.get(model, Figures())
        choice = choose([_saved(e) for e in entries], prompt, kv_key, figures)
        if choice.name is None:
            self.metrics.kv_lookups.labels(model, "skipped" if choice.shared else "miss").inc()
            log.debug("KV cache: %s: no restore: %s", model, choice.why)
            return None
        entry = next(e for e in entries if e.name == choice.name)
        run = self._run(model, run_id)
        slot = _free_slot(await server.slots(self.client, url), run)
        if slot is None:
            self.metrics.kv_lookups.labels(model, "skipped").inc()
            return None
        began = time.perf_counter()
        if not await asyncio.to_thread(self.files.verify, entry):
            self.metrics.kv_lookups.labels(model, "failed").inc()
            return None
        estimate = restore_cost_s(_saved(entry), figures) or 0.0
        try:
            answer = await server.slot_action(self.client, url, slot, "restore", entry.name,
                                              max(RESTORE_TIMEOUT_MIN_S, 4 * estimate))
        except server.SlotCallFailed as exc:
            await asyncio.to_thread(self.files.remove, entry, f"llama-server could not restore it ({exc})")
            self.metrics.kv_lookups.labels(model, "failed").inc()
            return None
        seconds = time.perf_counter() - began
        self.figures[model] = learned(figures, seconds, entry.size_bytes)
        run.slots[slot] = entry.name
        run.restored_at[slot] = time.monotonic()
        await asyncio.to_thread(self.files.touch, entry)
        self.metrics.kv_lookups.labels(model, "restored").inc()
        self.metrics.kv_restored_bytes.labels(model).inc(answer.n_read or entry.size_bytes)
        self.metrics.kv_restored_tokens.labels(model).inc(choice.shared)
        log.debug("KV cache: %s: restored %s into slot %d: %s", model, entry.name, slot, choice.why)
        return Restored(entry.name, entry.n_tokens, choice.shared, seconds)


def _saved(entry: Entry) -> Saved:
    return Saved(entry.name, entry.kv_key, entry.tokens, entry.size_bytes, entry.prompt_tokens_per_s, entry.save_s)


def _free_slot(slots: list[server.SlotView], run: _Run) -> int | None:
    """A slot not busy, best one that never ran (it holds nothing), then one that holds nothing we
    restored, then the one we restored into longest ago; None when all are busy."""
    idle = [s for s in slots if not s.is_processing]
    if not idle:
        return None

    def rank(slot: server.SlotView) -> tuple:
        ours = slot.id in run.slots
        return (slot.id_task is not None, ours, run.restored_at.get(slot.id, 0.0), slot.n_prompt_tokens)
    return min(idle, key=rank).id
