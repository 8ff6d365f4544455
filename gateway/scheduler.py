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
* An idle model is stopped after its ttl (0: never); pinned ones never.
* A queued request that waited longer than the queue timeout gets 503.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping, Union

GiB = 2**30


class Phase(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


HOLDS_MEMORY = (Phase.STARTING, Phase.READY, Phase.STOPPING)


@dataclass(frozen=True)
class Policy:
    limit: int = 1  # requests served at once (default: the server's slots)
    queue: int = 32  # requests that may wait beyond those
    ttl_s: float = 0.0  # stop after this long idle; 0 = never
    pinned: bool = False  # never stopped to make room, nor by ttl
    swap_group: str | None = None  # one model of a group runs at a time
    need: Mapping[str, int] = field(default_factory=dict)  # bytes per memory pool


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

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or bool(self.queue)


@dataclass(frozen=True)
class State:
    models: Mapping[str, Model] = field(default_factory=dict)
    capacity: Mapping[str, int] = field(default_factory=dict)  # bytes per pool; a pool not listed is unlimited
    external: Mapping[str, int] = field(default_factory=dict)  # bytes per pool used by things not ours
    queue_timeout_s: float = 120.0

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


@dataclass(frozen=True)
class Stopped:
    model: str
    now: float
    reason: str | None = None  # set when it stopped on its own (a crash)


@dataclass(frozen=True)
class Tick:
    now: float


@dataclass(frozen=True)
class Sync:
    """What the orchestrator reports: the declared models, their policy and observed phase."""
    models: Mapping[str, tuple[Policy, Phase, str | None]]
    capacity: Mapping[str, int]
    external: Mapping[str, int]
    now: float


Event = Union[Arrive, Finish, Cancel, Started, StartFailed, Stopped, Tick, Sync]


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


@dataclass(frozen=True)
class Start:
    model: str


@dataclass(frozen=True)
class Stop:
    model: str
    reason: str


Action = Union[Admit, Reject, Start, Stop]


# ---- the step ----------------------------------------------------------------------------------

def step(state: State, event: Event) -> tuple[State, list[Action]]:
    actions: list[Action] = []
    state = _apply(state, event, actions)
    now = getattr(event, "now")
    if isinstance(event, Tick):
        state = _expire(state, now, actions)
    state = _settle(state, now, actions)
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
        if model.phase is Phase.READY and model.in_flight < model.policy.limit and not model.queue:
            actions.append(Admit(event.rid, model.name))
            return state.with_model(replace(model, in_flight=model.in_flight + 1))
        # Waiting for a start, the first ones will take its free slots: only those beyond queue.
        if len(model.queue) >= model.policy.queue + max(0, model.policy.limit - model.in_flight):
            actions.append(Reject(event.rid, model.name, 429,
                                  f"Model '{model.name}' is at its limit: {model.in_flight} request(s) running, "
                                  f"{len(model.queue)} waiting (the most it queues). Retry shortly.", 1))
            return state.with_model(model)
        return state.with_model(replace(model, queue=model.queue + (Waiter(event.rid, event.now),)))
    if isinstance(event, Finish):
        return state.with_model(replace(model, in_flight=max(0, model.in_flight - 1), last_used=event.now))
    if isinstance(event, Cancel):
        return state.with_model(replace(model, queue=tuple(w for w in model.queue if w.rid != event.rid)))
    if isinstance(event, Started):
        if model.phase in (Phase.STARTING, Phase.STOPPED, Phase.FAILED):
            return state.with_model(replace(model, phase=Phase.READY, last_used=event.now, reason=None))
        return state
    if isinstance(event, StartFailed):
        for waiter in model.queue:
            actions.append(Reject(waiter.rid, model.name, 503,
                                  f"Model '{model.name}' could not be started: {event.reason}", 30))
        return state.with_model(replace(model, phase=Phase.FAILED, queue=(), reason=event.reason))
    if isinstance(event, Stopped):
        phase = Phase.FAILED if event.reason else Phase.STOPPED
        return state.with_model(replace(model, phase=phase, reason=event.reason))
    return state


def _sync(state: State, event: Sync, actions: list[Action]) -> State:
    models: dict[str, Model] = {}
    for name, (policy, observed, reason) in event.models.items():
        known = state.models.get(name)
        settled = known is None or known.phase in (Phase.READY, Phase.STOPPED, Phase.FAILED)
        if settled and observed is Phase.STARTING:
            # Started by someone else (a preload, Docker's restart after a crash, an admin):
            # ask for it too, so its end arrives as Started / StartFailed like our own starts.
            actions.append(Start(name))
        if known is None:
            models[name] = Model(name, policy, observed, reason=reason)
            continue
        phase = known.phase
        # Our own transitions (starting, stopping) end with their own events; the
        # orchestrator's view only overrides a settled phase (a crash, a manual start).
        if settled:
            phase = observed
        elif known.phase is Phase.STARTING and observed is Phase.READY:
            phase = Phase.READY
        models[name] = replace(known, policy=policy, phase=phase,
                               reason=reason if phase is Phase.FAILED else known.reason)
    for name, gone in state.models.items():
        if name not in models:
            for waiter in gone.queue:
                actions.append(Reject(waiter.rid, name, 404, f"Model '{name}' was removed.", 0))
    return replace(state, models=MappingProxyType(models), capacity=MappingProxyType(dict(event.capacity)),
                   external=MappingProxyType(dict(event.external)))


def _expire(state: State, now: float, actions: list[Action]) -> State:
    for model in list(state.models.values()):
        expired = [w for w in model.queue if now - w.since >= state.queue_timeout_s]
        if expired:
            why = _waiting_for(state, model)
            for waiter in expired:
                actions.append(Reject(waiter.rid, model.name, 503,
                                      f"Waited {now - waiter.since:.0f} s for model '{model.name}' ({why}).", 5))
            model = replace(model, queue=tuple(w for w in model.queue if w not in expired))
            state = state.with_model(model)
        ttl = model.policy.ttl_s
        if model.phase is Phase.READY and ttl > 0 and not model.policy.pinned and not model.busy \
                and now - model.last_used >= ttl:
            actions.append(Stop(model.name, f"idle for {ttl:g} s"))
            state = state.with_model(replace(model, phase=Phase.STOPPING))
    return state


def _settle(state: State, now: float, actions: list[Action]) -> State:
    # Admit what ready models can take, oldest first.
    for model in list(state.models.values()):
        if model.phase is Phase.READY and model.queue and model.in_flight < model.policy.limit:
            free = model.policy.limit - model.in_flight
            admitted, rest = model.queue[:free], model.queue[free:]
            actions.extend(Admit(w.rid, model.name) for w in admitted)
            state = state.with_model(replace(model, queue=rest, in_flight=model.in_flight + len(admitted)))
    # Start what is wanted, oldest demand first, as room allows.
    wanted = sorted((m for m in state.models.values() if m.queue and m.phase in (Phase.STOPPED, Phase.FAILED)),
                    key=lambda m: m.queue[0].since)
    for model in wanted:
        state = _try_start(state, state.models[model.name], actions)
    return state


def _try_start(state: State, model: Model, actions: list[Action]) -> State:
    # Would it ever fit? Only pinned models and other people's memory stay for good
    # (checked first: a swap-group rival is not stopped, nor waited for, for a model that cannot fit).
    for pool, need in model.policy.need.items():
        fixed = state.external.get(pool, 0) + sum(
            m.policy.need.get(pool, 0) for m in state.models.values()
            if m.name != model.name and m.policy.pinned and m.phase in HOLDS_MEMORY)
        capacity = state.capacity.get(pool)
        if capacity is not None and need + fixed > capacity:
            return _reject_all(state, model, actions,
                               f"it needs {_gib(need)} in {pool}, which holds {_gib(capacity)}"
                               f"{' with ' + _gib(fixed) + ' used by pinned models and other processes' if fixed else ''}"
                               f": {_gib(need + fixed - capacity)} missing. Loaded: {_loaded(state, pool)}.")

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
            for rival in rivals:
                if rival.phase is Phase.READY and not rival.busy:
                    actions.append(Stop(rival.name, f"swap group '{group}': '{model.name}' is wanted"))
                    state = state.with_model(replace(rival, phase=Phase.STOPPING))
            return state  # start once they have stopped (a Stopped event settles again)

    short = _shortfall(state, model)
    if not short:
        actions.append(Start(model.name))
        return state.with_model(replace(model, phase=Phase.STARTING, reason=None))

    # Memory being freed already counts; then idle, unpinned models, least recently used first.
    stopping = [m for m in state.models.values() if m.phase is Phase.STOPPING]
    remaining = _after_freeing(short, stopping)
    victims: list[Model] = []
    for candidate in sorted((m for m in state.models.values() if m.phase is Phase.READY and not m.busy
                             and not m.policy.pinned and m.name != model.name), key=lambda m: m.last_used):
        if not remaining:
            break
        if any(candidate.policy.need.get(pool, 0) for pool in remaining):
            victims.append(candidate)
            remaining = _after_freeing(remaining, [candidate])
    if remaining:
        return state  # busy models hold the room: wait for them (or for the queue timeout)
    for victim in victims:
        actions.append(Stop(victim.name, f"making room for '{model.name}'"))
        state = state.with_model(replace(victim, phase=Phase.STOPPING))
    return state  # start once the room is free (a Stopped event settles again)


def _shortfall(state: State, model: Model) -> dict[str, int]:
    """Bytes missing per pool for ``model`` to start now (empty: it fits)."""
    missing = {}
    for pool, need in model.policy.need.items():
        capacity = state.capacity.get(pool)
        if capacity is None:
            continue
        used = state.external.get(pool, 0) + sum(
            m.policy.need.get(pool, 0) for m in state.models.values()
            if m.name != model.name and m.phase in HOLDS_MEMORY)
        if need > capacity - used:
            missing[pool] = need - (capacity - used)
    return missing


def _after_freeing(missing: dict[str, int], freed: list[Model]) -> dict[str, int]:
    left = {}
    for pool, bytes_ in missing.items():
        rest = bytes_ - sum(m.policy.need.get(pool, 0) for m in freed)
        if rest > 0:
            left[pool] = rest
    return left


def _reject_all(state: State, model: Model, actions: list[Action], why: str) -> State:
    for waiter in model.queue:
        actions.append(Reject(waiter.rid, model.name, 503, f"Model '{model.name}' cannot be started: {why}", 30))
    return state.with_model(replace(model, queue=()))


def _waiting_for(state: State, model: Model) -> str:
    if model.phase is Phase.READY:
        return f"all {model.policy.limit} slot(s) busy"
    if model.phase is Phase.STARTING:
        return "still loading"
    short = _shortfall(state, model)
    if short:
        pool, missing = next(iter(short.items()))
        return f"{_gib(missing)} more needed in {pool}; busy models hold it. Loaded: {_loaded(state, pool)}"
    return model.phase.value


def _loaded(state: State, pool: str) -> str:
    held = [m for m in state.models.values() if m.phase in HOLDS_MEMORY and m.policy.need.get(pool)]
    if not held:
        return "nothing"
    return ", ".join(f"{m.name} {_gib(m.policy.need[pool])}"
                     f"{' (pinned)' if m.policy.pinned else ''}{' (busy)' if m.busy else ''}" for m in held)


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB // 10 else f"{n / 2**20:.0f} MiB"
