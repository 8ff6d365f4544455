"""Which model runs, which request goes now, waits or is refused: the scheduler.

Pure: ``step(state, event)`` returns the next state and the actions to carry out
(admit or reject a request, start or stop a model). No clocks, no I/O: time comes
in with the events, so every race is a table test (see tests/unit/test_scheduler.py).
``lifecycle.py`` feeds it events and carries out its actions.

Rules, in the order they apply:
* A ready model with a free slot admits at once; otherwise the request queues
  (FIFO, bounded: beyond the bound it is refused with 429).
* A queued request for a model that is not running starts it. Requests that
  arrive while it starts (or while it stops) join the same queue: one start.
* Starting needs room: the model's memory need must fit in each pool it uses
  (a GPU, or a configured budget). Room is made by stopping idle, unpinned
  models, least recently used first. A model with requests in flight or queued
  is never stopped. If the model cannot fit even with every unpinned model gone,
  its requests get 503 at once, naming what is loaded and what is missing; if
  busy models are in the way, the requests wait (and time out with that message).
* Models in one swap group run one at a time: starting one stops the others
  once they are idle.
* Swap without thrash: when models compete for the same memory (a swap group, or
  a start that needs others stopped), they are served in batches per model. A
  model stays at least ``min_residency_s`` after it became ready (it keeps
  admitting its own requests meanwhile) before it is stopped for a rival; after
  that, as before, only once it is idle. So two apps alternating between models
  that cannot both fit get one swap per batch, not one per request.
* No starvation: a model whose wait for memory (since its oldest request, or since
  it was last stopped if later) reached its ``max_wait_s`` goes next. Its rivals
  are stopped even within their residency, and one still answering requests
  stops admitting (``yielding_to``): its queued requests wait for its next turn, and
  it is stopped as soon as its last request in flight finishes. Models wanting a
  start are served longest-waiting first, so a model that just yielded goes after
  the one it yielded to.
* An idle model is stopped after its ttl (0: never); pinned ones never.
* A queued request that waited longer than the queue timeout gets 503.

On GPUs (the pools in ``State.gpu_pools``), three more rules keep starts from running
out of memory (see README, "GPU memory"):
* A stopped model holds its memory (RELEASING) until NVML shows it returned
  (``Released``) or ``release_timeout_s`` passes: the driver frees it after the process
  exits, not when Docker says it stopped.
* One start at a time per GPU: two loads racing for the same free memory both see it free.
* A start that ran out of CUDA memory (``StartFailed(oom=True)``) is retried once, after
  least recently used idle models made room beyond its need; failing again, its
  requests get 503 naming the need, the free memory and what is loaded.
A model with a ``Demand`` (its need before placement) is placed by gateway/scheduling/placement.py
when it starts: on one GPU, or split across several; its ``Start`` carries the placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Callable, Mapping, Union

from common.sizes import GiB, format_size

from .placement import Demand, Placement, explain, place



class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    RELEASING = "releasing"  # stopped; its GPU memory not yet seen returned
    FAILED = "failed"


HOLDS_MEMORY = (Phase.STARTING, Phase.READY, Phase.STOPPING, Phase.RELEASING)
FREEING = (Phase.STOPPING, Phase.RELEASING)


@dataclass(frozen=True)
class Policy:
    limit: int = 1  # requests served at once (default: the server's slots)
    queue: int = 32  # requests that may wait beyond those
    ttl_s: float = 0.0  # stop after this long idle; 0 = never
    pinned: bool = False  # never stopped to make room, nor by ttl
    swap_group: str | None = None  # one model of a group runs at a time
    need: Mapping[str, int] = field(default_factory=dict)  # bytes per memory pool (where it runs, if not placed)
    demand: Demand | None = None  # GPU hosts: its need before placement; placed when it starts
    min_residency_s: float = 0.0  # once ready, not stopped for a rival before this long (unless it starved)
    max_wait_s: float | None = None  # waiting this long for memory, it goes next even if rivals are busy; None: no bound


@dataclass(frozen=True)
class Waiter:
    rid: int
    since: float


@dataclass(frozen=True)
class Model:
    name: str
    policy: Policy = Policy()
    phase: Phase = Phase.STOPPED
    in_flight: int = 0
    queue: tuple[Waiter, ...] = ()
    last_used: float = 0.0
    reason: str | None = None  # why it failed, when it did
    placement: Placement | None = None  # where we started it, while it holds memory
    releasing_since: float = 0.0
    oom_retry: bool = False  # its last start ran out of memory: the next is the one retry, with room to spare
    keep_alive: float | None = None  # a client's KeepAlive for this run: overrides ttl/pinned until it stops
    kept_from: Policy | None = None  # its policy before that override
    ready_since: float = 0.0  # when it last became ready: its residency counts from here
    stopped_at: float = 0.0  # when it last stopped: its wait for memory counts from here at the earliest
    yielding_to: str | None = None  # a starving rival needs its memory: admits nothing, stopped once idle
    # How long things take, for clients' progress and wait estimates (kept by _track_timing).
    starting_since: float = 0.0  # when its current start began
    recent_requests_s: tuple[float, ...] = ()  # the last few requests' durations, admitted to finished
    recent_starts_s: tuple[float, ...] = ()  # the last few starts' durations
    # An image upgrade under way (gateway/upgrade.py): BESIDE, a second server on the new image is
    # loading next to it (it keeps serving; its memory counts twice); CLOSED, its server is being
    # swapped (it admits nothing, its requests wait). Never stopped for a rival while held.
    hold: "Hold | None" = None

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or bool(self.queue)

    @property
    def held(self) -> Mapping[str, int]:
        """Bytes per pool it holds (or will, once started): where we placed it, or more if NVML saw more
        there; twice that while a second server of it loads beside it (an upgrade)."""
        held = self.policy.need if self.placement is None else {
            p: max(n, self.policy.need.get(p, 0)) for p, n in self.placement.need.items()}
        return {p: 2 * n for p, n in held.items()} if self.hold is HoldKind.BESIDE else held

    @property
    def closed(self) -> bool:
        return self.hold is HoldKind.CLOSED


@dataclass(frozen=True)
class State:
    models: Mapping[str, Model] = field(default_factory=dict)
    capacity: Mapping[str, int] = field(default_factory=dict)  # bytes per pool; a pool not listed is unlimited
    external: Mapping[str, int] = field(default_factory=dict)  # bytes per pool used by things not ours
    queue_timeout_s: float = 120.0
    gpu_pools: frozenset[str] = frozenset()  # pools measured by NVML: release waited for, one start at a time
    release_timeout_s: float = 10.0  # longest wait for a stopped model's memory to show as returned

    def with_model(self, model: Model) -> "State":
        return replace(self, models=MappingProxyType({**self.models, model.name: model}))


# ---- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arrive:
    rid: int
    model: str
    now: float


@dataclass(frozen=True)
class Finish:
    rid: int
    model: str
    now: float
    duration_s: float | None = None  # since it was admitted (feeds the wait estimate)


@dataclass(frozen=True)
class Cancel:
    """A queued request's client went away."""
    rid: int
    model: str
    now: float


@dataclass(frozen=True)
class Started:
    model: str
    now: float


@dataclass(frozen=True)
class StartFailed:
    model: str
    reason: str
    now: float
    oom: bool = False  # it ran out of (GPU) memory while loading


@dataclass(frozen=True)
class Released:
    """NVML shows that a stopped model's memory is free again."""
    model: str
    now: float


@dataclass(frozen=True)
class Stopped:
    model: str
    now: float
    reason: str | None = None  # set when it stopped on its own (a crash)


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class KeepAlive:
    """A client's word on how long the model stays loaded (Ollama's ``keep_alive``), for this run:
    ``seconds`` > 0 replaces its ttl; 0 stops it as soon as it is idle; < 0 pins it until it stops
    or the next KeepAlive."""
    model: str
    seconds: float
    now: float


@dataclass(frozen=True)
class Unload:
    """Stop a model now if it is idle (an admin's unload); a busy one is left alone."""
    model: str
    now: float


class HoldKind(StrEnum):
    BESIDE = "beside"  # a second server loads beside it: it serves, its memory counts twice
    CLOSED = "closed"  # its server is being replaced: it admits nothing (what runs finishes)


@dataclass(frozen=True)
class Hold:
    """An upgrade holds a ready model (``kind``; a model not ready is left as it is). Under a
    CLOSED hold its requests in flight finish and new ones wait: the caller swaps its server
    once ``in_flight`` is 0, then sends ``Unhold``."""
    model: str
    kind: HoldKind
    now: float


@dataclass(frozen=True)
class Unhold:
    model: str
    now: float


@dataclass(frozen=True)
class Sync:
    """What the orchestrator reports: the declared models, their policy and observed phase."""
    models: Mapping[str, tuple[Policy, Phase, str | None]]
    capacity: Mapping[str, int]
    external: Mapping[str, int]
    now: float
    gpu_pools: frozenset[str] = frozenset()


Event = Union[Arrive, Finish, Cancel, Started, StartFailed, Released, Stopped, Tick, Sync, KeepAlive, Unload, Hold,
              Unhold]


# ---- actions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Admit:
    rid: int
    model: str


@dataclass(frozen=True)
class Reject:
    rid: int
    model: str
    status: int  # 429 (queue full) or 503
    message: str
    retry_after_s: int
    queue_length: int | None = None  # set when it was refused for waiting: what was queued,
    estimated_wait_s: float | None = None  # and how long a request would wait now (None: not known yet)


@dataclass(frozen=True)
class Start:
    model: str
    placement: Placement | None = None  # the GPUs to use (and the split); None: as the spec says


class StopKind(StrEnum):
    """Why the scheduler stops a model: what metrics and swap counts read (the reason is for people)."""
    IDLE = "idle"  # its ttl passed with no request
    ROOM = "room"  # making room for another model
    SWAP_GROUP = "swap_group"  # another of its swap group is wanted
    UNLOAD = "unload"  # an admin's unload
    KEEP_ALIVE = "keep_alive"  # a client's keep_alive 0, once its request ended


SWAPS = (StopKind.ROOM, StopKind.SWAP_GROUP)


@dataclass(frozen=True)
class Stop:
    model: str
    reason: str  # in words, for logs and people
    kind: StopKind
    # The model it makes way for (room, swap group): an add reports it. Not part of what a stop
    # is (equal stops stay equal): the reason says it in words.
    for_model: str | None = field(default=None, compare=False)

    @property
    def swap(self) -> bool:
        """Stopped for another model (to make room, or by its swap group), not for being idle."""
        return self.kind in SWAPS


Action = Union[Admit, Reject, Start, Stop]


# ---- the step ----------------------------------------------------------------------------------

def step(state: State, event: Event) -> tuple[State, list[Action]]:
    actions: list[Action] = []
    before = state
    state = _apply(state, event, actions)
    now = getattr(event, "now")
    if isinstance(event, Tick):
        state = _expire(state, now, actions)
    state = _settle(state, now, actions)
    state = _unload_idle(state, actions)
    state = _track_timing(before, state, event)
    return state, actions


def _apply(state: State, event: Event, actions: list[Action]) -> State:
    if isinstance(event, Sync):
        return _sync(state, event, actions)
    if isinstance(event, Tick):
        return state  # its work (timeouts, idle unload) is _expire's
    model = state.models.get(event.model)
    if model is None:
        if isinstance(event, Arrive):
            actions.append(Reject(event.rid, event.model, 404, f"No model named '{event.model}'.", 0))
        return state
    if isinstance(event, Arrive):
        model = replace(model, last_used=event.now)
        if model.phase is Phase.READY and model.in_flight < model.policy.limit and not model.queue \
                and not model.yielding_to and not model.closed:
            actions.append(Admit(event.rid, model.name))
            return state.with_model(replace(model, in_flight=model.in_flight + 1))
        # Waiting for a start, the first ones will take its free slots: only those beyond queue.
        if len(model.queue) >= model.policy.queue + max(0, model.policy.limit - model.in_flight):
            wait = estimated_wait_s(model, len(model.queue) + 1, event.now)
            actions.append(Reject(event.rid, model.name, 429,
                                  f"Model '{model.name}' is at its limit: {model.in_flight} request(s) running, "
                                  f"{len(model.queue)} waiting (the most it queues). {_wait_text(wait)}",
                                  retry_after(wait, 1), len(model.queue), wait))
            return state.with_model(model)
        return state.with_model(replace(model, queue=model.queue + (Waiter(event.rid, event.now),)))
    if isinstance(event, Finish):
        return state.with_model(replace(model, in_flight=max(0, model.in_flight - 1), last_used=event.now))
    if isinstance(event, Cancel):
        return state.with_model(replace(model, queue=tuple(w for w in model.queue if w.rid != event.rid)))
    if isinstance(event, Started):
        if model.phase in (Phase.STARTING, Phase.STOPPED, Phase.FAILED):
            return state.with_model(replace(model, phase=Phase.READY, last_used=event.now, reason=None,
                                            oom_retry=False, ready_since=event.now))
        return state
    if isinstance(event, StartFailed):
        if event.oom and not model.oom_retry and model.queue:
            # Once more, after making room beyond its need (_settle does it): the estimate was low,
            # or memory was taken after we looked.
            return state.with_model(replace(model, phase=Phase.FAILED, reason=event.reason, placement=None,
                                            oom_retry=True))
        state = state.with_model(replace(model, phase=Phase.FAILED, queue=(), reason=event.reason, placement=None,
                                         oom_retry=False))
        why = _out_of_memory(state, state.models[model.name], event.reason) if event.oom else event.reason
        for waiter in model.queue:
            actions.append(Reject(waiter.rid, model.name, 503, f"Model '{model.name}' could not be started: {why}", 30))
        return state
    if isinstance(event, Stopped):
        if not model.queue:
            # The override was for the run that ended. With requests waiting, one of them may have
            # given it while the model was stopping: it is for the run they start.
            model = replace(model, keep_alive=None, kept_from=None, policy=model.kept_from or model.policy)
        if any(model.held.get(pool) for pool in state.gpu_pools):
            # The process is gone; the driver frees its memory a moment later. Until NVML shows it, it is held.
            return state.with_model(replace(model, phase=Phase.RELEASING, reason=event.reason,
                                            releasing_since=event.now, stopped_at=event.now))
        phase = Phase.FAILED if event.reason else Phase.STOPPED
        return state.with_model(replace(model, phase=phase, reason=event.reason, placement=None,
                                        stopped_at=event.now))
    if isinstance(event, Released):
        return _released(state, model) if model.phase is Phase.RELEASING else state
    if isinstance(event, KeepAlive):
        base = model.kept_from or model.policy
        return state.with_model(replace(model, keep_alive=event.seconds, kept_from=base,
                                        policy=_kept_alive(base, event.seconds),
                                        last_used=max(model.last_used, event.now)))
    if isinstance(event, Hold):
        if model.phase is Phase.READY:
            return state.with_model(replace(model, hold=event.kind))
        return state
    if isinstance(event, Unhold):
        return state.with_model(replace(model, hold=None))
    if isinstance(event, Unload):
        if model.phase is Phase.READY and not model.busy and model.hold is None:
            actions.append(Stop(model.name, "unloaded on request", StopKind.UNLOAD))
            return state.with_model(replace(model, phase=Phase.STOPPING))
    return state


def _sync(state: State, event: Sync, actions: list[Action]) -> State:
    models: dict[str, Model] = {}
    for name, (policy, observed, reason) in event.models.items():
        known = state.models.get(name)
        # Not ours in flight (a start, a stop), nor a server an upgrade is swapping (held).
        settled = known is None or known.phase in (Phase.READY, Phase.STOPPED, Phase.FAILED) and known.hold is None
        if settled and observed is Phase.STARTING:
            # Started by someone else (a preload, Docker's restart after a crash, an admin):
            # ask for it too, so its end arrives as Started / StartFailed like our own starts.
            actions.append(Start(name))
        if known is None:
            # Its ttl counts from when we first see it (a gateway restarted next to running models
            # must not stop them all at its first tick).
            models[name] = Model(name, policy, observed, reason=reason, last_used=event.now,
                                 ready_since=event.now if observed is Phase.READY else 0.0)
            continue
        phase = known.phase
        # Our own transitions (starting, stopping) end with their own events; the
        # orchestrator's view only overrides a settled phase (a crash, a manual start).
        if settled:
            phase = observed
        elif known.phase is Phase.STARTING and observed is Phase.READY:
            phase = Phase.READY
        models[name] = replace(known, policy=_kept_alive(policy, known.keep_alive), phase=phase,
                               kept_from=policy if known.keep_alive is not None else None,
                               reason=reason if phase is Phase.FAILED else known.reason,
                               placement=known.placement if phase in HOLDS_MEMORY else None,
                               ready_since=event.now if phase is Phase.READY and known.phase is not Phase.READY
                               else known.ready_since)
    for name, gone in state.models.items():
        if name not in models:
            for waiter in gone.queue:
                actions.append(Reject(waiter.rid, name, 404, f"Model '{name}' was removed.", 0))
    return replace(state, models=MappingProxyType(models), capacity=MappingProxyType(dict(event.capacity)),
                   external=MappingProxyType(dict(event.external)), gpu_pools=frozenset(event.gpu_pools))


def _kept_alive(policy: Policy, seconds: float | None) -> Policy:
    """``policy`` as a client's keep_alive changes it (None: unchanged). A positive one replaces
    the ttl (a pinned model stays pinned); 0 unpins (it goes once idle: _unload_idle); < 0 pins."""
    if seconds is None:
        return policy
    if seconds < 0:
        return replace(policy, ttl_s=0.0, pinned=True)
    if seconds == 0:
        return replace(policy, pinned=False)
    return replace(policy, ttl_s=float(seconds))


def _unload_idle(state: State, actions: list[Action]) -> State:
    """Models a client asked to unload after its request (keep_alive 0) go as soon as they are idle."""
    for model in list(state.models.values()):
        if model.keep_alive == 0 and model.phase is Phase.READY and not model.busy and model.hold is None:
            actions.append(Stop(model.name, "keep_alive 0: unloaded after its request", StopKind.KEEP_ALIVE))
            state = state.with_model(replace(model, phase=Phase.STOPPING))
    return state


def _released(state: State, model: Model) -> State:
    phase = Phase.FAILED if model.reason else Phase.STOPPED
    return state.with_model(replace(model, phase=phase, placement=None))


def _expire(state: State, now: float, actions: list[Action]) -> State:
    for model in list(state.models.values()):
        if model.phase is Phase.RELEASING and now - model.releasing_since >= state.release_timeout_s:
            # NVML never showed it (a process it cannot see, a slow driver): go on rather than wait for good.
            state = _released(state, model)
            model = state.models[model.name]
        expired = [w for w in model.queue if now - w.since >= state.queue_timeout_s]
        if expired:
            why = _waiting_for(state, model)
            model = replace(model, queue=tuple(w for w in model.queue if w not in expired))
            wait = estimated_wait_s(model, len(model.queue) + 1, now)
            for waiter in expired:
                actions.append(Reject(waiter.rid, model.name, 503,
                                      f"Waited {now - waiter.since:.0f} s for model '{model.name}' ({why}). "
                                      f"{len(model.queue)} still waiting. {_wait_text(wait)}",
                                      retry_after(wait, 5), len(model.queue), wait))
            state = state.with_model(model)
        ttl = model.policy.ttl_s
        if model.phase is Phase.READY and ttl > 0 and not model.policy.pinned and not model.busy and not model.hold \
                and now - model.last_used >= ttl:
            actions.append(Stop(model.name, f"idle for {ttl:g} s", StopKind.IDLE))
            state = state.with_model(replace(model, phase=Phase.STOPPING))
    return state


def _settle(state: State, now: float, actions: list[Action]) -> State:
    # Who waits for a start, longest wait for memory first; who must make way for one that starves.
    state = _mark_yielding(state, now, _wanted(state))
    state = _admit(state, actions)
    # Start what is wanted, longest wait first, as room allows; the room a starving model waits
    # for is not taken by one after it (or they would take turns taking it from each other).
    reserved_pools: set[str] = set()
    reserved_groups: set[str] = set()
    for model in _wanted(state):
        if reserved_pools & _pools_of(model) or model.policy.swap_group in reserved_groups:
            continue
        state = _try_start(state, state.models[model.name], now, actions)
        after = state.models[model.name]
        if after.queue and after.phase is not Phase.STARTING and _starving(after, now):
            reserved_pools |= _pools_of(after)
            reserved_groups |= {after.policy.swap_group} - {None}
    if any(m.yielding_to for m in state.models.values()):
        # Starts and refusals just now may have ended a starving wait: who yields is decided again.
        state = _admit(_mark_yielding(state, now, _wanted(state)), actions)
    return state


def _wanted(state: State) -> list[Model]:
    return sorted((m for m in state.models.values() if m.queue and m.phase in (Phase.STOPPED, Phase.FAILED)),
                  key=_waiting_since)


def _admit(state: State, actions: list[Action]) -> State:
    """Admit what ready models can take, oldest first (not a model yielding its memory)."""
    for model in list(state.models.values()):
        if model.phase is Phase.READY and model.queue and model.in_flight < model.policy.limit \
                and not model.yielding_to and not model.closed:
            free = model.policy.limit - model.in_flight
            admitted, rest = model.queue[:free], model.queue[free:]
            actions.extend(Admit(w.rid, model.name) for w in admitted)
            state = state.with_model(replace(model, queue=rest, in_flight=model.in_flight + len(admitted)))
    return state


def _waiting_since(model: Model) -> float:
    """Since when a model wanting a start has waited for memory: its oldest request, or its
    last stop if later (requests that queued while it ran, then yielded, had their turn)."""
    return max(model.queue[0].since, model.stopped_at)


def _starving(model: Model, now: float) -> bool:
    bound = model.policy.max_wait_s
    return bound is not None and bool(model.queue) and now - _waiting_since(model) >= bound


def _resident(model: Model, now: float) -> bool:
    """Ready for less than its minimum residency: not stopped for a rival that is not starving."""
    return model.phase is Phase.READY and now - model.ready_since < model.policy.min_residency_s


def _evictable(model: Model, now: float, starving: bool) -> bool:
    """May be stopped (now, or once its requests in flight end) for a rival: always for a starving
    one (pinned aside); otherwise only once idle and past its residency."""
    if model.phase is not Phase.READY or model.policy.pinned or model.hold is not None:
        return False
    return starving or not (model.busy or _resident(model, now))


def _mark_yielding(state: State, now: float, wanted: list[Model]) -> State:
    """Mark the models that a starving model needs gone: they admit nothing more (the idle
    ones are stopped in this same step; the others once their requests in flight end)."""
    yielding: dict[str, str] = {}
    reserved_pools: set[str] = set()
    reserved_groups: set[str] = set()
    for model in wanted:
        if not _starving(model, now) or reserved_pools & _pools_of(model) \
                or model.policy.swap_group in reserved_groups:
            continue  # (one after a starving model that waits for the same room waits for it, see _settle)
        victims = _to_stop(state, model, now)
        for victim in victims or ():
            yielding.setdefault(victim.name, model.name)
        if victims != []:
            reserved_pools |= _pools_of(model)
            reserved_groups |= {model.policy.swap_group} - {None}
    for m in state.models.values():
        if m.yielding_to != yielding.get(m.name):
            state = state.with_model(replace(m, yielding_to=yielding.get(m.name)))
    return state


def _to_stop(state: State, model: Model, now: float) -> list[Model] | None:
    """The models to stop so that ``model`` can start: [] if it can start now; None if there are
    none to stop and it must wait (busy or resident models hold the room, or memory is being freed),
    or it cannot start at all."""
    if _fit(model.policy, _room(state, model, lambda m: m.policy.pinned)) is None:
        return None
    starving = _starving(model, now)
    group = model.policy.swap_group
    if group:
        rivals = [m for m in state.models.values() if m.name != model.name and m.policy.swap_group == group
                  and m.phase in HOLDS_MEMORY]
        if rivals:
            return [r for r in rivals if _evictable(r, now, starving)] or None
    wanted = _with_retry_margin(state, model, _room(state, model, lambda m: m.policy.pinned))
    if _fit(wanted, _room(state, model, lambda m: True), exclude=_starting_gpus(state, model)) is not None:
        return []
    return _victims(state, model, wanted, now, starving) or None  # []: memory being freed makes the room


def _try_start(state: State, model: Model, now: float, actions: list[Action]) -> State:
    # Would it ever fit? Only pinned models and other people's memory stay for good
    # (checked first: a swap-group rival is not stopped, nor waited for, for a model that cannot fit).
    ever = _room(state, model, lambda m: m.policy.pinned)
    if _fit(model.policy, ever) is None:
        return _reject_all(state, model, actions, _never_fits(state, model, ever))

    # Swap group: the others must go first, and only once they are idle.
    group = model.policy.swap_group
    if group:
        rivals = [m for m in state.models.values() if m.name != model.name and m.policy.swap_group == group
                  and m.phase in HOLDS_MEMORY]
        if any(r.policy.pinned for r in rivals):
            pinned = next(r for r in rivals if r.policy.pinned)
            return _reject_all(state, model, actions, f"'{pinned.name}' is pinned in swap group '{group}', "
                               f"so '{model.name}' cannot run while it does.")
        if rivals:
            starving = _starving(model, now)
            for rival in rivals:
                if _evictable(rival, now, starving) and not rival.in_flight:
                    actions.append(Stop(rival.name, f"swap group '{group}': '{model.name}' is wanted"
                                        + _starved(model, now, starving), StopKind.SWAP_GROUP, model.name))
                    state = state.with_model(replace(rival, phase=Phase.STOPPING, yielding_to=None))
            return state  # start once they have stopped (a Stopped event settles again)

    wanted = _with_retry_margin(state, model, ever)
    placed = _fit(wanted, _room(state, model, lambda m: True), exclude=_starting_gpus(state, model))
    if placed is not None:
        placement = placed if wanted.demand is not None else None
        actions.append(Start(model.name, placement))
        return state.with_model(replace(model, phase=Phase.STARTING, reason=None, placement=placement))

    starving = _starving(model, now)
    victims = _victims(state, model, wanted, now, starving)
    if victims is None:
        return state  # busy (or resident) models hold the room: wait for them (or for the queue timeout)
    for victim in victims:
        if victim.in_flight:
            continue  # yielding: stopped once its requests in flight end
        actions.append(Stop(victim.name, f"making room for '{model.name}'" + _starved(model, now, starving),
                            StopKind.ROOM, model.name))
        state = state.with_model(replace(victim, phase=Phase.STOPPING, yielding_to=None))
    return state  # start once the room is free (a Stopped / Released / Started event settles again)


def _victims(state: State, model: Model, wanted: Policy, now: float, starving: bool) -> list[Model] | None:
    """Whom to stop to make room for ``model``, or None if stopping what may be stopped is not enough.
    Memory being freed (and a start under way) already counts; then idle unpinned models past their
    residency, least recently used first, only as many as it takes; for a starving model, then
    the others (resident or busy) too."""
    freed = [m for m in state.models.values() if m.phase in FREEING]
    victims: list[Model] = []
    candidates = sorted((m for m in state.models.values() if m.name != model.name and _evictable(m, now, starving)
                         and any(m.held.get(pool) for pool in _pools_of(model))),
                        key=lambda m: (m.busy or _resident(m, now), m.last_used))
    while _fit(wanted, room := _room(state, model, lambda m: m not in freed and m not in victims)) is None:
        if wanted.demand is None:  # a fixed need: only models in a pool still short help
            short = {p for p, n in wanted.need.items() if p in room and n > room[p]}
            candidates = [c for c in candidates if any(c.held.get(p) for p in short)]
        if not candidates:
            return None
        victims.append(candidates.pop(0))
    return victims


def _starved(model: Model, now: float, starving: bool) -> str:
    return f" (it waited {now - _waiting_since(model):.0f} s, its max_wait)" if starving else ""


def _room(state: State, model: Model, counts: Callable[[Model], bool]) -> dict[str, int]:
    """Free bytes per pool for ``model``, counting what the other models for which ``counts`` holds use."""
    room = {}
    for pool, capacity in state.capacity.items():
        used = state.external.get(pool, 0) + sum(
            m.held.get(pool, 0) for m in state.models.values()
            if m.name != model.name and m.phase in HOLDS_MEMORY and counts(m))
        room[pool] = capacity - used
    return room


def _fit(policy: Policy, room: Mapping[str, int], exclude: frozenset[str] = frozenset()) -> Placement | None:
    """Where ``policy``'s model goes given ``room`` (pools in ``exclude`` are off limits), or None."""
    if policy.demand is not None:
        return place(policy.demand, {p: r for p, r in room.items() if p not in exclude})
    for pool, need in policy.need.items():
        if need and pool in exclude:
            return None
        if pool in room and need > room[pool]:  # a pool without a capacity is unlimited
            return None
    return Placement(dict(policy.need))


def _pools_of(model: Model) -> set[str]:
    return set(model.policy.demand.pools) if model.policy.demand is not None else set(model.policy.need)


def _starting_gpus(state: State, model: Model) -> frozenset[str]:
    """GPUs with another start under way: not started on until it ends (both would see the same free memory)."""
    return frozenset(pool for m in state.models.values() if m.name != model.name and m.phase is Phase.STARTING
                     for pool, held in m.held.items() if held and pool in state.gpu_pools)


def _with_retry_margin(state: State, model: Model, ever: Mapping[str, int]) -> Policy:
    """Its policy, asking for room beyond its need on the retry after running out of memory:
    a quarter more (at least 1 GiB), or as much of that as could ever be freed."""
    policy = model.policy
    if not model.oom_retry:
        return policy
    total = policy.demand.layered + max(policy.demand.per_gpu.values(), default=0) if policy.demand \
        else max(policy.need.values(), default=0)
    extra = max(total // 4, GiB)
    for margin in (extra, extra // 2, extra // 4, 0):
        if policy.demand is not None:
            wanted = replace(policy, demand=policy.demand.plus(margin))
        else:
            wanted = replace(policy, need={p: n + margin if n else 0 for p, n in policy.need.items()})
        if _fit(wanted, ever) is not None:
            return wanted
    return policy


def _reject_all(state: State, model: Model, actions: list[Action], why: str) -> State:
    for waiter in model.queue:
        actions.append(Reject(waiter.rid, model.name, 503, f"Model '{model.name}' cannot be started: {why}", 30))
    return state.with_model(replace(model, queue=()))


def _never_fits(state: State, model: Model, ever: Mapping[str, int]) -> str:
    if model.policy.demand is not None:
        pools = [p for p in model.policy.demand.pools if p in state.capacity] or list(state.capacity)
        before = f" Before: {model.reason}." if model.phase is Phase.FAILED and model.reason else ""
        return f"{explain(model.policy.demand, ever)} (with pinned models and other processes). " \
               f"Loaded: {_loaded(state, pools)}.{before}"
    pool, need = next((p, n) for p, n in model.policy.need.items() if p in ever and n > ever[p])
    capacity = state.capacity[pool]
    fixed = capacity - ever[pool]
    return (f"it needs {format_size(need)} in {pool}, which holds {format_size(capacity)}"
            f"{' with ' + format_size(fixed) + ' used by pinned models and other processes' if fixed else ''}"
            f": {format_size(need - ever[pool])} missing. Loaded: {_loaded(state, [pool])}.")


def _out_of_memory(state: State, model: Model, reason: str) -> str:
    """Why a start that ran out of memory twice gave up: its need, the free memory, what is loaded."""
    room = _room(state, model, lambda m: True)
    pools = sorted(_pools_of(model) & set(room)) or sorted(room)
    need = (f"{format_size(model.policy.demand.on_one(pools[0]))} on one GPU" if model.policy.demand is not None and pools
            else ", ".join(f"{format_size(n)} in {p}" for p, n in model.policy.need.items()) or "an unknown amount")
    free = ", ".join(f"{p} {format_size(max(0, room[p]))}" for p in pools) or "unknown"
    return (f"it ran out of GPU memory while loading, also after making room ({reason}). "
            f"It needs {need}; free: {free}. Loaded: {_loaded(state, pools)}.")


def _waiting_for(state: State, model: Model) -> str:
    if model.phase is Phase.READY:
        return f"all {model.policy.limit} slot(s) busy"
    if model.phase is Phase.STARTING:
        return "still loading"
    if model.phase in (Phase.STOPPING, Phase.RELEASING):
        return "its previous run is still stopping"
    wanted = _with_retry_margin(state, model, _room(state, model, lambda m: m.policy.pinned))
    starting = [m.name for m in state.models.values() if m.phase is Phase.STARTING and m.name != model.name]
    if starting and _fit(wanted, _room(state, model, lambda m: True)) is not None:
        return f"one start at a time per GPU: {', '.join(starting)} still loading"
    freeing = [m.name for m in state.models.values() if m.phase in FREEING]
    if freeing and _fit(wanted, _room(state, model, lambda m: m.phase not in FREEING)) is not None:
        return f"waiting for {', '.join(freeing)} to free its memory"
    pools = sorted(_pools_of(model) & set(state.capacity))
    room = _room(state, model, lambda m: True)
    if wanted.demand is not None:
        return f"{explain(wanted.demand, room)} now; busy models hold it. Loaded: {_loaded(state, pools)}"
    short = {p: n - room[p] for p, n in wanted.need.items() if p in room and n > room[p]}
    if short:
        pool, missing = next(iter(short.items()))
        return f"{format_size(missing)} more needed in {pool}; busy models hold it. Loaded: {_loaded(state, [pool])}"
    return model.phase.value


def _loaded(state: State, pools: list[str]) -> str:
    held = [m for m in state.models.values() if m.phase in HOLDS_MEMORY and any(m.held.get(p) for p in pools)]
    if not held:
        return "nothing"
    return ", ".join(f"{m.name} {format_size(sum(m.held.get(p, 0) for p in pools))}"
                     f"{' (pinned)' if m.policy.pinned else ''}{' (busy)' if m.busy else ''}" for m in held)


# ---- when the clock matters ----------------------------------------------------------------------

TICK_S = 0.25  # how often time is looked at while anything waits or is in transition


def next_tick(state: State, last_tick: float) -> float:
    """The earliest time at which a Tick can change anything, so the driver can sleep until then
    rather than tick four times a second on an idle box. While a request waits or a model is in
    transition, one TICK_S after the last tick (queue timeouts, residencies, max waits and release
    timeouts are all in play); otherwise the first idle model's ttl expiry; ``math.inf`` when
    nothing is due at all (only an event can change anything then)."""
    expiries = []
    for m in state.models.values():
        if m.queue or m.yielding_to or m.phase in (Phase.STARTING, Phase.STOPPING, Phase.RELEASING):
            return last_tick + TICK_S
        if m.phase is Phase.READY and m.policy.ttl_s > 0 and not m.policy.pinned and not m.busy:
            expiries.append(m.last_used + m.policy.ttl_s)
    return min(expiries, default=math.inf)


# ---- timing: queue position and wait estimates -----------------------------------------------------

RECENT = 8  # durations kept per model for the wait estimate


def queue_position(model: Model, rid: int) -> int | None:
    """Where ``rid`` stands among the model's waiters, 1-based; None once it is not waiting."""
    return next((i for i, w in enumerate(model.queue, 1) if w.rid == rid), None)


def estimated_wait_s(model: Model, position: int, now: float) -> float | None:
    """How long the request at ``position`` (1-based) in the model's queue may still wait for a slot,
    from its recent request and start durations; None while they are not known."""
    per_request = _mean(model.recent_requests_s)
    slots = max(1, model.policy.limit)
    if model.phase is Phase.READY:
        return None if per_request is None else position / slots * per_request
    start = _mean(model.recent_starts_s)
    if start is None:
        return None
    left = max(0.0, start - (now - model.starting_since)) if model.phase is Phase.STARTING else start
    beyond = max(0, position - slots)  # the first `slots` go once it is ready; the rest wait for them
    if beyond:
        if per_request is None:
            return None
        left += beyond / slots * per_request
    return left


def retry_after(wait: float | None, default: int) -> int:
    """Retry-After for a refusal: the estimated wait (at least 1 s, at most 10 min), else ``default``."""
    return default if wait is None else max(1, min(600, math.ceil(wait)))


def _wait_text(wait: float | None) -> str:
    return "Estimated wait: not known yet." if wait is None else f"Estimated wait: {wait:.0f} s."


def _mean(values: tuple[float, ...]) -> float | None:
    return sum(values) / len(values) if values else None


def _track_timing(before: State, after: State, event: Event) -> State:
    """When each start began, and how long starts and requests took (the last RECENT of each)."""
    now = getattr(event, "now")
    for name, model in list(after.models.items()):
        old = before.models.get(name)
        was_starting = old is not None and old.phase is Phase.STARTING
        if model.phase is Phase.STARTING and not was_starting:
            after = after.with_model(replace(model, starting_since=now))
        elif was_starting and model.phase is Phase.READY:
            took = max(0.0, now - old.starting_since)
            after = after.with_model(replace(model, recent_starts_s=(model.recent_starts_s + (took,))[-RECENT:]))
    if isinstance(event, Finish) and event.duration_s is not None and event.model in after.models:
        model = after.models[event.model]
        after = after.with_model(replace(model, recent_requests_s=(model.recent_requests_s
                                                                   + (max(0.0, event.duration_s),))[-RECENT:]))
    return after
